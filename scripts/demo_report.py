"""The demo's HTML report: what the worker did to a Codex project, in one self-contained file.

    python scripts/demo_report.py demo_out/project demo_out/report.html

The page holds the jobs table (the one ``make demo`` prints), a loss chart per training job drawn from its
``checkpoint/training_metrics.csv`` as inline SVG, players for a few generated takes with the audio embedded
as data URIs, the cells our ASR wrote next to the text their recordings speak, with the character error
rate, each ASR job's check of the recordings against their text (its summary, the worst rows, the mean CER
on the takes the model was trained on, and a link to the job's own ``audio_text_check.html``), and how long
each trained voice makes the recorded verses beside their recordings. Nothing is fetched when the page opens
(no network, no scripts), so it works from ``file://``. Every piece of project text is HTML-escaped: notebooks
are user data.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import logging
import math
import os
import posixpath
import statistics
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import jiwer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import codex  # noqa: E402
from asr.job_settings import CheckSettings  # noqa: E402
from asr.recording_check import CheckSummary  # noqa: E402
from asr.text import normalize_text  # noqa: E402
from handlers.asr.w2v2bert.recording_check import CHECK_CSV, CHECK_PAGE  # noqa: E402
from handlers.common import load_notebooks  # noqa: E402
from job_settings import JobSettingError  # noqa: E402
from jobs import JobRow, JobState, describe_jobs, job_paths  # noqa: E402
from storage import UnsafePath  # noqa: E402
from stores import open_project  # noqa: E402
from training_metrics import MetricsLog  # noqa: E402

logger = logging.getLogger(__name__)

JOB_COLUMNS = ("job", "type/mode", "state", "time", "outputs / message")
MAX_TAKES = 6                          # players on the page
MAX_TAKE_BYTES = 1024 * 1024           # a bigger take is linked, not embedded
MAX_EMBEDDED_BYTES = 3 * 1024 * 1024   # all embedded takes together; later takes are linked
NO_VALUE = "—"
CHECK_EXCERPT_ROWS = 10                # worst rows of a recording check shown on the page
LEARNT_ROWS = 5                        # and of the takes its model was trained on
# Mime types of the attachment extensions codex.AUDIO_EXTENSIONS knows (the editor records audio/webm Opus).
AUDIO_MIME = {"webm": "audio/webm", "wav": "audio/wav", "mp3": "audio/mpeg", "m4a": "audio/mp4",
              "ogg": "audio/ogg", "flac": "audio/flac"}
# Line colours; a train_/val_ pair shares one, the val_ line is dashed.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


# -- the jobs table (shared with run_demo's printed table) ---------------------------------------------------
def job_outputs(row: JobRow) -> str:
    """A finished job's scalar result fields (``key=value, ...``), or the job's message."""
    if row.state == JobState.COMPLETED.value:
        result = row.result or {}
        parts = [f"{key}={value}" for key, value in result.items() if not isinstance(value, (dict, list))]
        return ", ".join(parts) or "completed"
    return row.message


def job_row(row: JobRow) -> tuple[str, str, str, str, str]:
    """One job as a row of ``JOB_COLUMNS``."""
    duration = f"{(row.ended - row.started).total_seconds():.0f} s" if row.started and row.ended else ""
    return row.job_id, row.kind, row.state, duration, job_outputs(row)


# -- training metrics ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    """One metrics column: a value per epoch, None where the CSV cell is empty or not a finite number."""

    name: str
    values: tuple[float | None, ...]

    @property
    def has_values(self) -> bool:
        return any(v is not None for v in self.values)


@dataclass(frozen=True)
class Metrics:
    """A ``training_metrics.csv``: the epochs (sorted, each once) and every other column."""

    epochs: tuple[int, ...]
    series: tuple[Series, ...]


def read_metrics(path: Path) -> Metrics:
    """Read a metrics CSV the way a resumed job does (``MetricsLog``: rows without an epoch are dropped, a
    repeated epoch keeps its last row). Raises ``FileNotFoundError``, or ``ValueError`` for a bad header."""
    with path.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    log = MetricsLog(path, [name.strip() for name in header])
    epochs = tuple(int(row["epoch"]) for row in log.rows)
    series = tuple(Series(name, tuple(_number(row[name]) for row in log.rows)) for name in log.columns[1:])
    return Metrics(epochs, series)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def chart_groups(metrics: Metrics) -> list[tuple[str, str, list[Series]]]:
    """``(title, y label, series)`` per chart: total losses, the other loss columns, error rates (WER/CER).
    Columns without a single value are left out; so is any chart left empty."""
    usable = [s for s in metrics.series if s.has_values]
    totals = [s for s in usable if s.name.endswith("total_loss")]
    losses = [s for s in usable if "loss" in s.name and s not in totals]
    rates = [s for s in usable if s.name.rsplit("_", 1)[-1].lower() in ("wer", "cer")]
    groups = [("total loss", "loss", totals), ("loss components" if totals else "losses", "loss", losses),
              ("error rates", "rate", rates)]
    return [group for group in groups if group[2]]


@dataclass(frozen=True)
class Axis:
    """A linear axis: the range shown and round tick values inside it."""

    low: float
    high: float
    ticks: tuple[float, ...]
    decimals: int

    def label(self, value: float) -> str:
        return f"{value:.{self.decimals}f}"


def nice_axis(low: float, high: float, count: int = 5, *, min_step: float = 0.0) -> Axis:
    """About ``count`` ticks at 1, 2 or 5 times a power of ten, covering ``low``..``high``."""
    if high <= low:
        pad = 1.0 if min_step >= 1 else (abs(low) * 0.1 or 1.0)
        low, high = low - pad, high + pad
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9)), min_step)
    first, last = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
    ticks = tuple(first + i * step for i in range(round((last - first) / step) + 1))
    return Axis(first, last, ticks, max(0, -math.floor(math.log10(step))))


def line_chart(title: str, epochs: Sequence[int], series: Sequence[Series], y_label: str,
               best: tuple[int, float] | None = None) -> str:
    """An inline SVG chart: x = epoch, one line per series (gaps where a value is missing, a dot per value
    with its number as a tooltip), ticks and values on both axes, a legend; ``best`` is ringed."""
    legend_width, line_height = 190, 18
    width = 760
    height = max(300, 80 + line_height * len(series))
    left, right, top, bottom = 72, width - legend_width - 16, 34, height - 46
    x_axis = nice_axis(min(epochs), max(epochs), min(10, max(2, max(epochs) - min(epochs))), min_step=1)
    values = [v for s in series for v in s.values if v is not None]
    y_axis = nice_axis(min(values), max(values))

    def x(epoch: float) -> float:
        return left + (epoch - x_axis.low) / (x_axis.high - x_axis.low) * (right - left)

    def y(value: float) -> float:
        return bottom - (value - y_axis.low) / (y_axis.high - y_axis.low) * (bottom - top)

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
             f'<text x="{left}" y="20" class="title">{esc(title)}</text>']
    for tick in y_axis.ticks:
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{y_axis.label(tick)}</text>')
    for tick in x_axis.ticks:
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{bottom}" y2="{bottom + 5}" class="axis"/>'
                     f'<text x="{x(tick):.1f}" y="{bottom + 18}" text-anchor="middle">{x_axis.label(tick)}</text>')
    parts.append(f'<polyline points="{left},{top} {left},{bottom} {right},{bottom}" class="axis"/>'
                 f'<text x="{(left + right) / 2:.0f}" y="{height - 8}" text-anchor="middle">epoch</text>'
                 f'<text transform="translate(16 {(top + bottom) / 2:.0f}) rotate(-90)" text-anchor="middle">'
                 f'{esc(y_label)}</text>')
    for index, s in enumerate(series):
        colour, dash = _line_style(s.name, [other.name for other in series])
        style = f'stroke="{colour}"' + (' stroke-dasharray="6 4"' if dash else "")
        parts.append(f'<g class="series" data-series="{esc(s.name)}">')
        for run in _runs(epochs, s.values):
            if len(run) > 1:
                points = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in run)
                parts.append(f'<polyline points="{points}" fill="none" stroke-width="2" {style}/>')
        for epoch, value in zip(epochs, s.values):
            if value is not None:
                parts.append(f'<circle cx="{x(epoch):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}">'
                             f'<title>{esc(s.name)}, epoch {epoch}: {value:g}</title></circle>')
        parts.append("</g>")
        legend_y = top + 8 + index * line_height
        parts.append(f'<line x1="{right + 16}" x2="{right + 40}" y1="{legend_y}" y2="{legend_y}" '
                     f'stroke-width="2" {style}/>'
                     f'<text x="{right + 46}" y="{legend_y + 4}">{esc(s.name)}</text>')
    if best is not None:
        epoch, value = best
        parts.append(f'<circle cx="{x(epoch):.1f}" cy="{y(value):.1f}" r="7" class="best">'
                     f'<title>lowest val_total_loss, epoch {epoch}: {value:g}</title></circle>')
    parts.append("</svg>")
    return "\n".join(parts)


def _line_style(name: str, names: Sequence[str]) -> tuple[str, bool]:
    """Colour and dashing of a series: colour by what it measures, dashed for validation."""
    def measure(n: str) -> str:
        return n.split("_", 1)[1] if n.startswith(("train_", "val_")) else n

    measures = list(dict.fromkeys(measure(n) for n in names))
    return PALETTE[measures.index(measure(name)) % len(PALETTE)], name.startswith("val_")


def _runs(epochs: Sequence[int], values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The stretches of consecutive epochs that have a value (a line never bridges a missing one)."""
    runs: list[list[tuple[int, float]]] = [[]]
    for epoch, value in zip(epochs, values):
        if value is None:
            runs.append([])
        else:
            runs[-1].append((epoch, value))
    return [run for run in runs if run]


