"""What rides along with response.yaml: the metrics CSV with the heartbeat that counts its epoch, logs.txt
only when it changed, the resumable state dropped when a job ends for good, and a final state that lands
even when the server refuses the commit's size.

Every commit is observed, not sampled: on the local backend each commit is recorded as it returns (the
worker runs in this process and every write goes through it); on the GitLab test server the branch history
is read back afterwards. Both files are read from the same commit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import LocalEnv, fast_config, make_job, run_worker, run_worker_in_thread
from jobs import claim_job, parse_manifest
from job_process import ExecutionSettings, JobExecution
from local_store import LocalProjectStore
from worker import Worker

METRICS = "checkpoint/training_metrics.csv"


def probe_job(job_id: str, after: str, epochs: int = 4, **probe) -> dict:
    return make_job(job_id, model={"type": "PublishProbe"}, epochs=epochs,
                    probe={"after": after, "seconds": 0.3, **probe})


def csv_epochs(raw: bytes | None) -> list[int]:
    if raw is None:
        return []
    return [int(line.split(",")[0]) for line in raw.decode().splitlines()[1:] if line]


class Commits:
    """(response.yaml, epochs in the metrics CSV) as the project held them right after each commit."""

    def __init__(self, env, job_id: str, monkeypatch):
        self.env, self.job_id, self.local, self.local_messages = env, job_id, [], []
        if env.kind == "local":
            original = LocalProjectStore.commit

            def recording(store, actions, message):
                answer = original(store, actions, message)
                self.local.append(self._read(env.read_file))
                self.local_messages.append(message)
                return answer

            monkeypatch.setattr(LocalProjectStore, "commit", recording)

    def _read(self, read) -> tuple[dict | None, list[int]]:
        raw = read(f"gpu_jobs/job_{self.job_id}/response.yaml")
        return (yaml.safe_load(raw) if raw else None), csv_epochs(read(f"gpu_jobs/job_{self.job_id}/{METRICS}"))

    def snapshots(self) -> list[tuple[dict, list[int]]]:
        if self.env.kind == "local":
            found = self.local
        else:
            server, project = self.env.server, self.env.project
            found = [self._read(lambda path: server.read_lfs(project, path, commit["id"])
                                or server.read(project, path, commit["id"]))
                     for commit in reversed(server.commits(project))]
        return [(response, rows) for response, rows in found if response is not None]

    def messages(self) -> list[str]:
        if self.env.kind == "local":
            return list(self.local_messages)
        return [commit["message"] for commit in reversed(self.env.server.commits(self.env.project))]


def assert_chart_matches_every_heartbeat(snapshots) -> None:
    assert snapshots, "no commit of the job was seen"
    for response, rows in snapshots:
        assert rows == list(range(1, response["epochs_completed"] + 1)), (response, rows)
    running = {r["epochs_completed"] for r, _ in snapshots if r["state"] == "running"}
    assert len(running - {0}) >= 2, running  # the chart moved while the job ran, not only at its end


def resume_files(env, job_id: str) -> list[str]:
    prefix = f"gpu_jobs/job_{job_id}/resume/"
    if env.kind == "local":
        folder = env.root / prefix
        return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
    return sorted(p[len(prefix):] for p in env.server.files(env.project) if p.startswith(prefix))


def run_until(env, job_id: str, ending: str, config) -> dict:
    """Run the probe job until it ends by itself, or stop it ``ending``'s way after three epochs."""
    worker, thread = run_worker_in_thread(env.source(), config)
    if ending in ("cancel", "release"):
        env.wait_for(lambda: (env.response(job_id) or {}).get("epochs_completed", 0) >= 3)
        if ending == "cancel":
            env.write_manifest([{**probe_job(job_id, "loop"), "canceled": True}])
        else:
            worker.request_stop()
    thread.join(60)
    assert not thread.is_alive()
    return env.response(job_id)


ENDINGS = {"succeed": ("succeed", "completed"), "fail": ("fail", "failed"), "cancel": ("loop", "canceled"),
           "release": ("loop", "running")}


