"""Results back into the notebooks: generated takes (TTS) and transcriptions (ASR).

Both follow one rule: a change is applied per cell to the NEWEST version of its notebook at commit time
(``codex.apply_changes``), committed against that version, and re-read and re-applied on ``VersionConflict``
-- so a translator's edit made while the job ran always survives. A generated take's audio goes into the
same atomic commit as the notebook change that references it, and only for changes that actually applied,
so no notebook ever points at a missing file and no audio is left behind for a cell that was deleted.
Commits are split to fit the backend's body cap (``max_commit_bytes``).

The commit engine is ``codex.commit_cell_changes``; this module adds what handlers need on top: batches
under the body cap, audio that follows only the changes that applied, and a fresh id for a take whose file
name turns out to be taken.
"""

from __future__ import annotations

import collections
import logging
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Sequence

import codex
from codex import AUDIO_EXTENSIONS, CellChange, CellRef
from preprocess_audio import AudioError, probe_audio
from skips import EMPTY_TRANSCRIPTION, KEPT_CHANGING, UNDECODABLE_AUDIO, WRONG_AUDIO_FORMAT, SkipReport
from storage import FileAction, FileAlreadyExists, FileVersion, VersionConflict

from .reports import Progress

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from handler_api import JobCallbacks, JobStorage

logger = logging.getLogger(__name__)

#: Attempts per commit when a notebook keeps changing under us (each re-reads and re-applies).
MAX_ATTEMPTS = 6
RETRY_DELAY = 0.5       # seconds, times the attempt number
#: Bytes a change adds to its notebook (an attachment entry, an edit entry), for planning batches; each batch is
#: measured exactly once applied, and split if it is still over the cap.
_CHANGE_BYTES = 1024


class GeneratedTake(NamedTuple):
    """A cell and the local audio file generated for it (already encoded in the job's audio format).
    ``select=False`` attaches it without selecting it (a check found it does not say its text)."""

    cell: CellRef
    audio_path: Path
    select: bool = True


class Transcript(NamedTuple):
    """A cell and the text recognised in its take."""

    cell: CellRef
    text: str
    language: str | None = None


@dataclass
class TakesWritten:
    """What ``write_generated_takes`` did."""

    processed: int = 0                # takes handed in
    uploaded: int = 0                 # takes attached and committed
    kept_selection: int = 0           # attached without selecting them: a translator's take plays there
    commits: int = 0
    skipped: SkipReport = field(default_factory=SkipReport)

    def as_result(self) -> dict[str, Any]:
        """The result keys of a TTS inference job (the earlier worker's, plus the skip counts)."""
        return {"processed_count": self.processed, "uploaded_count": self.uploaded,
                "skipped_count": len(self.skipped), "skipped_reasons": self.skipped.counts()}


@dataclass
class TranscriptionsWritten:
    """What ``write_transcriptions`` did."""

    cells_transcribed: int = 0
    files_modified: int = 0           # notebooks changed
    commits: int = 0
    skipped: SkipReport = field(default_factory=SkipReport)

    def as_result(self) -> dict[str, Any]:
        """The result keys of an ASR inference job (the earlier worker's, plus the skip counts)."""
        return {"cells_transcribed": self.cells_transcribed, "errors_count": len(self.skipped),
                "files_modified": self.files_modified, "skipped_reasons": self.skipped.counts()}


@dataclass
class _Pending:
    """One cell change waiting to be committed, with the audio file it brings (generated takes only)."""

    cell: CellRef
    change: CellChange
    audio: Path | None = None
    extension: str = ""
    metadata: dict = field(default_factory=dict)
    created_by: str = ""
    select: bool = True

    @classmethod
    def take(cls, cell: CellRef, audio: Path, extension: str, metadata: dict, created_by: str,
             select: bool = True) -> "_Pending":
        return cls(cell, _take_change(cell, extension, metadata, created_by, select), audio, extension, metadata,
                   created_by, select)

    def renew_id(self) -> None:
        """A fresh attachment id (and so fresh file names) for this take."""
        self.change = _take_change(self.cell, self.extension, self.metadata, self.created_by, self.select)

    def file_actions(self) -> list[FileAction]:
        """The take's audio at its ``pointers/`` path, what git holds (the store keeps any copy it needs
        beside it: ``written_paths``). A create, never an update: a clash gets a new id instead."""
        if self.audio is None:
            return []
        filename = posixpath.basename(self.change.payload.url)
        pointers_path = codex.attachment_paths(codex.notebook_segment(self.cell.notebook_path), filename)[1]
        return [FileAction.create(pointers_path, source=self.audio)]

    def file_paths(self, scanner: "JobStorage") -> list[str]:
        """Every path the take's audio occupies once committed, none of which may exist beforehand."""
        return [path for action in self.file_actions() for path in scanner.written_paths(action.path)]

    def size(self, scanner: "JobStorage") -> int:
        return scanner.commit_bytes(self.file_actions())


