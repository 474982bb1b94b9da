"""Running one claimed job: the handler in a child process, the lease in the parent.

The child (spawned, so CUDA state and crashes stay in it) loads the handler and calls ``run``. The parent
owns the store and the lease:

* a keeper thread re-reads the manifest and ``response.yaml`` on a schedule and renews the lease whatever
  the handler is doing (downloads, uploads, evaluation);
* the pump (this thread) relays progress, performs the child's commits with the claim check, and tells the
  child to stop (cancel, lost lease, timeout, shutdown) — the child's next ``heartbeat()`` raises;
* a child that does not stop within the grace period, hangs, segfaults or exits is killed or reaped, and
  the job ends in a state the plugin understands. The worker itself carries on.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jobs
from handler_discovery import load_handler
from storage import FileAction, StorageError, StoreSpec, open_store
from worker_logging import JobLogFile, configure_logging

logger = logging.getLogger(__name__)

LOG_PATH = "logs.txt"


# -- the child -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChildSettings:
    log_format: str = "text"
    verbose: bool = False
    device: str = "auto"
    in_process: bool = False
    resume_upload_seconds: float = 3600.0  # how often resumable state may be committed to the project
    visible_devices: str | None = None     # CUDA_VISIBLE_DEVICES for the job (one GPU per job on multi-GPU hosts)


def child_main(conn, store_spec: StoreSpec, job_context: dict[str, Any], handler_file: str, work_dir: str,
               settings: ChildSettings, shared_resume_dir: str | None = None) -> None:
    """Entry point of the job's child process (or thread, in in-process mode)."""
    from handlers.base import JobCallbacks, JobInterrupted

    job_id = str(job_context.get("job_id"))
    job_log = JobLogFile(Path(work_dir) / LOG_PATH, job_id=job_id)
    if settings.visible_devices is not None and not settings.in_process:
        # Before anything imports torch: CUDA reads this once, when it initialises.
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.visible_devices
    if not settings.in_process:
        # The parent coordinates shutdown: a Ctrl-C or a SIGTERM sent to the whole process group must not
        # kill the handler mid-write; the parent asks it to stop at its next heartbeat instead.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _exit_with_parent()
        configure_logging(log_format=settings.log_format, verbose=settings.verbose,
                          secrets=[os.environ.get("GITLAB_TOKEN", "")])
        job_log.attach()
    store = None
    try:
        store = open_store(store_spec)
        callbacks = JobCallbacks(conn, store, job_context, Path(work_dir), device=settings.device,
                                 shared_resume_dir=Path(shared_resume_dir) if shared_resume_dir else None,
                                 resume_upload_seconds=settings.resume_upload_seconds)
        module = load_handler(Path(handler_file))
        logger.info("running handler %s", handler_file, extra={"job_id": job_id})
        returned = module.run(job_context, callbacks)
        conn.send(("result", callbacks.resolve_outcome(returned)))
    except JobInterrupted as stop:
        logger.info("handler stopped: %s", stop.reason, extra={"job_id": job_id})
        conn.send(("stopped", stop.kind))
    except Exception as exc:  # the edge of the job: everything becomes a failed state, with a traceback
        logger.error("handler failed:\n%s", traceback.format_exc(), extra={"job_id": job_id})
        conn.send(("result", {"success": False, "error_message": human_error(exc)}))
    finally:
        if store is not None:
            store.close()
        if not settings.in_process:
            job_log.detach()


def _exit_with_parent() -> None:
    """If the worker dies (kill -9, OOM), its job must not run on orphaned, holding a GPU: the lease
    will expire and another worker will take the job over."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def human_error(exc: BaseException) -> str:
    """A short message for translators (the traceback goes to logs.txt)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    message = f"{name}: {text}" if text else name
    return message[:500]


# -- the parent ------------------------------------------------------------------------------------
class Stop(str, enum.Enum):
    CANCELED = "canceled"
    LEASE_LOST = "lease_lost"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"


@dataclass
class ExecutionSettings:
    heartbeat_seconds: float = 300.0
    check_seconds: float = 60.0          # how often the keeper re-reads manifest + response (reads only)
    grace_seconds: float = 60.0          # after a stop request, before the child is killed
    log_tail_bytes: int = 256 * 1024     # logs.txt is capped to its tail when committed
    child: ChildSettings = field(default_factory=ChildSettings)


