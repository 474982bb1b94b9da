"""Worker processes against the GitLab test server: races across projects and the token's secrecy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TEST_HANDLERS, executions, make_job


def start_gitlab_worker(server, tmp_path, worker_id, *extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
    command = [
        sys.executable, str(ROOT / "worker_entry.py"), "--gitlab-url", server.url, "--worker-id", worker_id,
        "--work-dir", str(tmp_path / f"work-{worker_id}"), "--handler-path", str(TEST_HANDLERS),
        "--lease-seconds", "20", "--heartbeat-seconds", "1", "--loop-interval", "-1", *extra,
    ]
    environment = {**os.environ, "GITLAB_TOKEN": server.token}
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=stdout, stderr=stderr, text=True)


def manifest_text(jobs: list[dict]) -> str:
    return yaml.safe_dump({"version": 1, "jobs": jobs}, sort_keys=False)


def response(server, project, job_id):
    raw = server.read(project, f"gpu_jobs/job_{job_id}/response.yaml")
    return yaml.safe_load(raw) if raw else None


@pytest.mark.slow  # eight worker processes racing over one GitLab: ~19 s on 2 cores
def test_eight_workers_twenty_jobs_three_projects_exactly_once(gitlab_server, tmp_path, record_dir):
    projects = {}
    minute = 60
    for number in range(3):
        jobs = [make_job(f"p{number}j{i:02d}", minutes_ago=minute - (number + 3 * i),
                         probe={"behaviour": "succeed", "seconds": 0.1})
                for i in range(7 if number < 2 else 6)]
        projects[f"team{number}/bible"] = jobs
        gitlab_server.add_project(f"team{number}/bible", files={
            "metadata.json": "{}\n", "gpu_jobs/manifest.yaml": manifest_text(jobs)})
    workers = [start_gitlab_worker(gitlab_server, tmp_path, f"gpu-{n}") for n in range(8)]
    for process in workers:
        assert process.wait(timeout=300) == 0
    expected = sorted(job["job_id"] for jobs in projects.values() for job in jobs)
    assert len(expected) == 20
    starts = sorted(job for job, event in executions(record_dir) if event == "start")
    assert starts == expected
    owners = set()
    for path, jobs in projects.items():
        for job in jobs:
            state = response(gitlab_server, path, job["job_id"])
            assert state["state"] == "completed", state
            owners.add(state["worker_id"])
    assert len(owners) > 1


def test_the_token_never_leaves_the_process(gitlab_server, tmp_path, record_dir):
    """Everything the worker printed, logged, wrote to disk or committed is searched for the token."""
    jobs = [make_job("leak1", "raise", minutes_ago=3), make_job("leak2", "succeed", minutes_ago=2),
            make_job("leak3", minutes_ago=1, model={"type": "Missing"})]
    project = gitlab_server.add_project("team/leaky", files={"metadata.json": "{}\n",
                                                            "gpu_jobs/manifest.yaml": manifest_text(jobs)})
    worker = start_gitlab_worker(gitlab_server, tmp_path, "leaktest", "--verbose", "--log-format", "json",
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 0, stderr
    assert response(gitlab_server, project, "leak2")["state"] == "completed"
    token = gitlab_server.token
    assert token not in stdout and token not in stderr
    assert "job_completed" in stderr  # the logs were really captured
    for file in Path(tmp_path / "work-leaktest").rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file
    for path in gitlab_server.files(project):
        assert token.encode() not in (gitlab_server.read(project, path) or b""), path
    for commit in gitlab_server.commits(project):
        assert token not in commit["message"]
    # A wrong token fails with a message that does not echo it.
    bad = subprocess.run([sys.executable, str(ROOT / "worker_entry.py"), "--gitlab-url", gitlab_server.url,
                          "--loop-interval", "-1", "--work-dir", str(tmp_path / "bad")],
                         cwd=ROOT, env={**os.environ, "GITLAB_TOKEN": "glpat-wrong-secret-123"},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "Error: GitLab refused the token" in bad.stderr and "Traceback" not in bad.stderr
    assert "glpat-wrong-secret-123" not in bad.stdout + bad.stderr
