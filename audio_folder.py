"""Reading a Hugging Face AudioFolder (what ``gitlab_to_hf_dataset.py`` exports): ``metadata.csv`` with a
``file_name`` column (audio path, relative to the CSV's folder) and a ``transcription`` column.

Here, not in ``tts`` or ``asr``, so both training libraries read the one format the same way without one
importing the other.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

AUDIO_COLUMN = "file_name"
TEXT_COLUMN = "transcription"


class DatasetError(ValueError):
    """The dataset cannot be read (the message names the file and the problem)."""


@dataclass(frozen=True)
class AudioFolderRow:
    audio: Path  # absolute, or relative to the working folder
    text: str
    file_name: str  # as written in the CSV
    fields: dict[str, str]  # every column of the row (ids, references)


def read_audio_folder(csv_path: str | Path, *, audio_column: str = AUDIO_COLUMN, text_column: str = TEXT_COLUMN,
                      audio_base: str | Path | None = None) -> list[AudioFolderRow]:
    """The rows of ``csv_path``; relative audio paths start at ``audio_base`` (default: the CSV's folder)."""
    csv_path = Path(csv_path)
    base = Path(audio_base) if audio_base is not None else csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        missing = {audio_column, text_column} - set(columns)
        if missing:
            raise DatasetError(f"{csv_path} lacks column(s) {sorted(missing)}; it has {columns}")
        rows = [AudioFolderRow(base / row[audio_column], row[text_column] or "", row[audio_column],
                               {k: v or "" for k, v in row.items() if k is not None}) for row in reader]
    logger.debug("%s: %d row(s)", csv_path, len(rows))
    return rows
