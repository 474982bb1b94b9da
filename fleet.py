"""GPU workers that follow the queue: count the jobs, plan the fleet, launch through SkyPilot.

One scaling cycle:

1. ``count_queue`` reads every reachable project through the same ``ProjectSource`` the worker polls with
   (so an idle cycle costs what an idle poll costs) and counts the jobs that need a GPU: pending ones, running
   ones whose lease expired or was released, and running ones under a live lease;
2. ``plan_fleet`` — a pure function over (queue, live workers, settings) — decides how many workers are
   wanted and what to launch or cancel;
3. ``SkyPilotFleet`` carries the plan out with SkyPilot managed jobs, through one small boundary
   (``SkyPilotApi``: queue, launch, cancel) that tests record.

Workers are SkyPilot *managed jobs* launched from ``skypilot_worker.yaml``: SkyPilot provisions the cheapest
spot GPU that fits and recovers a preempted one under the same task id (so the worker resumes its own claim).
Extra workers run in drain mode (``LOOP_INTERVAL=-1``: they exit once no job is left, and the managed job
ends and stops billing); ``min_workers`` standing workers poll forever. Scale-down is by draining: a worker
that may hold a job is never cancelled; only workers that have not started yet are, when fewer are wanted.
Why not SkyPilot pools: a pool autoscales on the length of SkyPilot's own job queue, but our queue lives in
the projects' manifests, which SkyPilot cannot see; counting it is this module's work either way, and a
managed job per worker gives preemption recovery without keeping a pool's clusters warm.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import jobs
from storage import ProjectSource

logger = logging.getLogger(__name__)

TASK_FILE = Path(__file__).resolve().parent / "skypilot_worker.yaml"
TOKEN_SECRET = "GITLAB_TOKEN"
# A worker id no real worker has, so the protocol rules read every running job as somebody else's.
_PLANNER_ID = "\0fleet-planner"

# SkyPilot's managed job states (sky.jobs.ManagedJobStatus) as this module reads them.
NOT_STARTED = frozenset({"PENDING", "SUBMITTED", "STARTING"})          # no worker process yet: safe to cancel
LIVE = NOT_STARTED | {"RUNNING", "RECOVERING", "WINDING_DOWN", "CANCELLING"}  # counts as capacity
FAILED = frozenset({"FAILED", "FAILED_SETUP", "FAILED_PRECHECKS", "FAILED_NO_RESOURCE", "FAILED_CONTROLLER"})


# -- the queue ---------------------------------------------------------------------------------------
@dataclass
class QueueCount:
    """The jobs that need a GPU now, across every reachable project."""

    pending: int = 0     # never claimed
    expired: int = 0     # running, but its lease lapsed or was released: a worker must take it over
    running: int = 0     # held under a live lease (its worker is busy with it)
    projects: int = 0    # projects read this cycle
    bad_projects: int = 0  # unreadable manifests (counted, never fatal)
    durations: dict[str, list[float]] = field(default_factory=dict)  # "tts/training" → seconds of completed jobs

    @property
    def waiting(self) -> int:
        return self.pending + self.expired

    @property
    def busy(self) -> int:
        """Jobs that occupy a worker now or as soon as one is free."""
        return self.waiting + self.running

    def median_minutes(self) -> dict[str, float]:
        return {kind: statistics.median(values) / 60 for kind, values in sorted(self.durations.items()) if values}


def count_queue(source: ProjectSource, *, max_retries: int, legacy_claim_hours: float = jobs.LEGACY_CLAIM_HOURS,
                now: datetime | None = None) -> QueueCount:
    """Count what ``source`` holds, reading each project the way a worker's scan does (and telling the source
    which projects still have open jobs, so busy ones are revisited and idle ones cost nothing next time)."""
    now = now or jobs.utc_now()
    count = QueueCount()
    for store in source.poll():
        count.projects += 1
        open_jobs = False
        try:
            manifest = jobs.read_manifest(store)
        except jobs.ManifestError as exc:
            logger.warning("%s", exc)
            count.bad_projects += 1
            source.note_scanned(store, has_open_jobs=False)
            continue
        for job in manifest.jobs if manifest else ():
            try:
                response, _ = jobs.read_response(store, job.job_id)
            except jobs.ResponseError:
                open_jobs = True  # a worker is writing it, or a person broke it: either way not ours to count
                continue
            if response is not None and response.state is jobs.JobState.COMPLETED and response.claimed_at:
                seconds = (response.timestamp - response.claimed_at).total_seconds()
                count.durations.setdefault(f"{job.job_type}/{job.mode}", []).append(seconds)
            action = jobs.decide(job, response, worker_id=_PLANNER_ID, now=now, max_retries=max_retries,
                                 legacy_claim_hours=legacy_claim_hours).action
            if action is jobs.Action.CLAIM:
                count.pending += 1
            elif action is jobs.Action.TAKE_OVER:
                count.expired += 1
            elif action is jobs.Action.SKIP and response is not None and not response.state.is_terminal:
                count.running += 1
            else:
                continue
            open_jobs = True
        source.note_scanned(store, has_open_jobs=open_jobs)
    return count


# -- the plan ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetWorker:
    """One worker as SkyPilot lists it (a managed job)."""

    job_id: int
    name: str
    status: str
    submitted_at: float = 0.0

    @property
    def standing(self) -> bool:
        """Launched to keep ``min_workers`` up: it polls forever rather than draining."""
        return _STANDING in self.name


_STANDING = "-standing-"


@dataclass(frozen=True)
class FleetSettings:
    min_workers: int = 0        # standing workers that poll forever (no launch delay for the first job)
    max_workers: int = 4        # never more GPUs than this
    jobs_per_worker: int = 1    # jobs one worker should clear in turn before another GPU is worth starting
    name_prefix: str = "codex-worker"

    def __post_init__(self) -> None:
        if self.min_workers < 0 or self.max_workers < 1 or self.jobs_per_worker < 1:
            raise ValueError("min_workers ≥ 0, max_workers ≥ 1 and jobs_per_worker ≥ 1 are needed")
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) is above max_workers ({self.max_workers})")


@dataclass(frozen=True)
class Launch:
    name: str
    drain: bool   # exits when no job is left


@dataclass(frozen=True)
class Plan:
    wanted: int
    live: int
    launch: tuple[Launch, ...] = ()
    cancel: tuple[FleetWorker, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def idle(self) -> bool:
        return not self.launch and not self.cancel

    def describe(self, queue: QueueCount) -> str:
        lines = [f"queue: {queue.pending} pending, {queue.expired} to take over, {queue.running} running "
                 f"in {queue.projects} project(s)" + (f" ({queue.bad_projects} unreadable)" if queue.bad_projects
                                                      else ""),
                 f"workers: {self.live} live, {self.wanted} wanted"]
        lines += [f"launch {item.name} ({'drain: exits when the queue is empty' if item.drain else 'standing'})"
                  for item in self.launch]
        lines += [f"cancel {worker.name} (managed job {worker.job_id}, {worker.status}: not started, not needed)"
                  for worker in self.cancel]
        lines += list(self.notes)
        if self.idle:
            lines.append("nothing to do")
        return "\n".join(lines)


def plan_fleet(queue: QueueCount, workers: Iterable[FleetWorker], settings: FleetSettings, *,
               stamp: str | None = None) -> Plan:
    """How many workers are wanted and what to launch or cancel. Pure: the same inputs, the same plan.

    wanted = ``ceil(busy jobs / jobs_per_worker)`` clamped to [min_workers, max_workers]. Missing workers are
    launched (standing ones up to ``min_workers``, the rest in drain mode). When fewer are wanted than live,
    only workers that have not started are cancelled, newest first; a started worker drains by itself.
    """
    workers = list(workers)
    live = [w for w in workers if w.status in LIVE]
    wanted = min(settings.max_workers, max(settings.min_workers, math.ceil(queue.busy / settings.jobs_per_worker)))
    notes = [f"{w.name} (managed job {w.job_id}) ended {w.status}: see `sky jobs logs {w.job_id}`"
             for w in workers if w.status in FAILED]
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    launch: list[Launch] = []
    standing_live = sum(1 for w in live if w.standing)
    for i in range(max(0, settings.min_workers - standing_live)):
        launch.append(Launch(f"{settings.name_prefix}{_STANDING}{stamp}-{i + 1}", drain=False))
    for i in range(max(0, wanted - len(live) - len(launch))):
        launch.append(Launch(f"{settings.name_prefix}-{stamp}-{i + 1}", drain=True))
    cancel: list[FleetWorker] = []
    surplus = len(live) - wanted
    if surplus > 0:
        idle = sorted((w for w in live if w.status in NOT_STARTED and not w.standing),
                      key=lambda w: (w.submitted_at, w.job_id), reverse=True)
        cancel = idle[:surplus]
        if surplus > len(cancel):
            notes.append(f"{surplus - len(cancel)} more worker(s) than wanted are running; "
                         "they exit by themselves when the queue is empty")
    return Plan(wanted=wanted, live=len(live), launch=tuple(launch), cancel=tuple(cancel), notes=tuple(notes))


def jobs_per_worker_for(queue: QueueCount, target_wait_minutes: float, default: int = 1) -> int:
    """The sizing rule: a worker clears jobs one after another, so one worker per
    ``target_wait / median job duration`` queued jobs keeps the last job's wait near the target. The durations
    are the projects' own completed jobs (claim → completion); without any, ``default``."""
    medians = queue.median_minutes()
    if not medians:
        return default
    typical = statistics.median(medians.values())
    return max(1, int(target_wait_minutes // max(typical, 1e-9)))


# -- SkyPilot ----------------------------------------------------------------------------------------
class SkyPilotApi(Protocol):
    """The calls this module makes to SkyPilot: the one boundary tests record."""

    def queue(self) -> list[dict[str, Any]]: ...
    def launch(self, task: Any, name: str) -> int | None: ...
    def cancel(self, job_ids: Sequence[int]) -> None: ...


class SkyPilotSdk:
    """``SkyPilotApi`` over SkyPilot's Python SDK (``pip install skypilot``; it talks to the API server)."""

    def __init__(self) -> None:
        import sky  # noqa: F401  (fail early, with the import error, when SkyPilot is not installed)

    def queue(self) -> list[dict[str, Any]]:
        import sky

        records = sky.get(sky.jobs.queue_v2(refresh=False, skip_finished=True))
        records = records[0] if isinstance(records, tuple) else records
        return [dict(record) if not isinstance(record, dict) else record for record in records]

    def launch(self, task: Any, name: str) -> int | None:
        import sky

        job_ids, _ = sky.get(sky.jobs.launch(task, name=name))
        return job_ids[0] if job_ids else None

    def cancel(self, job_ids: Sequence[int]) -> None:
        import sky

        sky.get(sky.jobs.cancel(job_ids=list(job_ids)))


def load_worker_task(path: Path = TASK_FILE, *, drain: bool, token: str | None = None,
                     envs: dict[str, str] | None = None):
    """The worker's SkyPilot task from ``skypilot_worker.yaml`` (parsed and validated by SkyPilot itself),
    in drain mode or standing, with the token as a secret (never an env: SkyPilot hides secrets)."""
    import sky

    task = sky.Task.from_yaml(str(path))
    task.update_envs({**(envs or {}), **({"LOOP_INTERVAL": "-1"} if drain else {})})
    if token:
        task.update_secrets({TOKEN_SECRET: token})
    return task


class SkyPilotFleet:
    """The live workers and the means to change them."""

    def __init__(self, api: SkyPilotApi, settings: FleetSettings, *, task_file: Path = TASK_FILE,
                 token: str | None = None, envs: dict[str, str] | None = None,
                 load_task: Callable[..., Any] = load_worker_task):
        self.api = api
        self.settings = settings
        self.task_file = task_file
        self._token = token
        self._envs = envs or {}
        self._load_task = load_task

    def workers(self) -> list[FleetWorker]:
        """Our workers (by name prefix) among SkyPilot's managed jobs."""
        found = []
        for record in self.api.queue():
            name = str(record.get("job_name") or record.get("task_name") or "")
            if not name.startswith(self.settings.name_prefix):
                continue
            status = record.get("status")
            status = str(getattr(status, "value", status) or "").upper()
            found.append(FleetWorker(int(record["job_id"]), name, status, float(record.get("submitted_at") or 0)))
        return found

    def apply(self, plan: Plan) -> list[str]:
        """Carry a plan out; returns one line per action taken. A failed launch is logged and the rest goes on."""
        done = []
        if plan.cancel:
            self.api.cancel([w.job_id for w in plan.cancel])
            done += [f"cancelled {w.name} (managed job {w.job_id})" for w in plan.cancel]
        for item in plan.launch:
            task = self._load_task(self.task_file, drain=item.drain, token=self._token, envs=self._envs)
            try:
                job_id = self.api.launch(task, item.name)
            except Exception as exc:  # the edge of a cycle: the next cycle tries again
                logger.error("launching %s failed: %s", item.name, exc)
                done.append(f"launch of {item.name} failed: {exc}")
                continue
            done.append(f"launched {item.name} (managed job {job_id})")
        return done


def run_cycle(source: ProjectSource, fleet: SkyPilotFleet, *, max_retries: int,
              dry_run: bool = False, target_wait_minutes: float | None = None,
              echo: Callable[[str], None] = print) -> Plan:
    """One scaling cycle: count, plan, print, and (unless ``dry_run``) apply."""
    queue = count_queue(source, max_retries=max_retries)
    settings = fleet.settings
    if target_wait_minutes:
        per_worker = jobs_per_worker_for(queue, target_wait_minutes, settings.jobs_per_worker)
        settings = replace(settings, jobs_per_worker=per_worker)
    plan = plan_fleet(queue, fleet.workers(), settings)
    medians = queue.median_minutes()
    if medians:
        echo("measured job durations (median, minutes): "
             + ", ".join(f"{kind} {minutes:.0f}" for kind, minutes in medians.items())
             + f"; {settings.jobs_per_worker} job(s) per worker")
    echo(plan.describe(queue))
    if dry_run:
        if not plan.idle:
            echo("dry run: nothing was changed")
        return plan
    for line in fleet.apply(plan):
        echo(line)
    return plan
