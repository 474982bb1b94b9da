"""The transcription step of the ASR inference modes: cells with a recording and no text get the text the
model hears.

Cells: the verse cells with a usable take and no text (the job's ``inference`` filter), their takes decoded
to 16 kHz mono WAV by ``handlers.common``. Text: ``asr.inference.transcribe`` in chunks, with a
heartbeat after each ("transcribing 40/120 verses"), which is also where a stop surfaces. Write-back:
``handlers.common.write_transcriptions`` -- the cell value with an ``llm-generation`` edit by
``ASR W2V2BERT`` (first an ``initial-import`` edit keeping text no edit records, under its writer's name or
``unknown``, never the model's), and the take's ``transcription``; a cell a translator changed during the
job keeps the translator's text, and a value that is not text is never replaced. The manifest keys are
read by ``asr.job_settings.TranscriptionSettings``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from transformers.utils import logging as hf_logging

from asr.audio import SAMPLE_RATE
from asr.inference import load_transcriber, transcribe
from asr.job_settings import TranscriptionSettings
from asr.model import model_folder
from handlers.common import (UNDECODABLE_AUDIO, CellAudio, SkipReport, Transcript, cells_needing_text, count,
                             write_transcriptions)
from job_settings import JobInputError

from .job_inputs import MODEL_NAME

logger = logging.getLogger(__name__)

#: Batches per transcription chunk: one heartbeat (and stop check) per chunk.
BATCHES_PER_CHUNK = 4


def load_model(callbacks, model: Path, what: str) -> Path:
    """The model folder of ``model`` (a folder or a local archive, extracted safely), loaded once to check
    that it is a usable ASR model; ``what`` names it in the error a translator sees."""
    hf_logging.disable_progress_bar()   # a loading bar per model would clutter the worker's console
    callbacks.heartbeat(message="loading the ASR model")
    try:
        # checked as it loads; cached: transcribe() reuses it
        folder = model_folder(model, Path(callbacks.get_work_dir()) / "model", check=False)
        load_transcriber(folder, device=callbacks.get_device())
    except (ValueError, OSError) as exc:         # ModelFolderError (a ValueError), or the disk's
        logger.exception("Cannot load the ASR model %s", model)
        raise JobInputError(f"{what} is not a usable ASR model: {exc}") from exc
    return folder


def transcribe_cells(callbacks, notebooks, model_dir: Path, settings: TranscriptionSettings) -> dict[str, Any]:
    """Transcribe every cell needing text and write the texts back; returns the inference result keys
    (``cells_transcribed``, ``errors_count``, ``files_modified``, ``skipped_reasons``)."""
    work = Path(callbacks.get_work_dir())
    needing = cells_needing_text(callbacks, notebooks, work, sample_rate=SAMPLE_RATE)
    logger.info("%d cell(s) need a transcription", len(needing))
    heard, failed = transcribe_audio(callbacks, needing.items, model_dir, settings, "transcribing")
    failed.log("while transcribing")
    written = write_transcriptions(callbacks, [Transcript(item.cell, text, settings.language) for item, text in heard],
                                   model_name=MODEL_NAME)
    # errors_count covers every cell that needed text and did not get it, whatever the step.
    written.skipped.extend(needing.skipped)
    written.skipped.extend(failed)
    return written.as_result()


def transcription_phrase(result: dict[str, Any]) -> str:
    """The status line's part for transcription: ``6 verses transcribed, 1 skipped``."""
    skipped = result.get("errors_count") or 0
    return count(result["cells_transcribed"], "verse") + " transcribed" + (f", {skipped} skipped" if skipped else "")


def transcribe_audio(callbacks, items: Sequence[CellAudio], model_dir: Path, settings: TranscriptionSettings,
                     label: str) -> tuple[list[tuple[CellAudio, str]], SkipReport]:
    """What the model hears in each item's recording, in chunks with a heartbeat after each
    (``<label> 40/120 verses``, also where a stop surfaces). Returns (item, text) pairs in input order and
    the items whose audio could not be decoded."""
    total = len(items)
    failed = SkipReport()
    heard: list[tuple[CellAudio, str]] = []
    chunk = settings.batch_size * BATCHES_PER_CHUNK
    callbacks.heartbeat(message=f"{label} 0/{total} verses")
    for start in range(0, total, chunk):
        part = items[start:start + chunk]
        errors: dict[int, Exception] = {}
        texts = transcribe(model_dir, [item.audio_path for item in part], batch_size=settings.batch_size,
                           device=callbacks.get_device(), suppress_unk=settings.suppress_unk,
                           unk_replacement=settings.unk_replacement, on_error=errors.__setitem__)
        for index, (item, text) in enumerate(zip(part, texts)):
            if index in errors:
                failed.add(item.cell, UNDECODABLE_AUDIO, str(errors[index]))
            else:
                heard.append((item, text))
        callbacks.heartbeat(message=f"{label} {start + len(part)}/{total} verses")
    return heard, failed
