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

import hashlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jobs
from handler_api import (FINAL_MESSAGES, CommitDone, CommitRequest, HandlerResult, HandlerStopped, JobCallbacks,
                         JobInterrupted, ProgressReport, StopKind, StopRequest, portable_error)
from handler_discovery import load_handler
from storage import FileAction, StorageError, StorageUnavailable, StoreSpec
from stores import open_store
from worker_logging import REDACTOR, JobLogFile, OutputRelay, configure_logging, redacted_data

logger = logging.getLogger(__name__)

FINAL_WRITE_RETRIES = 6   # transient failures of the final write (server trouble), with capped back-off


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
               settings: ChildSettings, shared_resume_dir: str | None = None, output: tuple | None = None) -> None:
    """Entry point of the job's child process (or thread, in in-process mode). ``output``: the write ends
    (connections) of the pipes that become this process's stdout and stderr (see ``OutputRelay``)."""
    job_id = str(job_context.get("job_id"))
    job_log = JobLogFile(Path(work_dir) / jobs.LOGS_FILE, job_id=job_id)
    if settings.visible_devices is not None and not settings.in_process:
        # Before anything imports torch: CUDA reads this once, when it initialises.
        os.environ["CUDA_VISIBLE_DEVICES"] = settings.visible_devices
    if output is not None and not settings.in_process:
        _redirect_output(output)
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
        conn.send(HandlerResult(redacted_data(callbacks.resolve_outcome(returned))))
    except JobInterrupted as stop:
        logger.info("handler stopped: %s", stop.reason, extra={"job_id": job_id})
        conn.send(HandlerStopped(str(getattr(stop.kind, "value", stop.kind)), REDACTOR.redact(stop.reason)))
    except Exception as exc:  # the edge of the job: everything becomes a failed state, with a traceback
        logger.error("handler failed:\n%s", traceback.format_exc(), extra={"job_id": job_id})
        conn.send(HandlerResult({"success": False, "error_message": human_error(exc)}))
    finally:
        if store is not None:
            store.close()
        if not settings.in_process:
            job_log.detach()


def _redirect_output(output: tuple) -> None:
    """Point fd 1 and 2 at the worker's relay, which redacts secrets before anything reaches its own
    output: a handler's print, a library's C-level write and a subprocess's output all pass through it."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    for target, pipe in zip((1, 2), output):
        os.dup2(pipe.fileno(), target)
        pipe.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # lines reach the worker's output as they happen
        except (AttributeError, ValueError):
            pass


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
    """A short message for translators (the traceback goes to logs.txt), with secrets redacted."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    message = REDACTOR.redact(f"{name}: {text}" if text else name)
    return message[:500]