def _best(metrics: Metrics) -> tuple[int, float] | None:
    """The epoch with the lowest ``val_total_loss`` (the plugin's star)."""
    for s in metrics.series:
        if s.name == "val_total_loss":
            scored = [(v, e) for e, v in zip(metrics.epochs, s.values) if v is not None]
            if scored:
                value, epoch = min(scored)
                return epoch, value
    return None


def metrics_section(project: Path, row: JobRow) -> str:
    """The charts of one job, or why there are none."""
    path = project / job_paths(row.job_id).metrics
    heading = f"<h3>{html.escape(row.job_id)} <small>{html.escape(row.kind)}</small></h3>"
    try:
        metrics = read_metrics(path)
    except FileNotFoundError:
        return f'{heading}<p class="none">no metrics: {html.escape(str(path.relative_to(project)))} not found</p>'
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        return f'{heading}<p class="none">no metrics: the file cannot be read ({html.escape(str(exc))})</p>'
    groups = chart_groups(metrics)
    if not metrics.epochs or not groups:
        return f'{heading}<p class="none">no metrics: no epoch with a numeric value</p>'
    best = _best(metrics)
    charts = [line_chart(f"{row.job_id}: {title}", metrics.epochs, series, y_label,
                         best if any(s.name == "val_total_loss" for s in series) else None)
              for title, y_label, series in groups]
    note = (f"<p>{len(metrics.epochs)} epoch(s); lowest val_total_loss {best[1]:g} at epoch {best[0]} "
            f"(ringed).</p>" if best else f"<p>{len(metrics.epochs)} epoch(s).</p>")
    return heading + note + "\n".join(f'<div class="chart">{chart}</div>' for chart in charts)


