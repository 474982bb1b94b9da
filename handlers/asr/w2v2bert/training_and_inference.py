"""ASR training, then inference with the model just trained: the training job's outputs and result keys,
and text for every verse cell that has a recording and no text (the inference job's result keys).

``model.base_checkpoint`` is honoured as in training (the earlier worker ignored it in this mode). A worker
that takes the job over during transcription reuses the uploaded model. See ``training_run.py`` and
``transcription.py``. Then the translators' recordings are checked against their text with that model
(``recording_check.py``), the takes it was trained on marked as such.
"""
from __future__ import annotations

import logging

from asr.job_settings import CheckSettings, TranscriptionSettings
from handlers.common import completed, failure, load_notebooks

from .job_inputs import USER_ERRORS
from .recording_check import check_recordings
from .training_run import train_model, training_phrase
from .transcription import load_model, transcribe_cells, transcription_phrase

logger = logging.getLogger(__name__)


def run(job_context, callbacks) -> dict:
    notebooks = load_notebooks(callbacks.scanner)
    try:
        settings = TranscriptionSettings.from_job(job_context)  # a bad setting fails before hours of training
        check = CheckSettings.from_job(job_context)
        trained = train_model(callbacks, job_context, notebooks, inference_follows=True)
        model = load_model(callbacks, trained.archive, "the model this job trained")
    except USER_ERRORS as exc:
        return failure(str(exc))
    # Re-read: the cells that need text are those of the project as it is now, not before training.
    notebooks = load_notebooks(callbacks.scanner)
    transcribed = transcribe_cells(callbacks, notebooks, model, settings)
    checked = check_recordings(callbacks, job_context, notebooks, model, settings, check)
    callbacks.clear_resume_state()
    return completed([training_phrase(trained.result), transcription_phrase(transcribed),
                      checked.get("recordings_check", "")], trained.result, transcribed, checked)
