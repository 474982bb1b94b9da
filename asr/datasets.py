"""Training data on disk for the command line: an AudioFolder CSV (what ``gitlab_to_hf_dataset.py`` exports),
read by the neutral ``audio_folder`` the TTS library reads it with; the column names may differ here.
"""

from __future__ import annotations

from pathlib import Path

from asr.data import AsrExample
from audio_folder import AUDIO_COLUMN, TEXT_COLUMN, read_audio_folder

DEFAULT_ID_COLUMN = "cell_id"  # what gitlab_to_hf_dataset.py writes


def read_metadata(path: str | Path, *, audio_column: str = AUDIO_COLUMN, text_column: str = TEXT_COLUMN,
                  id_column: str | None = DEFAULT_ID_COLUMN, audio_base: str | Path | None = None) -> list[AsrExample]:
    """The examples of a metadata CSV; a row without an id is named ``row-N``. Raises
    ``audio_folder.DatasetError`` (a ValueError) when a column is missing."""
    rows = read_audio_folder(path, audio_column=audio_column, text_column=text_column, audio_base=audio_base)
    return [AsrExample(row.audio, row.text, row.fields.get(id_column or "", "") or f"row-{n}")
            for n, row in enumerate(rows)]
