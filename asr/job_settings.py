"""Manifest values -> ASR settings: every ``from_job`` of the family, read through ``job_settings.JobSettings``.

Each takes the manifest job entry (the handler's ``job_context``; docs/job_protocol.md lists the keys) and
raises ``job_settings.JobSettingError`` naming the key. What a job needs from the project (the downloaded
base checkpoint, a base model fetched from it) is passed in by the handler. Nothing here loads torch or
transformers, so a job with a bad setting fails at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from asr.config import AsrTrainConfig
from asr.recording_check import DEFAULT_THRESHOLD
from asr.text import TextNormalization
from job_settings import BASE_CHECKPOINT, FROM_SCRATCH, LANGUAGE, PRESET, JobSettingError, JobSettings

logger = logging.getLogger(__name__)

BASE_MODEL = "model.base_model"

# Training keys that take their manifest name as the AsrTrainConfig field (the earlier worker's keys).
_WHOLE_NUMBERS = ("epochs", "batch_size", "gradient_accumulation_steps", "eval_steps", "save_steps", "seed")
_NUMBERS = ("learning_rate", "warmup_steps", "val_split", "test_split", "max_duration_seconds")


def train_config_from_job(job: Mapping[str, Any], *, base_checkpoint: str | Path | None = None,
                          base_model: str | None = None) -> AsrTrainConfig:
    """The training settings of a job: ``epochs``, the tuning keys (``batch_size``, ``learning_rate``, ...),
    ``text_normalization.*``, ``transmorgrifier.enabled``, ``model.preset``, ``model.from_scratch`` and
    ``model.base_model``; unknown keys are ignored.

    ``base_checkpoint`` is the local copy of ``model.base_checkpoint``: it defines the architecture, so a
    ``model.preset`` beside it is ignored (a preset would train a fresh random model and keep only the
    checkpoint's vocabulary). ``base_model`` is where the handler put a ``model.base_model`` it fetched from
    the project; without it the manifest's name is used as it is.
    """
    settings = JobSettings(job)
    values: dict[str, Any] = {key: settings.integer(key) for key in _WHOLE_NUMBERS if settings.has(key)}
    values.update({key: settings.number(key) for key in _NUMBERS if settings.has(key)})
    values["text_normalization"] = text_normalization_from_job(job)
    values["post_correction"] = settings.flag("transmorgrifier.enabled", False)
    values["from_scratch"] = settings.flag(FROM_SCRATCH, False)
    preset = settings.text(PRESET)
    if base_checkpoint is not None:
        values["base_checkpoint"] = str(base_checkpoint)
        if preset:
            logger.info("%s %r ignored: training continues %s", PRESET, preset, BASE_CHECKPOINT)
    elif preset:
        values["preset"] = preset
    base_model = base_model or settings.text(BASE_MODEL)
    if base_model:
        values["base_model"] = base_model
    try:
        config = AsrTrainConfig(**values)
        config.validate()
    except ValueError as exc:
        raise JobSettingError(f"The job's settings cannot be used: {exc}") from None
    return config


def text_normalization_from_job(job: Mapping[str, Any]) -> TextNormalization:
    """``text_normalization.lowercase`` (true), ``.remove_punctuation`` (true), ``.remove_numbers`` (false)."""
    settings = JobSettings(job)
    default = TextNormalization()
    return TextNormalization(
        lowercase=settings.flag("text_normalization.lowercase", default.lowercase),
        remove_punctuation=settings.flag("text_normalization.remove_punctuation", default.remove_punctuation),
        remove_numbers=settings.flag("text_normalization.remove_numbers", default.remove_numbers),
    )


def starts_from_pretrained(job: Mapping[str, Any]) -> bool:
    """Whether training loads the pretrained encoder (``model.base_model`` or the default): not when the job
    continues ``model.base_checkpoint``, names ``model.preset`` or sets ``model.from_scratch``."""
    settings = JobSettings(job)
    return not (settings.text(BASE_CHECKPOINT) or settings.text(PRESET) or settings.flag(FROM_SCRATCH, False))


def initialised_from(job: Mapping[str, Any], config: AsrTrainConfig) -> str:
    """Where a training run's weights started, for the job result: the manifest's names (never the local
    copies' paths), or ``scratch (<preset>)``."""
    settings = JobSettings(job)
    if config.base_checkpoint:
        return str(settings.raw(BASE_CHECKPOINT))
    if config.preset:
        return f"scratch ({config.preset})"
    return settings.text(BASE_MODEL) or config.base_model


@dataclass(frozen=True)
class TranscriptionSettings:
    """How the inference modes transcribe."""

    batch_size: int = 16
    suppress_unk: bool = True       # write unk_replacement where the model hears no known character
    unk_replacement: str = ""
    language: str | None = None     # recorded with each transcription

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> "TranscriptionSettings":
        """``inference.batch_size`` (16), ``inference.suppress_unk`` (true), ``inference.unk_replacement``
        (""), ``model.language``.

        A job without ``inference.batch_size`` is transcribed with its top-level ``batch_size`` (the key
        training reads; the earlier worker used it for both): this fallback is stated here only.
        """
        settings = JobSettings(job)
        batch_key = "inference.batch_size" if settings.has("inference.batch_size") else "batch_size"
        return cls(batch_size=settings.integer(batch_key, cls.batch_size, minimum=1),
                   suppress_unk=settings.flag("inference.suppress_unk", True),
                   # as written: a space is a replacement too
                   unk_replacement=str(settings.raw("inference.unk_replacement", "")),
                   language=settings.text(LANGUAGE) or None)


@dataclass(frozen=True)
class CheckSettings:
    """The recording check of the inference modes (``handlers/asr/w2v2bert/recording_check.py``)."""

    enabled: bool = True
    threshold: float = DEFAULT_THRESHOLD    # the CER above which a take "differs from its text"

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> "CheckSettings":
        """``inference.check_recordings`` (true) and ``inference.check_threshold`` (0.5)."""
        settings = JobSettings(job)
        return cls(settings.flag("inference.check_recordings", True),
                   settings.number("inference.check_threshold", DEFAULT_THRESHOLD, minimum=0, maximum=1))
