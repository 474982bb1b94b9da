"""Recordings into the work folder: the audio of training pairs and of cells waiting for a transcription.

A take's bytes can sit in several places (``files/`` in a local checkout, ``pointers/`` in git -- as LFS
content or as bare pointer text --, the old ``.project/attachments/<BOOK>/`` layout). The project's attachment
folder is listed once, the best candidate of every take is fetched in few requests (one ``download_many`` per
folder: an archive per book on GitLab), and takes whose candidate turned out to be only a pointer try their
next candidate in another round. Each recording is then decoded once: checked (``probe_audio``) or, when the
model wants a fixed rate, converted to a mono 16-bit WAV at that rate.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import codex
from codex import AttachmentIndex, CellRef, Notebook, VerseFilter
from git_lfs import real_content_problem
from preprocess_audio import AudioError, encode_audio, load_audio, probe_audio
from skips import MISSING_AUDIO, TOO_LONG, UNDECODABLE_AUDIO, UNSAFE_LINK, SkipReport
from storage import UnsafePath

from .cells import job_filter
from .reports import Progress

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from handler_api import JobCallbacks, JobStorage

logger = logging.getLogger(__name__)

FETCHED_DIR = "audio/fetched"       # under the work dir: project files as downloaded (project paths kept)
CLIPS_DIR = "audio/clips"           # under the work dir: converted clips, one folder per sample rate


@dataclass(frozen=True)
class CellAudio:
    """A cell with its recording on local disk."""

    cell: CellRef           # notebook path, id, reference, clean text, the take used, the raw value as read
    audio_path: Path        # a mono 16-bit WAV at ``sample_rate`` when a rate was asked for, else the file as fetched
    duration_sec: float
    sample_rate: int
    source_path: str        # the project file the bytes came from

    @property
    def text(self) -> str:
        return self.cell.text

    @property
    def audio_id(self) -> str:
        return self.cell.audio_take.audio_id if self.cell.audio_take else ""


@dataclass
class CollectedAudio:
    """Cells whose audio is ready (iterate over it), and those skipped with reasons."""

    items: list[CellAudio] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)

    def __iter__(self) -> Iterator[CellAudio]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def collect_training_pairs(
    callbacks: "JobCallbacks", notebooks: Iterable[Notebook], work_dir: str | Path, *,
    sample_rate: int | None = None, max_seconds: float | None = None, verse_filter: VerseFilter | None = None,
    text_source: str = "value",
) -> CollectedAudio:
    """(text, recording) pairs of the verse cells that have both, under the job's ``training`` filter.

    A cell's recording is its selected take, else its newest non-deleted one (the editor's rule). Cells with
    audio but no text, takes without real bytes, recordings that do not decode and (with ``max_seconds``)
    recordings longer than that are skipped and reported. ``text_source`` is codex.select_training_pairs'
    (``value``, ``transcription`` or ``edit_history``).
    """
    chosen = verse_filter if verse_filter is not None else job_filter(callbacks, "training")
    selection = codex.select_training_pairs(notebooks, chosen, text_source=text_source)
    collected = fetch_cell_audio(callbacks, selection.cells, work_dir, sample_rate=sample_rate,
                                 max_seconds=max_seconds, log=False)
    collected.skipped.extend(selection.skipped)
    logger.info("Collected %d training pair(s) (%.1f s of audio)", len(collected),
                sum(item.duration_sec for item in collected))
    collected.skipped.log("for training")
    return collected


def cells_needing_text(
    callbacks: "JobCallbacks", notebooks: Iterable[Notebook], work_dir: str | Path, *,
    sample_rate: int | None = None, max_seconds: float | None = None, verse_filter: VerseFilter | None = None,
) -> CollectedAudio:
    """Verse cells with a usable take and no text (plus cells the include list names, if they have a take),
    under the job's ``inference`` filter, with their recordings fetched as in ``collect_training_pairs``."""
    chosen = verse_filter if verse_filter is not None else job_filter(callbacks, "inference")
    selection = codex.select_cells_needing_text(notebooks, chosen)
    collected = fetch_cell_audio(callbacks, selection.cells, work_dir, sample_rate=sample_rate,
                                 max_seconds=max_seconds, log=False)
    collected.skipped.extend(selection.skipped)
    collected.skipped.log("needing text")
    return collected


