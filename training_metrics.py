"""``checkpoint/training_metrics.csv``: one row per epoch, exactly the columns the plugin charts.

The one writer of that file, for TTS and ASR, for the handlers and the training CLIs alike. The plugin plots
every numeric column against ``epoch`` and stars the lowest ``val_total_loss``. A resumed job reads the file
back and drops the rows of the epochs it is about to run again, so the chart never shows an epoch twice.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

logger = logging.getLogger(__name__)

TTS_METRICS_COLUMNS = ("epoch", "train_total_loss", "train_diff_loss", "train_dur_loss", "train_prior_loss",
                       "val_total_loss", "val_diff_loss", "val_dur_loss", "val_prior_loss")
ASR_METRICS_COLUMNS = ("epoch", "train_total_loss", "val_total_loss", "val_wer", "val_cer")


METRICS_FILE = "training_metrics.csv"


class MetricsLog:
    """A metrics CSV on local disk (a handler uploads it with its heartbeats). An existing file is read back."""

    def __init__(self, path: str | Path, columns: Sequence[str]):
        if not columns or columns[0] != "epoch" or len(set(columns)) != len(columns):
            raise ValueError(f"metrics columns must start with 'epoch' and be unique, not {list(columns)}")
        self.path = Path(path)
        self.columns = tuple(columns)
        self.rows: list[dict[str, str]] = self._read() if self.path.is_file() else []

    def _read(self) -> list[dict[str, str]]:
        rows: dict[int, dict[str, str]] = {}
        with self.path.open(newline="", encoding="utf-8") as fh:
            for number, row in enumerate(csv.DictReader(fh), 2):
                try:
                    epoch = int(float(row.get("epoch") or ""))
                except ValueError:
                    logger.warning("%s line %d: no epoch number; row dropped", self.path, number)
                    continue
                # Only our columns survive: an older file with other columns is rewritten in today's layout.
                rows[epoch] = {c: (row.get(c) or "") for c in self.columns} | {"epoch": str(epoch)}
        return [rows[epoch] for epoch in sorted(rows)]

    @property
    def last_epoch(self) -> int:
        """The highest epoch recorded (0 when none)."""
        return max((int(row["epoch"]) for row in self.rows), default=0)

    def resume(self, epoch: int) -> None:
        """Drop the rows of ``epoch`` and later (they will be run again) and rewrite the file."""
        before = len(self.rows)
        self.rows = [row for row in self.rows if int(row["epoch"]) < epoch]
        if len(self.rows) != before:
            logger.info("Resuming metrics at epoch %d: dropped %d row(s)", epoch, before - len(self.rows))
        self._write()

    def append(self, epoch: int, **values: float | int | None) -> None:
        """Record one epoch (a missing or non-finite value is left empty). Rows of ``epoch`` and later are
        replaced, so a re-run epoch never appears twice."""
        unknown = set(values) - set(self.columns[1:])
        if unknown:
            raise ValueError(f"unknown metrics column(s) {sorted(unknown)}; the columns are {list(self.columns)}")
        row = {"epoch": str(int(epoch))} | {c: _format(values.get(c)) for c in self.columns[1:]}
        self.rows = [r for r in self.rows if int(r["epoch"]) < int(epoch)] + [row]
        self._write()

    def follow(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Bring the file in line with a run's history (``[{"epoch": 1, ...}, ...]``): the newest row is
        appended; a history that does not continue the file (a resume elsewhere) rewrites it whole."""
        if not history:
            return
        last = int(history[-1]["epoch"])
        if self.last_epoch == last:
            return
        if self.last_epoch == last - 1:
            rows = history[-1:]
        else:
            self.resume(1)
            rows = history
        for row in rows:
            self.append(int(row["epoch"]), **{k: v for k, v in row.items() if k != "epoch"})

    def numbers(self) -> list[dict[str, Any]]:
        """The rows with numbers (None for an empty cell), epoch as int."""
        return [{"epoch": int(row["epoch"])} | {c: float(row[c]) if row[c] else None for c in self.columns[1:]}
                for row in self.rows]

    def best(self, column: str = "val_total_loss") -> tuple[int, float] | None:
        """``(epoch, value)`` with the lowest ``column`` (the plugin's star), or None when it has no values."""
        if column not in self.columns:
            raise ValueError(f"{column!r} is not one of {list(self.columns)}")
        scored = [(float(row[column]), int(row["epoch"])) for row in self.rows if row[column]]
        if not scored:
            return None
        value, epoch = min(scored)
        return epoch, value

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        # Written beside the target and renamed: an upload or a crash never sees half a file.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(buffer.getvalue())
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _format(value: float | int | None) -> str:
    if value is None:
        return ""
    number = float(value)
    # The plugin parses numbers to plot them; "nan" or "inf" would break its chart, an empty cell does not.
    if not math.isfinite(number):
        return ""
    return str(int(number)) if isinstance(value, int) else f"{number:.6g}"
