"""Write-back: per-cell changes (a new generated take, a transcription), applied to the newest version of a
notebook and committed with optimistic concurrency, so a translator's concurrent edit always survives."""

from __future__ import annotations

import html
import logging
import random
import string
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Iterable, Mapping, Sequence, Union

import storage
from skips import (ATTACHMENTS_NOT_OBJECT, CELL_GONE, DUPLICATE_CELL_ID, EDITS_NOT_LIST, NOTEBOOK_GONE,
                   NOTEBOOK_UNPARSABLE, SAME_TEXT, TAKE_ALREADY_ATTACHED, TEXT_CHANGED, TEXT_VALIDATED)
from storage import FileAction, FileMissing, FileVersion, ProjectStore, VersionConflict

from .cells import is_deleted_cell, non_text_value, value_edits
from .layout import attachment_paths, notebook_segment
from .notebook import NotebookError, parse_notebook
from .selection import CellRef
from .takes import _as_int, playing_take

logger = logging.getLogger(__name__)

#: Author of a translator's text we keep in the history when the notebook does not say who wrote it.
UNKNOWN_AUTHOR = "unknown"


class ChangeOp(str, Enum):
    ADD_AUDIO = "add_audio"
    SET_TRANSCRIPTION = "set_transcription"


@dataclass(frozen=True)
class NewAudioTake:
    """A generated take to attach (its bytes are committed separately, at ``pointers/``)."""

    audio_id: str
    url: str                        # the files/ path, as the editor writes it
    metadata: Mapping = field(hash=False)   # mimeType, sizeBytes, sampleRate, channels, durationSec, bitrateKbps
    created_by: str
    created_at: int
    select: bool = True             # False: attach only (a check found it does not say its text)


@dataclass(frozen=True)
class Transcription:
    text: str                       # plain text from the recogniser
    author: str                     # "ASR <model>"
    audio_id: str | None = None     # the take it came from
    language: str | None = None


@dataclass(frozen=True)
class CellChange:
    """One change to one cell, re-appliable to a newer version of the notebook.

    ``base_value`` is the cell ``value`` the job read; a transcription is only written while the cell still
    holds it (otherwise a translator typed in the meantime, and their text wins).
    """

    notebook_path: str
    cell_id: str
    operation: ChangeOp
    payload: NewAudioTake | Transcription
    base_value: str | None = None

    def __post_init__(self) -> None:
        expected = NewAudioTake if self.operation is ChangeOp.ADD_AUDIO else Transcription
        if not isinstance(self.payload, expected):
            raise TypeError(f"{self.operation.value} needs a {expected.__name__} payload")
        if self.operation is ChangeOp.SET_TRANSCRIPTION and self.base_value is None:
            raise ValueError("a transcription change needs the base_value the job read")


def new_audio_id(now_ms: int | None = None) -> str:
    """A fresh attachment id, ``audio-<ms>-<9 random base-36 chars>``."""
    alphabet = string.digits + string.ascii_lowercase
    suffix = "".join(random.SystemRandom().choice(alphabet) for _ in range(9))
    return f"audio-{now_ms if now_ms is not None else _now_ms()}-{suffix}"


def audio_take_change(ref: CellRef, *, audio_id: str, extension: str, metadata: Mapping, created_by: str,
                      now_ms: int | None = None, select: bool = True) -> CellChange:
    """Attach a generated take ``<audio_id>.<extension>`` (``metadata`` as from ``AudioInfo.attachment_metadata``);
    ``select=False`` attaches it without ever selecting it."""
    url = attachment_paths(notebook_segment(ref.notebook_path), f"{audio_id}.{extension.lstrip('.')}")[0]
    take = NewAudioTake(audio_id=audio_id, url=url, metadata=dict(metadata), created_by=created_by,
                        created_at=now_ms if now_ms is not None else _now_ms(), select=select)
    return CellChange(ref.notebook_path, ref.cell_id, ChangeOp.ADD_AUDIO, take, base_value=ref.value)


def transcription_change(ref: CellRef, text: str, *, model_name: str, language: str | None = None) -> CellChange:
    """Write ``text`` into the cell (and into the transcribed take), authored ``ASR <model_name>``."""
    audio_id = ref.audio_take.audio_id if ref.audio_take else None
    payload = Transcription(text=text, author=f"ASR {model_name}", audio_id=audio_id, language=language)
    return CellChange(ref.notebook_path, ref.cell_id, ChangeOp.SET_TRANSCRIPTION, payload, base_value=ref.value)


@dataclass
class ApplyReport:
    applied: list[CellChange] = field(default_factory=list)
    skipped: list[tuple[CellChange, str]] = field(default_factory=list)
    #: Generated takes added without selecting them, because the editor plays a translator's take there.
    kept_selection: list[CellChange] = field(default_factory=list)

    def extend(self, other: "ApplyReport") -> None:
        self.applied += other.applied
        self.skipped += other.skipped
        self.kept_selection += other.kept_selection


