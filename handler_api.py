"""The handler contract: what a handler sees, and what crosses between it and the worker.

A handler is a module with ``run(job_context, callbacks) -> dict`` (found by ``handler_discovery``). It runs
in the job's child process (``job_process.child_main``), while the worker's parent process keeps the lease
and performs every write. What the handler sees:

* ``job_context``: the manifest job as the plugin wrote it, plus ``project_id`` and ``response`` (the
  current ``response.yaml`` as a dict);
* ``callbacks`` (``JobCallbacks``), its only line to the worker: ``heartbeat`` (progress; where a stop
  surfaces, as ``JobInterrupted``), ``should_stop``; ``scanner`` (``JobStorage``: direct reads, writes
  committed by the worker with the claim check, so a worker that lost the job never overwrites the new
  owner's results); the resume API ``get_resume_dir``, ``save_resume_state(force=...)``,
  ``clear_resume_state``; ``get_work_dir``, ``get_job_config``, ``get_device``; ``mark_complete``,
  ``mark_failed``.

The two ends talk over a multiprocessing pipe, which pickles; every message is one of the frozen
dataclasses below, matched by type:

* child → worker: a ``ProgressReport`` at each heartbeat; a ``CommitRequest`` for each ``scanner.commit``, after
  which the child waits for its answer; at the end exactly one of ``FINAL_MESSAGES``: ``HandlerResult``
  (returned or failed) or ``HandlerStopped`` (a ``JobInterrupted`` went through ``run``).
* worker → child: a ``CommitDone`` answering each ``CommitRequest`` (same id; the error to raise, or None);
  a ``StopRequest`` at any time (cancel, lost lease, timeout, shutdown), which the child reads at its next
  heartbeat, commit or ``should_stop`` and turns into ``JobInterrupted``.

Every exception that may cross (a stop, a storage error from the parent's commit) rebuilds on the other
side with its type and fields; ``portable_error`` turns anything else into a ``CommitFailed``. Handlers
written for the earlier worker run unchanged (``heartbeat(stage=...)``, ``get_work_dir() / "x"``,
``scanner.server_url``) and import these names from ``handlers.base``; ``scanner.access_token`` is refused.
The protocol behind it: docs/job_protocol.md.
"""

from __future__ import annotations

import enum
import itertools
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import job_settings
import jobs
from storage import FileAction, FileVersion, ProjectStore, StorageError, confine_path
from worker_logging import REDACTOR

logger = logging.getLogger(__name__)

__all__ = ["StopKind", "JobInterrupted", "CommitFailed", "portable_error", "ProgressReport", "CommitRequest",
           "HandlerResult", "HandlerStopped", "CommitDone", "StopRequest", "FINAL_MESSAGES", "Channel",
           "JobStorage", "JobCallbacks", "split_by_size", "MAX_PUBLISHED_BYTES"]


# -- stops ---------------------------------------------------------------------------------------------
class StopKind(str, enum.Enum):
    """Why the worker stops a job; the values are what ``JobInterrupted.kind`` compares equal to."""

    CANCELED = "canceled"
    LEASE_LOST = "lease_lost"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"   # the worker is shutting down (SIGTERM, preemption)


class JobInterrupted(BaseException):
    """The worker asked this job to stop: canceled, lease lost, timed out or shutting down.

    It derives from BaseException on purpose: a handler's ``except Exception`` (around a training step,
    say) must not swallow it. Handlers that want to save state catch it, save, and re-raise.
    """

    def __init__(self, kind: StopKind | str, reason: str):
        super().__init__(reason)
        self.kind = _stop_kind(kind)
        self.reason = reason

    def __reduce__(self):  # two constructor arguments: the default pickling would call it with one
        return (type(self), (self.kind, self.reason))


def _stop_kind(kind: StopKind | str) -> StopKind | str:
    try:
        return StopKind(kind)
    except ValueError:
        return str(kind)


