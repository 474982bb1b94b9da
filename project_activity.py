"""When each project last saw GPU-job activity, and leaving the projects that have none (least privilege).

A worker user that stays a member of every project it ever served can read them all for as long as its
token lives. ``unshare_idle`` removes its own membership from projects whose jobs have been quiet for a
while — never from one with a job still to run, or one whose jobs cannot be read (it cannot tell then).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import jobs
from storage import ProjectStore, StorageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectActivity:
    """A project's jobs at a glance."""

    project: str
    jobs: int
    unfinished: int                      # pending or running
    last_job_activity: datetime | None   # newest response.yaml timestamp or submitted_at
    problem: str = ""                    # why its jobs cannot be read; "" when they can


def project_activity(store: ProjectStore) -> ProjectActivity:
    """Read the manifest and every job's ``response.yaml``. Never raises for a project's own content: a
    manifest or response that cannot be read is the ``problem``."""
    try:
        manifest = jobs.read_manifest(store)
    except jobs.ManifestError as exc:
        return ProjectActivity(store.name, 0, 0, None, str(exc))
    except StorageError as exc:
        return ProjectActivity(store.name, 0, 0, None, _one_line(exc))
    if manifest is None:
        return ProjectActivity(store.name, 0, 0, None)
    # Invalid jobs the worker can name get a failed response.yaml; until then they are unfinished too.
    job_ids = [job.job_id for job in manifest.jobs] + [p.job_id for p in manifest.problems if p.job_id]
    submitted = {job.job_id: job.submitted_at for job in manifest.jobs}
    newest: datetime | None = None
    unfinished = 0
    for job_id in job_ids:
        try:
            response, _ = jobs.read_response(store, job_id)
        except (jobs.ResponseError, StorageError) as exc:
            return ProjectActivity(store.name, len(job_ids), unfinished, newest, f"job {job_id}: {_one_line(exc)}")
        if response is None or not response.state.is_terminal:
            unfinished += 1
        for moment in (submitted.get(job_id), response.timestamp if response else None):
            if moment is not None and (newest is None or moment > newest):
                newest = moment
    return ProjectActivity(store.name, len(job_ids), unfinished, newest)


@dataclass(frozen=True)
class UnshareVerdict:
    activity: ProjectActivity
    leave: bool
    reason: str  # one line for the operator


def unshare_verdict(activity: ProjectActivity, *, idle_days: float, now: datetime,
                    project_active_at: datetime | None = None) -> UnshareVerdict:
    """Whether the worker user should leave the project. A project that never had a job is judged by
    ``project_active_at`` (GitLab's last activity), so one shared yesterday is not left today."""
    if activity.problem:
        return UnshareVerdict(activity, False, f"its jobs cannot be read ({activity.problem})")
    if activity.unfinished:
        return UnshareVerdict(activity, False, f"{activity.unfinished} unfinished job(s)")
    since = activity.last_job_activity or project_active_at
    what = "job activity" if activity.last_job_activity else "job yet, and no project activity"
    if since is None:
        return UnshareVerdict(activity, False, "no activity time known")
    idle = now - since
    if idle < timedelta(days=idle_days):
        return UnshareVerdict(activity, False, f"active {_days(idle)} ago")
    return UnshareVerdict(activity, True, f"no {what} for {_days(idle)} (since {jobs.format_time(since)})")


@dataclass(frozen=True)
class UnshareOutcome:
    verdict: UnshareVerdict
    action: str   # "left", "would leave", "kept", "not a direct member", "failed"

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def unshare_idle(source, *, idle_days: float, dry_run: bool, now: datetime | None = None) -> list[UnshareOutcome]:
    """Leave every project (of a ``GitLabSource``) without job activity for ``idle_days``; with ``dry_run``
    only say which. Each project left, or that could not be left, is logged."""
    now = now or jobs.utc_now()
    user = source.current_user()
    outcomes: list[UnshareOutcome] = []
    for store in source.visible_stores():
        verdict = unshare_verdict(project_activity(store), idle_days=idle_days, now=now,
                                  project_active_at=store.last_activity_at)
        extra = {"project": store.name, "event": "project_unshared"}
        if not verdict.leave:
            action = "kept"
        elif dry_run:
            action = "would leave"
        else:
            try:
                left = source.leave_project(store, user["id"])
            except StorageError as exc:
                logger.warning("could not leave %s: %s", store.name, exc, extra={**extra, "event": "unshare_failed"})
                verdict = UnshareVerdict(verdict.activity, True, _one_line(exc))
                action = "failed"
            else:
                action = "left" if left else "not a direct member"
                if left:
                    logger.info("left %s as %s: %s", store.name, user.get("username"), verdict.reason, extra=extra)
                else:
                    logger.info("%s: %s is a member only through its group; remove it there to unshare",
                                store.name, user.get("username"), extra=extra)
        outcomes.append(UnshareOutcome(verdict, action))
    return outcomes


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:.1f} days" if days < 10 else f"{days:.0f} days"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
