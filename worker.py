"""The worker loop: scan projects, pick the oldest job that may run, claim it, run it, repeat.

The loop is separate from running a job (``job_process.JobExecution``). With ``loop_interval < 0`` it runs
in burst mode: until no job is left that this worker could start now — tests and ``make demo`` use it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import jobs
from claim_records import ClaimRecords
from handler_api import StopKind
from handler_discovery import HandlerNotFound, find_handler
from job_process import ExecutionSettings, JobExecution
from storage import AccessDenied, ProjectSource, ProjectStore

logger = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    worker_id: str
    work_dir: Path = Path("work")
    lease_seconds: float = 1800.0
    heartbeat_seconds: float = 300.0
    max_retries: int = 3
    loop_interval: float = 60.0           # seconds between polls; < 0: exit when no job is left
    keep_jobs: int = 5                    # job work folders kept on disk
    handler_paths: Sequence[Path] = ()
    checkpoint_dir: Path | None = None    # shared folder (bucket mount) for resumable state
    legacy_claim_hours: float = jobs.LEGACY_CLAIM_HOURS  # how long a claim of the earlier worker holds
    gpus: Sequence[str] = ()              # one job per listed GPU at a time; () = one job, devices as they are
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)


@dataclass(frozen=True)
class Candidate:
    store: ProjectStore
    job: jobs.JobSpec
    decision: jobs.Decision
    previous: object  # FileVersion | None
    previous_response: jobs.JobResponse | None


class Worker:
    def __init__(self, source: ProjectSource, config: WorkerConfig):
        self.source = source
        self.config = config
        self._stopping = threading.Event()
        # Each slot runs one job at a time: a GPU id (the child sees only that GPU), or None for one slot
        # that leaves the devices as they are.
        self._slots: list[str | None] = list(config.gpus) or [None]
        self._running: dict[str | None, tuple[threading.Thread, JobExecution | None]] = {}
        self._changed = threading.Condition()   # a slot was freed or filled
        self._finished: dict[tuple[str, str], str] = {}      # (project, job) → state; terminal never changes
        self._reported: dict[tuple[str, str], tuple[str, str]] = {}  # (project, what) → (version, message) logged
        self._active_claims: set[str] = set()                # claim ids this process is running now
        # Claims made under this name, to tell a predecessor's (resume at once) from a live namesake's.
        roots = [Path(config.work_dir), *([Path(config.checkpoint_dir)] if config.checkpoint_dir else [])]
        self._claims = ClaimRecords(config.worker_id, roots)
        self.jobs_run = 0

    @property
    def log_extra(self) -> dict[str, str]:
        return {"worker_id": self.config.worker_id}

    # -- stopping ------------------------------------------------------------------------------------
    def request_stop(self, *, immediate: bool = False) -> None:
        """First call: finish at the jobs' next heartbeat and release them. ``immediate``: kill them now."""
        self._stopping.set()
        with self._changed:
            executions = [execution for _, execution in self._running.values() if execution is not None]
            self._changed.notify_all()
        for execution in executions:
            execution.request_stop(StopKind.INTERRUPTED, "interrupted: the worker is shutting down "
                                   "(another worker will resume this job)")
            if immediate:
                execution.kill_now()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- loop ----------------------------------------------------------------------------------------
    def run(self) -> int:
        """Poll and run jobs until stopped (or, in burst mode, until nothing is left to start)."""
        logger.info("worker %s started with %d slot(s)", self.config.worker_id, len(self._slots),
                    extra={**self.log_extra, "event": "worker_started"})
        try:
            while not self.stopping:
                try:
                    started = self.fill_slots()
                except AccessDenied:
                    raise  # a refused token will not work on the next poll either
                except Exception as exc:  # the edge of the loop: a server down must not end a long-running worker
                    if self.config.loop_interval < 0:
                        raise
                    logger.exception("poll failed, trying again in %.0f s: %s", self.config.loop_interval, exc,
                                     extra={**self.log_extra, "event": "poll_failed"})
                    started = 0
                if started:
                    continue
                with self._changed:
                    if not self._running and self.config.loop_interval < 0:
                        break
                    # Wake when a job ends (a slot to fill) or when the next poll is due.
                    timeout = None if self.config.loop_interval < 0 else self.config.loop_interval
                    if not self.stopping:
                        self._changed.wait(timeout)
        finally:
            self._wait_for_jobs()
            self._claims.close()
            self.source.close()
        logger.info("worker %s stopped after %d job(s)", self.config.worker_id, self.jobs_run,
                    extra={**self.log_extra, "event": "worker_stopped"})
        return 0

    def fill_slots(self) -> int:
        """One poll: claim jobs for the free slots, oldest first, and start them. Returns how many started."""
        free = self._free_slots()
        if not free:
            return 0
        started = 0
        for candidate in self.scan():
            if self.stopping or not free:
                break
            lease = self._acquire(candidate)
            if lease is None:
                continue
            self._start(lease, free.pop(0))
            started += 1
        return started

    def _free_slots(self) -> list[str | None]:
        with self._changed:
            return [slot for slot in self._slots if slot not in self._running]

    def _start(self, lease: jobs.Lease, slot: str | None) -> None:
        thread = threading.Thread(target=self._execute, args=(lease, slot), name=f"job-{lease.job.job_id}")
        with self._changed:
            self._running[slot] = (thread, None)
        thread.start()

    def _wait_for_jobs(self) -> None:
        while True:
            with self._changed:
                threads = [thread for thread, _ in self._running.values()]
            if not threads:
                return
            for thread in threads:
                thread.join()

    # -- scanning ------------------------------------------------------------------------------------
    def scan(self) -> list[Candidate]:
        """Every job this worker could start now, oldest ``submitted_at`` first across projects."""
        found: list[Candidate] = []
        for store in self.source.poll():
            try:
                open_jobs, candidates = self._scan_store(store)
            except Exception as exc:  # one broken project must not stop the others
                logger.exception("could not scan %s: %s", store.name, exc,
                                 extra={"project": store.name, "event": "scan_failed"})
                self.source.note_scanned(store, has_open_jobs=True)
                continue
            self.source.note_scanned(store, has_open_jobs=open_jobs)
            found.extend(candidates)
        found.sort(key=lambda c: c.job.sort_key)
        return found

    def _scan_store(self, store: ProjectStore) -> tuple[bool, list[Candidate]]:
        try:
            manifest = jobs.read_manifest(store)
        except jobs.ManifestError as exc:
            self._report_once(store, "manifest", str(exc), "manifest_invalid", version=exc.version)
            return False, []
        self._reported.pop((store.name, "manifest"), None)
        if manifest is None:
            return False, []
        for problem in manifest.problems:
            self._handle_problem(store, manifest, problem)
        candidates: list[Candidate] = []
        open_jobs = False
        now = jobs.utc_now()
        for job in manifest.jobs:
            key = (store.name, job.job_id)
            if key in self._finished:
                continue
            try:
                response, file = jobs.read_response(store, job.job_id)
            except jobs.ResponseError as exc:
                self._report_once(store, job.job_id, f"job {job.job_id}: {exc}; leaving it alone", "job_skipped")
                continue
            mine = self._own_claim(store, job, response, now)
            if mine is None:  # running in this process
                open_jobs = True
                continue
            decision = jobs.decide(job, response, worker_id=self.config.worker_id, now=now,
                                   max_retries=self.config.max_retries, predecessor_claims=mine,
                                   legacy_claim_hours=self.config.legacy_claim_hours)
            if decision.action is jobs.Action.SKIP:
                if response is not None and response.state.is_terminal:
                    self._finished[key] = response.state.value
                else:
                    open_jobs = True
                continue
            open_jobs = True
            if decision.action in (jobs.Action.FAIL_TIMED_OUT, jobs.Action.FAIL_RETRIES, jobs.Action.CANCEL):
                self._close_unclaimed(store, job, decision, file, response)
                continue
            candidates.append(Candidate(store, job, decision, file, response))
        return open_jobs, candidates

    def _own_claim(self, store: ProjectStore, job: jobs.JobSpec, response: jobs.JobResponse | None,
                   now) -> frozenset[str] | None:
        """For a running claim under this worker's name: None when this process runs it; else the claim
        ids ``decide`` may resume at once (the claim, when it is provably a predecessor's). A claim under
        our name that is not provably ours is a namesake's: said loudly, once per claim."""
        if response is None or response.state is not jobs.JobState.RUNNING or (
                response.worker_id != self.config.worker_id):
            return frozenset()
        if response.claim_id and response.claim_id in self._active_claims:
            return None
        verdict = self._claims.verdict(response.claim_id, last_write=response.timestamp, now=now,
                                       heartbeat_seconds=self.config.heartbeat_seconds)
        if verdict.own:
            return frozenset({response.claim_id or ""})
        if not response.lease_expired(now, self.config.legacy_claim_hours):
            self._report_once(
                store, f"namesake-{job.job_id}",
                f"job {job.job_id} runs under this worker's name ({self.config.worker_id}) but not in this "
                f"process: {verdict.reason}; leaving it alone until its lease expires. Give every worker "
                "its own --worker-id", "worker_id_clash", version=response.claim_id or "")
        return frozenset()

    def _handle_problem(self, store: ProjectStore, manifest: jobs.Manifest, problem: jobs.JobProblem) -> None:
        self._report_once(store, f"problem-{problem.index}", problem.message, "manifest_invalid",
                          version=manifest.version)
        if problem.job_id is None or (store.name, problem.job_id) in self._finished:
            return
        # A job we can name but not run gets a failed response, so translators see why in the plugin.
        if store.exists(jobs.job_paths(problem.job_id).response):
            self._finished[(store.name, problem.job_id)] = "unknown"
            return
        message = problem.message.split(": ", 2)[-1]  # drop "<file>: job <id>: "
        if jobs.write_unclaimed_outcome(store, problem.job_id, jobs.JobState.FAILED,
                                        f"invalid job in the manifest: {message}",
                                        worker_id=self.config.worker_id, previous=None):
            self._finished[(store.name, problem.job_id)] = jobs.JobState.FAILED.value

    def _close_unclaimed(self, store, job, decision, file, response) -> None:
        state = jobs.JobState.CANCELED if decision.action is jobs.Action.CANCEL else jobs.JobState.FAILED
        message = decision.reason
        if decision.action is jobs.Action.FAIL_RETRIES:
            message = f"gave up: {decision.reason} (retry limit {self.config.max_retries})"
        extra = {"job_id": job.job_id, "project": store.name,
                 "event": "job_canceled" if state is jobs.JobState.CANCELED else "job_failed"}
        if jobs.write_unclaimed_outcome(store, job.job_id, state, message, worker_id=self.config.worker_id,
                                        previous=file, previous_response=response):
            logger.info("job %s %s: %s", job.job_id, state.value, message, extra=extra)
            self._finished[(store.name, job.job_id)] = state.value
            shared = self._shared_resume_dir(store, job.job_id)
            if shared is not None:
                shutil.rmtree(shared, ignore_errors=True)  # nobody will resume it

    def _report_once(self, store: ProjectStore, key: str, message: str, event: str, *, version: str = "") -> None:
        """Log a problem once per project, subject and file version (not on every poll)."""
        marker = (store.name, key)
        if self._reported.get(marker) == (version, message):
            return
        self._reported[marker] = (version, message)
        logger.warning("%s: %s", store.name, message, extra={"project": store.name, "event": event})

    # -- claiming and running ------------------------------------------------------------------------
    def _acquire(self, candidate: Candidate) -> jobs.Lease | None:
        job, store = candidate.job, candidate.store
        extra = {"job_id": job.job_id, "project": store.name}
        takeover = candidate.decision.action in (jobs.Action.TAKE_OVER, jobs.Action.RESUME_OWN)
        try:
            lease = jobs.claim_job(
                store, job, worker_id=self.config.worker_id, lease_seconds=self.config.lease_seconds,
                previous=candidate.previous if takeover else None,
                previous_response=candidate.previous_response if takeover else None,
                count_retry=candidate.decision.action is jobs.Action.TAKE_OVER,
            )
        except jobs.ClaimLost as exc:
            logger.info("%s", exc, extra={**extra, "event": "job_skipped"})
            return None
        self._active_claims.add(lease.response.claim_id or "")
        self._claims.record(lease.response.claim_id or "", store.name, job.job_id)
        previous = candidate.previous_response
        if takeover and previous is not None and previous.worker_id == self.config.worker_id:
            self._claims.forget(previous.claim_id)  # the predecessor's record: this claim replaces it
        if takeover:
            logger.info("job %s (%s) %s; retry %d", job.job_id, job.describe(), candidate.decision.reason,
                        lease.response.retry_count, extra={**extra, "event": "lease_taken_over"})
        logger.info("claimed job %s (%s) in %s", job.job_id, job.describe(), store.name,
                    extra={**extra, "event": "job_claimed"})
        return lease

    def _execute(self, lease: jobs.Lease, slot: str | None) -> None:
        """Run one claimed job to its end (in its slot's thread), then free the slot."""
        try:
            self._run_job(lease, slot)
        except Exception:  # the edge of a job: log it; the lease expires and another worker takes over
            logger.exception("job %s: unexpected error in the worker", lease.job.job_id,
                             extra={"job_id": lease.job.job_id, "project": lease.store.name})
        finally:
            self._claims.forget(lease.response.claim_id)
            self._active_claims.discard(lease.response.claim_id or "")
            with self._changed:
                self._running.pop(slot, None)
                self._changed.notify_all()

    def _run_job(self, lease: jobs.Lease, slot: str | None) -> None:
        job = lease.job
        work_dir = self._job_work_dir(lease.store, job.job_id)
        self.jobs_run += 1
        try:
            handler = find_handler(job, self.config.handler_paths)
        except HandlerNotFound as exc:
            logger.error("job %s failed: %s", job.job_id, exc,
                         extra={"job_id": job.job_id, "project": lease.store.name, "event": "job_failed"})
            try:
                jobs.finish_job(lease, jobs.JobState.FAILED, error_message=str(exc))
            except jobs.LeaseLost:
                pass
            self._finished[(lease.store.name, job.job_id)] = jobs.JobState.FAILED.value
            return
        shared = self._shared_resume_dir(lease.store, job.job_id)
        settings = self.config.execution
        if slot is not None:  # the child sees only its own GPU (as device 0)
            settings = replace(settings, child=replace(settings.child, visible_devices=slot))
        execution = JobExecution(lease, handler, work_dir, settings, shared_resume_dir=shared)
        with self._changed:
            self._running[slot] = (self._running[slot][0], execution)
        if self.stopping:  # a signal arrived between the claim and now
            execution.request_stop(StopKind.INTERRUPTED, "interrupted: the worker is shutting down")
        started = time.monotonic()
        outcome = execution.run()
        if outcome.state is not None:
            self._finished[(lease.store.name, job.job_id)] = outcome.state.value
        logger.debug("job %s took %.1f s", job.job_id, time.monotonic() - started)
        self._clean_work_dirs(keep=work_dir)

    def _shared_resume_dir(self, store: ProjectStore, job_id: str) -> Path | None:
        """The job's folder in the shared ``--checkpoint-dir``, laid out like its work folder."""
        if not self.config.checkpoint_dir:
            return None
        return jobs.local_job_dir(self.config.checkpoint_dir, store.name, job_id)

    def _job_work_dir(self, store: ProjectStore, job_id: str) -> Path:
        return jobs.local_job_dir(self.config.work_dir, store.name, job_id)

    def _clean_work_dirs(self, keep: Path) -> None:
        """Keep the newest ``keep_jobs`` job folders (logs, caches) and remove older ones — never the
        folder of a job still running in another slot."""
        root = Path(self.config.work_dir)
        with self._changed:
            busy = {execution.work_dir for _, execution in self._running.values() if execution is not None}
        candidates = root.glob(f"*/{jobs.JOB_FOLDER_PREFIX}*")  # local_job_dir's layout
        folders = sorted((p for p in candidates if p.is_dir() and p != keep and p not in busy),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for old in folders[max(0, self.config.keep_jobs - 1):]:
            shutil.rmtree(old, ignore_errors=True)

    # -- one job, by name (an operator debugging it: worker_entry.py --job) ---------------------------
    def inspect_job(self, store: ProjectStore, job_id: str) -> "NamedJob":
        """What this worker would decide about ``job_id`` of ``store`` now, and why. Changes nothing."""
        where = f"{store.name}:{job_id}"
        try:
            manifest = jobs.read_manifest(store)
        except jobs.ManifestError as exc:
            return NamedJob(where, None, str(exc))
        if manifest is None:
            return NamedJob(where, None, f"the project has no {jobs.MANIFEST_PATH}")
        job = manifest.find(job_id)
        if job is None:
            problem = next((p for p in manifest.problems if p.job_id == job_id), None)
            return NamedJob(where, None, problem.message if problem else f"no job {job_id} in {jobs.MANIFEST_PATH}")
        try:
            response, file = jobs.read_response(store, job_id)
        except jobs.ResponseError as exc:
            return NamedJob(where, None, f"job {job_id}: {exc}")
        now = jobs.utc_now()
        mine = self._own_claim(store, job, response, now) or frozenset()
        decision = jobs.decide(job, response, worker_id=self.config.worker_id, now=now,
                               max_retries=self.config.max_retries, predecessor_claims=mine,
                               legacy_claim_hours=self.config.legacy_claim_hours)
        reason = decision.reason or "pending"
        if decision.action is jobs.Action.SKIP and response is not None and response.lease_expires_at:
            reason += f", lease until {jobs.format_time(response.lease_expires_at)}"
        if decision.action is jobs.Action.FAIL_RETRIES:
            reason += f" (retry limit {self.config.max_retries})"
        runnable = decision.action in (jobs.Action.CLAIM, jobs.Action.TAKE_OVER, jobs.Action.RESUME_OWN)
        return NamedJob(where, decision, reason, Candidate(store, job, decision, file, response) if runnable else None)

    def run_named_job(self, store: ProjectStore, job_id: str, *, dry_run: bool = False) -> tuple[bool, str]:
        """Run only ``job_id`` of ``store`` to its end, if it may run now (pending, or an expired or
        released lease). Returns (completed, one line saying what happened or why it did not run). With
        ``dry_run``: (whether it may run now, the decision and why), and nothing changes."""
        try:
            named = self.inspect_job(store, job_id)
            if dry_run:
                return named.candidate is not None, named.describe()
            if named.candidate is None:
                return False, f"{named.where} may not run now: {named.reason}"
            lease = self._acquire(named.candidate)
            if lease is None:
                return False, f"{named.where}: another worker claimed it first"
            self._start(lease, self._slots[0])
            self._wait_for_jobs()
            response, _ = jobs.read_response(store, job_id)
        finally:
            self._wait_for_jobs()
            self._claims.close()
            self.source.close()
        if response is None:
            return False, f"{named.where}: its response.yaml is gone"
        message = response.error_message or response.termination_reason or response.status_message
        if response.state is jobs.JobState.COMPLETED:
            return True, f"{named.where}: completed"
        if response.state is jobs.JobState.RUNNING:
            return False, f"{named.where}: stopped before it finished ({message})"
        return False, f"{named.where}: {response.state.value}: {message}"


@dataclass(frozen=True)
class NamedJob:
    """A job an operator named (``--job PROJECT:JOB_ID``) and what this worker would decide about it now."""

    where: str                          # PROJECT:JOB_ID
    decision: jobs.Decision | None      # None: no job this worker can consider; ``reason`` says why
    reason: str
    candidate: Candidate | None = None  # set when it may run now

    def describe(self) -> str:
        action = self.decision.action.value if self.decision else "none"
        return f"{self.where}: {action} ({self.reason})"