def fetch_cell_audio(
    callbacks: "JobCallbacks", cells: Sequence[CellRef], work_dir: str | Path, *,
    sample_rate: int | None = None, max_seconds: float | None = None, log: bool = True,
) -> CollectedAudio:
    """Fetch and decode the take (``cell.audio_take``) of each cell; items keep the order of ``cells``.
    Recordings longer than ``max_seconds`` are skipped (``audio too long``), never cut or dropped silently."""
    scanner = callbacks.scanner
    work = Path(work_dir)
    collected = CollectedAudio()
    found = _fetch(callbacks, scanner, cells, work / FETCHED_DIR, collected.skipped)
    progress = Progress(callbacks, "decoding audio", len(found))
    progress.update(0)
    for done, index in enumerate(sorted(found), 1):
        project_path, local = found[index]
        try:
            item = _prepare(cells[index], project_path, local, work, sample_rate)
        except AudioError as exc:
            collected.skipped.add(cells[index], UNDECODABLE_AUDIO, f"{project_path}: {exc.reason}")
        else:
            if max_seconds is not None and item.duration_sec > max_seconds:
                collected.skipped.add(cells[index], TOO_LONG, f"{item.duration_sec:.1f} s > {max_seconds:g} s")
            else:
                collected.items.append(item)
        progress.update(done)
    if log:
        collected.skipped.log("while fetching audio")
    return collected


def _fetch(callbacks: "JobCallbacks", scanner: "JobStorage", cells: Sequence[CellRef], dest: Path,
           skipped: SkipReport) -> dict[int, tuple[str, Path]]:
    """Cell index -> (project path, local file) of every take whose real bytes were found."""
    index = AttachmentIndex(scanner.list_files(codex.ATTACHMENTS_DIR))
    pending: dict[int, list[str]] = {}
    for i, cell in enumerate(cells):
        take = cell.audio_take
        candidates = codex.take_sources(cell.notebook_path, take, index) if take else []
        if candidates:
            pending[i] = candidates
        else:
            skipped.add(cell, MISSING_AUDIO, f"no file for take {take.audio_id}" if take else "no usable take")
    found: dict[int, tuple[str, Path]] = {}
    progress = Progress(callbacks, "fetching audio", len(pending))
    progress.update(0)
    settled = 0
    while pending:
        # One round: the best remaining candidate of every take (several takes may share a file).
        wanted: dict[str, list[int]] = {}
        for i, candidates in pending.items():
            wanted.setdefault(candidates[0], []).append(i)
        later: dict[int, list[str]] = {}
        refused: dict[str, str] = {}
        for paths, local_files in _download(scanner, list(wanted), dest, refused):
            for path in paths:
                problem = refused.get(path) or _not_audio(local_files.get(path))
                for i in wanted[path]:
                    if problem is None:
                        found[i] = (path, local_files[path])
                    elif len(pending[i]) > 1:
                        later[i] = pending[i][1:]
                        continue
                    else:
                        reason = UNSAFE_LINK if path in refused else MISSING_AUDIO
                        skipped.add(cells[i], reason, f"{path}: {problem}")
                    settled += 1
                if problem is not None and path in local_files:
                    local_files[path].unlink(missing_ok=True)
            progress.update(settled)
        pending = later
    return found


def _download(scanner: "JobStorage", paths: list[str], dest: Path,
              refused: dict[str, str]) -> Iterator[tuple[list[str], dict[str, Path]]]:
    """Download ``paths`` one folder (book) at a time: yields ``(folder paths, path -> local file)``.
    Files the store refuses to read (a local link leading outside the project) go to ``refused`` with why."""
    folders: dict[str, list[str]] = {}
    for path in paths:
        folders.setdefault(posixpath.dirname(path), []).append(path)
    for members in folders.values():
        # A listed file may vanish, or its LFS object be missing: the rest still come in bulk.
        try:
            files = scanner.download_many(members, dest, missing_ok=True)
        except UnsafePath:     # one bad link: fetch this folder file by file, so only that file is lost
            files = _download_each(scanner, members, dest, refused)
        yield members, files


def _download_each(scanner: "JobStorage", paths: list[str], dest: Path, refused: dict[str, str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        try:
            found[path] = scanner.download(path, dest / path)
        except FileNotFoundError:
            continue
        except UnsafePath as exc:
            logger.warning("Not reading %s: %s", path, exc)
            refused[path] = str(exc)
    return found


def _not_audio(local: Path | None) -> str | None:
    """Why a downloaded file holds no recording (None when it may: decoding decides the rest)."""
    if local is None or not local.is_file():
        return "not found"
    problem = real_content_problem(local)
    return None if problem is None else f"the file is {problem}"


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _prepare(cell: CellRef, project_path: str, local: Path, work: Path, sample_rate: int | None) -> CellAudio:
    """Decode the recording once: check it, or convert it to a WAV at ``sample_rate``. Raises AudioError."""
    if sample_rate is None:
        info = probe_audio(local)
        return CellAudio(cell, local, info.duration_sec, info.sample_rate, project_path)
    samples = load_audio(local, sample_rate)
    name = _UNSAFE_NAME.sub("_", cell.audio_take.audio_id if cell.audio_take else local.stem)
    clip = work / CLIPS_DIR / f"{sample_rate}hz" / codex.notebook_segment(cell.notebook_path) / f"{name}.wav"
    info = encode_audio(samples, sample_rate, clip, "wav")
    return CellAudio(cell, clip, info.duration_sec, sample_rate, project_path)