def _take_change(cell: CellRef, extension: str, metadata: dict, created_by: str, select: bool) -> CellChange:
    return codex.audio_take_change(cell, audio_id=codex.new_audio_id(), extension=extension, metadata=metadata,
                                   created_by=created_by, select=select)


def write_generated_takes(
    callbacks: "JobCallbacks", takes: Iterable[GeneratedTake | tuple[CellRef, Path]], *, model_name: str,
    audio_format: str, created_by: str | None = None, message: str | None = None,
) -> TakesWritten:
    """Attach each generated audio file to its cell as a new take and commit audio + notebooks.

    Each take gets a unique id, attachment metadata from ``probe_audio``, ``isGenerated: true``, and is
    selected only where the editor plays no translator's take (neither a selected one nor, by its fallback,
    the newest one); a take with ``select=False`` is never selected, and the take that plays today keeps
    playing (where none does, the editor's fallback plays the new one anyway). Files go to
    ``pointers/<SEG>/<id>.<fmt>`` (a local store keeps the ``files/`` copy too). Undecodable files and files
    not in ``audio_format`` are skipped.
    """
    fmt = audio_format.lower().lstrip(".")
    if fmt not in AUDIO_EXTENSIONS:
        raise ValueError(f"audio_format must be one of {', '.join(AUDIO_EXTENSIONS)}, not {audio_format!r}")
    takes = [GeneratedTake(*take) for take in takes]
    author = created_by or f"TTS {model_name}"
    result = TakesWritten(processed=len(takes))
    scanner = callbacks.scanner
    existing = set(scanner.list_files(codex.ATTACHMENTS_DIR))
    pendings: list[_Pending] = []
    progress = Progress(callbacks, "checking generated audio", len(takes))
    progress.update(0)
    for done, (cell, audio_path, select) in enumerate(takes, 1):
        try:
            info = probe_audio(audio_path)
            if info.format != fmt:
                result.skipped.add(cell, WRONG_AUDIO_FORMAT, f"{audio_path} is {info.format}, not {fmt}")
            else:
                pending = _Pending.take(cell, Path(audio_path), fmt, info.attachment_metadata(), author, select)
                while not existing.isdisjoint(pending.file_paths(scanner)):  # astronomically rare; never overwrite
                    pending.renew_id()
                pendings.append(pending)
        except AudioError as exc:
            result.skipped.add(cell, UNDECODABLE_AUDIO, exc.reason)
        progress.update(done)
    applied, files, commits, kept = _commit_all(
        callbacks, pendings, message or f"{model_name}: generated audio", "saving generated audio", result.skipped)
    result.uploaded, result.commits, result.kept_selection = len(applied), commits, kept
    logger.info("Attached %d generated take(s) of %d in %d commit(s) to %d notebook(s); %d kept a translator's "
                "selection", result.uploaded, result.processed, commits, len(files), kept)
    result.skipped.log("while saving generated audio")
    return result


def write_transcriptions(
    callbacks: "JobCallbacks", items: Iterable[Transcript | tuple], *, model_name: str, message: str | None = None,
) -> TranscriptionsWritten:
    """Write each text into its cell (``value`` + an ``llm-generation`` edit by ``ASR <model_name>``, and the
    take's ``transcription``). A cell a translator changed since the job read it keeps the translator's
    text (skipped), as does a value that is not text; existing text no edit records is first recorded as an
    ``initial-import`` edit under its writer's name (``unknown`` when the notebook does not say)."""
    result = TranscriptionsWritten()
    pendings: list[_Pending] = []
    for item in items:
        transcript = Transcript(*item)
        text = " ".join((transcript.text or "").split())
        if not text:
            result.skipped.add(transcript.cell, EMPTY_TRANSCRIPTION)
            continue
        change = codex.transcription_change(transcript.cell, text, model_name=model_name,
                                            language=transcript.language)
        pendings.append(_Pending(transcript.cell, change))
    applied, files, commits, _ = _commit_all(
        callbacks, pendings, message or f"ASR {model_name}: transcriptions", "saving transcriptions", result.skipped)
    result.cells_transcribed, result.files_modified, result.commits = len(applied), len(files), commits
    logger.info("Transcribed %d cell(s) in %d notebook(s) with %d commit(s)", result.cells_transcribed,
                result.files_modified, commits)
    result.skipped.log("while saving transcriptions")
    return result


