"""The worker as real processes: races between workers, signals, kill -9, JSON logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from conftest import ROOT, TEST_HANDLERS, LocalEnv, executions, make_job

pytestmark = pytest.mark.slow  # real worker processes started from the CLI, several per test: 4-7 s each


def start_worker(project, tmp_path, worker_id, *extra, stderr=subprocess.DEVNULL):
    command = [
        sys.executable, str(ROOT / "worker_entry.py"), "--local", str(project), "--worker-id", worker_id,
        "--work-dir", str(tmp_path / f"work-{worker_id}"), "--handler-path", str(TEST_HANDLERS),
        "--lease-seconds", "3", "--heartbeat-seconds", "0.3", "--grace-seconds", "30", *extra,
    ]
    return subprocess.Popen(command, cwd=ROOT, stderr=stderr, stdout=subprocess.DEVNULL, start_new_session=True,
                            text=True)


def test_eight_workers_twenty_jobs_each_runs_exactly_once(tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    job_ids = [f"race{i:02d}" for i in range(20)]
    env.write_manifest([make_job(job_id, minutes_ago=30 - i, probe={"behaviour": "succeed", "seconds": 0.1})
                        for i, job_id in enumerate(job_ids)])
    workers = [start_worker(env.root, tmp_path, f"racer-{n}", "--loop-interval", "-1") for n in range(8)]
    for process in workers:
        assert process.wait(timeout=240) == 0
    starts = sorted(job for job, event in executions(record_dir) if event == "start")
    assert starts == job_ids  # every job once: no job twice, none missed
    owners = set()
    for job_id in job_ids:
        response = env.response(job_id)
        assert response["state"] == "completed"
        owners.add(response["worker_id"])
    assert len(owners) > 1  # the work really was shared


def test_sigterm_releases_the_job_for_another_worker(tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("pre", probe={"behaviour": "succeed", "seconds": 4})])
    first = start_worker(env.root, tmp_path, "spot-1", "--loop-interval", "-1")
    env.wait_for(lambda: (env.response("pre") or {}).get("epochs_completed", 0) >= 1, 60)
    os.killpg(first.pid, signal.SIGTERM)  # the whole group, as a preempting host does
    assert first.wait(timeout=30) == 0
    released = env.response("pre")
    assert released["state"] == "running"
    assert "interrupted" in released["status_message"]
    assert released["retry_count"] == 0
    assert "released_at" in released
    second = start_worker(env.root, tmp_path, "spot-2", "--loop-interval", "-1")
    assert second.wait(timeout=60) == 0  # took over at once: no waiting for the lease to run out
    done = env.response("pre")
    assert done["state"] == "completed" and done["worker_id"] == "spot-2"
    assert done["retry_count"] == 0  # a preemption is not the job's fault
    assert [event for job, event in executions(record_dir)].count("start") == 2


def test_second_signal_stops_a_hanging_job_now(tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("stuck", "hang")])
    worker = start_worker(env.root, tmp_path, "impatient", "--loop-interval", "-1")
    env.wait_for(lambda: (env.response("stuck") or {}).get("status_message") not in (None, "claimed"), 60)
    os.killpg(worker.pid, signal.SIGTERM)
    time.sleep(1.0)
    assert worker.poll() is None  # the job ignores heartbeats, so the first signal waits for the grace period
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert "interrupted" in env.response("stuck")["status_message"]


def test_kill_9_mid_job_is_taken_over_after_the_lease_expires(tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("crash", probe={"behaviour": "succeed", "seconds": 3})])
    victim = start_worker(env.root, tmp_path, "victim", "--loop-interval", "-1")
    env.wait_for(lambda: (env.response("crash") or {}).get("epochs_completed", 0) >= 1, 60)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    expires = datetime.fromisoformat(env.response("crash")["lease_expires_at"].replace("Z", "+00:00"))
    time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.2)
    rescuer = start_worker(env.root, tmp_path, "rescuer", "--loop-interval", "-1")
    assert rescuer.wait(timeout=60) == 0
    response = env.response("crash")
    assert response["state"] == "completed" and response["worker_id"] == "rescuer"
    assert response["retry_count"] == 1
    assert [event for _, event in executions(record_dir)].count("start") == 2


def test_json_logs_name_lifecycle_events(tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("j1", minutes_ago=2), make_job("j2", "fail", minutes_ago=1)])
    worker = start_worker(env.root, tmp_path, "jsonw", "--loop-interval", "-1", "--log-format", "json",
                          stderr=subprocess.PIPE)
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 0
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert entries, stderr
    assert all({"ts", "level", "event", "message"} <= set(entry) for entry in entries)
    events = {(entry["event"], entry.get("job_id")) for entry in entries}
    assert {("job_claimed", "j1"), ("job_completed", "j1"), ("job_claimed", "j2"), ("job_failed", "j2")} <= events
    claimed = next(e for e in entries if e["event"] == "job_claimed")
    assert claimed["worker_id"] == "jsonw" and claimed["project"] == str(env.root)


def _preempt_and_resume(tmp_path, record_dir, *extra):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("tr", epochs=6, probe={"behaviour": "train", "seconds": 0.4})])
    first = start_worker(env.root, tmp_path, "spot-a", "--loop-interval", "-1", *extra)
    env.wait_for(lambda: (env.response("tr") or {}).get("epochs_completed", 0) >= 2, 60)
    os.killpg(first.pid, signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    interrupted_at = env.response("tr")["epochs_completed"]
    second = start_worker(env.root, tmp_path, "spot-b", "--loop-interval", "-1", *extra)
    assert second.wait(timeout=60) == 0
    response = env.response("tr")
    assert response["state"] == "completed" and response["epochs_completed"] == 6
    assert response["result"]["resumed_from"] >= interrupted_at >= 2
    epochs = [event for job, event in executions(record_dir) if event.startswith("epoch")]
    assert sorted(epochs) == [f"epoch{n}" for n in range(1, 7)]  # no finished epoch trained twice
    return env


def test_preempted_training_resumes_from_the_job_folder(tmp_path, record_dir):
    env = _preempt_and_resume(tmp_path, record_dir)
    assert env.read_file("gpu_jobs/job_tr/resume/epoch.txt") is None  # cleaned up once completed
    assert not (env.root / "gpu_jobs" / "job_tr" / "resume").exists()  # no empty folder left: git has none


def test_preempted_training_resumes_from_a_shared_checkpoint_dir(tmp_path, record_dir):
    shared = tmp_path / "bucket"
    env = _preempt_and_resume(tmp_path, record_dir, "--checkpoint-dir", str(shared))
    assert not list(shared.rglob("epoch.txt"))
    assert not (env.root / "gpu_jobs" / "job_tr" / "resume").exists()


def test_one_job_per_gpu_runs_them_side_by_side(tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job(f"g{i}", minutes_ago=10 - i, probe={"behaviour": "gpu", "seconds": 1.5})
                        for i in range(4)])
    worker = start_worker(env.root, tmp_path, "multi", "--loop-interval", "-1", "--gpus", "0,1")
    assert worker.wait(timeout=120) == 0
    holding: dict[str, str] = {}  # job -> GPU, while the job runs
    overlapped = False
    for job, event in executions(record_dir):
        if event.startswith("gpu="):
            gpu = event.removeprefix("gpu=")
            assert gpu in {"0", "1"}, gpu
            assert gpu not in holding.values(), f"{job} got GPU {gpu} while another job held it"
            holding[job] = gpu
            overlapped = overlapped or len(holding) > 1
        elif event == "end":
            holding.pop(job)
    assert overlapped  # two GPUs, two jobs at a time
    for i in range(4):
        assert env.response(f"g{i}")["state"] == "completed"


# -- one worker name, one worker -------------------------------------------------------------------------
def _killed_mid_job(env, tmp_path, worker_id, *extra):
    """A worker that claimed the job and died by kill -9 while its lease (120 s) is still live."""
    victim = start_worker(env.root, tmp_path, worker_id, "--loop-interval", "-1", "--lease-seconds", "120",
                          *extra)
    env.wait_for(lambda: (env.response("again") or {}).get("epochs_completed", 0) >= 1, 60)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    return datetime.fromisoformat(env.response("again")["lease_expires_at"].replace("Z", "+00:00"))


def test_a_restart_on_a_fresh_disk_with_the_same_bucket_resumes_its_own_claim_at_once(tmp_path, record_dir):
    """As SkyPilot recovers a preempted spot job: same worker id, new machine disk, same --checkpoint-dir."""
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("again", probe={"behaviour": "succeed", "seconds": 3})])
    bucket = tmp_path / "bucket"
    lease_end = _killed_mid_job(env, tmp_path, "spot-x", "--checkpoint-dir", str(bucket))
    second = start_worker(env.root, tmp_path / "new-disk", "spot-x", "--loop-interval", "-1",
                          "--lease-seconds", "120", "--checkpoint-dir", str(bucket))
    assert second.wait(timeout=90) == 0
    done = env.response("again")
    assert done["state"] == "completed" and done["worker_id"] == "spot-x"
    assert done["retry_count"] == 0  # its own claim, resumed: not a takeover of a dead worker's
    assert datetime.fromisoformat(done["timestamp"].replace("Z", "+00:00")) < lease_end  # did not wait it out
    assert [event for _, event in executions(record_dir)].count("start") == 2
    assert not list((bucket / ".worker-claims").glob("*.json"))  # nothing left to resume


def test_a_restart_with_the_same_work_dir_resumes_its_own_claim_at_once(tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("again", probe={"behaviour": "succeed", "seconds": 3})])
    lease_end = _killed_mid_job(env, tmp_path, "box-1")
    second = start_worker(env.root, tmp_path, "box-1", "--loop-interval", "-1", "--lease-seconds", "120")
    assert second.wait(timeout=90) == 0
    done = env.response("again")
    assert done["state"] == "completed" and done["retry_count"] == 0
    assert datetime.fromisoformat(done["timestamp"].replace("Z", "+00:00")) < lease_end


def test_two_live_worker_processes_with_one_name_run_the_job_once(tmp_path, record_dir):
    """Two processes started with the same --worker-id (and so the same work dir): before, they took the
    job from each other without end (31 starts in 30 s)."""
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("twin", probe={"behaviour": "succeed", "seconds": 4})])
    pair = [start_worker(env.root, tmp_path, "same-name", "--loop-interval", "0.2") for _ in range(2)]
    try:
        env.wait_for(lambda: (env.response("twin") or {}).get("state") == "completed", 90)
    finally:
        for process in pair:
            os.killpg(process.pid, signal.SIGTERM)
        for process in pair:
            assert process.wait(timeout=30) == 0
    assert [event for _, event in executions(record_dir)] == ["start", "done"]
    assert env.response("twin")["retry_count"] == 0
