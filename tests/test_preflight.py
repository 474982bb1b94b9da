"""Preflight (worker_entry.py --check): each check alone, and the whole table against the GitLab test server."""

from __future__ import annotations

import re
from collections import namedtuple
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

import preflight
import worker_entry
from conftest import ROOT
from gitlab_fixtures import FAST_RETRY
from gitlab_jobs import GitLabAuthError, GitLabProjectStore, GitLabSource
from local_store import LocalSource
from preflight import Status
from storage import FileAction

MANIFEST = "version: 1\njobs: []\n"




@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def seed_hub_cache(cache: Path, models) -> None:
    """Files laid out as huggingface_hub caches them: refs/main names a snapshot holding the files."""
    for repo, files in models:
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
        for name in files:
            target = folder / "snapshots" / "0123456789abcdef0123456789abcdef01234567" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"weights")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in tmp_path, offline."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def seeded_hub_cache(hub_cache) -> Path:
    seed_hub_cache(hub_cache, preflight.default_models())
    return hub_cache


def rows(output: str) -> dict[str, tuple[str, str]]:
    """check → (status, detail) from the printed table."""
    found = {}
    for line in output.splitlines():
        match = re.match(r"^(\S.*?)\s{2,}(ok|warn|FAIL)\s{2,}(.*)$", line)
        if match:
            found[match.group(1)] = (match.group(2), match.group(3))
    return found


def gitlab_args(server, tmp_path, *extra) -> list[str]:
    return ["--check", "--gitlab-url", server.url, "--token", server.token, "--work-dir", str(tmp_path / "work"),
            "--min-free-gb", "0", *extra]


# -- the whole table -------------------------------------------------------------------------------------
def test_check_against_gitlab_with_a_good_token(runner, gitlab_server, tmp_path, seeded_hub_cache, no_gpu):
    gitlab_server.add_project("team/with-jobs", files={"gpu_jobs/manifest.yaml": MANIFEST})
    gitlab_server.add_project("team/no-jobs", files={"metadata.json": "{}"})
    result = runner.invoke(worker_entry.main, gitlab_args(gitlab_server, tmp_path))
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table["token"][0] == "ok" and "user codex-worker" in table["token"][1] and "api" in table["token"][1]
    assert table["projects"] == ("ok", "2 visible, 1 with gpu_jobs/manifest.yaml")
    assert table["gpu"][0] == "warn" and "CPU only" in table["gpu"][1]
    assert table["disk"][0] == "ok"
    assert table["model facebook/w2v-bert-2.0"] == ("ok", "in the Hugging Face cache")
    assert table["model KdaiP/StableTTS1.1"] == ("ok", "in the Hugging Face cache")
    assert table["audio codecs"][0] == "ok"
    assert "espeak-ng" in table
    assert "0 failed: ready for jobs" in result.output
    assert gitlab_server.token not in result.output


def test_token_without_write_access_fails_and_is_never_printed(runner, gitlab_server, tmp_path, seeded_hub_cache,
                                                               no_gpu):
    gitlab_server.set_token(scopes=["read_api", "read_repository"])
    gitlab_server.add_project("team/with-jobs", files={"gpu_jobs/manifest.yaml": MANIFEST})
    result = runner.invoke(worker_entry.main, gitlab_args(gitlab_server, tmp_path, "--verbose"))
    assert result.exit_code == 1, result.output
    table = rows(result.output)
    assert [check for check, (status, _) in table.items() if status == "FAIL"] == ["token"]
    assert "scopes read_api, read_repository: needs api" in table["token"][1]
    assert "jobs would fail on this machine" in result.output
    assert gitlab_server.token not in result.output
    assert gitlab_server.token not in (result.stderr or "")


def test_local_check_has_no_token_row(runner, tmp_path, seeded_hub_cache, no_gpu):
    project = tmp_path / "project"
    (project / "gpu_jobs").mkdir(parents=True)
    (project / "gpu_jobs" / "manifest.yaml").write_text(MANIFEST)
    result = runner.invoke(worker_entry.main, ["--check", "--local", str(project), "--work-dir",
                                               str(tmp_path / "work"), "--min-free-gb", "0"])
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert "token" not in table
    assert table["projects"] == ("ok", "1 visible, 1 with gpu_jobs/manifest.yaml")


def test_too_little_disk_fails_the_check(runner, tmp_path, seeded_hub_cache, no_gpu):
    result = runner.invoke(worker_entry.main, ["--check", "--local", str(tmp_path), "--work-dir",
                                               str(tmp_path / "work"), "--min-free-gb", "1e9"])
    assert result.exit_code == 1
    status, detail = rows(result.output)["disk"]
    assert status == "FAIL" and "jobs need at least 1e+09 GB (--min-free-gb)" in detail


