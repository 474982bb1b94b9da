"""TTS training with StableTTS: the project's recorded verses -> ``checkpoint/best_model.pt`` + metrics.

Result: ``checkpoint_path``, ``best_epoch``, ``best_metric_value`` (the earlier worker's keys) plus clip and
character counts. A stopped job resumes at its next epoch. See ``training_run.py`` for the details.
"""
from __future__ import annotations

import logging

from handlers.common import completed, failure, load_notebooks

from .job_inputs import USER_ERRORS
from .training_run import train_voice, training_phrase

logger = logging.getLogger(__name__)


def run(job_context, callbacks) -> dict:
    notebooks = load_notebooks(callbacks.scanner)
    try:
        trained = train_voice(callbacks, job_context, notebooks)
    except USER_ERRORS as exc:
        return failure(str(exc))
    callbacks.clear_resume_state()
    return completed([training_phrase(trained.summary)], trained.summary)