@pytest.mark.parametrize("ending", ENDINGS)
def test_the_metrics_csv_rides_with_every_heartbeat_and_every_stop(env, tmp_path, monkeypatch, ending):
    after, state = ENDINGS[ending]
    env.write_manifest([probe_job("m1", after, epochs=6)])
    commits = Commits(env, "m1", monkeypatch)
    final = run_until(env, "m1", ending, fast_config(tmp_path))
    assert final["state"] == state, final
    snapshots = commits.snapshots()
    assert_chart_matches_every_heartbeat(snapshots)
    assert snapshots[-1][0] == final and final["epochs_completed"] >= 3
    if ending == "release":
        # A released job keeps its resumable state, saved at the epoch the response counts.
        assert "released_at" in final
        assert resume_files(env, "m1") == ["state.bin"]
        state_bytes = env.read_file("gpu_jobs/job_m1/resume/state.bin")
        assert int.from_bytes(state_bytes[:4], "big") == final["epochs_completed"]
    else:
        # Nobody will resume a job that ended for good: its state leaves the translators' repository.
        assert resume_files(env, "m1") == []
    uploads = [m for m in commits.messages() if "resumable training state" in m]
    # The first epoch's state is uploaded (then hourly); a released job saves its last epoch on the way
    # out, a canceled one does not: its final write would only remove it again.
    assert len(uploads) == (2 if ending == "release" else 1), commits.messages()


@pytest.mark.parametrize("ending", ["cancel", "fail", "release"])
def test_a_shared_checkpoint_dir_is_cleared_only_when_the_job_ends_for_good(env, tmp_path, ending):
    after, state = ENDINGS[ending]
    env.write_manifest([probe_job("s1", after, epochs=4)])
    bucket = tmp_path / "bucket"
    config = dataclasses.replace(fast_config(tmp_path), checkpoint_dir=bucket)
    final = run_until(env, "s1", ending, config)
    assert final["state"] == state, final
    saved = list(bucket.rglob("state.bin"))
    if ending == "release":
        assert len(saved) == 1 and int.from_bytes(saved[0].read_bytes()[:4], "big") == final["epochs_completed"]
    else:
        assert saved == []
    assert resume_files(env, "s1") == []  # with a bucket, nothing goes into the project


@pytest.mark.parametrize("how", ["canceled", "gave up"])
def test_a_job_closed_without_running_it_leaves_no_resumable_state(env, tmp_path, how):
    """A worker that finds a dead worker's job canceled, or past its retry limit, closes it without running it:
    the state that worker left in the project and in the bucket goes too, since nobody will resume it."""
    from datetime import timedelta

    from jobs import JobResponse, JobState, utc_now

    long_ago = utc_now() - timedelta(hours=2)
    env.write_manifest([{**probe_job("u1", "succeed"), "canceled": how == "canceled"}])
    env.write_file("gpu_jobs/job_u1/response.yaml", JobResponse(
        worker_id="gone", state=JobState.RUNNING, timestamp=long_ago, claimed_at=long_ago,
        lease_expires_at=long_ago + timedelta(minutes=30), claim_id="c0", retry_count=3).dump())
    env.write_file("gpu_jobs/job_u1/resume/state.bin", b"\x00\x00\x00\x02epoch two")
    env.write_file("gpu_jobs/job_u1/resume/best_model.pt", b"weights")
    config = dataclasses.replace(fast_config(tmp_path, max_retries=3), checkpoint_dir=tmp_path / "bucket")
    slug_dirs = {Worker(env.source(), config)._shared_resume_dir(store, "u1") for store in env.source().poll()}
    for folder in slug_dirs:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "state.bin").write_bytes(b"left by the dead worker")
    run_worker(env.source(), config)
    final = yaml.safe_load(env.read_file("gpu_jobs/job_u1/response.yaml"))
    assert final["state"] == ("canceled" if how == "canceled" else "failed"), final
    assert resume_files(env, "u1") == []
    assert all(not folder.exists() for folder in slug_dirs)
    assert "without running it" in env.read_file("gpu_jobs/job_u1/logs.txt").decode()


