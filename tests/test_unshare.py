"""Least privilege: each project's last job activity (--list-jobs) and leaving idle projects
(--unshare-idle-days), against the GitLab test server."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import yaml

import worker_entry
from conftest import make_job
from gitlab_fixtures import FAST_RETRY
from gitlab_jobs import GitLabSource
from jobs import format_time, utc_now
from project_activity import ProjectActivity, project_activity, unshare_verdict

DAY_MINUTES = 24 * 60




def manifest(*jobs: dict) -> str:
    return yaml.safe_dump({"version": 1, "jobs": list(jobs)}, sort_keys=False)


def finished(days_ago: float, state: str = "completed") -> str:
    return yaml.safe_dump({"worker_id": "w1", "state": state,
                           "timestamp": format_time(utc_now() - timedelta(days=days_ago))})


def add_project(server, path: str, files: dict[str, str], *, membership: str = "direct", idle_days: float = 0):
    project = server.add_project(path, files={"metadata.json": "{}", **files})
    server.set_membership(project, membership)
    server.set_last_activity(project, utc_now() - timedelta(days=idle_days))
    return project


@pytest.fixture
def projects(gitlab_server):
    """An idle project, one with a job still waiting, one used two days ago, one with a broken manifest."""
    old = 40 * DAY_MINUTES
    add_project(gitlab_server, "team/idle", {"gpu_jobs/manifest.yaml": manifest(make_job("j1", minutes_ago=old)),
                                             "gpu_jobs/job_j1/response.yaml": finished(39)})
    add_project(gitlab_server, "team/busy", {"gpu_jobs/manifest.yaml": manifest(make_job("j2", minutes_ago=old))})
    add_project(gitlab_server, "team/recent", {
        "gpu_jobs/manifest.yaml": manifest(make_job("j3", minutes_ago=old), make_job("j4", minutes_ago=3 * DAY_MINUTES)),
        "gpu_jobs/job_j3/response.yaml": finished(39), "gpu_jobs/job_j4/response.yaml": finished(2, "failed")})
    add_project(gitlab_server, "team/broken", {"gpu_jobs/manifest.yaml": "version: [1\n"}, idle_days=60)
    return gitlab_server


def unshare(runner, server, days: str, *extra: str):
    return runner.invoke(worker_entry.main, ["--gitlab-url", server.url, "--token", server.token,
                                             "--unshare-idle-days", days, *extra])


def table(output: str) -> dict[str, str]:
    """project → the rest of its line."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(team/\S+)\s+(.*)$", output, re.MULTILINE)}


def test_idle_project_is_left_busy_recent_and_unreadable_ones_are_kept(runner, projects):
    result = unshare(runner, projects, "30")
    assert result.exit_code == 0, result.output
    lines = table(result.output)
    assert re.search(r"\bleft\s+no job activity for 39 days", lines["team/idle"])
    assert re.search(r"\bkept\s+1 unfinished job\(s\)$", lines["team/busy"])
    assert re.search(r"\bkept\s+active 2.0 days ago$", lines["team/recent"])
    assert re.search(r"\bkept\s+its jobs cannot be read \(gpu_jobs/manifest.yaml: ", lines["team/broken"])
    assert {p.path_with_namespace: p.membership for p in projects.app.registry.all()} == {
        "team/idle": "none", "team/busy": "direct", "team/recent": "direct", "team/broken": "direct"}
    source = GitLabSource(projects.url, projects.token, retry=FAST_RETRY)
    try:  # GitLab no longer lists (or serves) the project to the worker user
        assert sorted(s.name for s in source.visible_stores()) == ["team/broken", "team/busy", "team/recent"]
    finally:
        source.close()
    assert projects.token not in result.output


def test_dry_run_changes_nothing(runner, projects):
    result = unshare(runner, projects, "30", "--dry-run")
    assert result.exit_code == 0, result.output
    assert re.search(r"\bwould leave\s+no job activity for 39 days", table(result.output)["team/idle"])
    assert all(p.membership == "direct" for p in projects.app.registry.all())


def test_a_project_without_jobs_is_judged_by_its_own_activity(runner, gitlab_server):
    add_project(gitlab_server, "team/never-used", {}, idle_days=45)
    add_project(gitlab_server, "team/just-shared", {}, idle_days=0.5)
    result = unshare(runner, gitlab_server, "30")
    assert result.exit_code == 0, result.output
    lines = table(result.output)
    assert re.search(r"\bleft\s+no job yet, and no project activity for 45 days", lines["team/never-used"])
    assert re.search(r"\bkept\s+active 0.5 days ago$", lines["team/just-shared"])
    assert gitlab_server.project("team/just-shared").membership == "direct"