def apply_changes(notebook_json_text: str, changes: Sequence[CellChange], *,
                  now_ms: int | None = None) -> tuple[str, ApplyReport]:
    """Apply ``changes`` to the newest text of a notebook. Returns the new text and what was applied/skipped.

    When nothing applies, the input text is returned unchanged (byte for byte). Raises ``NotebookError`` when
    the text cannot be fully parsed -- such a file is never rewritten.
    """
    nb = parse_notebook(notebook_json_text)
    now = now_ms if now_ms is not None else _now_ms()
    index = nb.cells_by_id()
    report = ApplyReport()
    for change in changes:
        cells = index.get(change.cell_id, [])
        if len(cells) != 1 or is_deleted_cell(cells[0]):
            report.skipped.append((change, DUPLICATE_CELL_ID if len(cells) > 1 else CELL_GONE))
        elif change.operation is ChangeOp.ADD_AUDIO:
            _add_take(cells[0], change, now, report)
        else:
            _set_transcription(cells[0], change, now, report)
    for change, reason in report.skipped:
        logger.info("Not applied to %s %s (%s): %s", change.notebook_path, change.cell_id,
                    change.operation.value, reason)
    if not report.applied:
        return notebook_json_text, report
    return nb.to_text(), report


def _add_take(cell: dict, change: CellChange, now: int, report: ApplyReport) -> None:
    take: NewAudioTake = change.payload  # type: ignore[assignment]
    meta = cell.setdefault("metadata", {})
    attachments = meta.setdefault("attachments", {})
    if not isinstance(attachments, dict):
        report.skipped.append((change, ATTACHMENTS_NOT_OBJECT))
        return
    if take.audio_id in attachments:
        report.skipped.append((change, TAKE_ALREADY_ATTACHED))
        return
    playing = playing_take(cell)        # before ours is attached: ours will be the newest take
    attachments[take.audio_id] = {
        "url": take.url, "type": "audio", "createdAt": take.created_at, "updatedAt": take.created_at,
        "isDeleted": False, "isGenerated": True, "createdBy": take.created_by, "metadata": dict(take.metadata),
    }
    # Keep what plays today when it is a translator's take, or when ours must not be selected.
    if playing is not None and (playing.human or not take.select):
        if not playing.selected:
            # The editor's fallback would now play ours: select the recording it plays today, stamped newer
            # only than the selection as it stands, so a translator's own later choice still wins the merge.
            meta["selectedAudioId"] = playing.audio_id
            meta["selectionTimestamp"] = _as_int(meta.get("selectionTimestamp")) + 1
        if playing.human:
            report.kept_selection.append(change)
    elif take.select:
        # The editor keeps the selection with the newer timestamp when it merges; ours must be newer.
        meta["selectedAudioId"] = take.audio_id
        meta["selectionTimestamp"] = max(now, _as_int(meta.get("selectionTimestamp")) + 1)
    # else: an unselected take where nothing else plays; the editor's newest-take fallback still plays it.
    report.applied.append(change)


def _set_transcription(cell: dict, change: CellChange, now: int, report: ApplyReport) -> None:
    tr: Transcription = change.payload  # type: ignore[assignment]
    meta = cell.setdefault("metadata", {})
    current = cell.get("value") if isinstance(cell.get("value"), str) else ""
    new_value = html.escape(tr.text, quote=False)
    edits = meta.get("edits", [])
    kind = non_text_value(cell)
    if kind is not None:
        report.skipped.append((change, f"the cell's value is {kind}, not text"))
    elif current != change.base_value:
        report.skipped.append((change, TEXT_CHANGED))
    elif _is_validated(cell, current):
        report.skipped.append((change, TEXT_VALIDATED))
    elif current == new_value:
        report.skipped.append((change, SAME_TEXT))
    elif not isinstance(edits, list):
        report.skipped.append((change, EDITS_NOT_LIST))
    else:
        last = max((_as_int(e.get("timestamp")) for e in edits if isinstance(e, dict)), default=0)
        stamp = max(now, last + 1)
        meta["edits"] = edits       # (re)inserted only now: a skipped cell must stay exactly as it was
        if current.strip() and not _history_holds(cell, current):
            # Text no edit records would be lost to the history, and the editor's merge may restore or drop
            # it; record it first, as the editor does before a first edit, under its writer's name.
            kept = max(stamp - 1000, last + 1)
            edits.append(_edit(current, kept, "initial-import", _text_author(cell)))
            stamp = max(stamp, kept + 1)
        cell["value"] = new_value
        edits.append(_edit(new_value, stamp, "llm-generation", tr.author))
        _record_on_take(meta, tr, now)
        report.applied.append(change)


def _edit(value: str, timestamp: int, kind: str, author: str) -> dict:
    return {"editMap": ["value"], "value": value, "timestamp": timestamp, "type": kind, "author": author,
            "validatedBy": []}


def _history_holds(cell: Mapping, value: str) -> bool:
    return any(e.get("value", e.get("cellValue")) == value for e in value_edits(cell))


def _text_author(cell: Mapping) -> str:
    """Who wrote text that no edit records: the author of the cell's latest value edit, as the best the
    notebook knows -- unless that edit was machine-generated text (then nobody knows). Never the model."""
    edits = value_edits(cell)
    latest = edits[-1] if edits else {}
    author = latest.get("author")
    if isinstance(author, str) and author.strip() and latest.get("type") != "llm-generation":
        return author
    return UNKNOWN_AUTHOR


