"""GPU workers that follow the queue: the plan as a pure function, the queue as the worker reads it, and the
SkyPilot adapter with SkyPilot itself (in the fleet's own venv) recorded at its SDK calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

import fleet
from conftest import LocalEnv, make_job, undocumented_options
from fleet import FleetSettings, FleetWorker, QueueCount, plan_fleet
from jobs import JobResponse, JobState, format_time, utc_now
from local_store import LocalSource

ROOT = Path(__file__).resolve().parents[1]
FLEET_PYTHON = ROOT / ".venv-fleet" / "bin" / "python"


def queue(pending=0, expired=0, running=0) -> QueueCount:
    return QueueCount(pending=pending, expired=expired, running=running, projects=1)


def worker(job_id: int, status: str, name: str | None = None, submitted: float = 0.0) -> FleetWorker:
    return FleetWorker(job_id, name or f"codex-worker-x-{job_id}", status, submitted or float(job_id))


# -- the plan ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("jobs_waiting, running, per_worker, min_w, max_w, live, launches", [
    (0, 0, 1, 0, 4, [], 0),                     # idle: nothing, and no standing worker asked for
    (3, 0, 1, 0, 4, [], 3),                     # one worker per job
    (10, 0, 1, 0, 4, [], 4),                    # clamped to max_workers
    (5, 0, 2, 0, 4, [], 3),                     # ceil(5 / 2)
    (2, 1, 1, 0, 4, ["RUNNING"], 2),            # the running job keeps its worker: 3 wanted, 1 live
    (2, 0, 1, 0, 4, ["PENDING", "STARTING"], 0),  # workers on their way count
    (4, 0, 1, 0, 4, ["RECOVERING"], 3),         # a preempted worker being recovered still counts
    (1, 0, 1, 0, 4, ["FAILED", "SUCCEEDED", "CANCELLED"], 1),  # ended workers do not
])
def test_workers_wanted_follow_the_queue(jobs_waiting, running, per_worker, min_w, max_w, live, launches):
    workers = [worker(i + 1, status) for i, status in enumerate(live)]
    plan = plan_fleet(queue(pending=jobs_waiting, running=running), workers,
                      FleetSettings(min_w, max_w, per_worker), stamp="t")
    assert len(plan.launch) == launches
    assert all(item.drain for item in plan.launch)
    assert not plan.cancel


def test_standing_workers_keep_min_workers_up_and_the_rest_drain():
    plan = plan_fleet(queue(pending=3), [], FleetSettings(min_workers=1, max_workers=4), stamp="t")
    assert [(item.name, item.drain) for item in plan.launch] == [
        ("codex-worker-standing-t-1", False), ("codex-worker-t-1", True), ("codex-worker-t-2", True)]
    # An idle queue with the standing worker up: nothing to do.
    again = plan_fleet(queue(), [worker(7, "RUNNING", "codex-worker-standing-t-1")], FleetSettings(1, 4), stamp="u")
    assert again.idle and again.wanted == 1
    # The standing worker died: replaced even with an empty queue.
    replaced = plan_fleet(queue(), [worker(7, "FAILED", "codex-worker-standing-t-1")], FleetSettings(1, 4), stamp="v")
    assert [item.name for item in replaced.launch] == ["codex-worker-standing-v-1"]
    assert any("ended FAILED" in note and "sky jobs logs 7" in note for note in replaced.notes)


def test_scale_down_cancels_only_workers_that_have_not_started_newest_first():
    workers = [worker(1, "RUNNING"), worker(2, "RUNNING"), worker(3, "PENDING", submitted=30),
               worker(4, "STARTING", submitted=40), worker(5, "PENDING", submitted=20)]
    plan = plan_fleet(queue(pending=0, running=2), workers, FleetSettings(0, 8), stamp="t")
    assert plan.wanted == 2 and plan.live == 5
    assert [w.job_id for w in plan.cancel] == [4, 3, 5]
    assert not plan.launch


def test_a_running_worker_is_never_cancelled_even_far_above_the_wanted_count():
    workers = [worker(i, "RUNNING") for i in range(1, 6)]
    plan = plan_fleet(queue(), workers, FleetSettings(0, 2), stamp="t")
    assert plan.wanted == 0 and not plan.cancel and not plan.launch
    assert any("exit by themselves" in note for note in plan.notes)


def test_a_standing_worker_is_not_cancelled_while_it_starts():
    workers = [worker(1, "PENDING", "codex-worker-standing-a-1")]
    plan = plan_fleet(queue(), workers, FleetSettings(0, 2), stamp="t")
    assert not plan.cancel


def test_settings_refuse_impossible_bounds():
    with pytest.raises(ValueError, match="min_workers"):
        FleetSettings(min_workers=5, max_workers=2)
    with pytest.raises(ValueError):
        FleetSettings(jobs_per_worker=0)


def test_the_sizing_rule_comes_from_measured_job_durations():
    measured = QueueCount(durations={"tts/training": [1200, 1800, 2400], "asr/training": [600, 1800]})
    assert measured.median_minutes() == {"asr/training": 20.0, "tts/training": 30.0}
    assert fleet.jobs_per_worker_for(measured, target_wait_minutes=120) == 4   # 120 // median(20, 30) = 120 // 25
    assert fleet.jobs_per_worker_for(measured, target_wait_minutes=10) == 1   # never below one
    assert fleet.jobs_per_worker_for(QueueCount(), target_wait_minutes=120, default=2) == 2  # nothing measured


def test_the_plan_reads_like_a_person_would_write_it():
    plan = plan_fleet(queue(pending=2, expired=1, running=1), [worker(9, "RUNNING")], FleetSettings(0, 3),
                      stamp="t")
    text = plan.describe(queue(pending=2, expired=1, running=1))
    assert text.splitlines() == [
        "queue: 2 pending, 1 to take over, 1 running in 1 project(s)",
        "workers: 1 live, 3 wanted",
        "launch codex-worker-t-1 (drain: exits when the queue is empty)",
        "launch codex-worker-t-2 (drain: exits when the queue is empty)",
    ]


# -- the queue -----------------------------------------------------------------------------------------
def _response(state: JobState, *, minutes_ago: float, claimed_minutes_ago: float | None = None,
              released: bool = False) -> str:
    now = utc_now()
    claimed = now - timedelta(minutes=claimed_minutes_ago if claimed_minutes_ago is not None else minutes_ago)
    written = now - timedelta(minutes=minutes_ago)
    expires = written if released else written + timedelta(minutes=30)  # as release_lease writes it
    extra = {"released_at": format_time(written)} if released else {}
    return JobResponse(worker_id="gpu-1", state=state, timestamp=written, claimed_at=claimed,
                       lease_expires_at=expires, claim_id="c", extra=extra).dump()


def test_the_queue_counts_what_needs_a_gpu_the_way_a_worker_reads_it(tmp_path):
    env = LocalEnv(tmp_path / "busy")
    env.write_manifest([
        make_job("pending1"), make_job("pending2"),
        make_job("live"), make_job("lapsed"), make_job("released"),
        make_job("done"), make_job("failed"),
        make_job("canceled_unstarted", canceled=True),
    ])
    env.write_file("gpu_jobs/job_live/response.yaml", _response(JobState.RUNNING, minutes_ago=1))
    env.write_file("gpu_jobs/job_lapsed/response.yaml", _response(JobState.RUNNING, minutes_ago=90))
    env.write_file("gpu_jobs/job_released/response.yaml", _response(JobState.RUNNING, minutes_ago=1, released=True))
    env.write_file("gpu_jobs/job_done/response.yaml",
                   _response(JobState.COMPLETED, minutes_ago=5, claimed_minutes_ago=45))
    env.write_file("gpu_jobs/job_failed/response.yaml", _response(JobState.FAILED, minutes_ago=5))
    broken = LocalEnv(tmp_path / "broken")
    broken.write_file("gpu_jobs/manifest.yaml", "version: 1\njobs: [unclosed\n")
    idle = LocalEnv(tmp_path / "idle")

    count = fleet.count_queue(LocalSource([env.root, broken.root, idle.root]), max_retries=3)
    assert (count.pending, count.expired, count.running) == (2, 2, 1)
    assert (count.projects, count.bad_projects) == (3, 1)
    assert count.median_minutes() == {"test/training": pytest.approx(40.0)}


# -- the adapter -----------------------------------------------------------------------------------------
class RecordingApi:
    def __init__(self, records):
        self.records = records
        self.calls: list = []

    def queue(self):
        self.calls.append(("queue",))
        return self.records

    def launch(self, task, name):
        self.calls.append(("launch", name, task))
        return 500 + len(self.calls)

    def cancel(self, job_ids):
        self.calls.append(("cancel", list(job_ids)))


def test_the_fleet_lists_only_its_own_workers_and_applies_a_plan():
    api = RecordingApi([
        {"job_id": 1, "job_name": "codex-worker-a-1", "status": "RUNNING", "submitted_at": 10},
        {"job_id": 2, "job_name": "someone-elses-training", "status": "PENDING", "submitted_at": 11},
        {"job_id": 3, "job_name": "codex-worker-a-2", "status": "PENDING", "submitted_at": 12},
    ])
    loaded = []
    fleet_ = fleet.SkyPilotFleet(api, FleetSettings(0, 4), token="secret-token",
                                 load_task=lambda path, **kw: loaded.append(kw) or f"task{len(loaded)}")
    workers = fleet_.workers()
    assert [(w.job_id, w.status) for w in workers] == [(1, "RUNNING"), (3, "PENDING")]
    plan = plan_fleet(queue(pending=3), workers, fleet_.settings, stamp="t")
    done = fleet_.apply(plan)
    assert [call[:2] for call in api.calls[1:]] == [("launch", "codex-worker-t-1")]
    assert loaded == [{"drain": True, "token": "secret-token", "envs": {}}]
    assert done == ["launched codex-worker-t-1 (managed job 502)"]
    shrink = plan_fleet(queue(), workers, fleet_.settings, stamp="u")
    assert fleet_.apply(shrink) == ["cancelled codex-worker-a-2 (managed job 3)"]
    assert api.calls[-1] == ("cancel", [3])


def _run_driver(args: list[str], records: list[dict], env_extra: dict[str, str]) -> tuple[list[str], list]:
    if not FLEET_PYTHON.exists():
        pytest.fail("the fleet venv is missing: run `make fleet-setup` (make test does)")
    env = {**os.environ, "FLEET_QUEUE": json.dumps(records), **env_extra}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(FLEET_PYTHON), str(ROOT / "tests" / "fleet_driver.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    calls = json.loads(lines[-1].removeprefix("CALLS "))
    return lines[:-1], calls


@pytest.mark.slow  # real SkyPilot in its own venv, started as a process: ~6 s on 2 cores
def test_a_cycle_against_the_gitlab_test_server_launches_what_the_queue_needs(gitlab_env):
    """The whole cycle in the fleet's venv: our task file loaded and validated by SkyPilot, the queue read from
    the GitLab test server through GitLabSource, the plan printed, the launches made with the token as a secret
    and drain mode on; a dry run changes nothing."""
    gitlab_env.write_manifest([make_job("a"), make_job("b"), make_job("c"), make_job("busy")])
    gitlab_env.write_file("gpu_jobs/job_busy/response.yaml", _response(JobState.RUNNING, minutes_ago=1))
    token = gitlab_env.server.token
    running = [{"job_id": 41, "job_name": "codex-worker-old-1", "status": "RUNNING", "submitted_at": 1.0}]
    args = ["--gitlab-url", gitlab_env.server.url, "--max-workers", "3"]

    lines, calls = _run_driver(args + ["--dry-run"], running, {"GITLAB_TOKEN": token})
    assert lines[0] == "queue: 3 pending, 0 to take over, 1 running in 1 project(s)"
    assert lines[1] == "workers: 1 live, 3 wanted"
    assert [line.split(" (")[0].rsplit("-", 3)[0] for line in lines[2:4]] == ["launch codex-worker"] * 2
    assert lines[-1] == "dry run: nothing was changed"
    assert [call[0] for call in calls] == ["queue"]

    lines, calls = _run_driver(args, running, {"GITLAB_TOKEN": token})
    launches = [call[1] for call in calls if call[0] == "launch"]
    assert len(launches) == 2
    for launch in launches:
        assert launch["task_name"] == "codex-gpu-worker"
        assert launch["envs"]["LOOP_INTERVAL"] == "-1"          # drain mode
        assert launch["envs"]["GITLAB_URL"] == gitlab_env.server.url
        assert launch["secrets"] == ["GITLAB_TOKEN"] and launch["token_passed"]
        assert launch["use_spot"] == [True]
        assert token not in json.dumps(launch)
    assert sum(line.startswith("launched codex-worker-") for line in lines) == 2
    assert token not in "\n".join(lines)


@pytest.mark.slow  # real SkyPilot in its own venv, started as a process: ~6 s on 2 cores
def test_our_task_file_is_valid_for_skypilot_and_drains_by_default_in_the_fleet(tmp_path):
    """SkyPilot's own loader reads skypilot_worker.yaml (a broken key fails here, not on a rented GPU), and a
    task file SkyPilot refuses makes the cycle fail with SkyPilot's message."""
    project = LocalEnv(tmp_path / "p")
    project.write_manifest([make_job("a")])
    lines, calls = _run_driver(["--local", str(project.root), "--max-workers", "1"], [], {})
    assert [call[0] for call in calls] == ["queue", "launch"]
    assert calls[1][1]["envs"]["LOOP_INTERVAL"] == "-1"
    assert not calls[1][1]["token_passed"]  # --local: no token to hand over

    broken = tmp_path / "broken.yaml"
    task = yaml.safe_load((ROOT / "skypilot_worker.yaml").read_text())
    task["resources"]["accelerators"] = 12
    broken.write_text(yaml.safe_dump(task))
    env = {**os.environ, "FLEET_QUEUE": "[]"}
    done = subprocess.run([str(FLEET_PYTHON), str(ROOT / "tests" / "fleet_driver.py"), "--local", str(project.root),
                           "--task-file", str(broken)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode != 0
    assert "accelerators" in (done.stdout + done.stderr)


def test_an_idle_cycle_costs_what_an_idle_poll_costs(gitlab_server):
    """Counting the queue goes through GitLabSource like the worker's poll: once the projects are known, an
    idle cycle is the one projects-listing request, however many projects there are."""
    from datetime import datetime, timezone

    from gitlab_jobs import GitLabSource

    long_ago = datetime.now(timezone.utc) - timedelta(hours=6)
    for number in range(12):
        files = {"metadata.json": "{}"}
        if number % 3 == 0:
            files["gpu_jobs/manifest.yaml"] = "version: 1\njobs: []\n"
        gitlab_server.add_project(f"fleet/p{number}", files=files)
        gitlab_server.set_last_activity(f"fleet/p{number}", long_ago)
    now = [time.time()]
    source = GitLabSource(gitlab_server.url, gitlab_server.token, clock=lambda: now[0])
    first = fleet.count_queue(source, max_retries=3)
    assert first.projects == 4 and first.busy == 0
    costs = []
    for _ in range(3):
        now[0] += 60
        gitlab_server.reset_stats()
        assert fleet.count_queue(source, max_retries=3).projects == 0
        costs.append(gitlab_server.stats()["total"])
    assert costs == [1, 1, 1]
    source.close()


def test_the_scaling_command_is_documented_in_the_readme():
    import scale_workers

    assert undocumented_options(scale_workers.main, (ROOT / "README.md").read_text()) == []
