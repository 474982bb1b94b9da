"""TTS inference with StableTTS: a generated take for every verse cell that has text and no recording.

Needs ``model.base_checkpoint`` (a ``best_model.pt`` of a training job; its ``.json`` sidecar gives the text
front end). The voice is ``voice_reference`` when given; without one ("Use Default Voice") it is the
median-length recording of the voice's training data (recorded in the sidecar), else of the project's
current recordings, trimmed of silence -- see ``job_inputs.py``; the speaking is ``synthesis.py``. Manifest
keys (``tts.job_settings.SynthesisSettings``): ``inference.diffusion_steps`` (10), ``inference.temperature``
(1.0), ``inference.length_scale`` (1.0), ``inference.cfg_scale`` (3.0), ``inference.audio_format`` (webm:
Opus at 48 kHz), ``inference.replace_recorded`` (false: a cell the include list names is not spoken where
the editor plays a translator's recording; true: it is, and the new take is added beside the recording,
which stays the one played). Result: ``processed_count``, ``uploaded_count``, the skip counts
(``skipped_recorded``: listed cells left alone for their recording), ``vocoder`` (``griffin-lim`` when no
Vocos weights were available) and ``voice``. Each generated take is then heard by the project's ASR model
before it is written back (``listen_check.py``: ``inference.check_with``, ``inference.max_check_cer``, the
``generated_*`` result keys and ``generated_check.csv``).
"""
from __future__ import annotations

import logging
from pathlib import Path

from handlers.common import completed, failure, load_notebooks
from handlers.common.cells import replaces_recorded
from job_settings import BASE_CHECKPOINT
from tts.job_settings import SynthesisSettings, text_language

from .job_inputs import USER_ERRORS, checkpoint_sidecar, fetch_base_checkpoint, project_language_tag, voice_reference
from .listen_check import ListenCheck
from .synthesis import load_job_voice, synthesis_phrase, synthesize_cells

logger = logging.getLogger(__name__)


def run(job_context, callbacks) -> dict:
    work = Path(callbacks.get_work_dir())
    try:
        settings = SynthesisSettings.from_job(job_context)
        listen = ListenCheck(callbacks, job_context)
        replaces_recorded(job_context)  # read again by the cell selection: checked here, before the voice loads
        checkpoint = fetch_base_checkpoint(callbacks, work)
        if checkpoint is None:
            return failure(f"A TTS inference job needs {BASE_CHECKPOINT}: the checkpoint_path of a finished "
                           "TTS training job (gpu_jobs/job_<id>/checkpoint/best_model.pt)")
        voice = load_job_voice(callbacks, checkpoint, text_language(job_context, project_language_tag(callbacks)))
        notebooks = load_notebooks(callbacks.scanner)
        reference = voice_reference(callbacks, notebooks, checkpoint_sidecar(checkpoint), work)
    except USER_ERRORS as exc:
        return failure(str(exc))
    spoken = synthesize_cells(callbacks, notebooks, voice, reference, settings, review=listen)
    return completed([synthesis_phrase(spoken), listen.phrase], spoken, listen.result)