# -- errors that cross the pipe ------------------------------------------------------------------------
class CommitFailed(StorageError):
    """The parent could not perform a handler's commit for a reason that is not a storage error
    (e.g. a network library's exception); ``error_type`` names the original exception's class."""

    def __init__(self, message: str = "", *, path: str | None = None, error_type: str = ""):
        super().__init__(message, path=path)
        self.error_type = error_type


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling with its type and message, else a ``CommitFailed``
    carrying its type name and first line, redacted (an exception that cannot be rebuilt must not break
    the pipe, and one whose fields would not survive must not arrive half-empty)."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        same = type(copy) is type(exc) and str(copy) == str(exc) and copy.__dict__ == exc.__dict__
    except Exception:
        same = False
    if same:
        return exc
    text = REDACTOR.redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    path = getattr(exc, "path", None)
    return CommitFailed(f"{type(exc).__name__}: {text}" if text else type(exc).__name__,
                        path=path if isinstance(path, str) else None, error_type=type(exc).__name__)


# -- child → worker ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgressReport:
    """A heartbeat: epochs done, what the job is doing now (``stage``: the earlier worker's tag), and small
    job files that belong to this progress (the metrics CSV)."""

    epochs_completed: int | None = None
    message: str | None = None
    stage: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)   # job-folder path → bytes, committed with it


@dataclass(frozen=True)
class CommitRequest:
    """Commit these actions with the claim check; the answer is a ``CommitDone`` with the same id."""

    request_id: int
    actions: list[FileAction]
    message: str


@dataclass(frozen=True)
class HandlerResult:
    """The handler returned (or failed): ``outcome`` is ``{"success": bool, ...}``."""

    outcome: dict[str, Any]


@dataclass(frozen=True)
class HandlerStopped:
    """The handler let a ``JobInterrupted`` through: it saved what it could and stopped."""

    kind: str
    reason: str = ""


# -- worker → child ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommitDone:
    """The answer to ``CommitRequest``: ``error`` is None on success, else the exception to raise."""

    request_id: int
    error: BaseException | None = None


@dataclass(frozen=True)
class StopRequest:
    """Stop at the next heartbeat."""

    kind: str
    reason: str


FINAL_MESSAGES = (HandlerResult, HandlerStopped)


class Channel(Protocol):
    """The duplex connection to the worker (a multiprocessing Connection)."""

    def send(self, obj: Any) -> None: ...
    def recv(self) -> Any: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...


# -- the project as a handler sees it ------------------------------------------------------------------
class JobStorage:
    """The project as a handler sees it: direct reads, claim-checked writes."""

    def __init__(self, store: ProjectStore, callbacks: "JobCallbacks"):
        self._store = store
        self._callbacks = callbacks

    @property
    def name(self) -> str:
        return self._store.name

    @property
    def max_commit_bytes(self) -> int:
        return self._store.max_commit_bytes

    @property
    def server_url(self) -> str | None:
        """The GitLab server's address (None for a local project), as the earlier worker's scanner had."""
        return self._store.spec().options.get("url")

    @property
    def access_token(self) -> str:
        # The earlier worker handed its token to handlers; this one never does (it would end up in
        # their logs and errors). Reads go through the methods below.
        raise AttributeError("handlers get no GitLab token here: read project files through "
                             "callbacks.scanner (read, list_files, download, download_many)")

    def read(self, path: str) -> FileVersion | None:
        return self._store.read(path)

    def version(self, path: str) -> str | None:
        return self._store.version(path)

    def exists(self, path: str) -> bool:
        return self._store.exists(path)

    def list_files(self, prefix: str = "") -> list[str]:
        return self._store.list_files(prefix)

    def download(self, path: str, dest: Path) -> Path:
        return self._store.download(path, Path(dest))

    def download_many(self, paths: Sequence[str], dest_dir: Path, *, missing_ok: bool = False) -> dict[str, Path]:
        """Fetch several files, in few requests where the backend can; returns path → local file."""
        return self._store.download_many(list(paths), Path(dest_dir), missing_ok=missing_ok)

    def written_paths(self, path: str) -> list[str]:
        """Every path a create of ``path`` writes (``ProjectStore.written_paths``): a file that must never
        be overwritten is looked for at all of them."""
        return self._store.written_paths(path)

    def commit_bytes(self, actions: Sequence[FileAction]) -> int:
        """What committing ``actions`` writes, copies included: the measure ``max_commit_bytes`` caps."""
        return self._store.commit_bytes(actions)

    def commit(self, actions: Sequence[FileAction], message: str) -> None:
        """Commit atomically, with the job's claim check. Precondition failures raise the storage errors
        (``VersionConflict`` etc.) so callers can re-read and merge."""
        self._callbacks._commit(list(actions), message)

    def commit_in_batches(self, actions: Sequence[FileAction], message: str) -> int:
        """Commit many actions in as few commits as the backend's body cap allows; returns the count."""
        batches = split_by_size(actions, self.max_commit_bytes)
        for number, batch in enumerate(batches, 1):
            suffix = f" ({number}/{len(batches)})" if len(batches) > 1 else ""
            self.commit(batch, message + suffix)
        return len(batches)


