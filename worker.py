"""The worker loop: scan projects, pick the oldest job that may run, claim it, run it, repeat.

The loop is separate from running a job (``job_process.JobExecution``). With ``loop_interval < 0`` it runs
in burst mode: until no job is left that this worker could start now — tests and ``make demo`` use it.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import jobs
from job_process import ExecutionSettings, HandlerNotFound, JobExecution, Stop, find_handler
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
        self._current: JobExecution | None = None
        self._finished: dict[tuple[str, str], str] = {}      # (project, job) → state; terminal never changes
        self._reported: set[tuple[str, str, str]] = set()    # problems logged once per manifest version
        self._active_claims: set[str] = set()
        self.jobs_run = 0

    @property
    def log_extra(self) -> dict[str, str]:
        return {"worker_id": self.config.worker_id}

    # -- stopping ------------------------------------------------------------------------------------
    def request_stop(self, *, immediate: bool = False) -> None:
        """First call: finish at the job's next heartbeat and release it. ``immediate``: kill it now."""
        self._stopping.set()
        current = self._current
        if current is not None:
            current.request_stop(Stop.INTERRUPTED, "interrupted: the worker is shutting down "
                                 "(another worker will resume this job)")
            if immediate:
                current.kill_now()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- loop ----------------------------------------------------------------------------------------
    def run(self) -> int:
        logger.info("worker %s started", self.config.worker_id, extra={**self.log_extra, "event": "worker_started"})
        try:
            while not self.stopping:
                try:
                    ran = self.run_once()
                except AccessDenied:
                    raise  # a refused token will not work on the next poll either
                except Exception as exc:  # the edge of the loop: a server down must not end a long-running worker
                    if self.config.loop_interval < 0:
                        raise
                    logger.exception("poll failed, trying again in %.0f s: %s", self.config.loop_interval, exc,
                                     extra={**self.log_extra, "event": "poll_failed"})
                    ran = False
                if ran:
                    continue
                if self.config.loop_interval < 0:
                    break
                self._stopping.wait(self.config.loop_interval)
        finally:
            self.source.close()
        logger.info("worker %s stopped after %d job(s)", self.config.worker_id, self.jobs_run,
                    extra={**self.log_extra, "event": "worker_stopped"})
        return 0

    def run_once(self) -> bool:
        """One poll: scan, then claim and run the first job that can be had. True if a job ran."""
        for candidate in self.scan():
            if self.stopping:
                return False
            lease = self._acquire(candidate)
            if lease is None:
                continue
            self._execute(lease)
            return True
        return False

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
            self._report_once(store, "manifest", str(exc), "manifest_invalid")
            return False, []
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
            decision = jobs.decide(job, response, worker_id=self.config.worker_id, now=now,
                                   lease_seconds=self.config.lease_seconds, max_retries=self.config.max_retries,
                                   active_claims=frozenset(self._active_claims))
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

    def _handle_problem(self, store: ProjectStore, manifest: jobs.Manifest, problem: jobs.JobProblem) -> None:
        self._report_once(store, f"problem-{problem.index}-{manifest.version}", problem.message, "manifest_invalid")
        if problem.job_id is None or (store.name, problem.job_id) in self._finished:
            return
        # A job we can name but not run gets a failed response, so translators see why in the plugin.
        if store.exists(jobs.response_path(problem.job_id)):
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

    def _report_once(self, store: ProjectStore, key: str, message: str, event: str) -> None:
        marker = (store.name, key, message)
        if marker in self._reported:
            return
        self._reported.add(marker)
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
        if takeover:
            logger.info("job %s (%s) %s; retry %d", job.job_id, job.describe(), candidate.decision.reason,
                        lease.response.retry_count, extra={**extra, "event": "lease_taken_over"})
        logger.info("claimed job %s (%s) in %s", job.job_id, job.describe(), store.name,
                    extra={**extra, "event": "job_claimed"})
        return lease

    def _execute(self, lease: jobs.Lease) -> None:
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
        shared = (Path(self.config.checkpoint_dir) / work_dir.parent.name / work_dir.name
                  if self.config.checkpoint_dir else None)
        execution = JobExecution(lease, handler, work_dir, self.config.execution, shared_resume_dir=shared)
        self._current = execution
        self._active_claims.add(lease.response.claim_id or "")
        if self.stopping:  # a signal arrived between the claim and now
            execution.request_stop(Stop.INTERRUPTED, "interrupted: the worker is shutting down")
        started = time.monotonic()
        try:
            outcome = execution.run()
        finally:
            self._current = None
            self._active_claims.discard(lease.response.claim_id or "")
        if outcome.state is not None:
            self._finished[(lease.store.name, job.job_id)] = outcome.state.value
        logger.debug("job %s took %.1f s", job.job_id, time.monotonic() - started)
        self._clean_work_dirs(keep=work_dir)

    def _job_work_dir(self, store: ProjectStore, job_id: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", store.name).strip("_")[-80:] or "project"
        return Path(self.config.work_dir) / slug / f"job_{job_id}"

    def _clean_work_dirs(self, keep: Path) -> None:
        """Keep the newest ``keep_jobs`` job folders (logs, caches) and remove older ones."""
        root = Path(self.config.work_dir)
        folders = sorted((p for p in root.glob("*/job_*") if p.is_dir() and p != keep),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for old in folders[max(0, self.config.keep_jobs - 1):]:
            shutil.rmtree(old, ignore_errors=True)
