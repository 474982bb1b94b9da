"""What the shared handler steps tell people: a job's outcome (its status line, or its failure), and progress
heartbeats.

``Progress`` turns a long loop into readable heartbeats ("fetching audio 120/480") at a rate the worker and
the translators' repository can bear. Skipped cells are reported with ``skips.SkipReport``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from tqdm import tqdm

import jobs

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from handler_api import JobCallbacks

logger = logging.getLogger(__name__)

#: Seconds between progress heartbeats inside one loop (the first and the last are always sent).
PROGRESS_SECONDS = 5.0


def completed(summary: Iterable[str], *results: Mapping[str, Any]) -> dict[str, Any]:
    """A completed job's result: ``results`` merged, and the non-empty ``summary`` phrases joined into the one
    line the plugin shows as the job's status ("30 epochs, best 12: val loss 4.93; 6 verses spoken")."""
    merged: dict[str, Any] = {"success": True}
    for result in results:
        merged.update(result)
    merged[jobs.RESULT_SUMMARY] = "; ".join(phrase for phrase in summary if phrase)
    return merged


def count(number: int, noun: str) -> str:
    """``1 verse``, ``6 verses``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def failure(message: str) -> dict[str, Any]:
    """A failed job's result: ``message`` is what the plugin shows translators (the details are in logs.txt)."""
    logger.error("%s", message)
    return {"success": False, "error_message": message}


class Progress:
    """Heartbeats for a loop over many items: at the start, at the end, and at most every few seconds.

    One heartbeat per file would flood the worker when a project has thousands of recordings; none at all
    would leave translators looking at a stale status and delay a cancel. Each heartbeat is also where a
    stop request surfaces (``JobInterrupted``), so loops that report progress stay cancellable.
    """

    def __init__(self, callbacks: "JobCallbacks", label: str, total: int, *,
                 every_seconds: float = PROGRESS_SECONDS):
        self.callbacks = callbacks
        self.label = label
        self.total = total
        self.every_seconds = every_seconds
        self._last: float | None = None
        # A bar for a person at a terminal; plain log lines (which also reach logs.txt) otherwise.
        self._bar = tqdm(total=total, desc=label, leave=False) if total and _on_terminal() else None

    def update(self, done: int, *, force: bool = False) -> None:
        if self.total == 0 and not force:   # nothing to do, nothing to report
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            if done >= self.total:
                self._bar.close()
        now = time.monotonic()
        due = self._last is None or now - self._last >= self.every_seconds or done >= self.total
        if force or due:
            if self._bar is None:
                logger.info("%s %d/%d", self.label, done, self.total)
            self.callbacks.heartbeat(message=f"{self.label} {done}/{self.total}")
            self._last = now


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