def split_by_size(actions: Sequence[FileAction], max_bytes: int) -> list[list[FileAction]]:
    """Group actions in order so each group's payload stays under ``max_bytes`` (a lone larger action
    gets a group of its own: the backend moves big files out of the commit body, e.g. through LFS)."""
    batches: list[list[FileAction]] = []
    current: list[FileAction] = []
    size = 0
    for action in actions:
        action_size = action.size()
        if current and size + action_size > max_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(action)
        size += action_size
    if current:
        batches.append(current)
    return batches


MAX_PUBLISHED_BYTES = 8 * 1024 * 1024  # files sent with a heartbeat ride in a lease commit: keep them small


def _published_bytes(job_id: str, path: str, local: str | Path) -> bytes:
    """The bytes of a file handed to ``heartbeat(files=...)``; only the job's own folder may be written,
    and not the worker's own files in it."""
    paths = jobs.job_paths(job_id)
    safe = confine_path(path, what="heartbeat file")
    if not safe.startswith(paths.folder + "/") or safe in (paths.response, paths.logs):
        raise ValueError(f"heartbeat files go inside {paths.folder}/ (not {jobs.RESPONSE_FILE} or "
                         f"{jobs.LOGS_FILE}), not {path}")
    size = Path(local).stat().st_size
    if size > MAX_PUBLISHED_BYTES:
        raise ValueError(f"{local} ({size} bytes) is too large to send with a heartbeat; commit it instead")
    return Path(local).read_bytes()


