"""One way to say "skipped, and why": a skipped item, a report of them, and the name of every reason.

A bad item (a cell without text, a recording that does not decode, a clip too short for its text) is logged,
counted and skipped -- never silently dropped, never fatal. The codex selections, the handlers' steps, the
ASR and TTS data preparation and the dataset exporter all say so with these types, so one problem has one
name everywhere: the job results count skipped cells by it (``skipped_reasons``, docs/job_protocol.md).
This module imports nothing of the project's: every layer imports it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Protocol

logger = logging.getLogger(__name__)

# -- Reasons (what job results and skipped.csv say; keep the wording: translators and tests read it) --------
# Text
EMPTY_TEXT = "empty text"                   # nothing to read or speak (also: nothing left once normalised)
NO_TEXT_TO_SPEAK = "no text to speak"       # a cell the include list names for synthesis has no text
VALUE_NOT_TEXT = "value is not text"        # the cell's value is JSON other than a string: never read, never written
MACHINE_TEXT = "machine-generated text"     # an unvalidated model's text: never learnt from
EMPTY_TRANSCRIPTION = "empty transcription"
NO_HEARABLE_TEXT = "no text the model can hear"     # nothing left of a verse text once the ASR normalises it
# Takes
ALREADY_RECORDED = "already recorded"       # a translator's take plays: speaking the cell adds a take nobody hears
NO_AUDIO_TO_TRANSCRIBE = "no audio to transcribe"
NO_USABLE_TAKE = "no usable audio take"
MACHINE_TAKE = "only a machine-generated take"      # never learn from our own synthesis
MISSING_PLAYED_TAKE = "the take the editor plays is missing"
# Audio files
MISSING_AUDIO = "missing audio"             # no file, or only a Git LFS pointer whose content is not there
DOWNLOAD_FAILED = "download failed"         # the store could not give the file's bytes
UNSAFE_LINK = "unusable link"               # a local file that is a link leading outside the project, or a loop
UNDECODABLE_AUDIO = "undecodable audio"     # preprocess_audio could not decode it (corrupt, truncated, silent)
WRONG_AUDIO_FORMAT = "wrong audio format"
TOO_LONG = "audio too long"                 # longer than the job's limit (max_duration_seconds, max_clip_seconds)
TOO_SHORT = "audio too short for its text"  # the text needs more symbols than the audio has frames
# Notebooks, and writing back to them (codex.changes: a change the notebook no longer takes)
NOTEBOOK_UNPARSABLE = "the notebook could not be parsed"
NOTEBOOK_GONE = "the notebook no longer exists"
KEPT_CHANGING = "the notebook kept changing while saving"
CELL_GONE = "the cell no longer exists"
DUPLICATE_CELL_ID = "several cells share this id"
ATTACHMENTS_NOT_OBJECT = "the cell's attachments are not an object"
TAKE_ALREADY_ATTACHED = "a take with this id is already attached"
TEXT_CHANGED = "a translator changed the text since the job read it"
TEXT_VALIDATED = "the current text is validated"
SAME_TEXT = "the cell already holds this text"
EDITS_NOT_LIST = "the cell's edit history is not a list"

#: Skipped items listed one by one in a log; past this only the counts are logged.
LOGGED_ITEMS = 50


class CellLike(Protocol):
    """What a skipped cell is known by (``codex.CellRef`` has it)."""

    notebook_path: str
    cell_id: str
    reference: str | None


@dataclass(frozen=True)
class SkippedItem:
    """One cell or clip left out, and why. ``detail`` names the file or the decoder's complaint; ``facts``
    hold the few figures a reason's advice needs (TOO_SHORT: ``symbols``, ``frames``, ``frontend``...)."""

    id: str                         # the cell id, or the clip's (utterance's) id
    reason: str                     # one of the constants above
    detail: str = ""
    notebook_path: str = ""         # a cell's notebook ("" for a clip)
    reference: str | None = None    # a cell's verse reference ("GEN 1:1")
    facts: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, what: str | CellLike, reason: str, detail: str = "", **facts: Any) -> "SkippedItem":
        """The item for a cell (anything with ``notebook_path``, ``cell_id``, ``reference``) or a clip id."""
        if isinstance(what, str):
            return cls(what, reason, detail, facts=facts)
        return cls(what.cell_id, reason, detail, what.notebook_path, what.reference, facts)

    def describe(self) -> str:
        """``"files/target/GEN.codex GEN 1:6 (3ad7...): missing audio -- no file"``, ``"v3: empty text"``."""
        where = " ".join(part for part in (self.notebook_path, self.reference or self.id) if part)
        if self.reference and self.reference != self.id:
            where += f" ({self.id})"
        return f"{where}: {self.reason}" + (f" -- {self.detail}" if self.detail else "")


@dataclass
class SkipReport:
    """Items left out of one step, with counts by reason. ``noun`` is what they are (cell, utterance, clip)."""

    items: list[SkippedItem] = field(default_factory=list)
    noun: str = "cell"

    def add(self, what: str | CellLike, reason: str, detail: str = "", **facts: Any) -> None:
        """Skip a cell (a ``CellRef``) or a clip (its id) for ``reason``."""
        self.items.append(SkippedItem.of(what, reason, detail, **facts))

    def append(self, item: SkippedItem) -> None:
        self.items.append(item)

    def extend(self, other: "SkipReport | Iterable[SkippedItem]") -> None:
        self.items.extend(other.items if isinstance(other, SkipReport) else other)

    def __iter__(self) -> Iterator[SkippedItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        """Reason -> number of items, most common first (what job results carry)."""
        return dict(Counter(item.reason for item in self.items).most_common())

    def reasons(self) -> str:
        """``"2 missing audio, 1 empty text"`` (``"none"`` when nothing was skipped)."""
        return ", ".join(f"{n} {reason}" for reason, n in self.counts().items()) or "none"

    def summary(self, what: str = "") -> str:
        """``"Skipped 3 cell(s) for training: 2 missing audio, 1 empty text"`` (``what``: "for training")."""
        what = f" {what}" if what else ""
        if not self.items:
            return f"No {self.noun} skipped{what}"
        return f"Skipped {len(self.items)} {self.noun}(s){what}: {self.reasons()}"

    def log(self, what: str = "") -> None:
        """The summary, then the items themselves (the first few dozen) for logs.txt."""
        if not self.items:
            logger.info("%s", self.summary(what))
            return
        logger.warning("%s", self.summary(what))
        for item in self.items[:LOGGED_ITEMS]:
            logger.info("  skipped %s", item.describe())
        if len(self.items) > LOGGED_ITEMS:
            logger.info("  ... and %d more", len(self.items) - LOGGED_ITEMS)