def test_memberships_that_cannot_be_left_are_reported(runner, gitlab_server):
    job = manifest(make_job("j1", minutes_ago=40 * DAY_MINUTES))
    done = finished(39)
    add_project(gitlab_server, "team/via-group", {"gpu_jobs/manifest.yaml": job, "gpu_jobs/job_j1/response.yaml": done},
                membership="inherited")
    add_project(gitlab_server, "codex-worker/own", {"gpu_jobs/manifest.yaml": job,
                                                    "gpu_jobs/job_j1/response.yaml": done}, membership="owner")
    result = unshare(runner, gitlab_server, "30")
    assert result.exit_code == 1  # one project could not be left
    assert re.search(r"team/via-group\s.*\bnot a direct member\b", result.output)
    assert re.search(r"codex-worker/own\s.*\bfailed\s+GitLab does not let the worker user leave codex-worker/own "
                     r"\(HTTP 403", result.output)
    assert gitlab_server.project("team/via-group").membership == "inherited"
    assert gitlab_server.project("codex-worker/own").membership == "owner"


def test_a_token_without_api_cannot_leave(runner, projects):
    projects.set_token(scopes=["read_api"])
    result = unshare(runner, projects, "30")
    assert result.exit_code == 1
    assert re.search(r"\bfailed\s+the token may not leave team/idle: it lacks the api scope", table(result.output)["team/idle"])
    assert projects.project("team/idle").membership == "direct"


def test_unshare_needs_gitlab(runner, tmp_path):
    result = runner.invoke(worker_entry.main, ["--local", str(tmp_path), "--unshare-idle-days", "30"])
    assert result.exit_code == 2 and "--unshare-idle-days leaves GitLab projects" in result.output


def test_list_jobs_shows_each_projects_last_job_activity(runner, projects):
    result = runner.invoke(worker_entry.main, ["--gitlab-url", projects.url, "--token", projects.token,
                                               "--list-jobs"])
    assert result.exit_code == 0, result.output
    summary = result.output.split("last job activity", 1)[1]
    recent = next(line for line in summary.splitlines() if line.startswith("team/recent"))
    assert recent.split()[1:3] == ["2", "0"]  # two jobs, none unfinished
    j4 = yaml.safe_load(projects.read("team/recent", "gpu_jobs/job_j4/response.yaml"))["timestamp"]
    assert j4 in recent  # the newest of its responses and submission times
    busy = next(line for line in summary.splitlines() if line.startswith("team/busy"))
    assert busy.split()[1:3] == ["1", "1"]
    assert "version: [1" not in busy
    broken = next(line for line in summary.splitlines() if line.startswith("team/broken"))
    assert "gpu_jobs/manifest.yaml" in broken  # the problem column says why


def test_activity_counts_submission_times_and_responses(local_env):
    now = utc_now()
    local_env.write_manifest([make_job("a", minutes_ago=60), make_job("b", minutes_ago=10)])
    local_env.write_file("gpu_jobs/job_a/response.yaml", yaml.safe_dump({
        "worker_id": "w", "state": "completed", "timestamp": format_time(now - timedelta(minutes=30))}))
    activity = project_activity(local_env.store)
    assert (activity.jobs, activity.unfinished, activity.problem) == (2, 1, "")
    assert abs((activity.last_job_activity - (now - timedelta(minutes=10))).total_seconds()) < 1


def test_an_unreadable_response_keeps_the_project(local_env):
    local_env.write_manifest([make_job("a", minutes_ago=60 * DAY_MINUTES)])
    local_env.write_file("gpu_jobs/job_a/response.yaml", "state: [\n")
    activity = project_activity(local_env.store)
    assert activity.problem.startswith("job a: response.yaml")
    verdict = unshare_verdict(activity, idle_days=1, now=utc_now())
    assert not verdict.leave and verdict.reason.startswith("its jobs cannot be read")


def test_no_activity_time_at_all_keeps_the_project():
    verdict = unshare_verdict(ProjectActivity("p", 0, 0, None), idle_days=1, now=utc_now())
    assert not verdict.leave and verdict.reason == "no activity time known"