# -- the callbacks -------------------------------------------------------------------------------------
class JobCallbacks:
    """The handler's side of the job: progress, stop requests, storage, configuration, outcome."""

    def __init__(self, channel: Channel, store: ProjectStore, job_context: dict[str, Any], work_dir: Path,
                 *, device: str = "auto", shared_resume_dir: Path | None = None,
                 resume_upload_seconds: float = 3600.0):
        self._channel = channel
        self._job_context = job_context
        self._work_dir = Path(work_dir)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self._device = device
        self._shared_resume_dir = Path(shared_resume_dir) if shared_resume_dir else None
        self._resume_dir: Path | None = None
        self._resume_upload_seconds = resume_upload_seconds
        self._resume_uploaded_at: float | None = None
        self._stop: JobInterrupted | None = None
        self._outcome: dict[str, Any] | None = None
        self._request_ids = itertools.count(1)
        self.scanner = JobStorage(store, self)

    # -- progress and stop requests ------------------------------------------------------------------
    def heartbeat(self, epochs_completed: int | None = None, message: str | None = None,
                  files: Mapping[str, str | Path] | None = None, *, stage: str | None = None) -> None:
        """Report progress; raises ``JobInterrupted`` when the worker wants the job to stop.

        ``stage`` ("download", "training", "upload") is the earlier worker's step tag, accepted so its
        handlers run unchanged; the worker logs each new stage.

        ``files`` (``{path in the job folder: local file}``) are small files that belong to this progress,
        such as the metrics CSV whose rows ``epochs_completed`` counts: the worker commits them together
        with the ``response.yaml`` that reports it, and again in the job's final write. Their bytes are
        read now, so the file may change afterwards. The progress is reported even when the job is being
        stopped: the epoch that just finished still counts.
        """
        published = {path: _published_bytes(self._job_context["job_id"], path, local)
                     for path, local in (files or {}).items()}
        self._drain()
        self._channel.send(ProgressReport(epochs_completed, message, stage, published))
        self._raise_if_stopped()

    def should_stop(self) -> bool:
        """True once a stop was requested (for loops that prefer to wind down on their own)."""
        self._drain()
        return self._stop is not None

    def check_heartbeat_needed(self) -> None:
        """The earlier worker's periodic check: here a heartbeat without news (cheap; the worker decides
        when to write)."""
        self.heartbeat()

    def _raise_if_stopped(self) -> None:
        if self._stop is not None:
            raise self._stop

    def _drain(self, wait_for: int | None = None) -> BaseException | None:
        """Read the worker's messages; with ``wait_for``, block until that commit's answer arrives."""
        while wait_for is not None or self._channel.poll(0):
            message = self._channel.recv()
            if isinstance(message, StopRequest):
                self._stop = JobInterrupted(message.kind, message.reason)
            elif isinstance(message, CommitDone) and message.request_id == wait_for:
                return message.error
        return None

    # -- writes through the worker -------------------------------------------------------------------
    def _commit(self, actions: list[FileAction], message: str) -> None:
        """Raises what the worker's commit raised, with its type: a storage error, or ``JobInterrupted``
        when the lease was lost (this job must stop and write nothing more)."""
        self._raise_if_stopped()
        request = next(self._request_ids)
        self._channel.send(CommitRequest(request, list(actions), message))
        error = self._drain(wait_for=request)
        if isinstance(error, JobInterrupted):
            self._stop = error
        if error is not None:
            raise error

    # -- context -------------------------------------------------------------------------------------
    def get_work_dir(self) -> Path:
        """This job's scratch folder (a ``Path``; ``str()`` it for APIs that want text)."""
        return self._work_dir

    # The earlier worker's JobCallbacks attributes, which its handlers read.
    @property
    def work_dir(self) -> Path:
        return self._work_dir

    @property
    def job_context(self) -> dict[str, Any]:
        return self._job_context

    @property
    def job_id(self) -> str:
        return str(self._job_context["job_id"])

    @property
    def project_id(self) -> Any:
        return self._job_context.get("project_id")

    @property
    def worker_id(self) -> str | None:
        return (self._job_context.get("response") or {}).get("worker_id")

    @property
    def log_path(self) -> Path:
        """The job's ``logs.txt`` (what the plugin's "View Logs" shows); lines appended here are uploaded."""
        return self._work_dir / jobs.LOGS_FILE

    def get_job_config(self, key: str, default: Any = None) -> Any:
        """A manifest value by dotted key (``"inference.diffusion_steps"``), or ``default``; typed, checked
        reads are ``job_settings.JobSettings(callbacks.job_context)``."""
        return job_settings.lookup(self._job_context, key, default)

    def get_device(self) -> str:
        """``cuda`` or ``cpu``, from ``--device`` (``auto`` picks CUDA when torch sees a GPU)."""
        if self._device != "auto":
            return self._device
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover - torch is a dependency
            return "cpu"

    # -- resumable state -----------------------------------------------------------------------------
    @property
    def _resume_prefix(self) -> str:
        return jobs.job_paths(self._job_context["job_id"]).resume

    def get_resume_dir(self) -> str:
        """A folder for resumable training state (model, optimizer, scheduler, epoch, RNG).

        What a handler saves here outlives this worker: with ``--checkpoint-dir`` it is a folder every
        worker sees (a bucket mount); otherwise the state is restored here from the job folder
        (``gpu_jobs/job_<id>/resume/``) that ``save_resume_state`` uploads. Empty on a fresh job.
        """
        if self._resume_dir is not None:
            return str(self._resume_dir)
        if self._shared_resume_dir is not None:
            self._resume_dir = self._shared_resume_dir
            self._resume_dir.mkdir(parents=True, exist_ok=True)
            return str(self._resume_dir)
        self._resume_dir = self._work_dir / "resume"
        self._resume_dir.mkdir(parents=True, exist_ok=True)
        stored = self.scanner.list_files(self._resume_prefix)
        if stored:
            logger.info("restoring %d resume file(s) from %s", len(stored), self._resume_prefix)
            for path in stored:
                self.scanner.download(path, self._resume_dir / path[len(self._resume_prefix) + 1:])
        return str(self._resume_dir)

    def save_resume_state(self, *, force: bool = False) -> bool:
        """Make the resume folder survive this machine; True if something was uploaded.

        A shared ``--checkpoint-dir`` needs nothing. Otherwise the folder is committed to the job folder —
        at most every ``resume_upload_seconds`` (each upload adds LFS objects to the translators'
        repository), and always when ``force`` is set, e.g. when the job is being released — but never
        once it is canceled or timed out, as its final write removes the state anyway.
        """
        import time

        if self._shared_resume_dir is not None or self._resume_dir is None:
            return False
        self._drain()
        if self._stop is not None and self._stop.kind in (StopKind.CANCELED, StopKind.TIMED_OUT):
            return False  # the job ends for good: nobody resumes it, and the repository would keep the bytes
        now = time.monotonic()
        if not force and self._resume_uploaded_at is not None and (
                now - self._resume_uploaded_at < self._resume_upload_seconds):
            return False
        existing = set(self.scanner.list_files(self._resume_prefix))
        actions = []
        for file in sorted(p for p in self._resume_dir.rglob("*") if p.is_file()):
            path = f"{self._resume_prefix}/{file.relative_to(self._resume_dir).as_posix()}"
            make = FileAction.update if path in existing else FileAction.create
            actions.append(make(path, source=file))
        actions += [FileAction.delete(path) for path in existing - {a.path for a in actions}]
        if not actions:
            return False
        # Stopping (JobInterrupted) must not prevent the final upload that the stop is waiting for.
        self._stop, stop = None, self._stop
        try:
            self.scanner.commit_in_batches(actions, "resumable training state")
        finally:
            self._stop = self._stop or stop
        self._resume_uploaded_at = now
        return True

    def clear_resume_state(self) -> None:
        """Remove uploaded resume files once the job no longer needs them (it completed)."""
        if self._shared_resume_dir is not None:
            import shutil

            shutil.rmtree(self._shared_resume_dir, ignore_errors=True)
            return
        stored = self.scanner.list_files(self._resume_prefix)
        if stored:
            self.scanner.commit_in_batches([FileAction.delete(p) for p in stored], "resume state no longer needed")

    # -- outcome -------------------------------------------------------------------------------------
    def mark_complete(self, result_data: dict[str, Any] | None = None) -> None:
        self._outcome = {"success": True, **(result_data or {})}

    def mark_failed(self, error_message: str) -> None:
        self._outcome = {"success": False, "error_message": str(error_message)}

    def resolve_outcome(self, returned: Any) -> dict[str, Any]:
        """The job's outcome from what ``run`` returned and what it marked (the worker's side: ``child_main``
        sends it as the ``HandlerResult``)."""
        if isinstance(returned, dict) and "success" in returned:
            return dict(returned)
        if self._outcome is not None:
            return self._outcome
        if returned is None:
            return {"success": False, "error_message": "the handler returned no result"}
        return {"success": False, "error_message": f"the handler returned {type(returned).__name__}, not a dict"}
