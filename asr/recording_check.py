"""Recordings checked against their text: how far what the ASR hears in a take is from the verse it belongs to.

A take that does not say what its verse says (a skipped line, the wrong verse, a misread word) transcribes
far from that text, so its character error rate (CER, after the normalisation the model was trained with)
is high. Rows are ranked worst first. A model may have memorised the takes it was trained on, so those are
marked (``trained_on``): a low CER there says less than on a take the model never heard.

The list of trained takes travels inside the model folder (``trained_takes.json``, written by the training
handler), and is read back from a model that came out of a project: it is untrusted and only ever parsed as
a bounded JSON list of strings.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import jiwer

from asr.text import TextNormalization, normalize_text

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("cell_id", "reference", "take_id", "cer", "asr_text", "verse_text", "trained_on")
DEFAULT_THRESHOLD = 0.5         # a take whose CER is above this "differs from its text"
TRAINED_TAKES_FILE = "trained_takes.json"
TRAINING_INFO_FILE = "training_info.json"
MAX_TRAINED_TAKES_BYTES = 64 * 1024 * 1024      # 100,000 takes of two ids each are about 15 MB


@dataclass(frozen=True)
class TrainedTakes:
    """The (cell id, take id) pairs a model was trained on."""

    pairs: frozenset[tuple[str, str]]

    def __contains__(self, item: object) -> bool:
        return item in self.pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def to_json(self) -> str:
        takes = [{"cell_id": cell, "take_id": take} for cell, take in sorted(self.pairs)]
        return json.dumps({"version": 1, "takes": takes}, ensure_ascii=False, indent=0)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> "TrainedTakes":
        return cls(frozenset((str(cell), str(take)) for cell, take in pairs))


def read_trained_takes(model_dir: Path) -> TrainedTakes | None:
    """The model's ``trained_takes.json``; None when it has none (an older model) or it cannot be read."""
    path = Path(model_dir) / TRAINED_TAKES_FILE
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_TRAINED_TAKES_BYTES:
            raise ValueError(f"larger than {MAX_TRAINED_TAKES_BYTES // 1024**2} MB")
        data = json.loads(path.read_text(encoding="utf-8"))
        takes = data["takes"] if isinstance(data, dict) else None
        if not isinstance(takes, list):
            raise ValueError("no list of takes")
        pairs = [(t["cell_id"], t["take_id"]) for t in takes
                 if isinstance(t, dict) and isinstance(t.get("cell_id"), str) and isinstance(t.get("take_id"), str)]
    except (OSError, ValueError, KeyError, RecursionError) as exc:     # JSONDecodeError is a ValueError
        logger.warning("Ignoring the model's %s: %s", TRAINED_TAKES_FILE, exc)
        return None
    return TrainedTakes.of(pairs)


def model_text_normalization(model_dir: Path, default: TextNormalization | None = None) -> TextNormalization:
    """The ``text_normalization`` the model was trained with (its ``training_info.json``), else ``default``."""
    path = Path(model_dir) / TRAINING_INFO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        options = info.get("config", {}).get("text_normalization") if isinstance(info, dict) else None
        if isinstance(options, dict):
            return TextNormalization.from_mapping(options)
    except (OSError, ValueError, AttributeError, RecursionError) as exc:
        logger.warning("Cannot read the model's %s (%s); using the job's text normalisation", TRAINING_INFO_FILE, exc)
    return default or TextNormalization()


def character_error_rate(verse_text: str, asr_text: str, normalization: TextNormalization) -> float | None:
    """CER of ``asr_text`` against ``verse_text``, both normalised as for training; None when the verse has no
    character the model could hear."""
    reference = normalize_text(verse_text, normalization)
    if not reference:
        return None
    return float(jiwer.cer(reference, normalize_text(asr_text, normalization)))


@dataclass(frozen=True)
class CheckedRecording:
    """One take and what the ASR heard in it."""

    cell_id: str
    reference: str          # the verse reference ("" when the cell has none)
    take_id: str
    verse_text: str         # the cell's clean text (no HTML)
    asr_text: str
    cer: float
    trained_on: bool | None  # None: the model does not say what it was trained on
    notebook_path: str = ""
    audio_path: str = ""    # the take's file in the project, for a link

    @property
    def trained_on_label(self) -> str:
        return {True: "yes", False: "no", None: "unknown"}[self.trained_on]

    def csv_row(self) -> dict[str, str]:
        return {"cell_id": self.cell_id, "reference": self.reference, "take_id": self.take_id,
                "cer": f"{self.cer:.4f}", "asr_text": self.asr_text, "verse_text": self.verse_text,
                "trained_on": self.trained_on_label}


def worst_first(rows: Iterable[CheckedRecording]) -> list[CheckedRecording]:
    """Highest CER first; at equal CER a take the model never heard first (it is the more telling), then by
    notebook and reference so the order is stable."""
    return sorted(rows, key=lambda r: (-r.cer, r.trained_on is True, r.notebook_path, r.reference, r.cell_id))


@dataclass(frozen=True)
class CheckSummary:
    """How many takes were checked and how many differ from their text by more than ``threshold``."""

    checked: int
    disagreeing: int
    threshold: float

    @classmethod
    def of(cls, rows: Sequence[CheckedRecording], threshold: float) -> "CheckSummary":
        return cls(len(rows), sum(1 for r in rows if r.cer > threshold), threshold)

    @property
    def message(self) -> str:
        """``12 of 430 recordings differ from their text by more than 50 %``."""
        return (f"{self.disagreeing} of {self.checked} recording{'' if self.checked == 1 else 's'} "
                f"differ from their text by more than {percent(self.threshold)}")


def percent(value: float) -> str:
    """``0.5`` -> ``50 %``; ``0.125`` -> ``12.5 %``."""
    return f"{round(value * 100, 1):g} %"


def write_check_csv(rows: Iterable[CheckedRecording | Mapping[str, str]], path: Path,
                    columns: Sequence[str] = CSV_COLUMNS) -> Path:
    """The rows (in the order given; a ``CheckedRecording`` or a row of ``columns``) as CSV, written beside
    ``path`` and renamed onto it, so a reader never sees half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with part.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(row.csv_row() if isinstance(row, CheckedRecording) else row for row in rows)
    os.replace(part, path)
    return path
