"""TTS training, then inference with the freshly trained voice (no upload round trip).

Result: ``checkpoint_path`` and ``audio_generated`` (the earlier worker's keys), plus the keys of both the
training and the inference results, and the listening check's (``listen_check.py``). See ``training_run.py``,
``job_inputs.py`` and ``synthesis.py``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from handler_api import JobInterrupted
from handlers.common import completed, failure, load_notebooks
from handlers.common.cells import replaces_recorded
from tts.job_settings import SynthesisSettings

from .job_inputs import USER_ERRORS, checkpoint_sidecar, voice_reference
from .listen_check import ListenCheck
from .synthesis import load_job_voice, synthesis_phrase, synthesize_cells
from .training_run import train_voice, training_phrase

logger = logging.getLogger(__name__)


def run(job_context, callbacks) -> dict:
    work = Path(callbacks.get_work_dir())
    notebooks = load_notebooks(callbacks.scanner)
    try:
        settings = SynthesisSettings.from_job(job_context)  # checked before hours of training, not after
        listen = ListenCheck(callbacks, job_context)
        replaces_recorded(job_context)  # read again by the cell selection, after training: checked before it
        trained = train_voice(callbacks, job_context, notebooks)
        checkpoint = trained.result.checkpoint
        voice = load_job_voice(callbacks, checkpoint, trained.language)
        local_takes = {item.source_path: item.audio_path for item in trained.collected}
        reference = voice_reference(callbacks, notebooks, checkpoint_sidecar(checkpoint), work, local_takes)
    except USER_ERRORS as exc:
        return failure(str(exc))
    try:
        spoken = synthesize_cells(callbacks, load_notebooks(callbacks.scanner), voice, reference, settings,
                                  review=listen)
    except JobInterrupted:
        callbacks.save_resume_state(force=True)  # the finished training, so a retry goes straight to speaking
        raise
    callbacks.clear_resume_state()
    return completed([training_phrase(trained.summary), synthesis_phrase(spoken), listen.phrase],
                     trained.summary, spoken, listen.result, {"audio_generated": spoken["uploaded_count"]})
