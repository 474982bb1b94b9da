"""Training data on disk for the command line: an AudioFolder (what ``gitlab_to_hf_dataset.py`` exports) or
an upstream-style filelist.

* AudioFolder: a folder with ``metadata.csv`` whose columns include ``file_name`` (relative to the folder) and
  ``transcription``; ``cell_id`` (when present) names the clip, else ``file_name`` does.
* Filelist: a text file with one ``audio_path|text`` per line (extra ``|`` fields between them are ignored;
  relative paths are relative to the file's folder; ``#`` starts a comment line).
"""
from __future__ import annotations

import logging
from pathlib import Path

from audio_folder import DatasetError, read_audio_folder

from .data import Utterance

logger = logging.getLogger(__name__)


def read_dataset(path: str | Path) -> list[Utterance]:
    """Utterances of an AudioFolder (folder or its metadata.csv) or a filelist."""
    path = Path(path)
    if path.is_dir():
        path = path / "metadata.csv"
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    if path.suffix.lower() == ".csv":
        return _audio_folder(path)
    return _filelist(path)


def _audio_folder(csv_path: Path) -> list[Utterance]:
    utterances = [Utterance(row.fields.get("cell_id") or row.file_name, row.text, row.audio, row.file_name)
                  for row in read_audio_folder(csv_path)]
    return _unique(utterances, csv_path)


def _filelist(list_path: Path) -> list[Utterance]:
    utterances = []
    for number, line in enumerate(list_path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("|")
        if len(fields) < 2:
            raise DatasetError(f"{list_path} line {number}: expected audio_path|text")
        audio = Path(fields[0].strip())
        utterances.append(Utterance(fields[0].strip(), fields[-1].strip(),
                                    audio if audio.is_absolute() else list_path.parent / audio, fields[0].strip()))
    return _unique(utterances, list_path)


def _unique(utterances: list[Utterance], source: Path) -> list[Utterance]:
    seen: set[str] = set()
    for u in utterances:
        if u.id in seen:
            raise DatasetError(f"{source}: clip {u.id!r} appears twice")
        seen.add(u.id)
    logger.info("Read %d clip(s) from %s", len(utterances), source)
    return utterances