@dataclass
class JobOutcome:
    state: jobs.JobState | None            # None: not written by us (lease lost, released)
    event: str                             # job_completed, job_failed, job_canceled, lease_lost, job_released
    message: str = ""
    result: dict[str, Any] | None = None


class JobExecution:
    """One claimed job from start to its final write."""

    def __init__(self, lease: jobs.Lease, handler_file: Path, work_dir: Path, settings: ExecutionSettings,
                 shared_resume_dir: Path | None = None):
        self.lease = lease
        self.shared_resume_dir = shared_resume_dir
        self.handler_file = handler_file
        self.work_dir = Path(work_dir)
        self.settings = settings
        self.job_id = lease.job.job_id
        self.log_extra = {"job_id": self.job_id, "project": lease.store.name}
        self._lease_lock = threading.Lock()        # keeper and pump both write response.yaml
        self._stop: tuple[Stop, str] | None = None
        self._stop_sent_at: float | None = None
        self._kill_now = False
        self._progress: dict[str, Any] = {"epochs_completed": None, "message": None}
        self._written: dict[str, Any] = {"at": time.monotonic(), "message": lease.response.status_message}
        self._logs_exist: bool | None = None
        self._done = threading.Event()
        self.job_log = JobLogFile(self.work_dir / LOG_PATH, job_id=self.job_id)

    # -- control from outside (signals) --------------------------------------------------------------
    def request_stop(self, kind: Stop, reason: str) -> None:
        if self._stop is None or kind is Stop.LEASE_LOST:
            self._stop = (kind, reason)

    def kill_now(self) -> None:
        self._kill_now = True

    # -- main ----------------------------------------------------------------------------------------
    def run(self) -> JobOutcome:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.job_log.attach(only_this_job=not self.settings.child.in_process)
        try:
            return self._run()
        finally:
            self.job_log.detach()

    def _run(self) -> JobOutcome:
        context = {**self.lease.job.raw, "job_id": self.job_id, "project_id": self.lease.store.name,
                   "response": _response_dict(self.lease.response)}
        parent_conn, child_conn = multiprocessing.Pipe(duplex=True)
        args = (child_conn, self.lease.store.spec(), context, str(self.handler_file), str(self.work_dir),
                self.settings.child, str(self.shared_resume_dir) if self.shared_resume_dir else None)
        if self.settings.child.in_process:
            child: Any = threading.Thread(target=child_main, args=args, name=f"job-{self.job_id}", daemon=True)
        else:
            child = multiprocessing.get_context("spawn").Process(target=child_main, args=args,
                                                                 name=f"job-{self.job_id}")
        keeper = threading.Thread(target=self._keep_lease, name=f"lease-{self.job_id}", daemon=True)
        child.start()
        keeper.start()
        final: tuple[str, Any] | None = None
        try:
            final = self._pump(parent_conn, child)
        finally:
            self._done.set()
            keeper.join()
            parent_conn.close()
        return self._finish(final, child)

    def _pump(self, conn, child) -> tuple[str, Any] | None:
        """Relay the child's messages until it exits; enforce stop requests and the grace period."""
        final = None
        while True:
            try:
                # No `continue` after a message: a chatty child must not starve the stop checks below.
                if conn.poll(0.1):
                    message = conn.recv()
                    if message[0] in ("result", "stopped"):
                        final = message
                    else:
                        self._handle(conn, message)
            except (EOFError, OSError):
                pass  # the child is gone; the checks below find out how
            if self._stop is not None and self._stop_sent_at is None:
                self._stop_sent_at = time.monotonic()
                logger.info("asking the job to stop: %s", self._stop[1], extra=self.log_extra)
                try:
                    conn.send(("stop", self._stop[0].value, self._stop[1]))
                except (BrokenPipeError, OSError):
                    pass
            overdue = self._stop_sent_at is not None and (
                time.monotonic() - self._stop_sent_at > self.settings.grace_seconds)
            if (self._kill_now or overdue) and child.is_alive():
                self._kill(child)
            if not child.is_alive():
                while final is None and _poll_quietly(conn):
                    message = conn.recv()
                    if message[0] in ("result", "stopped"):
                        final = message
                return final

    def _kill(self, child) -> None:
        if isinstance(child, threading.Thread):
            logger.error("the in-process job cannot be killed; waiting for it", extra=self.log_extra)
            child.join()
            return
        logger.warning("killing the job's process (pid %s)", child.pid, extra=self.log_extra)
        child.kill()
        child.join(10)

    def _handle(self, conn, message: tuple) -> None:
        kind = message[0]
        if kind == "progress":
            data = message[1]
            if data.get("epochs_completed") is not None:
                self._progress["epochs_completed"] = int(data["epochs_completed"])
            if data.get("message"):
                self._progress["message"] = str(data["message"])
        elif kind == "commit":
            _, request, actions, text = message
            conn.send(("commit_done", request, self._commit_for_child(actions, text)))

    def _commit_for_child(self, actions: list[FileAction], text: str) -> Any:
        if self._stop is not None and self._stop[0] is Stop.LEASE_LOST:
            from handlers.base import JobInterrupted

            return JobInterrupted(Stop.LEASE_LOST.value, self._stop[1])
        try:
            with self._lease_lock:
                jobs.commit_with_claim(self.lease, actions, text)
                self._written["at"] = time.monotonic()
            return None
        except jobs.LeaseLost as exc:
            self.request_stop(Stop.LEASE_LOST, str(exc))
            from handlers.base import JobInterrupted

            return JobInterrupted(Stop.LEASE_LOST.value, str(exc))
        except StorageError as exc:
            return exc
        except Exception as exc:  # network trouble etc.: the handler decides whether to retry
            logger.warning("commit for the job failed: %s", exc, extra=self.log_extra)
            return RuntimeError(f"commit failed: {human_error(exc)}")

    # -- the keeper ----------------------------------------------------------------------------------
    def _keep_lease(self) -> None:
        """Check for cancel/loss/timeout and renew the lease on time, until the job ends."""
        last_check = 0.0
        while not self._done.wait(min(0.2, self.settings.check_seconds)):
            now = time.monotonic()
            if now - last_check < self.settings.check_seconds or self._stop is not None:
                continue
            last_check = now
            try:
                with self._lease_lock:
                    verdict, reason = jobs.check_lease(self.lease)
                    if verdict is not jobs.LeaseCheck.OK:
                        kind = Stop.TIMED_OUT if verdict is jobs.LeaseCheck.TIMED_OUT else Stop.CANCELED
                        self.request_stop(kind, reason)
                        continue
                    if self._renewal_due(now):
                        self._renew()
            except jobs.LeaseLost as exc:
                logger.warning("lease lost: %s", exc, extra={**self.log_extra, "event": "lease_lost"})
                self.request_stop(Stop.LEASE_LOST, str(exc))
            except Exception as exc:  # a flaky server: the lease has slack, try again at the next check
                logger.warning("lease check failed, will retry: %s", human_error(exc), extra=self.log_extra)

    def _renewal_due(self, now: float) -> bool:
        since = now - self._written["at"]
        if since >= self.settings.heartbeat_seconds:
            return True
        # A new stage ("training", "uploading") is worth an early write, but not more than a few per period.
        message_changed = self._progress["message"] not in (None, self._written["message"])
        return message_changed and since >= self.settings.heartbeat_seconds / 5

    def _renew(self) -> None:
        jobs.renew_lease(self.lease, epochs_completed=self._progress["epochs_completed"],
                         status_message=self._progress["message"], extra=self._log_actions())
        self._written = {"at": time.monotonic(), "message": self._progress["message"]}

    def _log_actions(self) -> list[FileAction]:
        """logs.txt rides along with lease writes, so "View Logs" in the plugin is live."""
        path = f"{jobs.job_dir(self.job_id)}/{LOG_PATH}"
        tail = self.job_log.tail(self.settings.log_tail_bytes)
        if not tail:
            return []
        if self._logs_exist is None:
            self._logs_exist = self.lease.store.exists(path)
        action = FileAction.update(path, tail) if self._logs_exist else FileAction.create(path, tail)
        self._logs_exist = True
        return [action]

    # -- the end -------------------------------------------------------------------------------------
    def _finish(self, final: tuple[str, Any] | None, child) -> JobOutcome:
        outcome = self._outcome(final, child)
        if outcome.event == "lease_lost":
            logger.warning("job %s: lease lost, writing nothing more: %s", self.job_id, outcome.message,
                           extra={**self.log_extra, "event": "lease_lost"})
            return outcome
        level = logging.INFO if outcome.event in ("job_completed", "job_released", "job_canceled") else logging.ERROR
        logger.log(level, "job %s %s%s", self.job_id, outcome.event.removeprefix("job_"),
                   f": {outcome.message}" if outcome.message else "", extra={**self.log_extra, "event": outcome.event})
        if self._progress["epochs_completed"] is not None:
            self.lease.response.epochs_completed = max(self.lease.response.epochs_completed,
                                                       self._progress["epochs_completed"])
        try:
            with self._lease_lock:
                self._write_final(outcome)
        except jobs.LeaseLost as exc:
            logger.warning("lease lost before the final write: %s", exc,
                           extra={**self.log_extra, "event": "lease_lost"})
            return JobOutcome(None, "lease_lost", str(exc))
        return outcome

    def _write_final(self, outcome: JobOutcome) -> None:
        for attempt in range(5):
            try:
                logs = self._log_actions()
                if outcome.event == "job_released":
                    jobs.release_lease(self.lease, outcome.message, extra=logs)
                elif outcome.state is jobs.JobState.COMPLETED:
                    jobs.finish_job(self.lease, outcome.state, result=outcome.result or {}, extra=logs)
                elif outcome.state is jobs.JobState.CANCELED:
                    jobs.finish_job(self.lease, outcome.state, termination_reason=outcome.message, extra=logs)
                else:
                    jobs.finish_job(self.lease, jobs.JobState.FAILED, error_message=outcome.message, extra=logs)
                return
            except jobs.LeaseLost:
                raise
            except Exception as exc:  # transient server trouble: back off; if it persists the lease expires
                delay = min(30.0, 2.0 ** attempt)
                logger.warning("final write failed (%s), retrying in %.0f s", human_error(exc), delay,
                               extra=self.log_extra)
                time.sleep(delay)
        logger.error("could not record the job's end; another worker will pick it up when the lease expires",
                     extra=self.log_extra)

    def _outcome(self, final: tuple[str, Any] | None, child) -> JobOutcome:
        stop = self._stop
        if stop is not None and stop[0] is Stop.LEASE_LOST:
            return JobOutcome(None, "lease_lost", stop[1])
        if stop is not None and stop[0] is Stop.CANCELED:
            return JobOutcome(jobs.JobState.CANCELED, "job_canceled", stop[1])
        if stop is not None and stop[0] is Stop.TIMED_OUT:
            return JobOutcome(jobs.JobState.FAILED, "job_failed", stop[1])
        if stop is not None and stop[0] is Stop.INTERRUPTED and (final is None or final[0] == "stopped"):
            return JobOutcome(None, "job_released", stop[1])
        if final is not None and final[0] == "result":
            data = dict(final[1])
            if data.pop("success", False):
                data.pop("error_message", None)
                return JobOutcome(jobs.JobState.COMPLETED, "job_completed", result=data)
            return JobOutcome(jobs.JobState.FAILED, "job_failed", str(data.get("error_message") or "failed"))
        if final is not None and final[0] == "stopped":
            return JobOutcome(jobs.JobState.FAILED, "job_failed", "the job stopped without a reason")
        return JobOutcome(jobs.JobState.FAILED, "job_failed", _crash_message(child))


def _crash_message(child) -> str:
    code = getattr(child, "exitcode", None)
    if code is None:
        return "the job's process ended without reporting a result"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the job's process crashed ({name}); see logs.txt"
    return f"the job's process exited with code {code} before reporting a result; see logs.txt"


def _poll_quietly(conn) -> bool:
    try:
        return conn.poll(0)
    except (EOFError, OSError):
        return False


def _response_dict(response: jobs.JobResponse) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(response.dump())
