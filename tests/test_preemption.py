"""Spot preemption end to end: real training jobs (tiny TTS and ASR presets) stopped mid-run and finished
by another worker process, on the local backend and on the GitLab test server.

A worker is stopped the two ways a spot machine goes: SIGTERM to its process group (the job is released and
its resumable state saved on the way out; the state lives in the job folder) or kill -9 (nothing runs on the
way out; the state lives in ``--checkpoint-dir``, the bucket mount). Then another worker takes the job over
(after a kill -9, once the lease has run out; or at once when it is the same worker id restarted, as SkyPilot
restarts a recovered job). Each worker's own job log says which epochs it finished. What must hold:

* the second worker trains exactly the epochs after the last saved one, so the saved epochs of the first
  plus the epochs of the second are ``epochs``, with no finished epoch trained twice; a graceful stop loses
  no work, a kill -9 at most the epoch in flight;
* ``epochs_completed`` in response.yaml, watched throughout, never goes backwards and ends at ``epochs``;
* the metrics CSV has one row per epoch, and no resumable state is left once the job is completed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from demo_env import DemoProject, GitLabDemoProject
from gitlab_jobs import TOKEN_ENV

pytestmark = pytest.mark.slow

EPOCHS = {"tts": 12, "asr": 12}  # tiny epochs take a fraction of a second: enough of them to stop one mid-run
SHORT_VERSES = ["JHN 1:2", "JHN 1:4", "JHN 1:6", "JHN 1:11", "GEN 1:1", "GEN 1:3"]  # 6 verses, 22 s of speech
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Kind:
    job: dict
    finished_epoch: re.Pattern   # a line of the job log saying an epoch finished
    resumed: re.Pattern          # ... and that a run continued a saved state (TTS: naming the next epoch)

    resume_file: str             # a file of the resumable state, as it lies in the job folder's resume/

    def epochs_in(self, log: str) -> list[int]:
        return [int(n) for n in self.finished_epoch.findall(log)]


KINDS = {
    "tts": Kind({"job_type": "tts", "model": {"type": "StableTTS", "preset": "tiny"}},
                re.compile(r"epoch (\d+)/\d+ · train loss"), re.compile(r"Resuming at epoch (\d+) of"), "state.pt"),
    "asr": Kind({"job_type": "asr", "model": {"type": "W2V2BERT", "preset": "tiny"}},
                re.compile(r"Epoch (\d+): train loss"), re.compile(r"Resuming from \S*checkpoint-\d+"),
                "asr/trainer/checkpoint-"),
}


class Watcher:
    """Reads response.yaml every 0.1 s in a thread: the epochs_completed values and status messages the
    plugin could have shown."""

    def __init__(self, env, job_id: str):
        self.env, self.job_id, self.seen, self.messages = env, job_id, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            response = self.env.response(self.job_id) or {}
            if "epochs_completed" in response:
                self.seen.append(int(response["epochs_completed"]))
                self.messages.add(response.get("status_message"))
            time.sleep(0.1)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10)
        return self.seen


def start_worker(env, tmp_path: Path, worker_id: str, run: str, *extra: str) -> subprocess.Popen:
    """A worker process in its own session (so a signal can reach its whole group, as a host sends it),
    with its own work dir: a recovered spot machine starts on a fresh disk."""
    backend = ["--local", str(env.root)] if env.kind == "local" else ["--gitlab-url", env.server.url]
    command = [sys.executable, str(ROOT / "worker_entry.py"), *backend, "--worker-id", worker_id,
               "--work-dir", str(tmp_path / f"work-{run}"), "--lease-seconds", "6", "--heartbeat-seconds", "0.5",
               "--grace-seconds", "60", "--loop-interval", "-1", *extra]
    environment = {**os.environ, **JOB_ENV}
    if env.kind == "gitlab":
        environment[TOKEN_ENV] = env.server.token
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def job_log(tmp_path: Path, run: str) -> str:
    """The job's log as the worker of ``run`` wrote it in its own work dir."""
    (path,) = (tmp_path / f"work-{run}").rglob("logs.txt")
    return path.read_text(encoding="utf-8")


def saved_epoch(kind: str, bucket: Path) -> int:
    """The last epoch whose resumable state is in the shared checkpoint dir (0: none yet)."""
    if kind == "tts":
        states = list(bucket.rglob("state.pt"))
        return max((torch.load(p, weights_only=True)["epoch"] for p in states), default=0)
    states = [json.loads(p.read_text()) for p in bucket.rglob("checkpoint-*/trainer_state.json")]
    return max((int(round(s.get("epoch") or 0)) for s in states), default=0)


def wait_past_lease(env, job_id: str) -> None:
    expires = datetime.fromisoformat(env.response(job_id)["lease_expires_at"].replace("Z", "+00:00"))
    time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.5)