def _has_training(row: JobRow) -> bool:
    return row.kind.rsplit("/", 1)[-1] in ("training", "training_and_inference")


# -- generated takes -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TakeView:
    """A generated take as the page shows it: embedded (``data``), linked (``link``), or neither."""

    reference: str
    text: str
    take: codex.AudioTake
    mime: str = ""
    data: bytes | None = None
    link: str | None = None
    note: str = ""


def generated_takes(project: Path, out_dir: Path, limit: int = MAX_TAKES) -> tuple[list[TakeView], int]:
    """The first ``limit`` usable generated takes (``isGenerated``) in notebook order with their audio, and
    how many the project holds. Takes are embedded up to ``MAX_TAKE_BYTES`` each and ``MAX_EMBEDDED_BYTES``
    in all; beyond that they are linked relative to ``out_dir``."""
    store = open_project(project)
    found = [(nb.path, cell, take) for nb in load_notebooks(store) for cell in nb.cells
             for take in codex.audio_takes(cell) if take.is_generated and take.usable]
    index = codex.AttachmentIndex.of(store)
    views: list[TakeView] = []
    embedded = 0
    with tempfile.TemporaryDirectory(prefix="demo-report-") as tmp:
        for notebook_path, cell, take in found[:limit]:
            reference = codex.cell_reference(cell) or codex.cell_id(cell)
            view = TakeView(reference, codex.cell_text(cell), take)
            fetched = codex.fetch_take(store, notebook_path, take, Path(tmp), index=index)
            if fetched is None:
                logger.info("No audio bytes for generated take %s of %s", take.audio_id, reference)
                views.append(replace(view, note="audio not in this checkout (only an LFS pointer, or missing)"))
                continue
            data = fetched.local_path.read_bytes()
            mime = _mime(fetched.project_path, take)
            if len(data) <= MAX_TAKE_BYTES and embedded + len(data) <= MAX_EMBEDDED_BYTES:
                embedded += len(data)
                views.append(replace(view, mime=mime, data=data))
            else:
                link = os.path.relpath(project / fetched.project_path, out_dir)
                views.append(replace(view, mime=mime, link=urllib.parse.quote(Path(link).as_posix()),
                                      note=f"{len(data) / 1024:.0f} KiB: linked, not embedded"))
    return views, len(found)


