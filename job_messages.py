"""What crosses between the worker and a job's child process, and how it survives the trip.

Both sides talk over a multiprocessing pipe, which pickles. Every message is one of the small dataclasses
below, matched by type; every exception that may cross (a stop, a storage error from the parent's commit)
rebuilds on the other side with its type and fields. ``portable_error`` turns anything else into a
``CommitFailed`` that names the original type, rather than letting an unpicklable error break the pipe.
"""

from __future__ import annotations

import enum
import pickle
from dataclasses import dataclass, field
from typing import Any

from storage import FileAction, StorageError
from worker_logging import REDACTOR


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
class Progress:
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
__all__ = ["StopKind", "JobInterrupted", "CommitFailed", "portable_error", "Progress", "CommitRequest",
           "HandlerResult", "HandlerStopped", "CommitDone", "StopRequest", "FINAL_MESSAGES"]