# -- the commit engine -------------------------------------------------------------------------------
def _commit_all(callbacks: "JobCallbacks", pendings: Sequence[_Pending], message: str, label: str,
                skipped: SkipReport) -> tuple[list[_Pending], set[str], int, int]:
    """Commit every pending change in batches under the body cap. Returns (applied, notebooks changed,
    commits, takes that kept a translator's selection); skipped changes go to ``skipped``."""
    scanner = callbacks.scanner
    first_reads: dict[str, FileVersion | None] = {}
    batches = _batches(scanner, pendings, first_reads)
    applied: list[_Pending] = []
    notebooks: set[str] = set()
    kept = commits = number = 0
    queue = collections.deque(batches)
    while queue:
        batch = queue.popleft()
        number += 1
        total = number + len(queue)
        callbacks.heartbeat(message=f"{label}: commit {number}/{total}")
        outcome = _commit_batch(scanner, batch, first_reads, f"{message} ({number}/{total})"
                                if total > 1 else message, skipped)
        if outcome is None:     # over the cap once applied: commit it in two halves
            half = len(batch) // 2
            queue.extendleft([batch[half:], batch[:half]])
            number -= 1
            continue
        done, changed, batch_kept = outcome
        applied += done
        notebooks |= changed
        kept += batch_kept
        commits += bool(changed)
    return applied, notebooks, commits, kept


def _batches(scanner: "JobStorage", pendings: Sequence[_Pending],
             first_reads: dict[str, FileVersion | None]) -> list[list[_Pending]]:
    """Group changes (notebook by notebook) so that audio plus the notebooks each batch rewrites stay under
    the cap. The notebooks read here for their size are reused by the first attempt of their commit."""
    cap = scanner.max_commit_bytes
    batches: list[list[_Pending]] = []
    current: list[_Pending] = []
    size = 0
    in_batch: set[str] = set()
    for pending in sorted(pendings, key=lambda p: p.cell.notebook_path):  # stable: cell order kept
        path = pending.cell.notebook_path
        if path not in first_reads:
            first_reads[path] = scanner.read(path)
        notebook_size = len(first_reads[path].content) if first_reads[path] else 0
        extra = pending.size(scanner) + _CHANGE_BYTES + (0 if path in in_batch else notebook_size)
        if current and size + extra > cap:
            batches.append(current)
            current, size, in_batch = [], 0, set()
            extra = pending.size(scanner) + _CHANGE_BYTES + notebook_size
        current.append(pending)
        size += extra
        in_batch.add(path)
    if current:
        batches.append(current)
    return batches


def _commit_batch(scanner: "JobStorage", batch: list[_Pending], cache: dict[str, FileVersion | None],
                  message: str, skipped: SkipReport) -> tuple[list[_Pending], set[str], int] | None:
    """Apply one batch to the newest notebooks and commit it (``codex.commit_cell_changes`` re-reads and
    retries on conflicts). None when the batch, once applied, is over the body cap (and can be split)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        pending_of = {id(p.change): p for p in batch}

        def audio_of(applied: list[CellChange]) -> list[FileAction]:
            return [action for change in applied for action in pending_of[id(change)].file_actions()]

        try:
            report = codex.commit_cell_changes(
                scanner, codex.group_changes(p.change for p in batch), message, extra_actions=audio_of,
                max_attempts=MAX_ATTEMPTS, retry_delay=RETRY_DELAY, first_reads=cache,
                max_bytes=scanner.max_commit_bytes if len(batch) > 1 else None)
        except codex.CommitTooLarge:
            return None
        except FileAlreadyExists as exc:
            clashed = [p for p in batch if p.audio and (exc.path is None or exc.path in p.file_paths(scanner))]
            if not clashed:
                raise
            logger.info("%s already exists; giving %d take(s) a new id (attempt %d of %d)", exc.path,
                        len(clashed), attempt + 1, MAX_ATTEMPTS)
            for p in clashed:
                p.renew_id()
            continue
        except VersionConflict:
            break
        for change, reason in report.skipped:
            skipped.add(pending_of[id(change)].cell, reason)
        return [pending_of[id(c)] for c in report.applied], set(report.notebooks), len(report.kept_selection)
    logger.error("Gave up saving %d change(s) after %d attempts: the notebooks kept changing", len(batch),
                 MAX_ATTEMPTS)
    for p in batch:
        skipped.add(p.cell, KEPT_CHANGING)
    return [], set(), 0