# -- the parent ------------------------------------------------------------------------------------


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
        self._stop: tuple[StopKind, str] | None = None
        self._stop_sent_at: float | None = None
        self._kill_now = False
        self._stage: str | None = None         # the earlier worker's heartbeat(stage=...), logged when it changes
        # Replaced whole, never edited in place: the keeper must read epochs and their files as one.
        self._progress: dict[str, Any] = {"epochs_completed": None, "message": None, "files": {}}
        self._written: dict[str, Any] = {"at": time.monotonic(), "message": lease.response.status_message}
        self._sent: dict[str, str] = {}        # job file -> digest of the bytes we last committed there
        self._exists: dict[str, bool] = {}     # job file -> whether the project has it (create or update)
        self._done = threading.Event()
        self._manifest_problem: str | None = None  # why the manifest cannot be read now (the job carries on)
        self.job_log = JobLogFile(self.work_dir / jobs.LOGS_FILE, job_id=self.job_id)

    # -- control from outside (signals) --------------------------------------------------------------
    def request_stop(self, kind: StopKind, reason: str) -> None:
        if self._stop is None or kind is StopKind.LEASE_LOST:
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
        relay, writers = None, ()
        if self.settings.child.in_process:
            child: Any = threading.Thread(target=child_main, args=args, name=f"job-{self.job_id}", daemon=True)
        else:
            pipes = [os.pipe(), os.pipe()]  # the child's stdout and stderr, read here through the redactor
            writers = tuple(multiprocessing.connection.Connection(write, readable=False) for _, write in pipes)
            relay = OutputRelay({pipes[0][0]: 1, pipes[1][0]: 2})
            child = multiprocessing.get_context("spawn").Process(target=child_main, args=(*args, writers),
                                                                 name=f"job-{self.job_id}")
        keeper = threading.Thread(target=self._keep_lease, name=f"lease-{self.job_id}", daemon=True)
        if relay is not None:
            relay.start()
        try:
            child.start()
        finally:
            for writer in writers:  # the child has its copies; ours would keep the pipes open forever
                writer.close()
        keeper.start()
        final: HandlerResult | HandlerStopped | None = None
        try:
            final = self._pump(parent_conn, child)
        finally:
            self._done.set()
            keeper.join()
            parent_conn.close()
            if relay is not None:
                relay.join(2.0)
        return self._finish(final, child)

    def _pump(self, conn, child) -> HandlerResult | HandlerStopped | None:
        """Relay the child's messages until it exits; enforce stop requests and the grace period."""
        final = None
        while True:
            try:
                # No `continue` after a message: a chatty child must not starve the stop checks below.
                if conn.poll(0.1):
                    message = conn.recv()
                    if isinstance(message, FINAL_MESSAGES):
                        final = message
                    else:
                        self._handle(conn, message)
            except (EOFError, OSError):
                pass  # the child is gone; the checks below find out how
            if self._stop is not None and self._stop_sent_at is None:
                self._stop_sent_at = time.monotonic()
                logger.info("asking the job to stop: %s", self._stop[1], extra=self.log_extra)
                try:
                    conn.send(StopRequest(self._stop[0].value, self._stop[1]))
                except (BrokenPipeError, OSError):
                    pass
            overdue = self._stop_sent_at is not None and (
                time.monotonic() - self._stop_sent_at > self.settings.grace_seconds)
            if (self._kill_now or overdue) and child.is_alive():
                self._kill(child)
            if not child.is_alive():
                while final is None and _poll_quietly(conn):
                    message = conn.recv()
                    if isinstance(message, FINAL_MESSAGES):
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

    def _handle(self, conn, message: Any) -> None:
        if isinstance(message, ProgressReport):
            progress = dict(self._progress)
            if message.epochs_completed is not None:
                progress["epochs_completed"] = int(message.epochs_completed)
            if message.message:
                progress["message"] = REDACTOR.redact(str(message.message))
            if message.files:
                progress["files"] = {**progress["files"], **self._job_files(message.files)}
            if message.stage and message.stage != self._stage:
                self._stage = message.stage
                logger.info("stage: %s", REDACTOR.redact(str(message.stage)), extra=self.log_extra)
            self._progress = progress
        elif isinstance(message, CommitRequest):
            conn.send(CommitDone(message.request_id, self._commit_for_child(message.actions, message.message)))
        else:
            logger.warning("ignoring a message of unknown type from the job: %s", type(message).__name__,
                           extra=self.log_extra)

    def _commit_for_child(self, actions: list[FileAction], text: str) -> BaseException | None:
        """None once committed; else the error the handler's ``commit`` raises, in a form that survives
        the pipe with its type (a lost lease becomes the stop itself)."""
        if self._stop is not None and self._stop[0] is StopKind.LEASE_LOST:
            return JobInterrupted(StopKind.LEASE_LOST, self._stop[1])
        text = REDACTOR.redact(text)
        try:
            with self._lease_lock:
                if self._unwritten(self._progress):
                    self._renew_before(text)
                jobs.commit_with_claim(self.lease, actions, text)
                self._note_child_commit(actions)
                self._written["at"] = time.monotonic()
            return None
        except jobs.LeaseLost as exc:
            self.request_stop(StopKind.LEASE_LOST, str(exc))
            return JobInterrupted(StopKind.LEASE_LOST, str(exc))
        except Exception as exc:  # storage errors, or network trouble etc.: the handler decides whether to retry
            if not isinstance(exc, StorageError):
                logger.warning("commit for the job failed: %s", human_error(exc), extra=self.log_extra)
            return portable_error(exc)

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
                    unreadable = verdict is jobs.LeaseCheck.MANIFEST_UNREADABLE
                    if verdict is not jobs.LeaseCheck.OK and not unreadable:
                        kind = StopKind.TIMED_OUT if verdict is jobs.LeaseCheck.TIMED_OUT else StopKind.CANCELED
                        self.request_stop(kind, reason)
                        continue
                    if self._note_manifest(reason if unreadable else None) or self._renewal_due(now):
                        self._renew()
            except jobs.LeaseLost as exc:
                logger.warning("lease lost: %s", exc, extra={**self.log_extra, "event": "lease_lost"})
                self.request_stop(StopKind.LEASE_LOST, str(exc))
            except Exception as exc:  # a flaky server: the lease has slack, try again at the next check
                logger.warning("lease check failed, will retry: %s", human_error(exc), extra=self.log_extra)

    def _note_manifest(self, problem: str | None) -> bool:
        """An unreadable manifest never stops the job or its renewals (another worker would run it a second
        time): say so once in the log, and in the status until it reads again. True when that changed."""
        if problem == self._manifest_problem:
            return False
        self._manifest_problem = problem
        if problem:
            logger.warning("%s; the job carries on and keeps its lease, but a cancel is not seen until the "
                           "manifest reads again", problem, extra={**self.log_extra, "event": "manifest_invalid"})
        else:
            logger.info("%s reads again", jobs.MANIFEST_PATH, extra=self.log_extra)
        return True

    def _status(self, message: str | None) -> str:
        """The status to publish: the job's own, plus a note while the manifest cannot be read."""
        note = f"{jobs.MANIFEST_PATH} cannot be read: a cancel is not seen until it is fixed"
        base = (message if message is not None else self.lease.response.status_message or "")
        base = base.removesuffix(note).removesuffix(" · ")
        if not self._manifest_problem:
            return base
        return f"{base} · {note}" if base else note

    def _renewal_due(self, now: float) -> bool:
        since = now - self._written["at"]
        if since >= self.settings.heartbeat_seconds:
            return True
        # A new stage ("training", "uploading") or a finished epoch is worth an early write, but not more
        # than a few per period.
        progress = self._progress
        changed = progress["message"] not in (None, self._written["message"]) or self._unwritten(progress)
        return changed and since >= self.settings.heartbeat_seconds / 5

    def _renew(self) -> None:
        """Heartbeat, with logs.txt when it changed and the files that came with the progress. A write
        refused for anything but server trouble (too large, say) is sent again with less, down to
        response.yaml alone: what rides along must never let the lease lapse."""
        progress = self._progress
        levels = (_Level(self.settings.log_tail_bytes, files=True), _Level(0, files=True), _Level(0, files=False))
        for number, level in enumerate(levels, 1):
            extras = self._extras(progress, level)
            try:
                jobs.renew_lease(self.lease, epochs_completed=extras.epochs,
                                 status_message=self._status(progress["message"]), extra=extras.actions)
                break
            except jobs.LeaseLost:
                raise
            except Exception as exc:
                if _transient(exc) or number == len(levels):
                    raise
                self._exists.clear()
                logger.warning("heartbeat refused (%s); sending it with less", human_error(exc),
                               extra=self.log_extra)
        self._note_written(extras)
        self._written = {"at": time.monotonic(), "message": progress["message"]}

    def _renew_before(self, text: str) -> None:
        """A child's commit rewrites response.yaml: first publish the progress it follows, so the epochs
        and their metrics never lag behind (or run ahead of) what the commit uploads."""
        try:
            self._renew()
        except jobs.LeaseLost:
            raise
        except Exception as exc:
            logger.warning("heartbeat before %r failed: %s", text, human_error(exc), extra=self.log_extra)

    # -- what rides along with response.yaml ---------------------------------------------------------
    def _job_files(self, files: dict[str, bytes]) -> dict[str, bytes]:
        """Files a heartbeat brought, kept only inside this job's folder (the child checked it too)."""
        paths = jobs.job_paths(self.job_id)
        kept = {}
        for path, content in files.items():
            try:
                safe = FileAction.create(path, content).path
            except (ValueError, TypeError) as exc:
                logger.warning("ignoring a heartbeat file: %s", exc, extra=self.log_extra)
                continue
            if not safe.startswith(paths.folder + "/") or safe in (paths.response, paths.logs):
                logger.warning("ignoring heartbeat file %s: outside the job's folder", path, extra=self.log_extra)
                continue
            kept[safe] = content
        return kept

    def _unwritten(self, progress: dict[str, Any]) -> bool:
        """Progress the project does not show yet: a later epoch, or files with other bytes."""
        epochs = progress["epochs_completed"]
        if epochs is not None and epochs > self.lease.response.epochs_completed:
            return True
        return any(self._sent.get(path) != _digest(content) for path, content in progress["files"].items())

    def _extras(self, progress: dict[str, Any], level: "_Level") -> "_Extras":
        """The job files for one response.yaml write: each only when its bytes changed since we wrote it."""
        actions: list[FileAction] = []
        digests: dict[str, str | None] = {}

        def put(path: str, content: bytes) -> None:
            digest = _digest(content)
            if self._sent.get(path) == digest:
                return
            if path not in self._exists:
                self._exists[path] = self.lease.store.exists(path)
            actions.append((FileAction.update if self._exists[path] else FileAction.create)(path, content))
            digests[path] = digest

        tail = self.job_log.tail(level.log_bytes) if level.log_bytes else b""
        if tail:
            put(jobs.job_paths(self.job_id).logs, tail)
        if level.files:
            for path, content in progress["files"].items():
                put(path, content)
        if level.cleanup:
            for action in jobs.resume_cleanup(self.lease.store, self.job_id):
                actions.append(action)
                digests[action.path] = None
        return _Extras(actions, digests, progress["epochs_completed"] if level.files else None)

    def _note_written(self, extras: "_Extras") -> None:
        for path, digest in extras.digests.items():
            self._exists[path] = digest is not None
            if digest is None:
                self._sent.pop(path, None)
            else:
                self._sent[path] = digest

    def _note_child_commit(self, actions: Sequence[FileAction]) -> None:
        """The child's commit may have written files we publish too (the metrics CSV with the model)."""
        tracked = {*self._progress["files"], jobs.job_paths(self.job_id).logs}
        for action in actions:
            self._exists[action.path] = action.action != "delete"
            if action.action != "delete" and action.path in tracked:
                self._sent[action.path] = _digest(action.payload())
            else:
                self._sent.pop(action.path, None)

    # -- the end -------------------------------------------------------------------------------------
    def _finish(self, final: HandlerResult | HandlerStopped | None, child) -> JobOutcome:
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
        """The job's last response.yaml, with logs.txt and the progress files; a finished job (not a
        released one) also drops its resumable state, which nobody will resume. The state itself must
        land: a write refused for anything but server trouble is sent again with less riding along (a
        shorter log, no log, no progress files, no clean-up), server trouble is retried with back-off."""
        finished = outcome.state is not None
        tail = self.settings.log_tail_bytes
        levels = [_Level(tail, files=True, cleanup=finished), _Level(tail // 16, files=True, cleanup=finished),
                  _Level(0, files=True, cleanup=finished), _Level(0, files=False, cleanup=finished),
                  _Level(0, files=False)]
        number, failures = 0, 0
        while True:
            level = levels[number]
            try:
                extras = self._extras(self._progress, level)
                self._write_state(outcome, extras.actions)
                break
            except jobs.LeaseLost:
                raise
            except Exception as exc:
                if not _transient(exc) and number + 1 < len(levels):
                    number += 1
                    self._exists.clear()
                    logger.warning("final write refused (%s); sending it again with less riding along",
                                   human_error(exc), extra=self.log_extra)
                    continue
                failures += 1
                if failures > FINAL_WRITE_RETRIES:
                    logger.error("could not record the job's end; another worker will pick it up when the lease "
                                 "expires", extra=self.log_extra)
                    return
                delay = min(30.0, 2.0 ** (failures - 1))
                logger.warning("final write failed (%s), retrying in %.0f s", human_error(exc), delay,
                               extra=self.log_extra)
                time.sleep(delay)
        self._note_written(extras)
        if finished and not level.cleanup:
            logger.warning("the job's resumable state stays in %s: removing it was refused",
                           jobs.job_paths(self.job_id).resume, extra=self.log_extra)
        if finished and self.shared_resume_dir is not None:
            shutil.rmtree(self.shared_resume_dir, ignore_errors=True)

    def _write_state(self, outcome: JobOutcome, extra: list[FileAction]) -> None:
        if outcome.event == "job_released":
            jobs.release_lease(self.lease, outcome.message, extra=extra)
        elif outcome.state is jobs.JobState.COMPLETED:
            jobs.finish_job(self.lease, outcome.state, result=outcome.result or {}, extra=extra)
        elif outcome.state is jobs.JobState.CANCELED:
            jobs.finish_job(self.lease, outcome.state, termination_reason=outcome.message, extra=extra)
        else:
            jobs.finish_job(self.lease, jobs.JobState.FAILED, error_message=outcome.message, extra=extra)

    def _outcome(self, final: HandlerResult | HandlerStopped | None, child) -> JobOutcome:
        stop = self._stop
        if stop is not None and stop[0] is StopKind.LEASE_LOST:
            return JobOutcome(None, "lease_lost", stop[1])
        if stop is not None and stop[0] is StopKind.CANCELED:
            return JobOutcome(jobs.JobState.CANCELED, "job_canceled", stop[1])
        if stop is not None and stop[0] is StopKind.TIMED_OUT:
            return JobOutcome(jobs.JobState.FAILED, "job_failed", stop[1])
        if stop is not None and stop[0] is StopKind.INTERRUPTED and (final is None or isinstance(final, HandlerStopped)):
            return JobOutcome(None, "job_released", stop[1])
        if isinstance(final, HandlerResult):
            data = redacted_data(dict(final.outcome))
            if data.pop("success", False):
                data.pop("error_message", None)
                return JobOutcome(jobs.JobState.COMPLETED, "job_completed", result=data)
            return JobOutcome(jobs.JobState.FAILED, "job_failed", str(data.get("error_message") or "failed"))
        if isinstance(final, HandlerStopped):
            return JobOutcome(jobs.JobState.FAILED, "job_failed", "the job stopped without a reason")
        return JobOutcome(jobs.JobState.FAILED, "job_failed", _crash_message(child))


@dataclass(frozen=True)
class _Level:
    """How much rides along with one response.yaml write."""

    log_bytes: int              # tail of logs.txt (0: none)
    files: bool = True          # the files that came with the progress (and the epochs they count)
    cleanup: bool = False       # delete the job's resume/ folder


@dataclass
class _Extras:
    actions: list[FileAction]
    digests: dict[str, str | None]   # path -> digest of the bytes written (None: deleted)
    epochs: int | None               # epochs_completed to report with them


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _transient(exc: BaseException) -> bool:
    """Server trouble (worth the same write again later), not a refusal of this write."""
    return isinstance(exc, (StorageUnavailable, ConnectionError, TimeoutError))


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