def _mime(path: str, take: codex.AudioTake) -> str:
    """By the file found (what the browser decodes), else the attachment's own ``mimeType``."""
    extension = posixpath.splitext(path)[1].lstrip(".").lower()
    declared = take.metadata.get("mimeType")
    if extension in AUDIO_MIME:
        return AUDIO_MIME[extension]
    if isinstance(declared, str) and declared.startswith("audio/"):
        return declared.split(";", 1)[0].strip()
    return "application/octet-stream"


def takes_section(views: Sequence[TakeView], total: int) -> str:
    """A player per take, labelled with its verse and text."""
    if not views:
        return '<p class="none">no generated takes in the project</p>'
    items = [f"<p>{total} generated take(s) in the project; the first {len(views)} below.</p>"]
    for view in views:
        duration = view.take.metadata.get("durationSec")
        facts = [f"{duration:g} s" if isinstance(duration, (int, float)) else "",
                 view.take.created_by or "", view.note]
        if view.data is not None:
            src = f"data:{view.mime};base64,{base64.b64encode(view.data).decode('ascii')}"
            player = f'<audio controls preload="metadata" src="{html.escape(src)}"></audio>'
        elif view.link is not None:
            link = html.escape(view.link)
            player = (f'<audio controls preload="none" src="{link}"></audio> '
                      f'<a href="{link}" type="{html.escape(view.mime)}">open the file</a>')
        else:
            player = ""
        items.append(f'<figure class="take"><figcaption><b>{html.escape(view.reference)}</b> '
                     f"{html.escape(view.text)}</figcaption>{player}"
                     f'<small>{html.escape(" · ".join(f for f in facts if f))}</small></figure>')
    return "\n".join(items)


