"""One job, by name (worker_entry.py --job PROJECT:JOB_ID), on a local folder and on the GitLab test server."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

import worker_entry
from conftest import TEST_HANDLERS, executions, make_job
from jobs import format_time, utc_now




def project_name(env) -> str:
    """What the operator types: the GitLab path, or the folder's name."""
    return env.project.path_with_namespace if env.kind == "gitlab" else env.root.name


def invoke(runner, env, tmp_path, job: str, *extra: str):
    """worker_entry.py --job PROJECT:JOB on ``env`` with fast settings."""
    where = (["--gitlab-url", env.server.url, "--token", env.server.token] if env.kind == "gitlab"
             else ["--local", str(env.root)])
    return runner.invoke(worker_entry.main, [
        *where, "--job", f"{project_name(env)}:{job}", "--work-dir", str(tmp_path / "work"),
        "--handler-path", str(TEST_HANDLERS), "--worker-id", "operator", "--heartbeat-seconds", "1",
        "--lease-seconds", "5", *extra,
    ])


def running_response(worker: str, *, lease_minutes: float, retry_count: int = 0) -> str:
    now = utc_now()
    return yaml.safe_dump({
        "worker_id": worker, "state": "running", "timestamp": format_time(now - timedelta(minutes=30)),
        "claimed_at": format_time(now - timedelta(hours=1)),
        "lease_expires_at": format_time(now + timedelta(minutes=lease_minutes)), "claim_id": "0123456789abcdef",
        "retry_count": retry_count, "epochs_completed": 1, "status_message": "epoch 1",
    })


def test_runs_only_the_named_job(runner, env, tmp_path, record_dir):
    env.write_manifest([make_job("older", minutes_ago=20), make_job("named", minutes_ago=5)])
    result = invoke(runner, env, tmp_path, "named")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"{env.store.name}:named: completed"
    assert env.response("named")["state"] == "completed"
    assert env.response("older") is None  # the older pending job was not touched
    assert executions(record_dir) == [("named", "start"), ("named", "done")]


def test_takes_over_an_expired_lease(runner, env, tmp_path, record_dir):
    env.write_manifest([make_job("stale")])
    env.write_file("gpu_jobs/job_stale/response.yaml", running_response("crashed-worker", lease_minutes=-5))
    result = invoke(runner, env, tmp_path, "stale")
    assert result.exit_code == 0, result.output
    response = env.response("stale")
    assert response["state"] == "completed" and response["worker_id"] == "operator"
    assert response["retry_count"] == 1


def test_dry_run_says_what_would_happen_and_changes_nothing(runner, env, tmp_path, record_dir):
    env.write_manifest([make_job("waiting"), make_job("held")])
    env.write_file("gpu_jobs/job_held/response.yaml", running_response("busy-worker", lease_minutes=30))
    before = env.read_file("gpu_jobs/job_held/response.yaml")

    pending = invoke(runner, env, tmp_path, "waiting", "--dry-run")
    assert pending.exit_code == 0, pending.output
    assert pending.output.strip() == f"{env.store.name}:waiting: claim (pending)"

    held = invoke(runner, env, tmp_path, "held", "--dry-run")
    assert held.exit_code == 1
    assert held.output.startswith(f"{env.store.name}:held: skip (running on busy-worker, lease until ")

    assert env.response("waiting") is None
    assert env.read_file("gpu_jobs/job_held/response.yaml") == before
    assert executions(record_dir) == []


def test_dry_run_of_an_expired_lease_would_take_it_over(runner, local_env, tmp_path, record_dir):
    local_env.write_manifest([make_job("stale")])
    local_env.write_file("gpu_jobs/job_stale/response.yaml", running_response("gone", lease_minutes=-1,
                                                                              retry_count=3))
    result = invoke(runner, local_env, tmp_path, "stale", "--dry-run", "--max-retries", "3")
    assert result.exit_code == 1
    assert result.output.strip() == (f"{local_env.store.name}:stale: fail_retries "
                                     "(its worker stopped answering 4 times (retry limit 3))")
    assert local_env.response("stale")["state"] == "running"  # a dry run marks nothing failed


@pytest.mark.parametrize("state", ["completed", "failed", "canceled"])
def test_a_finished_job_may_not_run(runner, local_env, tmp_path, record_dir, state):
    local_env.write_manifest([make_job("done")])
    local_env.write_file("gpu_jobs/job_done/response.yaml",
                         f"worker_id: w1\nstate: {state}\ntimestamp: '2026-01-02T03:04:05.000Z'\n")
    result = invoke(runner, local_env, tmp_path, "done")
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {local_env.store.name}:done may not run now: already {state}"
    assert executions(record_dir) == []


def test_a_job_under_a_live_lease_may_not_run(runner, env, tmp_path, record_dir):
    env.write_manifest([make_job("held")])
    env.write_file("gpu_jobs/job_held/response.yaml", running_response("busy-worker", lease_minutes=30))
    result = invoke(runner, env, tmp_path, "held")
    assert result.exit_code == 1
    assert f"{env.store.name}:held may not run now: running on busy-worker, lease until" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert env.response("held")["worker_id"] == "busy-worker"
    assert executions(record_dir) == []


def test_an_unknown_job_is_named(runner, local_env, tmp_path, record_dir):
    local_env.write_manifest([make_job("real")])
    result = invoke(runner, local_env, tmp_path, "nope")
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {local_env.store.name}:nope may not run now: "
                                     "no job nope in gpu_jobs/manifest.yaml")


def test_a_job_that_fails_exits_1_with_its_message(runner, local_env, tmp_path, record_dir):
    local_env.write_manifest([make_job("bad", "fail")])
    result = invoke(runner, local_env, tmp_path, "bad")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (f"Error: {local_env.store.name}:bad: failed: "
                                                      "the data had no recordings")
    assert local_env.response("bad")["state"] == "failed"


def test_an_unknown_gitlab_project_is_named(runner, gitlab_env, tmp_path):
    gitlab_env.write_manifest([make_job("j1")])
    result = runner.invoke(worker_entry.main, ["--gitlab-url", gitlab_env.server.url, "--token",
                                               gitlab_env.server.token, "--job", "team/missing:j1",
                                               "--work-dir", str(tmp_path / "work")])
    assert result.exit_code == 1
    assert "project team/missing does not exist or the token cannot see it" in result.output
    assert gitlab_env.server.token not in result.output


def test_a_project_that_is_no_local_folder_is_a_usage_error(runner, local_env, tmp_path):
    result = runner.invoke(worker_entry.main, ["--local", str(local_env.root), "--job", "elsewhere:j1"])
    assert result.exit_code == 2
    assert "--job names project 'elsewhere', which is none of the --local folders" in result.output


@pytest.mark.parametrize("value", ["nocolon", ":j1", "project:"])
def test_job_must_be_project_colon_id(runner, tmp_path, value):
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--job", value])
    assert result.exit_code == 2 and "is not PROJECT:JOB_ID" in result.output


def test_operator_tools_do_not_combine(runner, tmp_path):
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--job", "x:1", "--list-jobs"])
    assert result.exit_code == 2 and "--list-jobs and --job do not go together" in result.output
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--dry-run"])
    assert result.exit_code == 2 and "--dry-run goes with --job or --unshare-idle-days" in result.output
