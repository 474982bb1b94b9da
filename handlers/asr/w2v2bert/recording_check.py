"""The recording check of the ASR inference modes: do the translators' takes say what their verses say?

Every verse cell with text whose played take (``codex.playing_take``) is a translator's is transcribed, and
the CER of what the model hears against the verse text ranks the takes: a skipped line, the wrong verse or a
misread word comes out on top. Nothing in the notebooks changes. Output, in the job folder:
``audio_text_check.csv`` (every take, worst first) and ``audio_text_check.html`` (see ``asr.check_page``).
Takes the model was trained on (its ``trained_takes.json``) are marked: it may have learnt them by heart.

Manifest keys (read by ``asr.job_settings.CheckSettings``): ``inference.check_recordings`` (true),
``inference.check_threshold`` (0.5: the CER above which a take "differs from its text"). Result keys:
``recordings_checked``, ``recordings_disagreeing``, ``check_threshold``, ``recordings_check`` (``12 of 430
recordings differ from their text by more than 50 %``), ``recordings_check_report`` (the page), and
``recordings_not_checked`` with its reasons.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import codex
from asr.audio import SAMPLE_RATE
from asr.check_page import write_check_page
from asr.job_settings import CheckSettings, TranscriptionSettings, text_normalization_from_job
from asr.recording_check import (CheckedRecording, CheckSummary, character_error_rate, model_text_normalization,
                                 read_trained_takes, worst_first, write_check_csv)
from codex import CellRef, Notebook
from handlers.common import CellAudio, SkipReport, fetch_cell_audio, job_paths, upload_job_files
from preprocess_audio import AudioError, encode_audio, load_audio
from skips import MACHINE_TEXT, MISSING_PLAYED_TAKE, NO_HEARABLE_TEXT  # why a cell's take was not checked

from .job_inputs import MODEL_NAME

logger = logging.getLogger(__name__)

CHECK_CSV = "audio_text_check.csv"
CHECK_PAGE = "audio_text_check.html"
CHECK_DIR = "recording_check"           # under the work dir
EMBED_BITRATE = 16_000                  # Opus at 16 kbit/s: speech stays clear, a 10 s verse is about 20 kB


def recordings_to_check(notebooks: Iterable[Notebook]) -> tuple[list[CellRef], SkipReport]:
    """Verse cells with text where the editor plays a translator's take, each with that take; and the cells
    left out because their played take cannot be fetched or their text was written by a model."""
    cells: list[CellRef] = []
    skipped = SkipReport()
    for notebook in notebooks:
        for cell in notebook.cells:
            if codex.is_deleted_cell(cell) or not codex.cell_id(cell) or codex.cell_type(cell) != "text":
                continue
            ref = codex.make_cell_ref(notebook.path, cell)
            playing = codex.playing_take(cell)
            if not ref.text or playing is None or not playing.human:
                continue
            take = next((t for t in codex.audio_takes(cell) if t.audio_id == playing.audio_id and t.usable), None)
            if take is None:
                skipped.add(ref, MISSING_PLAYED_TAKE)
            elif _machine_written(cell):
                skipped.add(ref, MACHINE_TEXT)      # our own transcription of this very take
            else:
                cells.append(replace(ref, audio_take=take))
    return cells, skipped


def _machine_written(cell: Mapping) -> bool:
    # As training decides: the last value edit is a model's, and nobody validated it.
    edits = codex.value_edits(cell)
    return bool(edits) and edits[-1].get("type") == "llm-generation" and not edits[-1].get("validatedBy")


def check_recordings(callbacks, job_context: Mapping[str, Any], notebooks, model_dir: Path,
                     settings: TranscriptionSettings, check: CheckSettings) -> dict[str, Any]:
    """Transcribe the translators' played takes, rank them by CER against their text, upload the CSV and
    the page; returns the result keys ({} when the check is turned off)."""
    if not check.enabled:
        logger.info("Recording check turned off (inference.check_recordings: false)")
        return {}
    work = Path(callbacks.get_work_dir())
    cells, skipped = recordings_to_check(notebooks)
    logger.info("Checking %d recording(s) against their text", len(cells))
    audio = fetch_cell_audio(callbacks, cells, work, sample_rate=SAMPLE_RATE, log=False)
    skipped.extend(audio.skipped)
    from .transcription import transcribe_audio     # torch and transformers: only once there is work

    heard, failed = transcribe_audio(callbacks, audio.items, model_dir, settings, "checking recordings")
    skipped.extend(failed)
    job_default = text_normalization_from_job(job_context)
    normalization = model_text_normalization(model_dir, job_default)
    trained = read_trained_takes(model_dir)
    if trained is None:
        logger.info("The model does not list the takes it was trained on; trained_on is 'unknown'")
    rows: list[CheckedRecording] = []
    local_audio: dict[int, CellAudio] = {}
    for item, text in heard:
        cer = character_error_rate(item.cell.text, text, normalization)
        if cer is None:
            skipped.add(item.cell, NO_HEARABLE_TEXT)
            continue
        take_id = item.audio_id
        row = CheckedRecording(item.cell.cell_id, item.cell.reference or "", take_id, item.cell.text, text, cer,
                               None if trained is None else (item.cell.cell_id, take_id) in trained,
                               item.cell.notebook_path, item.source_path)
        rows.append(row)
        local_audio[id(row)] = item
    rows = worst_first(rows)
    summary = CheckSummary.of(rows, check.threshold)
    skipped.log("from the recording check")
    logger.info("%s", summary.message)
    result: dict[str, Any] = {"recordings_checked": summary.checked, "recordings_disagreeing": summary.disagreeing,
                              "check_threshold": check.threshold, "recordings_check": summary.message,
                              "recordings_not_checked": len(skipped)}
    if len(skipped):
        result["recordings_not_checked_reasons"] = skipped.counts()
    if rows:
        paths = job_paths(job_context)
        out = work / CHECK_DIR
        csv_path = write_check_csv(rows, out / CHECK_CSV)
        page = write_check_page(
            rows, out / CHECK_PAGE, title="Recordings checked against their text", summary=summary,
            normalization=normalization, embed=lambda row: _small_clip(local_audio[id(row)], out / "clips"),
            link=_link_from_job_folder)
        callbacks.heartbeat(message=summary.message)
        upload_job_files(callbacks, {paths.inside(CHECK_CSV): csv_path, paths.inside(CHECK_PAGE): page},
                         f"ASR {MODEL_NAME}: recordings checked against their text")
        result["recordings_check_report"] = paths.inside(CHECK_PAGE)
    return result


def _small_clip(item: CellAudio, folder: Path) -> bytes | None:
    """The take re-encoded small enough to embed in the page (None if that fails: the page links it)."""
    clip = folder / f"{item.audio_path.stem}.webm"
    try:
        encode_audio(load_audio(item.audio_path, SAMPLE_RATE), SAMPLE_RATE, clip, "webm", bitrate=EMBED_BITRATE)
    except (AudioError, ValueError, OSError) as exc:
        logger.warning("Cannot make a clip of %s for the page: %s", item.source_path, exc)
        return None
    return clip.read_bytes()


def _link_from_job_folder(row: CheckedRecording) -> str | None:
    """The take's ``files/`` path (where an editor's checkout keeps the bytes), relative to the job folder."""
    if not row.audio_path:
        return None
    path = row.audio_path
    if path.startswith(codex.POINTERS_DIR + "/"):
        path = codex.attachment_twin(path)
    return "../../" + urllib.parse.quote(path)