def _is_validated(cell: Mapping, current: str) -> bool:
    """True when the latest edit that set the current value carries an active validation."""
    for edit in reversed(value_edits(cell)):
        if edit.get("value", edit.get("cellValue")) != current:
            continue
        validations = edit.get("validatedBy")
        return isinstance(validations, list) and any(
            not (isinstance(v, dict) and v.get("isDeleted")) for v in validations)
    return False


def _record_on_take(meta: dict, tr: Transcription, now: int) -> None:
    attachments = meta.get("attachments")
    att = attachments.get(tr.audio_id) if tr.audio_id and isinstance(attachments, dict) else None
    if isinstance(att, dict) and not att.get("isDeleted"):
        # updatedAt is left alone on purpose: the editor merges attachments by newest updatedAt, and a bump
        # here could undo a translator's not-yet-synced deletion of this take.
        att["transcription"] = {"content": tr.text, "language": tr.language, "timestamp": now}


def group_changes(changes: Iterable[CellChange]) -> dict[str, list[CellChange]]:
    """Changes by notebook path, in order."""
    grouped: dict[str, list[CellChange]] = {}
    for change in changes:
        grouped.setdefault(change.notebook_path, []).append(change)
    return grouped


@dataclass
class CommitReport(ApplyReport):
    commit_id: str | None = None
    attempts: int = 0
    notebooks: list[str] = field(default_factory=list)   # notebooks the commit rewrote


class CommitTooLarge(storage.CommitTooLarge):
    """The commit, once applied to the newest notebooks, is over the caller's byte limit (split it).
    Its own class: a caller that splits on it must not mistake the backend's refusal of one change for it."""


ExtraActions = Union[Sequence[FileAction], Callable[[list[CellChange]], Sequence[FileAction]]]


def commit_cell_changes(
    store: ProjectStore, changes_by_notebook: Mapping[str, Sequence[CellChange]], message: str, *,
    extra_actions: ExtraActions = (), max_attempts: int = 5, retry_delay: float = 0.5,
    now_ms: int | None = None, max_bytes: int | None = None,
    first_reads: dict[str, FileVersion | None] | None = None,
) -> CommitReport:
    """Re-apply the changes to the newest version of each notebook and commit them in one atomic commit.

    Every update carries the version it was based on; on ``VersionConflict`` everything is re-read and
    re-applied (up to ``max_attempts``), so an edit a translator committed meanwhile is kept. Notebooks that
    vanished or no longer parse are left alone and their changes reported as skipped.

    ``extra_actions`` (e.g. the audio files) go first into the same commit; given as a function of the
    changes that applied in this attempt, a file is only committed for a change that really landed.
    ``first_reads`` may hold notebooks the caller already read: each serves one attempt and is removed.
    Raises ``VersionConflict`` when attempts run out, ``CommitTooLarge`` when the applied commit would
    exceed ``max_bytes``, and ``FileAlreadyExists`` from the extra actions for the caller to resolve.
    """
    cached = first_reads if first_reads is not None else {}
    for attempt in range(1, max_attempts + 1):
        report = CommitReport(attempts=attempt)
        updates: list[FileAction] = []
        for path, changes in changes_by_notebook.items():
            current = cached.pop(path) if path in cached else store.read(path)
            if current is None:
                report.skipped += [(c, NOTEBOOK_GONE) for c in changes]
                continue
            try:
                new_text, applied = apply_changes(current.content.decode("utf-8"), changes, now_ms=now_ms)
            except (NotebookError, UnicodeDecodeError) as exc:
                logger.error("Leaving %s untouched: %s", path, exc)
                report.skipped += [(c, NOTEBOOK_UNPARSABLE) for c in changes]
                continue
            report.extend(applied)
            if applied.applied:
                updates.append(FileAction.update(path, new_text, expected_version=current.version))
        extra = list(extra_actions(report.applied) if callable(extra_actions) else extra_actions)
        actions = extra + updates  # files first: a notebook never points at something not yet there
        if not actions:
            return report
        if max_bytes is not None and store.commit_bytes(actions) > max_bytes:  # a store's copies count too
            raise CommitTooLarge(f"{len(actions)} file(s) over {max_bytes} bytes")
        try:
            report.commit_id = store.commit(actions, message)
        except (VersionConflict, FileMissing) as exc:
            if attempt == max_attempts:
                raise VersionConflict(f"gave up after {attempt} attempts: {exc}") from exc
            logger.info("Notebook changed while writing back (%s); re-reading (attempt %d of %d)",
                        exc, attempt + 1, max_attempts)
            time.sleep(retry_delay * attempt)
            continue
        report.notebooks = [a.path for a in updates]
        logger.info("Committed %d cell change(s) in %d notebook(s); %d skipped", len(report.applied),
                    len(updates), len(report.skipped))
        return report
    raise AssertionError("unreachable")


def _now_ms() -> int:
    return int(time.time() * 1000)
