"""The worker loop and the lease keeper under hostile manifests, namesake workers, the earlier worker's claims
and the plugin's real voice_reference paths, on the local backend and on the GitLab test server."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import yaml

from conftest import LocalEnv, executions, fast_config, make_job, run_worker, run_worker_in_thread
from jobs import format_time, utc_now
from local_store import LocalSource
from storage import ProjectSource
from test_jobs_hostile import billion_laughs

DEEP = "version: 1\njobs: " + "[" * 3000 + "]" * 3000 + "\n"


class CountingSource(ProjectSource):
    """A source that counts polls, so a test can let a worker poll several times."""

    def __init__(self, inner: ProjectSource):
        self.inner, self.polls = inner, 0
        self.polled = threading.Event()

    def poll(self):
        stores = self.inner.poll()
        self.polls += 1
        if self.polls >= 5:
            self.polled.set()
        return stores

    def note_scanned(self, store, *, has_open_jobs):
        self.inner.note_scanned(store, has_open_jobs=has_open_jobs)

    def close(self):
        self.inner.close()


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _events(caplog, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


# -- item 1 and 2: manifests the worker must refuse without hanging or crashing ---------------------------
@pytest.mark.timeout(120)
def test_hostile_manifests_are_reported_once_and_the_other_projects_served(tmp_path, record_dir, caplog):
    bad = {"bomb": billion_laughs(9), "deep": DEEP,
           "date": "version: 1\njobs:\n  - job_id: d1\n    submitted_at: 2026-13-45\n"}
    envs = {name: LocalEnv(tmp_path / name) for name in [*bad, "good"]}
    for name, text in bad.items():
        envs[name].write_file("gpu_jobs/manifest.yaml", text)
    envs["good"].write_manifest([make_job("g1")])
    source = CountingSource(LocalSource([env.root for env in envs.values()]))
    with caplog.at_level(logging.INFO):
        worker, thread = run_worker_in_thread(source, fast_config(tmp_path, loop_interval=0.05))
        envs["good"].wait_for(lambda: (envs["good"].response("g1") or {}).get("state") == "completed", 60)
        source.polls = 0
        source.polled.clear()
        assert source.polled.wait(60)  # five more polls over the same broken manifests
        worker.request_stop()
        thread.join(30)
    assert not thread.is_alive()
    invalid = _events(caplog, "manifest_invalid")
    for name in bad:
        mine = [r.getMessage() for r in invalid if r.project == str(envs[name].root)]
        assert len(mine) == 1, (name, mine)  # once per project and manifest version, not on every poll
        assert "gpu_jobs/manifest.yaml: " in mine[0] and len(mine[0]) < 400
    assert not _events(caplog, "scan_failed")  # no traceback from inside the parser
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.slow  # renewals must outlast the lease in real time, with two workers: ~12 s per backend
@pytest.mark.timeout(180)
def test_a_manifest_broken_mid_job_never_lets_the_lease_lapse(env, tmp_path, record_dir, caplog):
    """While the job runs, the manifest becomes unreadable for longer than the lease. The keeper goes on
    renewing (and says so), so a second worker polling all along never runs the job a second time."""
    job = make_job("keep1", probe={"behaviour": "succeed", "seconds": 12})
    env.write_manifest([job])
    lease = 2.0
    with caplog.at_level(logging.INFO):
        holder, holder_thread = run_worker_in_thread(env.source(), fast_config(tmp_path, lease_seconds=lease))
        env.wait_for(lambda: (env.response("keep1") or {}).get("epochs_completed", 0) >= 1, 60)
        other, other_thread = run_worker_in_thread(
            env.source(), fast_config(tmp_path, "worker-b", lease_seconds=lease, loop_interval=0.2))
        broken_at = utc_now()
        env.write_file("gpu_jobs/manifest.yaml", DEEP)
        env.wait_for(lambda: "cannot be read" in (env.response("keep1") or {}).get("status_message", ""), 60)
        # Renewed well past the moment the lease would have run out without renewals.
        env.wait_for(lambda: _time(env.response("keep1")["lease_expires_at"])
                     > broken_at + timedelta(seconds=3 * lease), 60)
        env.write_manifest([job])
        holder_thread.join(90)
        other.request_stop()
        other_thread.join(30)
    response = env.response("keep1")
    assert response["state"] == "completed" and response["worker_id"] == "worker-a", response
    assert response["retry_count"] == 0
    assert [event for _, event in executions(record_dir)].count("start") == 1
    notes = [r for r in _events(caplog, "manifest_invalid") if "carries on" in r.getMessage()]
    assert len(notes) == 1 and "gpu_jobs/manifest.yaml" in notes[0].getMessage()


# -- item 4: one worker name, one worker ----------------------------------------------------------------
@pytest.mark.timeout(120)
def test_two_live_workers_with_one_name_run_a_job_once(env, tmp_path, record_dir, caplog):
    """Same --worker-id, same work dir: the one that did not claim the job must not 'resume' it as its own
    (which used to hand the job back and forth without end)."""
    env.write_manifest([make_job("twin1", probe={"behaviour": "succeed", "seconds": 3})])
    with caplog.at_level(logging.INFO):
        pair = [run_worker_in_thread(env.source(), fast_config(tmp_path, "same-name", loop_interval=0.1))
                for _ in range(2)]
        env.wait_for(lambda: (env.response("twin1") or {}).get("state") == "completed", 90)
        for worker, _ in pair:
            worker.request_stop()
        for _, thread in pair:
            thread.join(30)
    assert [event for _, event in executions(record_dir)] == ["start", "done"]
    response = env.response("twin1")
    assert response["worker_id"] == "same-name" and response["retry_count"] == 0
    clashes = _events(caplog, "worker_id_clash")
    assert clashes, "the clash is said"
    assert all("twin1" in r.getMessage() and r.project == env.store.name for r in clashes)
    assert len(clashes) == 1  # once per claim, not on every poll


# -- item 4: claims of the earlier worker ----------------------------------------------------------------
def _legacy_response(hours_ago: float) -> str:
    """response.yaml as codex-job-worker writes a claim: no lease_expires_at, no claim_id, retry_count 1."""
    moment = utc_now() - timedelta(hours=hours_ago)
    return yaml.safe_dump({"worker_id": "old-worker", "state": "running", "timestamp": moment.isoformat(),
                           "retry_count": 1}, sort_keys=False)


def test_a_claim_of_the_earlier_worker_is_held_for_its_claim_window(env, tmp_path, record_dir):
    env.write_manifest([make_job("held", minutes_ago=5), make_job("stale", minutes_ago=4)])
    env.write_file("gpu_jobs/job_held/response.yaml", _legacy_response(2))
    env.write_file("gpu_jobs/job_stale/response.yaml", _legacy_response(25))
    run_worker(env.source(), fast_config(tmp_path))
    assert env.response("held")["worker_id"] == "old-worker"  # training for 2 h without a heartbeat: still its
    stale = env.response("stale")
    assert stale["state"] == "completed" and stale["worker_id"] == "worker-a" and stale["retry_count"] == 2
    assert [job for job, event in executions(record_dir) if event == "start"] == ["stale"]
    run_worker(env.source(), replace(fast_config(tmp_path), legacy_claim_hours=1.0))
    assert env.response("held")["state"] == "completed"


# -- item 3: voice_reference as the plugin writes it, and jobs refused before they start ----------------
def test_absolute_voice_reference_of_the_plugin_is_accepted(env, tmp_path, record_dir):
    env.write_manifest([
        make_job("win", minutes_ago=3, voice_reference=r"C:\Users\ana\Projects\myproj\.project\attachments\JHN"
                                                       r"\audio-1.webm"),
        make_job("posix", minutes_ago=2, voice_reference="/home/ana/myproj/.project/attachments/GEN/audio-2.webm"),
        make_job("outside", minutes_ago=1, voice_reference=r"C:\Users\ana\Music\voice.webm"),
    ])
    run_worker(env.source(), fast_config(tmp_path))
    assert env.response("win")["state"] == "completed"
    assert env.response("posix")["state"] == "completed"
    refused = env.response("outside")
    assert refused["state"] == "failed" and "field 'voice_reference'" in refused["error_message"]
    assert sorted(job for job, event in executions(record_dir) if event == "start") == ["posix", "win"]


def test_a_job_refused_before_it_starts_gets_a_log_saying_why(env, tmp_path, record_dir):
    env.write_manifest([
        make_job("voice", minutes_ago=4, voice_reference="/etc/passwd"),
        make_job("early", minutes_ago=3, canceled=True),
        make_job("crashy", minutes_ago=2),
    ])
    moment = utc_now() - timedelta(hours=1)
    env.write_file("gpu_jobs/job_crashy/response.yaml", yaml.safe_dump({
        "worker_id": "dead", "state": "running", "timestamp": format_time(moment), "claim_id": "dead",
        "lease_expires_at": format_time(moment + timedelta(minutes=30)), "retry_count": 3}))
    env.write_file("gpu_jobs/job_crashy/logs.txt", "epoch 1: CUDA out of memory\n")
    run_worker(env.source(), fast_config(tmp_path, max_retries=3))
    assert executions(record_dir) == []
    voice = env.read_file("gpu_jobs/job_voice/logs.txt").decode()
    assert env.response("voice")["state"] == "failed"
    assert "failed" in voice and "field 'voice_reference'" in voice and "absolute" in voice
    assert "canceled before it started" in env.read_file("gpu_jobs/job_early/logs.txt").decode()
    crashy = env.read_file("gpu_jobs/job_crashy/logs.txt").decode()
    assert crashy.startswith("epoch 1: CUDA out of memory\n")  # the crashed worker's log is kept
    assert "gave up" in crashy and env.response("crashy")["state"] == "failed"