# -- transcriptions ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AsrCell:
    """A cell whose current text is as our ASR wrote it."""

    notebook_path: str
    reference: str
    text: str
    author: str


def asr_written_cells(project: Path) -> list[AsrCell]:
    """Cells whose latest value edit is an ``llm-generation`` by ``ASR <model>`` (see
    ``codex.transcription_change``) that still holds the cell's current value."""
    cells = []
    for notebook in load_notebooks(open_project(project)):
        for cell in notebook.cells:
            author = asr_author(cell)
            if author is not None:
                reference = codex.cell_reference(cell) or codex.cell_id(cell)
                cells.append(AsrCell(notebook.path, reference, codex.cell_text(cell), author))
    return cells


def asr_author(cell: Mapping) -> str | None:
    """``ASR <model>`` when our ASR wrote the cell's current value, else None."""
    edits = codex.value_edits(cell)
    last = edits[-1] if edits else {}
    author = last.get("author")
    if (last.get("type") == "llm-generation" and isinstance(author, str) and author.startswith("ASR ")
            and last.get("value") == cell.get("value")):
        return author
    return None


def character_error_rate(reference: str, hypothesis: str) -> float | None:
    """CER after the ASR's own normalisation (lower case, no punctuation): what the model can hear.
    None when the reference has no characters left."""
    reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    if not reference:
        return None
    return float(jiwer.cer(reference, hypothesis))


def _reference_key(reference: str) -> str:
    return " ".join(reference.split()).upper()


def asr_section(cells: Sequence[AsrCell], references: Mapping[str, str] | None) -> str:
    """ASR text beside the text the recording speaks, with the CER per verse and over all of them."""
    if not cells:
        return '<p class="none">no cells written by ASR</p>'
    known = {_reference_key(ref): text for ref, text in (references or {}).items()}
    rows, pairs = [], []
    for cell in cells:
        spoken = known.get(_reference_key(cell.reference))
        cer = character_error_rate(spoken, cell.text) if spoken is not None else None
        if cer is not None:
            pairs.append((normalize_text(spoken), normalize_text(cell.text)))
        rows.append("<tr>" + "".join(f"<td>{html.escape(value)}</td>" for value in (
            cell.reference, cell.notebook_path, cell.text, spoken if spoken is not None else NO_VALUE,
            f"{cer:.3f}" if cer is not None else NO_VALUE)) + "</tr>")
    if pairs:
        overall = float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))
        rows.append(f'<tr class="total"><td colspan="4">all {len(pairs)} verse(s) with a reference</td>'
                    f"<td>{overall:.3f}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("verse", "notebook", "ASR text", "reference text", "CER"))
    return (f"<p>{len(cells)} cell(s) hold text written by {html.escape(', '.join(sorted({c.author for c in cells})))}."
            " CER is computed after lower-casing and removing punctuation, as the ASR sees text.</p>"
            f'<table class="asr"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


# -- recordings checked against their text -----------------------------------------------------------------
@dataclass(frozen=True)
class RecordingCheck:
    """One ASR job's ``audio_text_check.csv`` (rows worst first) and what its result says."""

    job_id: str
    rows: list[dict[str, str]]
    message: str
    page: Path | None       # the job's audio_text_check.html, when it is there


def recording_checks(project: Path, jobs: Sequence[JobRow]) -> list[RecordingCheck]:
    """The recording checks the project's ASR jobs left in their folders, in job order."""
    checks = []
    for row in jobs:
        try:
            paths = job_paths(row.job_id)
        except UnsafePath:
            continue
        table = project / paths.inside(CHECK_CSV)
        if not table.is_file():
            continue
        try:
            with table.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            logger.warning("Cannot read %s: %s", table, exc)
            continue
        message = (row.result or {}).get("recordings_check")
        if not isinstance(message, str):
            message = _check_message(rows, (row.result or {}).get("check_threshold", 0.5))
        page = project / paths.inside(CHECK_PAGE)
        checks.append(RecordingCheck(row.job_id, rows, message, page if page.is_file() else None))
    return checks


def _check_message(rows: Sequence[dict[str, str]], threshold: object) -> str:
    try:
        limit = CheckSettings.from_job({"inference": {"check_threshold": threshold}}).threshold
    except JobSettingError:
        limit = 0.5
    over = sum(1 for r in rows if (_number(r.get("cer", "")) or 0) > limit)
    return CheckSummary(len(rows), over, limit).message


def learnt_line(rows: Sequence[dict[str, str]]) -> str:
    """The mean CER on the takes the model was trained on, beside the others': did it learn what it heard?"""
    parts = []
    for label, trained in (("the verses it was trained on", "yes"), ("the others", "no")):
        values = [v for r in rows if r.get("trained_on") == trained and (v := _number(r.get("cer", ""))) is not None]
        if values:
            parts.append(f"{label} ({len(values)}): {sum(values) / len(values):.3f}")
    if not parts:
        return ""
    learnt = [r for r in rows if r.get("trained_on") == "yes"][:LEARNT_ROWS]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r.get(key, ''))}</td>" for key in (
        "reference", "cer", "verse_text", "asr_text")) + "</tr>" for r in learnt)
    table = ("<p>What it learnt (the worst of the verses it was trained on):</p><table class=\"asr\"><thead><tr>"
             "<th>verse</th><th>CER</th><th>verse text</th><th>ASR heard</th></tr></thead>"
             f"<tbody>{body}</tbody></table>") if learnt else ""
    return f"<p>Mean CER on {'; on '.join(parts)}.</p>{table}"


