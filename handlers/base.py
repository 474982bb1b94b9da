"""The handler contract's old name: the contract lives in ``handler_api``; this name stays for handlers
written against it (``from handlers.base import JobCallbacks, JobInterrupted``)."""

from handler_api import (
    MAX_PUBLISHED_BYTES,
    Channel,
    JobCallbacks,
    JobInterrupted,
    JobStorage,
    StopKind,
    split_by_size,
)

__all__ = ["Channel", "JobCallbacks", "JobInterrupted", "JobStorage", "MAX_PUBLISHED_BYTES", "StopKind",
           "split_by_size"]
