"""The protocol core against hostile manifests and response.yaml files, and against what the real plugin writes.

Pure functions (``parse_manifest``, ``JobResponse.parse``, ``decide``) and ``--list-jobs``; the worker loop
and the lease keeper under the same files are in tests/test_lifecycle_hostile.py.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import yaml
from click.testing import CliRunner

import bounded_yaml
import jobs
import worker_entry
from conftest import LocalEnv, make_job
from jobs import Action, JobResponse, JobState, ManifestError, ResponseError, decide, parse_manifest


def billion_laughs(levels: int, *, where: str = "job_id") -> str:
    """A manifest whose ``where`` field is a classic alias bomb: 9**levels strings from a few hundred bytes."""
    lines = ["version: 1", 'lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels + 1):
        lines.append(f"lol{level}: &lol{level} [{', '.join([f'*lol{level - 1}'] * 9)}]")
    job = {"job_id": "bomb1", "job_type": "tts", "mode": "training", "model": {"type": "StableTTS"}}
    fields = "\n".join(f"    {key}: {value}" for key, value in job.items() if key != where and key != "model")
    return "\n".join(lines) + f"\njobs:\n  - {where}: *lol{levels}\n{fields}\n    model: {{type: StableTTS}}\n"


# -- the size of what a manifest expands to -----------------------------------------------------------
@pytest.mark.timeout(30)  # before the fix this never ends: repr() of the expanded value in the message
def test_alias_bomb_in_job_id_is_refused_naming_the_file():
    text = billion_laughs(9)
    assert len(text) < 1000
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    message = str(caught.value)
    assert message.startswith("gpu_jobs/manifest.yaml: ") and "aliases are expanded" in message
    assert len(message) < 200


def test_a_big_value_within_the_limit_is_quoted_by_type_and_size():
    """9**4 = 6,561 strings: readable, but an error message quotes it as 'list of 9 items', not in full."""
    manifest = parse_manifest(billion_laughs(4))
    (problem,) = manifest.problems
    assert problem.job_id is None
    assert "job_id list of 9 items is missing or not a safe name" in problem.message
    assert len(problem.message) < 200
    long_mode = parse_manifest(yaml.safe_dump({"version": 1, "jobs": [make_job("m1", mode="x" * 5000)]}))
    assert "not 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' (str, 5000 chars)" in long_mode.problems[0].message


@pytest.mark.parametrize("text, reason", [
    ("version: 1\njobs: " + "[" * 2000 + "]" * 2000 + "\n", "nested more than 50 levels deep"),
    ("version: 1\njobs: &a [*a]\n", "an alias refers to a value that contains it"),
    ("version: 1\njobs:\n  - job_id: a\n    submitted_at: 2026-13-45\n", "month must be in 1..12"),
    ("version: 1\nx: " + "9" * 5000 + "\n", "cannot be read (ValueError"),
    ("version: 1\njobs: [ {job_id: x\n", "invalid YAML ("),
    ("version: 1\n? [a]\n: 1\n", "found unhashable key"),
    ("version: 1\njobs: !!python/object/apply:os.system [true]\n", "invalid YAML"),
    ("version: true\njobs: []\n", "version True is not supported"),
    ("version: 1\njobs: {a: 1}\n", "'jobs' must be a list, not mapping of 1 key"),
])
def test_every_unreadable_manifest_is_a_manifest_error_naming_the_file(text, reason):
    """Deep nesting used to raise RecursionError out of the parser; a bad date a ValueError: both escaped."""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, version="v7")
    assert str(caught.value).startswith("gpu_jobs/manifest.yaml: ")
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300
    assert caught.value.version == "v7"


def test_manifest_over_the_byte_limit_is_refused_before_parsing(monkeypatch):
    monkeypatch.setattr(bounded_yaml, "MAX_BYTES", 1000)
    text = yaml.safe_dump({"version": 1, "jobs": [make_job(f"j{i}") for i in range(20)]})
    with pytest.raises(ManifestError, match=r"gpu_jobs/manifest.yaml: 0\.0 MiB, more than the 0 MiB"):
        parse_manifest(text)


def test_a_normal_manifest_with_anchors_and_merge_keys_still_reads():
    text = ("version: 1\ncommon: &common {job_type: tts, mode: training, model: {type: StableTTS}}\n"
            "jobs:\n  - {<<: *common, job_id: a1}\n  - {<<: *common, job_id: a2, epochs: 5}\n")
    manifest = parse_manifest(text)
    assert [j.job_id for j in manifest.jobs] == ["a1", "a2"] and not manifest.problems


def test_describe_value_is_short_for_anything():
    assert bounded_yaml.describe_value("JHN 1:1") == "'JHN 1:1'"
    assert bounded_yaml.describe_value("abc" * 400) == f"'{('abc' * 14)[:40]}…' (str, 1200 chars)"
    assert bounded_yaml.describe_value([[1]] * 9) == "list of 9 items"
    assert bounded_yaml.describe_value({"a": 1}) == "mapping of 1 key"
    assert bounded_yaml.describe_value(10 ** 60) == "a number of 61 digits"
    assert bounded_yaml.describe_value(None) == "None"


# -- response.yaml --------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize("text, reason", [
    ("state: &s " + "[" * 3 + "x" + "]" * 3 + "\ntimestamp: 2026-01-01T00:00:00Z\n", "state list of 1 item"),
    ("worker_id: [a, b]\nstate: running\ntimestamp: 2026-01-01T00:00:00Z\n", "worker_id must be text"),
    ("claim_id: {a: 1}\nstate: running\ntimestamp: 2026-01-01T00:00:00Z\n", "claim_id must be text"),
    ("state: running\ntimestamp: 2026-01-01T00:00:00Z\nretry_count: lots\n", "retry_count must be a whole number"),
    (billion_laughs(9).replace("version: 1", "state: running"), "aliases are expanded"),
])
def test_hostile_response_yaml_is_a_short_response_error(text, reason):
    with pytest.raises(ResponseError) as caught:
        JobResponse.parse(text)
    assert reason in str(caught.value) and len(str(caught.value)) < 200


def test_response_of_the_earlier_worker_parses():
    text = ("worker_id: old-gpu-1\nstate: running\ntimestamp: '2026-03-24T10:11:12.345678+00:00'\n"
            "retry_count: 1\nepochs_completed: 4\nstatus_message: Training epoch 4\n")
    response = JobResponse.parse(text)
    assert (response.worker_id, response.state, response.retry_count, response.epochs_completed) == (
        "old-gpu-1", JobState.RUNNING, 1, 4)
    assert response.lease_expires_at is None and response.claim_id is None


# -- voice_reference as the plugin writes it -------------------------------------------------------------
@pytest.mark.parametrize("written, expected", [
    (r"C:\Users\ana\Projects\myproj\.project\attachments\JHN\audio-1.webm", ".project/attachments/JHN/audio-1.webm"),
    (r"C:\Users\ana\myproj\.project\attachments\files\JHN\audio-1.webm",
     ".project/attachments/files/JHN/audio-1.webm"),
    ("/home/ana/projects/myproj/.project/attachments/GEN/audio-2.webm", ".project/attachments/GEN/audio-2.webm"),
    (".project/attachments/pointers/JHN/audio-3.webm", ".project/attachments/pointers/JHN/audio-3.webm"),
    (r".project\attachments\pointers\JHN\audio-4.webm", ".project/attachments/pointers/JHN/audio-4.webm"),
    ("/home/a/.project/attachments/old/proj/.project/attachments/JHN/a.webm", ".project/attachments/JHN/a.webm"),
    # the innermost .project/attachments/ is the project's own (the same rule as a take's url, codex.layout)
    ("C:/x/.project/attachments/old/.project/attachments/files/GEN/a.webm", ".project/attachments/files/GEN/a.webm"),
])
def test_voice_reference_absolute_or_windows_path_maps_into_the_project(written, expected):
    manifest = parse_manifest(yaml.safe_dump({"version": 1, "jobs": [make_job("v1", voice_reference=written)]}))
    assert not manifest.problems, manifest.problems
    assert manifest.jobs[0].raw["voice_reference"] == expected


@pytest.mark.parametrize("written, reason", [
    ("/etc/passwd", "is absolute"),
    (r"C:\Users\ana\voice.webm", "is not a plain project path"),
    ("/home/ana/p/.project/attachments/../../../etc/passwd", "leaves the project"),
    (r"C:\p\.project\attachments\files\..\..\..\metadata.json", "leaves the project"),
    (["a.webm"], "must be a path in the project, not list of 1 item"),
])
def test_voice_reference_outside_the_project_stays_refused_naming_the_field(written, reason):
    manifest = parse_manifest(yaml.safe_dump({"version": 1, "jobs": [make_job("v2", voice_reference=written)]}))
    (problem,) = manifest.problems
    assert problem.job_id == "v2"
    assert "field 'voice_reference'" in problem.message and reason in problem.message


def test_base_checkpoint_stays_a_plain_project_path():
    job = make_job("b1", model={"type": "Probe", "base_checkpoint": "/home/ana/p/.project/attachments/x.pt"})
    manifest = parse_manifest(yaml.safe_dump({"version": 1, "jobs": [job]}))
    assert "field 'model.base_checkpoint'" in manifest.problems[0].message


# -- decisions --------------------------------------------------------------------------------------------
def _running(worker_id: str, *, minutes_ago: float, expires_in: float | None, claim_id: str | None = "c0ffee11"):
    now = jobs.utc_now()
    return JobResponse(worker_id=worker_id, state=JobState.RUNNING, timestamp=now - timedelta(minutes=minutes_ago),
                       lease_expires_at=None if expires_in is None else now + timedelta(minutes=expires_in),
                       claim_id=claim_id, retry_count=1)


def _job():
    return parse_manifest(yaml.safe_dump({"version": 1, "jobs": [make_job("d1")]})).jobs[0]


def test_a_live_claim_under_our_own_name_is_not_ours_unless_proven():
    response = _running("gpu-1", minutes_ago=0.1, expires_in=20)
    kwargs = dict(worker_id="gpu-1", now=jobs.utc_now(), max_retries=3)
    held = decide(_job(), response, **kwargs)
    assert held.action is Action.SKIP and "this worker's name" in held.reason
    assert decide(_job(), response, predecessor_claims=frozenset({"c0ffee11"}), **kwargs).action is Action.RESUME_OWN
    expired = _running("gpu-1", minutes_ago=40, expires_in=-10)
    assert decide(_job(), expired, **kwargs).action is Action.TAKE_OVER  # an expired lease: an ordinary takeover


def test_a_claim_of_the_earlier_worker_holds_for_its_claim_window():
    kwargs = dict(worker_id="new-1", now=jobs.utc_now(), max_retries=3)
    two_hours = _running("old-1", minutes_ago=120, expires_in=None, claim_id=None)
    assert decide(_job(), two_hours, **kwargs).action is Action.SKIP
    assert decide(_job(), two_hours, legacy_claim_hours=1, **kwargs).action is Action.TAKE_OVER
    day_old = _running("old-1", minutes_ago=25 * 60, expires_in=None, claim_id=None)
    assert decide(_job(), day_old, **kwargs).action is Action.TAKE_OVER


# -- the operator's listing ------------------------------------------------------------------------------
def test_list_jobs_shows_the_good_projects_and_a_line_for_the_bad_one(tmp_path, monkeypatch):
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    good, bomb, deep = LocalEnv(tmp_path / "good"), LocalEnv(tmp_path / "bomb"), LocalEnv(tmp_path / "deep")
    good.write_manifest([make_job("fine1")])
    bomb.write_file("gpu_jobs/manifest.yaml", billion_laughs(9))
    deep.write_file("gpu_jobs/manifest.yaml", "version: 1\njobs: " + "[" * 3000 + "]" * 3000 + "\n")
    result = CliRunner().invoke(worker_entry.main, ["--local", str(good.root), "--local", str(bomb.root),
                                                    "--local", str(deep.root), "--list-jobs"])
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_codex_worker", False)]:
        root.removeHandler(handler)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("fine1" in line and "pending" in line for line in lines)
    bad = [line for line in lines if "invalid manifest" in line]
    assert len(bad) == 2 and all("gpu_jobs/manifest.yaml: " in line for line in bad), lines
    assert any("1,000,000 values" in line for line in bad) and any("nested more than" in line for line in bad)
