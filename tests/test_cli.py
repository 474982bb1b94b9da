"""worker_entry.py through click's CliRunner: exit codes and the messages people see."""

from __future__ import annotations


import pytest

import worker_entry
from conftest import ROOT, TEST_HANDLERS, LocalEnv, executions, make_job, undocumented_options




def test_help_lists_every_option(runner):
    result = runner.invoke(worker_entry.main, ["--help"])
    assert result.exit_code == 0
    for option in ("--token", "--worker-id", "--gitlab-url", "--work-dir", "--loop-interval", "--keep-jobs",
                   "--local", "--handler-path", "--lease-seconds", "--heartbeat-seconds", "--max-retries",
                   "--device", "--log-format", "--verbose", "--in-process", "--grace-seconds"):
        assert option in result.output
    assert "GITLAB_TOKEN" in result.output and "WORKER_HANDLER_PATH" in result.output


def test_no_token_and_no_local_is_a_usage_error(runner):
    result = runner.invoke(worker_entry.main, ["--loop-interval", "-1"])
    assert result.exit_code == 2
    assert "no GitLab token: pass --token or set GITLAB_TOKEN, or serve a folder with --local PATH" in result.output


def test_heartbeat_must_fit_inside_the_lease(runner, tmp_path):
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--lease-seconds", "60",
                                               "--heartbeat-seconds", "45"])
    assert result.exit_code == 2
    assert "--heartbeat-seconds must be at most half of --lease-seconds" in result.output


def test_missing_local_folder_is_named(runner, tmp_path):
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope" in result.output and "does not exist" in result.output


def test_bad_choice_is_refused(runner, tmp_path):
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--device", "tpu"])
    assert result.exit_code == 2
    assert "'tpu' is not one of 'auto', 'cpu', 'cuda'" in result.output


def test_project_without_manifest_exits_zero_in_burst_mode(runner, tmp_path):
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--loop-interval", "-1",
                                               "--work-dir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output


def test_local_run_through_the_cli(runner, tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("cli1")])
    result = runner.invoke(worker_entry.main, [
        "--local", str(env.root), "--loop-interval", "-1", "--work-dir", str(tmp_path / "work"),
        "--handler-path", str(TEST_HANDLERS), "--worker-id", "cli-worker", "--heartbeat-seconds", "1",
    ])
    assert result.exit_code == 0, result.output
    response = env.response("cli1")
    assert response["state"] == "completed" and response["worker_id"] == "cli-worker"


def test_handler_path_from_the_environment(runner, tmp_path, record_dir, monkeypatch):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("env1")])
    monkeypatch.setenv("WORKER_HANDLER_PATH", f"{tmp_path / 'none'}:{TEST_HANDLERS}")
    result = runner.invoke(worker_entry.main, ["--local", str(env.root), "--loop-interval", "-1",
                                               "--work-dir", str(tmp_path / "work"), "--heartbeat-seconds", "1"])
    assert result.exit_code == 0, result.output
    assert env.response("env1")["state"] == "completed"


def test_list_jobs_prints_the_plugin_view(runner, tmp_path, record_dir):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("done1", minutes_ago=5), make_job("waiting", minutes_ago=1, canceled=False)])
    env.write_file("gpu_jobs/job_done1/response.yaml",
                   "worker_id: w9\nstate: failed\ntimestamp: '2026-01-02T03:04:05.000Z'\nepochs_completed: 2\n"
                   "error_message: out of memory\n")
    result = runner.invoke(worker_entry.main, ["--local", str(env.root), "--list-jobs"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["project", "job", "type/mode", "state", "worker", "epochs", "last", "update",
                                "message"]
    done = next(line for line in lines if "done1" in line)
    assert "failed" in done and "w9" in done and "2/3" in done and "out of memory" in done
    assert "2026-01-02T03:04:05.000Z" in done
    waiting = next(line for line in lines if "waiting" in line)
    assert "pending" in waiting and "0/3" in waiting
    assert executions(record_dir) == []  # listing runs nothing


def test_readme_documents_every_option():
    """Docs cannot drift: each option of --help appears in the README's option table."""
    assert undocumented_options(worker_entry.main, (ROOT / "README.md").read_text()) == []


def test_gpus_must_be_auto_or_distinct_ids(runner, tmp_path):
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--gpus", "0,0"])
    assert result.exit_code == 2
    assert "is not 'auto' or a list of distinct GPU ids" in result.output
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--gpus", "0,1", "--in-process"])
    assert result.exit_code == 2 and "--gpus needs job processes" in result.output
