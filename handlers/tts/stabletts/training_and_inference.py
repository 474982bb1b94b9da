"""TTS training, then inference with the freshly trained voice (no upload round trip).

Result: ``checkpoint_path`` and ``audio_generated`` (the earlier worker's keys), plus the keys of both the
training and the inference results, and the listening check's (``listen_check.py``). See ``training.py``,
``inference.py`` and ``steps.py``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from handlers.base import JobInterrupted
from handlers.common import load_notebooks

from .listen_check import ListenCheck
from .steps import (
    USER_ERRORS,
    SynthesisSettings,
    checkpoint_sidecar,
    failure,
    load_job_voice,
    synthesise_cells,
    train_voice,
    voice_reference,
)

logger = logging.getLogger(__name__)


def run(job_context, callbacks) -> dict:
    work = Path(callbacks.get_work_dir())
    notebooks = load_notebooks(callbacks.scanner)
    try:
        settings = SynthesisSettings.from_job(callbacks)  # checked before hours of training, not after
        listen = ListenCheck(callbacks, job_context)
        trained = train_voice(callbacks, job_context, notebooks)
        checkpoint = trained.result.checkpoint
        voice = load_job_voice(callbacks, checkpoint)
        local_takes = {item.source_path: item.audio_path for item in trained.collected}
        reference = voice_reference(callbacks, notebooks, checkpoint_sidecar(checkpoint), work, local_takes)
    except USER_ERRORS as exc:
        return failure(str(exc))
    try:
        spoken = synthesise_cells(callbacks, load_notebooks(callbacks.scanner), voice, reference, settings,
                                  review=listen)
    except JobInterrupted:
        callbacks.save_resume_state(force=True)  # the finished training, so a retry goes straight to speaking
        raise
    callbacks.clear_resume_state()
    return {"success": True, **trained.summary, **spoken, **listen.result,
            "audio_generated": spoken["uploaded_count"]}