def test_a_final_state_too_large_for_the_server_lands_with_less_riding_along(gitlab_env, tmp_path, monkeypatch):
    env = gitlab_env
    # 200 KB of log: the 256 KB tail that rides along cannot pass a 30 KB body cap, a 16 KB tail can.
    env.write_manifest([probe_job("big", "succeed", epochs=3, log_bytes=200_000)])
    env.server.app.max_commit_bytes = 30_000
    commits = Commits(env, "big", monkeypatch)
    run_worker(env.source(), fast_config(tmp_path))
    final = env.response("big")
    assert final["state"] == "completed", final
    assert final["epochs_completed"] == 3 and csv_epochs(env.read_file(f"gpu_jobs/job_big/{METRICS}")) == [1, 2, 3]
    logs = env.read_file("gpu_jobs/job_big/logs.txt").decode()
    assert len(logs) <= 17 * 1024 and "earlier lines cut" in logs and "job big completed" in logs
    # The heartbeats went out without the log instead of failing: the lease never lapsed.
    assert_chart_matches_every_heartbeat(commits.snapshots())


def test_renewals_carry_the_log_only_when_it_changed(tmp_path, monkeypatch):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("lg")])
    store = env.store
    job = parse_manifest(env.read_file("gpu_jobs/manifest.yaml")).jobs[0]
    lease = claim_job(store, job, worker_id="w", lease_seconds=60)
    execution = JobExecution(lease, Path("unused.py"), tmp_path / "work", ExecutionSettings())
    execution.job_log.path.parent.mkdir(parents=True, exist_ok=True)
    sent: list[list[str]] = []
    original = LocalProjectStore.commit
    monkeypatch.setattr(LocalProjectStore, "commit",
                        lambda self, actions, message: (sent.append([a.path for a in actions]),
                                                        original(self, actions, message))[1])
    log = "gpu_jobs/job_lg/logs.txt"
    execution.job_log.path.write_text("line one\n")
    execution._renew()
    execution._renew()
    with execution.job_log.path.open("a") as fh:
        fh.write("line two\n")
    execution._renew()
    assert [log in paths for paths in sent] == [True, False, True]
    assert env.read_file(log) == b"line one\nline two\n"
    assert yaml.safe_load(env.read_file("gpu_jobs/job_lg/response.yaml"))["state"] == "running"


# -- a real training run ------------------------------------------------------------------------------
SHORT_VERSES = ["JHN 1:2", "JHN 1:4", "JHN 1:6", "JHN 1:11", "GEN 1:1", "GEN 1:3"]
TRAININGS = {"tts": {"job_type": "tts", "model": {"type": "StableTTS", "preset": "tiny"}, "epochs": 4},
             "asr": {"job_type": "asr", "model": {"type": "W2V2BERT", "preset": "tiny"}, "epochs": 6}}


@pytest.mark.slow  # a real tiny TTS / ASR training through the worker: ~10 s each
@pytest.mark.parametrize("kind, backend, bucket", [("tts", "local", True), ("asr", "gitlab", False)])
def test_a_real_training_publishes_its_metrics_with_each_epoch(kind, backend, bucket, tmp_path, monkeypatch,
                                                               request):
    from demo_env import DemoProject, GitLabDemoProject

    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)
    env = (DemoProject(tmp_path / "project") if backend == "local"
           else GitLabDemoProject(request.getfixturevalue("gitlab_server"), tmp_path / "demo"))
    env.write_manifest([{"job_id": "real", **TRAININGS[kind], "mode": "training", "canceled": False,
                         "submitted_at": "2025-10-15T19:20:00.000Z", "training": {"include_verses": SHORT_VERSES}}])
    commits = Commits(env, "real", monkeypatch)
    config = fast_config(tmp_path, handler_paths=(), grace_seconds=30.0)
    if bucket:  # --checkpoint-dir: the resumable state never goes to the project, the metrics still do
        config = dataclasses.replace(config, checkpoint_dir=tmp_path / "bucket")
    run_worker(env.source(), config)
    final = env.response("real")
    assert final["state"] == "completed", final.get("error_message")
    assert final["epochs_completed"] == TRAININGS[kind]["epochs"]
    assert_chart_matches_every_heartbeat(commits.snapshots())
