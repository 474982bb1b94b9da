"""ASR training with Wav2Vec2-BERT: the project's recorded verses -> ``model/asr_model.pth.tar`` + metrics.

Result: ``checkpoint_path`` (the repository path of the archive), ``test_results``, ``train_metrics`` (the
earlier worker's keys), ``post_corrector_used`` when ``transmorgrifier.enabled``, plus the best epoch, clip
and vocabulary counts. ``model.base_checkpoint`` continues an earlier model and its vocabulary. A stopped
job resumes at its next epoch. See ``training_run.py``.
"""
from __future__ import annotations

import logging

from handlers.common import completed, failure, load_notebooks

from .job_inputs import USER_ERRORS
from .training_run import train_model, training_phrase

logger = logging.getLogger(__name__)


def run(job_context, callbacks) -> dict:
    notebooks = load_notebooks(callbacks.scanner)
    try:
        trained = train_model(callbacks, job_context, notebooks)
    except USER_ERRORS as exc:
        return failure(str(exc))
    callbacks.clear_resume_state()
    return completed([training_phrase(trained.result)], trained.result)