def test_cuda_asked_for_but_absent_fails(runner, tmp_path, seeded_hub_cache, no_gpu):
    result = runner.invoke(worker_entry.main, ["--check", "--local", str(tmp_path), "--work-dir",
                                               str(tmp_path / "work"), "--min-free-gb", "0", "--device", "cuda"])
    assert result.exit_code == 1
    assert rows(result.output)["gpu"][0] == "FAIL"


def test_a_crashing_check_is_a_fail_row(tmp_path, seeded_hub_cache, no_gpu, monkeypatch):
    def broken():
        raise RuntimeError("libespeak-ng.so: cannot open shared object file")

    monkeypatch.setattr(preflight, "check_espeak", broken)
    results = preflight.run_checks(LocalSource([tmp_path]), work_dir=tmp_path / "work", min_free_gb=0)
    crashed = next(r for r in results if r.check == "espeak-ng")
    assert crashed.status is Status.FAIL and "libespeak-ng.so" in crashed.detail
    assert preflight.failed(results)


# -- the token -------------------------------------------------------------------------------------------
@pytest.fixture
def source(gitlab_server):
    source = GitLabSource(gitlab_server.url, gitlab_server.token, retry=FAST_RETRY)
    yield source
    source.close()


@pytest.mark.parametrize("scopes", [["read_api"], ["read_api", "write_repository"], ["read_user"]])
def test_token_without_api_scope_fails(gitlab_server, source, scopes):
    gitlab_server.set_token(scopes=scopes)
    result = preflight.check_token(source)
    assert result.status is Status.FAIL
    assert f"scopes {', '.join(sorted(scopes))}: needs api" in result.detail


def test_write_repository_does_not_open_the_rest_api_to_writes(gitlab_server, monkeypatch):
    """Why the check wants api: GitLab takes commits over the REST API only from api tokens."""
    gitlab_server.set_token(scopes=["read_api", "write_repository"])
    gitlab_server.add_project("team/a", files={"gpu_jobs/manifest.yaml": MANIFEST})
    store = GitLabProjectStore(gitlab_server.url, "team/a", token=gitlab_server.token, retry=FAST_RETRY)
    try:
        assert store.read("gpu_jobs/manifest.yaml") is not None  # read_api reads
        with pytest.raises(GitLabAuthError, match="HTTP 403"):
            store.commit([FileAction.create("gpu_jobs/job_1/response.yaml", "state: running\n")], "claim")
    finally:
        store.close()
    assert "gpu_jobs/job_1/response.yaml" not in gitlab_server.files("team/a")


def test_token_with_api_scope_passes_and_names_its_user(source):
    result = preflight.check_token(source)
    assert result.status is Status.OK
    assert result.detail == "user codex-worker; scopes api"


def test_gitlab_without_the_token_endpoint_is_a_warning(gitlab_server, source):
    gitlab_server.set_token(self_endpoint=False)
    result = preflight.check_token(source)
    assert result.status is Status.WARN and "does not tell a token's scopes" in result.detail


def test_token_about_to_expire_is_a_warning(gitlab_server, source):
    gitlab_server.set_token(expires_at=date.today() + timedelta(days=2))
    result = preflight.check_token(source)
    assert result.status is Status.WARN and "renew it soon" in result.detail


def test_refused_token_fails(gitlab_server):
    source = GitLabSource(gitlab_server.url, "glpat-wrong-token", retry=FAST_RETRY)
    try:
        result = preflight.check_token(source)
    finally:
        source.close()
    assert result.status is Status.FAIL and "GitLab refused the token" in result.detail
    assert "glpat-wrong-token" not in result.detail


def test_no_visible_project_is_a_warning(source):
    result = preflight.check_projects(source)
    assert result.status is Status.WARN and "no project visible" in result.detail


# -- the machine -----------------------------------------------------------------------------------------
def test_cpu_only_is_a_warning_unless_cuda_was_asked_for(no_gpu):
    auto = preflight.check_gpu("auto")
    assert auto.status is Status.WARN and auto.detail.startswith("CPU only")
    assert preflight.check_gpu("cuda").status is Status.FAIL
    assert preflight.check_gpu("auto", ["0"]).status is Status.FAIL
    assert preflight.check_gpu("cpu").status is Status.OK


@pytest.fixture
def two_gpus(monkeypatch):
    """torch sees two GPUs; ``_matmul_on`` (the part that needs real CUDA) answers from ``gpus``."""
    import torch

    gpus = {0: ("NVIDIA L4 (22 GiB)", "bf16"), 1: ("Tesla T4 (15 GiB)", "fp32")}

    def matmul_on(index):
        answer = gpus[index]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(preflight, "_matmul_on", matmul_on)
    return gpus


