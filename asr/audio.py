"""Audio in: paths are decoded by the project's ``preprocess_audio`` (PyAV for webm/opus and the rest,
soxr resampling) to 16 kHz mono float32; arrays are taken as already being that.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import numpy as np

import preprocess_audio

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what the feature extractor (SeamlessM4TFeatureExtractor) expects; the one definition
AudioInput = Union[str, Path, np.ndarray]


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate`` (raises ``preprocess_audio.AudioError``)."""
    return preprocess_audio.load_audio(path, sample_rate)


def as_waveform(audio: AudioInput, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A path is decoded; an array is taken as already at ``sample_rate`` and flattened to mono."""
    if isinstance(audio, (str, Path)):
        return load_audio(audio, sample_rate)
    wave = np.asarray(audio, dtype=np.float32)
    if wave.ndim == 2:  # (samples, channels) or (channels, samples): the shorter axis is channels
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    if wave.ndim != 1:
        raise ValueError(f"audio array must be 1-D (or 2-D with channels), got shape {wave.shape}")
    return np.ascontiguousarray(wave)


def log_mel(feature_extractor, wave: np.ndarray) -> np.ndarray:
    """Features (T, 160) of one clip from a ``SeamlessM4TFeatureExtractor``, without its padding.

    The extractor pads to an even number of 10 ms frames before stacking pairs; the stacked frame holding
    that padding is masked out, exactly as the extractor's attention mask says.
    """
    out = feature_extractor(wave, sampling_rate=SAMPLE_RATE, return_attention_mask=True)
    valid = int(np.asarray(out["attention_mask"][0]).sum())
    return np.asarray(out["input_features"][0][:valid], dtype=np.float32)
