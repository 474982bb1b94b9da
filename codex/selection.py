"""Picking the cells a job works on: cells needing audio, cells needing text, and training pairs, with the
reason for every candidate left out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

from skips import (ALREADY_RECORDED, EMPTY_TEXT, MACHINE_TAKE, MACHINE_TEXT, NO_AUDIO_TO_TRANSCRIBE,
                   NO_TEXT_TO_SPEAK, NO_USABLE_TAKE, VALUE_NOT_TEXT, SkippedItem, SkipReport)

from .cells import (cell_id, cell_reference, cell_text, cell_type, html_to_text, is_deleted_cell, non_text_value,
                    value_edits)
from .notebook import Notebook
from .takes import AudioTake, plays_human_take, select_take
from .verse_filter import VerseFilter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellRef:
    """A cell a job works on, with what the job saw when it read it."""

    notebook_path: str
    cell_id: str
    reference: str | None
    text: str                       # clean text (see html_to_text)
    audio_take: AudioTake | None    # "the" audio of the cell, if any
    cell_type: str = "text"
    value: str = ""                 # the raw value as read: the base a transcription is checked against


@dataclass
class Selection:
    """Cells picked for a job, and those that were candidates but could not be used (with why)."""

    cells: list[CellRef] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)


TEXT_SOURCES = ("value", "transcription", "edit_history")


def select_cells_needing_audio(notebooks: Iterable[Notebook], verse_filter: VerseFilter = VerseFilter(), *,
                               replace_recorded: bool = False) -> Selection:
    """Verse cells with text where the editor plays no take, plus the cells the include list names (if they
    have text). A listed cell where a translator's take plays is skipped (``already recorded``) unless
    ``replace_recorded``; a cell with a translator's take that cannot play here (its bytes are missing) is
    not spoken either."""
    selection = Selection()
    for nb, cell, ref, listed in _candidates(notebooks, verse_filter):
        if listed:
            if not ref.text:
                selection.skipped.append(_not_text(nb, cell, ref) or SkippedItem.of(ref, NO_TEXT_TO_SPEAK))
            elif plays_human_take(cell) and not replace_recorded:
                selection.skipped.add(ref, ALREADY_RECORDED)
            else:
                selection.cells.append(ref)
        elif ref.cell_type == "text" and ref.text and ref.audio_take is None and not plays_human_take(cell):
            selection.cells.append(ref)
    _log_selection("needing audio", selection)
    return selection


def select_cells_needing_text(notebooks: Iterable[Notebook], verse_filter: VerseFilter = VerseFilter()) -> Selection:
    """Verse cells with a usable take and no text, plus every cell the include list names (if it has a take).
    A cell whose value is not text is skipped (``value is not text``): a transcription would replace it."""
    selection = Selection()
    for nb, cell, ref, listed in _candidates(notebooks, verse_filter):
        if not listed and (ref.cell_type != "text" or ref.text or ref.audio_take is None):
            continue
        problem = _not_text(nb, cell, ref)
        if problem:
            selection.skipped.append(problem)
        elif ref.audio_take is None:
            selection.skipped.add(ref, NO_AUDIO_TO_TRANSCRIBE)
        else:
            selection.cells.append(ref)
    _log_selection("needing text", selection)
    return selection


def select_training_pairs(
    notebooks: Iterable[Notebook], verse_filter: VerseFilter = VerseFilter(), *,
    text_source: str = "value", edit_history_selection: str = "initial_import",
) -> Selection:
    """Verse cells (and listed cells) with both text and a usable take.

    ``text_source``: ``value`` (the cell text), ``transcription`` (the take's transcription) or ``edit_history``
    (``edit_history_selection``: initial_import, first or last value edit).
    """
    if text_source not in TEXT_SOURCES:
        raise ValueError(f"text_source must be one of {TEXT_SOURCES}, not {text_source!r}")
    selection = Selection()
    for nb, cell, ref, listed in _candidates(notebooks, verse_filter):
        if not listed and ref.cell_type != "text":
            continue
        if text_source != "value":
            ref = _with_text(ref, _text_from(cell, ref.audio_take, text_source, edit_history_selection))
        if ref.audio_take is None:
            if listed:
                selection.skipped.add(ref, NO_USABLE_TAKE)
        elif not ref.text:
            problem = _not_text(nb, cell, ref) if text_source == "value" else None
            selection.skipped.append(problem or SkippedItem.of(ref, EMPTY_TEXT))
        elif ref.audio_take.is_generated:  # never learn from our own synthesis
            selection.skipped.add(ref, MACHINE_TAKE)
        elif text_source == "value" and _machine_written(cell):  # nor from our own transcriptions
            selection.skipped.add(ref, MACHINE_TEXT)
        else:
            selection.cells.append(ref)
    _log_selection("for training", selection)
    return selection


def _candidates(notebooks: Iterable[Notebook], verse_filter: VerseFilter) -> Iterator[tuple[Notebook, dict, CellRef, bool]]:
    for nb in notebooks:
        missing_ids = 0
        for cell in nb.cells:
            if is_deleted_cell(cell) or not verse_filter.allows(cell):
                continue
            cid = cell_id(cell)
            if not cid:
                missing_ids += 1
                continue
            yield nb, cell, make_cell_ref(nb.path, cell), verse_filter.is_listed(cell)
        if missing_ids:
            logger.warning("%s: skipped %d cell(s) without an id (nothing could be written back)",
                           nb.path, missing_ids)


def make_cell_ref(notebook_path: str, cell: Mapping) -> CellRef:
    value = cell.get("value")
    return CellRef(notebook_path=notebook_path, cell_id=cell_id(cell), reference=cell_reference(cell),
                   text=cell_text(cell), audio_take=select_take(cell), cell_type=cell_type(cell),
                   value=value if isinstance(value, str) else "")


def _with_text(ref: CellRef, text: str) -> CellRef:
    return CellRef(ref.notebook_path, ref.cell_id, ref.reference, text, ref.audio_take, ref.cell_type, ref.value)


def _text_from(cell: Mapping, take: AudioTake | None, source: str, history_selection: str) -> str:
    if source == "transcription":
        return html_to_text(take.transcription) if take else ""
    values = [e.get("value", e.get("cellValue")) for e in value_edits(cell)]
    values = [html_to_text(v) for v in values if isinstance(v, str)]
    values = [v for v in values if v]
    if history_selection == "initial_import":
        imports = [html_to_text(e.get("value")) for e in value_edits(cell) if e.get("type") == "initial-import"]
        values = [v for v in imports if v] + values
    elif history_selection == "last":
        values.reverse()
    elif history_selection != "first":
        raise ValueError(f"edit_history_selection must be initial_import, first or last, not {history_selection!r}")
    return values[0] if values else ""


def _machine_written(cell: Mapping) -> bool:
    """The cell's text is as a model wrote it: its last value edit is an ``llm-generation`` nobody validated."""
    edits = value_edits(cell)
    return bool(edits) and edits[-1].get("type") == "llm-generation" and not edits[-1].get("validatedBy")


def _not_text(nb: Notebook, cell: Mapping, ref: CellRef) -> SkippedItem | None:
    kind = non_text_value(cell)
    if kind is None:
        return None
    return SkippedItem.of(ref, VALUE_NOT_TEXT, f"{nb.path} cell {ref.cell_id}: the value is {kind}, not text")


def _log_selection(what: str, selection: Selection) -> None:
    logger.info("Selected %d cell(s) %s; skipped %d (%s)", len(selection.cells), what,
                len(selection.skipped), selection.skipped.reasons())
    for s in selection.skipped:
        logger.debug("Skipped %s", s.describe())


def pair_source_cells(target: Notebook, source: Notebook) -> dict[str, dict]:
    """Target cell id -> the source cell with the same id (source and target share ids and base names)."""
    source_cells = {cid: cells[0] for cid, cells in source.cells_by_id().items()}
    return {cid: source_cells[cid] for cid in target.cells_by_id() if cid in source_cells}
