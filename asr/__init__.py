"""Wav2Vec2-BERT speech recognition, the ASR family's library: training, transcription and settings from a job,
with what they share (text normalisation, vocabulary, model building, batched CTC decoding, a light
post-corrector, safe model archives).

Public API::

    from asr import AsrExample, AsrTrainConfig, train_asr, transcribe

    result = train_asr([AsrExample(Path("gen_1_1.webm"), "In the beginning…", "GEN 1:1")], "run/",
                       AsrTrainConfig(epochs=10), on_epoch_end=lambda epoch, row: print(epoch, row))
    result.checkpoint_path      # run/model/asr_model.pth.tar; rerun with "run/" to resume a stopped run
    texts = transcribe(result.checkpoint_path, ["gen_1_2.webm"])

Settings from a manifest job: ``asr.job_settings`` (``train_config_from_job``, ``TranscriptionSettings``,
``CheckSettings``). This package never imports the worker. The command lines are ``train_w2v2bert_asr.py``
and ``inference_w2v2bert_asr.py``.

The names below load on first use: the handlers import ``asr.job_settings`` and ``asr.archive`` to refuse a
bad job before torch and transformers (seconds of start-up) are loaded, and importing any ``asr`` module runs
this file first.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "AsrExample": "data",
    "AsrTrainConfig": "config",
    "AsrTrainResult": "config",
    "CheckSettings": "job_settings",
    "DecodeOptions": "decode",
    "TextNormalization": "text",
    "Transcriber": "decode",
    "TranscriptionSettings": "job_settings",
    "load_transcriber": "inference",
    "prepare_model_dir": "inference",
    "train_asr": "trainer",
    "train_config_from_job": "job_settings",
    "transcribe": "inference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
