"""What a handler sees: ``run(job_context, callbacks) -> dict``.

A handler runs in the job's child process. ``JobCallbacks`` is its only line to the worker:

* ``heartbeat(epochs_completed=None, message=None)`` reports progress and is where a stop request
  (cancel, lost lease, timeout, shutdown) surfaces, as ``JobInterrupted``;
* ``scanner`` reads the project directly, while every write goes through the worker, which commits it
  together with a claim check (a worker that lost the job can never overwrite the new owner's results);
* ``get_work_dir()``, ``get_job_config(key, default)``, ``mark_complete(result)``, ``mark_failed(message)``.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Protocol, Sequence

from storage import FileAction, FileVersion, ProjectStore, StorageError

logger = logging.getLogger(__name__)


class JobInterrupted(BaseException):
    """The worker asked this job to stop: canceled, lease lost, timed out or shutting down.

    It derives from BaseException on purpose: a handler's ``except Exception`` (around a training step,
    say) must not swallow it. Handlers that want to save state catch it, save, and re-raise.
    """

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Channel(Protocol):
    """The duplex connection to the worker (a multiprocessing Connection)."""

    def send(self, obj: Any) -> None: ...
    def recv(self) -> Any: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...


class JobStorage:
    """The project as a handler sees it: direct reads, claim-checked writes."""

    def __init__(self, store: ProjectStore, callbacks: "JobCallbacks"):
        self._store = store
        self._callbacks = callbacks

    @property
    def name(self) -> str:
        return self._store.name

    @property
    def kind(self) -> str:
        """``local`` or ``gitlab``: decides e.g. whether audio bytes also go to ``files/``."""
        return self._store.spec().kind

    @property
    def max_commit_bytes(self) -> int:
        return self._store.max_commit_bytes

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
    def heartbeat(self, epochs_completed: int | None = None, message: str | None = None) -> None:
        """Report progress; raises ``JobInterrupted`` when the worker wants the job to stop."""
        self._drain()
        self._raise_if_stopped()
        self._channel.send(("progress", {"epochs_completed": epochs_completed, "message": message}))

    def should_stop(self) -> bool:
        """True once a stop was requested (for loops that prefer to wind down on their own)."""
        self._drain()
        return self._stop is not None

    def _raise_if_stopped(self) -> None:
        if self._stop is not None:
            raise self._stop

    def _drain(self, wait_for: int | None = None) -> Any:
        """Read the worker's messages; with ``wait_for``, block until that commit's answer arrives."""
        while wait_for is not None or self._channel.poll(0):
            message = self._channel.recv()
            if message[0] == "stop":
                self._stop = JobInterrupted(message[1], message[2])
            elif message[0] == "commit_done" and message[1] == wait_for:
                return message[2]

    # -- writes through the worker -------------------------------------------------------------------
    def _commit(self, actions: list[FileAction], message: str) -> None:
        self._raise_if_stopped()
        request = next(self._request_ids)
        self._channel.send(("commit", request, actions, message))
        error = self._drain(wait_for=request)
        if error is None:
            return
        if isinstance(error, StorageError):
            raise error
        if isinstance(error, JobInterrupted):
            self._stop = error
            raise error
        raise RuntimeError(str(error))

    # -- context -------------------------------------------------------------------------------------
    def get_work_dir(self) -> str:
        return str(self._work_dir)

    def get_job_config(self, key: str, default: Any = None) -> Any:
        """A manifest value by dotted key (``"inference.diffusion_steps"``), or ``default``."""
        value: Any = self._job_context
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        return default if value is None else value

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
        return f"gpu_jobs/job_{self._job_context['job_id']}/resume"

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
        repository), and always when ``force`` is set, e.g. when the job is being stopped.
        """
        import time

        if self._shared_resume_dir is not None or self._resume_dir is None:
            return False
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
        """The job's outcome from what ``run`` returned and what it marked."""
        if isinstance(returned, dict) and "success" in returned:
            return dict(returned)
        if self._outcome is not None:
            return self._outcome
        if returned is None:
            return {"success": False, "error_message": "the handler returned no result"}
        return {"success": False, "error_message": f"the handler returned {type(returned).__name__}, not a dict"}