def test_every_gpu_is_checked(two_gpus):
    result = preflight.check_gpu("auto")
    assert result.status is Status.WARN  # the T4 has no bf16
    assert "0: NVIDIA L4 (22 GiB); 1: Tesla T4 (15 GiB); GPU 1 has no bf16: training runs in fp32" in result.detail
    only_l4 = preflight.check_gpu("cuda", ["0"])
    assert only_l4.status is Status.OK and "0: NVIDIA L4 (22 GiB); bf16 matmul ok" in only_l4.detail


def test_a_gpu_that_fails_its_matmul_fails_the_check(two_gpus):
    two_gpus[1] = RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
    result = preflight.check_gpu("auto")
    assert result.status is Status.FAIL
    assert result.detail == "GPU 1 failed a matmul: RuntimeError: CUDA error: an illegal memory access was encountered"


def test_gpus_that_torch_does_not_see_fail(two_gpus):
    result = preflight.check_gpu("auto", ["0", "2"])
    assert result.status is Status.FAIL and result.detail == "--gpus names GPU 2 but torch sees 2"


def test_models_in_the_cache_pass_offline(seeded_hub_cache):
    results = preflight.check_models(hub_reachable=lambda: pytest.fail("the hub must not be asked"))
    assert [(r.check, r.status) for r in results] == [("model facebook/w2v-bert-2.0", Status.OK),
                                                      ("model KdaiP/StableTTS1.1", Status.OK)]


def test_models_missing_offline_fail_naming_repo_and_file(hub_cache):
    seed_hub_cache(hub_cache, [("facebook/w2v-bert-2.0", ["config.json"])])  # weights missing
    results = {r.check: r for r in preflight.check_models(hub_reachable=lambda: False)}
    asr = results["model facebook/w2v-bert-2.0"]
    assert asr.status is Status.FAIL and asr.detail.startswith("model.safetensors not in the Hugging Face cache")
    tts = results["model KdaiP/StableTTS1.1"]
    assert tts.status is Status.FAIL and "StableTTS/checkpoint_0.pt, vocoders/vocos.pt" in tts.detail


def test_models_missing_but_downloadable_pass(hub_cache):
    results = preflight.check_models(hub_reachable=lambda: True)
    assert all(r.status is Status.OK and "first job downloads" in r.detail for r in results)


def test_offline_mode_counts_as_unreachable(hub_cache):
    """Without a stub: HF_HUB_OFFLINE=1 must make the real reachability check say no, without a connection."""
    results = preflight.check_models([("facebook/w2v-bert-2.0", ["config.json"])])
    assert results[0].status is Status.FAIL


def test_disk_threshold(tmp_path, monkeypatch):
    assert preflight.check_disk(tmp_path / "work", 0).status is Status.OK
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage(100e9, 95e9, 5e9))
    low = preflight.check_disk(tmp_path / "work", 20)
    assert low.status is Status.FAIL and low.detail.startswith("5.0 GB free")


def test_audio_codecs_round_trip():
    result = preflight.check_audio_codecs()
    assert result.status is Status.OK, result.detail
    assert result.detail == "webm, ogg, mp3, m4a, wav encode and decode"


def test_a_codec_that_cannot_encode_fails_by_name(monkeypatch):
    import preprocess_audio

    real = preprocess_audio.encode_audio

    def no_mp3(samples, rate, dest, *args, **kwargs):
        if str(dest).endswith(".mp3"):
            raise ValueError("Unknown encoder 'libmp3lame'")
        return real(samples, rate, dest, *args, **kwargs)

    monkeypatch.setattr(preprocess_audio, "encode_audio", no_mp3)
    result = preflight.check_audio_codecs(("wav", "mp3"))
    assert result.status is Status.FAIL
    assert result.detail == "cannot encode and decode mp3 (ValueError: Unknown encoder 'libmp3lame')"


def test_espeak_missing_is_a_warning(monkeypatch):
    from StableTTS.text import espeak

    monkeypatch.setattr(espeak, "espeak_available", lambda: False)
    result = preflight.check_espeak()
    assert result.status is Status.WARN and "romanised" in result.detail


# -- the SkyPilot task -----------------------------------------------------------------------------------
def test_skypilot_checks_the_machine_before_the_worker_starts():
    run = yaml.safe_load((ROOT / "skypilot_worker.yaml").read_text())["run"]
    check = run.index("worker_entry.py --check")
    start = run.index("exec .venv/bin/python worker_entry.py")
    assert check < start
    assert "--device cuda" in run[check:start]  # a GPU worker whose GPU is gone claims nothing
    assert "set -e" in run[:check]  # a failed check ends the task before the worker starts
