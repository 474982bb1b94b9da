"""What the shared handler steps tell people: skipped cells with reasons, and progress heartbeats.

A bad item (a cell without text, a recording that is only an LFS pointer, a file that does not decode) is
logged, counted and skipped -- never silently dropped and never fatal. ``SkipReport`` collects them and says
so in one line ("Skipped 3 cell(s) for training: 2 missing audio, 1 empty text"), which is also what a job's
result carries. ``Progress`` turns a long loop into readable heartbeats ("fetching audio 120/480") at a rate
the worker and the translators' repository can bear.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from tqdm import tqdm

# ALREADY_RECORDED and VALUE_NOT_TEXT are codex.py's selection reasons, named here beside the steps' own.
from codex import ALREADY_RECORDED, VALUE_NOT_TEXT, CellRef, Selection  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from handler_api import JobCallbacks

logger = logging.getLogger(__name__)

# Reasons the shared steps give; other reasons (from codex.py's selections and write-back) pass through.
MISSING_AUDIO = "missing audio"            # no file, or only a Git LFS pointer whose content is not there
UNDECODABLE_AUDIO = "undecodable audio"    # preprocess_audio could not decode it (corrupt, truncated, silent)
EMPTY_TEXT = "empty text"
EMPTY_TRANSCRIPTION = "empty transcription"
WRONG_AUDIO_FORMAT = "wrong audio format"
TOO_LONG = "audio too long"                # longer than the job's limit (e.g. max_duration_seconds)
UNSAFE_LINK = "unusable link"              # a local file that is a link leading outside the project, or a loop

# codex.select_training_pairs says "no text"; the handlers' reports use one name for one problem.
_REASON_NAMES = {"no text": EMPTY_TEXT}

#: Seconds between progress heartbeats inside one loop (the first and the last are always sent).
PROGRESS_SECONDS = 5.0
#: Skipped cells listed one by one in the job log; past this only the counts are logged.
_LOGGED_ITEMS = 50


@dataclass(frozen=True)
class SkippedItem:
    """One cell a step could not use, and why (``detail`` names the file or the decoder's complaint)."""

    notebook_path: str
    cell_id: str
    reference: str | None
    reason: str
    detail: str = ""


@dataclass
class SkipReport:
    """Skipped cells of one step, with counts by reason."""

    items: list[SkippedItem] = field(default_factory=list)

    @classmethod
    def from_selection(cls, selection: Selection) -> "SkipReport":
        """The cells a codex.py selection passed over (listed cells without text or audio, and the like)."""
        report = cls()
        for s in selection.skipped:
            report.items.append(SkippedItem(s.notebook_path, s.cell_id, s.reference,
                                            _REASON_NAMES.get(s.reason, s.reason), s.detail))
        return report

    def add(self, cell: CellRef, reason: str, detail: str = "") -> None:
        self.items.append(SkippedItem(cell.notebook_path, cell.cell_id, cell.reference, reason, detail))

    def extend(self, other: "SkipReport | Iterable[SkippedItem]") -> None:
        self.items.extend(other.items if isinstance(other, SkipReport) else other)

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        """Reason -> number of cells, most common first."""
        return dict(Counter(item.reason for item in self.items).most_common())

    def summary(self) -> str:
        """``"2 missing audio, 1 empty text"`` (``"none"`` when nothing was skipped)."""
        return ", ".join(f"{n} {reason}" for reason, n in self.counts().items()) or "none"

    def log(self, what: str) -> None:
        """One line with the counts, then the cells themselves (the first few dozen) for logs.txt."""
        if not self.items:
            logger.info("No cell skipped %s", what)
            return
        logger.warning("Skipped %d cell(s) %s: %s", len(self.items), what, self.summary())
        for item in self.items[:_LOGGED_ITEMS]:
            logger.info("  skipped %s %s (%s): %s%s", item.notebook_path, item.reference or item.cell_id,
                        item.cell_id, item.reason, f" -- {item.detail}" if item.detail else "")
        if len(self.items) > _LOGGED_ITEMS:
            logger.info("  ... and %d more", len(self.items) - _LOGGED_ITEMS)


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