def make_env(backend: str, tmp_path: Path, request):
    if backend == "local":
        return DemoProject(tmp_path / "project")
    server = request.getfixturevalue("gitlab_server")
    return GitLabDemoProject(server, tmp_path / "demo")


CASES = [  # model, backend, how the first worker goes, whether the same worker id comes back
    pytest.param("tts", "local", signal.SIGTERM, False, id="tts-local-sigterm"),
    pytest.param("tts", "gitlab", signal.SIGKILL, False, id="tts-gitlab-kill9"),
    pytest.param("asr", "local", signal.SIGKILL, True, id="asr-local-kill9-same-worker-restarted"),
    pytest.param("asr", "gitlab", signal.SIGTERM, False, id="asr-gitlab-sigterm"),
]


@pytest.mark.parametrize("kind_name, backend, stop, same_worker", CASES)
def test_preempted_training_is_finished_elsewhere_without_repeating_an_epoch(
        kind_name, backend, stop, same_worker, tmp_path, request):
    kind = KINDS[kind_name]
    env = make_env(backend, tmp_path, request)
    job_id, epochs = f"spot_{kind_name}", EPOCHS[kind_name]
    env.write_manifest([{"job_id": job_id, **kind.job, "mode": "training", "epochs": epochs, "canceled": False,
                         "submitted_at": "2025-10-15T19:20:00.000Z", "training": {"include_verses": SHORT_VERSES}}])
    bucket = tmp_path / "bucket"
    extra = ("--checkpoint-dir", str(bucket)) if stop == signal.SIGKILL else ()
    watcher = Watcher(env, job_id)
    first = start_worker(env, tmp_path, "spot-a", "first", *extra)
    try:
        def two_epochs_saved() -> bool:
            done = (env.response(job_id) or {}).get("epochs_completed", 0) >= 2
            return done and (stop == signal.SIGTERM or saved_epoch(kind_name, bucket) >= 2)

        env.wait_for(two_epochs_saved, 600)
    finally:
        os.killpg(first.pid, stop)
    first.wait(timeout=120)
    if stop == signal.SIGTERM:
        assert first.returncode == 0
        released = env.response(job_id)
        assert released["state"] == "running" and "interrupted" in released["status_message"], released
        assert "released_at" in released
        # No --checkpoint-dir: the state of the last finished epoch was committed to the job folder.
        assert any(path.startswith(kind.resume_file) for path in env.job_files(job_id, "resume"))
    first_log = job_log(tmp_path, "first")

    second_id = "spot-a" if same_worker else "spot-b"
    if stop == signal.SIGKILL and not same_worker:
        wait_past_lease(env, job_id)  # a stranger waits for the dead worker's lease; the same id need not
    second = start_worker(env, tmp_path, second_id, "second", *extra)
    assert second.wait(timeout=600) == 0
    seen = watcher.stop()
    final = env.response(job_id)
    assert final["state"] == "completed" and final["worker_id"] == second_id, (final.get("error_message"), final)
    assert final["epochs_completed"] == epochs

    # Epochs: the second worker continued right after the last saved one; together they trained each once.
    second_log = job_log(tmp_path, "second")
    second_epochs = kind.epochs_in(second_log)
    saved = second_epochs[0] - 1
    assert second_epochs == list(range(saved + 1, epochs + 1)), second_epochs
    resumed = kind.resumed.findall(second_log)
    assert len(resumed) == 1 and (kind_name != "tts" or resumed == [str(saved + 1)]), second_log[-3000:]
    first_epochs = kind.epochs_in(first_log)
    assert first_epochs[:saved] == list(range(1, saved + 1)) and saved >= 2, (first_epochs, saved)
    lost = first_epochs[saved:]  # finished in the first worker's log, but its state never saved
    if stop == signal.SIGTERM:
        assert lost == []  # a graceful stop saves the last finished epoch on the way out
    else:
        assert lost in ([], [saved + 1])  # a kill -9 loses at most the epoch whose state was being written
    assert saved + len(second_epochs) == epochs

    # What the plugin showed: epochs_completed never went backwards, and it saw the job progress.
    assert seen and seen == sorted(seen), seen
    assert seen[-1] == epochs and len(set(seen)) >= 3, seen
    progress = re.compile(rf"epoch \d+/{epochs} · val (loss|CER) \d+\.\d\d · ETA [^·]+")
    assert any(progress.fullmatch(m or "") for m in watcher.messages), watcher.messages
    metrics = env.read_file(f"gpu_jobs/job_{job_id}/checkpoint/training_metrics.csv").decode().splitlines()
    assert [line.split(",")[0] for line in metrics[1:]] == [str(n) for n in range(1, epochs + 1)], metrics
    assert env.job_files(job_id, "resume") == [] or set(env.job_files(job_id, "resume")) <= {"trained.json"}
    if stop == signal.SIGKILL:
        assert saved_epoch(kind_name, bucket) == 0  # the bucket is cleared once the job is completed