def check_section(checks: Sequence[RecordingCheck], out_dir: Path) -> str:
    """Per check: its summary, a link to its page, and its worst rows."""
    if not checks:
        return '<p class="none">no recording check in the project (ASR inference writes one)</p>'
    parts = []
    for check in checks:
        link = ""
        if check.page is not None:
            href = urllib.parse.quote(Path(os.path.relpath(check.page, out_dir)).as_posix())
            link = (f' <a href="{html.escape(href)}">the full check, with a player per take and the differences '
                    "marked</a>")
        head = "".join(f"<th>{h}</th>" for h in ("verse", "CER", "trained on", "verse text", "ASR heard"))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(value)}</td>" for value in (
                r.get("reference") or r.get("cell_id", ""), r.get("cer", ""), r.get("trained_on", ""),
                r.get("verse_text", ""), r.get("asr_text", ""))) + "</tr>"
            for r in check.rows[:CHECK_EXCERPT_ROWS])
        parts.append(f"<h3>{html.escape(check.job_id)}</h3><p>{html.escape(check.message)}.{link}</p>"
                     f"{learnt_line(check.rows)}"
                     f"<p>The {min(len(check.rows), CHECK_EXCERPT_ROWS)} worst of {len(check.rows)}:</p>"
                     f'<table class="asr"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return "\n".join(parts)


# -- voice timing: has the TTS learnt how long its verses take? ------------------------------------------
@dataclass(frozen=True)
class VerseTiming:
    """A recorded verse: its recording's length (silence trimmed, as trained) and the length the voice predicts."""

    reference: str
    recorded: float   # seconds
    predicted: float  # seconds


def voice_timings(project: Path, checkpoint: Path) -> list[VerseTiming]:
    """Predicted against recorded duration for every verse with text and a human take, by the checkpoint's own
    duration predictor (conditioned on the verse's recording, as in training)."""
    import numpy as np
    import torch

    from StableTTS.checkpoint import load_model
    from StableTTS.text import frontend_from_dict
    from tts.data import FRAMES_PER_SECOND, cached_mel

    model, sidecar = load_model(checkpoint)
    frontend = frontend_from_dict((sidecar or {})["frontend"])
    store = open_project(project)
    index = codex.AttachmentIndex.of(store)
    timings = []
    with tempfile.TemporaryDirectory(prefix="demo-timing-") as tmp, torch.no_grad():
        for notebook in load_notebooks(store):
            for cell in notebook.cells:
                take, text = codex.select_take(cell), codex.cell_text(cell)
                if take is None or take.is_generated or not text.strip() or asr_author(cell) is not None:
                    continue  # the voice never learnt from a verse ASR wrote
                fetched = codex.fetch_take(store, notebook.path, take, Path(tmp), index=index)
                if fetched is None:
                    continue
                mel_path, frames = cached_mel(fetched.local_path, Path(tmp) / "mels")
                ids = torch.tensor([frontend.encode(text).ids])
                c = model.speaker_vector(torch.from_numpy(np.load(mel_path))[None], torch.tensor([frames]))
                x, _, x_mask = model.encoder(ids, torch.tensor([ids.shape[1]]), c)
                predicted = float((torch.ceil(torch.exp(model.dp(x, x_mask, c))) * x_mask).sum())
                timings.append(VerseTiming(codex.cell_reference(cell) or codex.cell_id(cell),
                                           frames / FRAMES_PER_SECOND, predicted / FRAMES_PER_SECOND))
    return timings


def timing_summary(timings: Sequence[VerseTiming]) -> str:
    """``"28 verses: predicted / recorded length 0.97 on average (0.81-1.12), correlation 0.93"``."""
    ratios = [t.predicted / t.recorded for t in timings if t.recorded > 0]
    if not ratios:
        return "no recorded verse to compare"
    text = (f"{len(ratios)} verse(s): predicted / recorded length {sum(ratios) / len(ratios):.2f} on average "
            f"({min(ratios):.2f}-{max(ratios):.2f})")
    recorded, predicted = [t.recorded for t in timings], [t.predicted for t in timings]
    if len(timings) > 1 and len(set(recorded)) > 1 and len(set(predicted)) > 1:
        text += f", correlation {statistics.correlation(recorded, predicted):.2f}"
    return text


def timing_section(project: Path, jobs: Sequence[JobRow]) -> str:
    """Per finished TTS training job: how well its voice predicts the length of the verses it learnt from."""
    parts = []
    for row in jobs:
        if not (row.kind.startswith("tts/") and _has_training(row)):
            continue
        try:
            checkpoint = project / job_paths(row.job_id).checkpoint
        except UnsafePath:
            continue
        if not checkpoint.is_file():
            continue
        try:
            timings = voice_timings(project, checkpoint)
        except Exception as exc:  # a report section, not the job: say why and go on
            logger.warning("Cannot time the voice of %s: %s", row.job_id, exc)
            parts.append(f'<h3>{html.escape(row.job_id)}</h3><p class="none">not measured: '
                         f"{html.escape(type(exc).__name__)}</p>")
            continue
        body = "".join(f"<tr><td>{html.escape(t.reference)}</td><td>{t.recorded:.2f}</td><td>{t.predicted:.2f}</td>"
                       f"<td>{t.predicted / t.recorded:.2f}</td></tr>" for t in timings if t.recorded > 0)
        parts.append(f"<h3>{html.escape(row.job_id)}</h3><p>{html.escape(timing_summary(timings))}.</p>"
                     "<table><thead><tr><th>verse</th><th>recorded s</th><th>predicted s</th><th>ratio</th></tr>"
                     f"</thead><tbody>{body}</tbody></table>")
    return "\n".join(parts) or '<p class="none">no trained voice in the project</p>'


# -- the page ------------------------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.outputs { font-size: 0.85em; max-width: 520px; overflow-wrap: anywhere; }
table.asr td { overflow-wrap: anywhere; max-width: 320px; }
tr.total td { font-weight: bold; }
.state-completed { color: #1a7f37; } .state-failed { color: #cf222e; } .state-canceled { color: #9a6700; }
.none { color: #777; font-style: italic; }
figure.take { margin: 0 0 1em; } figure.take audio { display: block; margin: 4px 0; }
svg.chart { font-size: 12px; background: #fff; }
svg .title { font-weight: bold; font-size: 14px; }
svg .grid { stroke: #e5e5e5; } svg .axis { stroke: #444; fill: none; }
svg .best { fill: none; stroke: #000; stroke-width: 1.5; }
"""


def jobs_section(rows: Sequence[tuple[str, ...]]) -> str:
    """The jobs table."""
    if not rows:
        return '<p class="none">no jobs in the manifest</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in JOB_COLUMNS)
    body = []
    for job, kind, state, duration, outputs in rows:
        css = f' class="state-{state}"' if state in {s.value for s in JobState} else ""
        body.append(f"<tr><td>{html.escape(job)}</td><td>{html.escape(kind)}</td><td{css}>{html.escape(state)}"
                    f'</td><td>{html.escape(duration)}</td><td class="outputs">{html.escape(outputs)}</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _project_name(project: Path) -> str:
    try:
        name = json.loads((project / "metadata.json").read_text(encoding="utf-8")).get("projectName")
    except (OSError, ValueError, AttributeError):
        name = None
    return name if isinstance(name, str) and name.strip() else project.name


def write_report(project: Path, out_html: Path, references: dict[str, str] | None = None) -> Path:
    """Write the report of a project the worker ran on (a local Codex project folder) to ``out_html``.

    ``references`` maps verse references (``"GEN 1:3"``) to the text their recordings speak, to score the
    cells our ASR wrote; without it (or for a verse it lacks) the reference text and CER show as "—".
    Returns the path written.
    """
    project, out_html = Path(project), Path(out_html)
    jobs = describe_jobs(open_project(project))
    chart_rows = []
    for row in jobs:
        try:
            has_file = (project / job_paths(row.job_id).metrics).is_file()
        except UnsafePath:     # an invalid manifest entry has no job folder
            continue
        if _has_training(row) or has_file:
            chart_rows.append(row)
    views, total_takes = generated_takes(project, out_html.parent)
    name = html.escape(_project_name(project))
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{name}: worker report</title><style>{STYLE}</style></head><body>",
        f"<h1>{name}: what the worker did</h1>",
        f"<p>Project folder {html.escape(str(project))}; report written {made}.</p>",
        "<h2>Jobs</h2>", jobs_section([job_row(row) for row in jobs]),
        "<h2>Training curves</h2>",
        "\n".join(metrics_section(project, row) for row in chart_rows) or '<p class="none">no training jobs</p>',
        "<h2>Generated takes</h2>", takes_section(views, total_takes),
        "<h2>Voice timing</h2>",
        "<p>Recorded verses: the length of each recording (silence trimmed) beside the length the trained voice "
        "gives the verse's text. A voice that has learnt keeps the ratio near 1.</p>",
        timing_section(project, jobs),
        "<h2>Transcriptions</h2>", asr_section(asr_written_cells(project), references),
        "<h2>Recordings checked against their text</h2>",
        check_section(recording_checks(project, jobs), out_html.parent),
        "</body></html>",
    ]
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text("\n".join(page) + "\n", encoding="utf-8")
    return out_html


def main(argv: list[str] | None = None) -> int:
    """Command line: write the report of a project folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="the Codex project folder the worker ran on")
    parser.add_argument("out_html", type=Path, help="the HTML file to write")
    parser.add_argument("--no-references", action="store_true",
                        help="do not score transcriptions against the demo's verse texts (for other projects)")
    args = parser.parse_args(argv)
    if not args.project.is_dir():
        parser.error(f"{args.project} is not a folder")
    references = None
    if not args.no_references:
        from make_demo_project import spoken_verses
        references = spoken_verses()
    print(write_report(args.project, args.out_html, references))
    return 0


if __name__ == "__main__":
    sys.exit(main())
