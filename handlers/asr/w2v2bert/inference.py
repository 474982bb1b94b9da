"""ASR inference with Wav2Vec2-BERT: text for every verse cell that has a recording and no text.

Needs ``model.base_checkpoint``: the ``checkpoint_path`` of a finished ASR training job
(``gpu_jobs/job_<id>/model/asr_model.pth.tar``, ours or the earlier worker's), extracted safely. Nothing is
written when it is missing or unusable. Result: ``cells_transcribed``, ``errors_count``, ``files_modified``
(the earlier worker's keys), the skip counts, and ``post_corrector_used`` / ``post_corrector`` /
``post_corrector_skipped`` when the model holds a ``.tm`` post-corrector. See ``transcription.py``. Then
the translators' recordings are checked against their text (``recording_check.py``: the ``recordings_*``
keys and ``audio_text_check.csv``/``.html`` in the job folder; ``inference.check_recordings: false`` skips it).
"""
from __future__ import annotations

import logging
from pathlib import Path

from asr.job_settings import CheckSettings, TranscriptionSettings
from asr.postcorrect import scan_post_correctors
from handlers.common import completed, failure, load_notebooks
from job_settings import BASE_CHECKPOINT

from .job_inputs import USER_ERRORS, fetch_base_checkpoint
from .recording_check import check_recordings

logger = logging.getLogger(__name__)


def run(job_context, callbacks) -> dict:
    try:
        settings = TranscriptionSettings.from_job(job_context)
        check = CheckSettings.from_job(job_context)
        checkpoint = fetch_base_checkpoint(callbacks, Path(callbacks.get_work_dir()))
        if checkpoint is None:
            return failure(f"An ASR inference job needs {BASE_CHECKPOINT}: the checkpoint_path of a finished ASR "
                           "training job (gpu_jobs/job_<id>/model/asr_model.pth.tar)")
        # Imported only now: torch and transformers take seconds to load, and a job whose model is missing
        # or refused fails without waiting for them.
        from .transcription import load_model, transcribe_cells, transcription_phrase

        model = load_model(callbacks, checkpoint, f"{BASE_CHECKPOINT} {callbacks.get_job_config(BASE_CHECKPOINT)}")
    except USER_ERRORS as exc:
        return failure(str(exc))
    notebooks = load_notebooks(callbacks.scanner)
    # post_corrector_* keys: whether the model's .tm file was used (the earlier worker's SentenceTransmorgrifier
    # models are skipped where their package is not installed)
    transcribed = transcribe_cells(callbacks, notebooks, model, settings)
    checked = check_recordings(callbacks, job_context, notebooks, model, settings, check)
    return completed([transcription_phrase(transcribed), checked.get("recordings_check", "")],
                     transcribed, scan_post_correctors(model).result_keys(), checked)
