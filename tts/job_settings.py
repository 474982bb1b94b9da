"""Manifest values -> StableTTS settings: the one place a TTS job's settings are read (docs/job_protocol.md).

Each reader takes the manifest job entry (the handler's ``job_context``) and reads it through
``job_settings.JobSettings``; a value that cannot be used raises ``job_settings.JobSettingError`` naming the
key. What a job needs from the project (metadata.json's language tag, a fetched base checkpoint) is
passed in by the handler.

One alias, here only: the manifest's ``max_duration_seconds`` (the earlier worker's key, ASR's too) is
``TrainConfig.max_clip_seconds`` (also ``--max-clip-seconds`` of ``train_stabletts.py``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from job_settings import FROM_SCRATCH, LANGUAGE, PRESET, JobSettingError, JobSettings
from preprocess_audio import ENCODE_FORMATS
from StableTTS.config import PRESETS
from StableTTS.synthesis import SAMPLING

from .config import FRONTEND_CHOICES, TrainConfig

logger = logging.getLogger(__name__)

FRONTEND = "model.frontend"
USE_UROMAN = "model.use_uroman"
CHECK_WITH = "inference.check_with"
MAX_CHECK_CER = "inference.max_check_cer"
UNUSED_BY_TTS = ("save_steps", "eval_steps", "test_split")  # the earlier worker's; state is kept per epoch


def text_language(job: Mapping[str, Any], project_tag: str | None = None) -> str | None:
    """``model.language``, else ``project_tag`` (the target language of the project's metadata.json).

    Only a hint: the text front end checks it against the texts (metadata tags are often wrong or missing)."""
    language = JobSettings(job).text(LANGUAGE)
    if language:
        logger.info("Project language from %s: %s", LANGUAGE, language)
        return language
    if project_tag:
        logger.info("Project language from the project's metadata.json: %s", project_tag)
    return project_tag


def frontend_choice(job: Mapping[str, Any]) -> str:
    """``model.frontend`` (auto), or ``romanized`` where the earlier worker's ``model.use_uroman`` is true."""
    settings = JobSettings(job)
    frontend = settings.text(FRONTEND, "auto", choices=FRONTEND_CHOICES, lower=True)
    return "romanized" if settings.flag(USE_UROMAN, False) else frontend


def training_config(job: Mapping[str, Any], *, project_tag: str | None = None,
                    base_checkpoint: str | None = None) -> TrainConfig:
    """TrainConfig from the manifest: ``epochs``, ``model.*``, the earlier worker's tuning keys.
    ``base_checkpoint``: the local copy of ``model.base_checkpoint``, fetched by the handler."""
    settings = JobSettings(job)
    values = {
        "epochs": settings.integer("epochs", TrainConfig.epochs, minimum=1, maximum=9999),
        "preset": settings.text(PRESET, TrainConfig.preset, choices=tuple(PRESETS)),
        "pretrained": not settings.flag(FROM_SCRATCH, False),
        "language": text_language(job, project_tag),
        "frontend": frontend_choice(job),
        "base_checkpoint": base_checkpoint,
        "learning_rate": settings.number("learning_rate"),
        "batch_size": settings.integer("batch_size", TrainConfig.batch_size, minimum=1),
        "val_split": settings.number("val_split", TrainConfig.val_split, minimum=0),
        "warmup_steps": settings.integer("warmup_steps", TrainConfig.warmup_steps, minimum=0),
        "gradient_accumulation_steps": settings.integer("gradient_accumulation_steps",
                                                        TrainConfig.gradient_accumulation_steps, minimum=1),
        "max_clip_seconds": _positive(settings, "max_duration_seconds", TrainConfig.max_clip_seconds),
        "seed": settings.integer("seed", TrainConfig.seed),
    }
    for ignored in UNUSED_BY_TTS:
        if settings.has(ignored):
            logger.info("Job setting %r is not used by StableTTS training (state is kept per epoch)", ignored)
    try:
        return TrainConfig(**values)
    except ValueError as exc:  # what only the whole config can check (val_split below 1, ...)
        raise JobSettingError(str(exc)) from None


@dataclass(frozen=True)
class SynthesisSettings:
    """How a TTS inference job speaks: the ``inference.*`` keys, defaulting to ``StableTTS.synthesis.SAMPLING``."""

    steps: int = SAMPLING.steps  # inference.diffusion_steps
    temperature: float = SAMPLING.temperature
    length_scale: float = SAMPLING.length_scale
    cfg_scale: float = SAMPLING.cfg_scale
    audio_format: str = "webm"  # Opus at 48 kHz in WebM, what the editor records

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> "SynthesisSettings":
        settings = JobSettings(job)
        written = settings.text("inference.audio_format", cls.audio_format, lower=True)
        audio_format = written.lstrip(".")
        if audio_format not in ENCODE_FORMATS:
            raise JobSettingError(f"job setting 'inference.audio_format' must be one of {', '.join(ENCODE_FORMATS)}, "
                                  f"not {settings.raw('inference.audio_format')!r}")
        return cls(steps=settings.integer("inference.diffusion_steps", cls.steps, minimum=1, maximum=1000),
                   temperature=settings.number("inference.temperature", cls.temperature, minimum=0),
                   length_scale=_positive(settings, "inference.length_scale", cls.length_scale),
                   cfg_scale=settings.number("inference.cfg_scale", cls.cfg_scale), audio_format=audio_format)


@dataclass(frozen=True)
class ListenCheckSettings:
    """The check of generated takes by listening (``handlers/tts/stabletts/listen_check.py``):
    ``inference.max_check_cer`` (a CER from 0 to 1) and ``inference.check_with`` (the project path of an ASR
    model, as written: the handler confines it to the project and looks for it there)."""

    max_cer: float = 0.6
    check_with: str | None = None

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> "ListenCheckSettings":
        settings = JobSettings(job)
        return cls(max_cer=settings.number(MAX_CHECK_CER, cls.max_cer, minimum=0, maximum=1),
                   check_with=settings.text(CHECK_WITH) or None)


def _positive(settings: JobSettings, key: str, default: float) -> float:
    value = settings.number(key, default)
    if value <= 0:
        raise JobSettingError(f"job setting {key!r} must be above 0, not {settings.raw(key)!r}")
    return value
