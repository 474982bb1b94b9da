"""The 44.1 kHz log-mel front end of StableTTS v1.1, and the matching STFT / inverse STFT.

Must match the published definition exactly or pretrained weights are useless:
reflect-pad (n_fft - hop) / 2 = 768 samples each side, STFT with center=False and a periodic Hann window,
magnitude sqrt(re² + im² + 1e-6), slaney-scale / slaney-normalised mel filterbank, log(clamp(mel, 1e-5)).
Written with torch.stft and librosa.filters.mel only (no torchaudio).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import librosa
import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 44100  # Hz, mono
    n_fft: int = 2048  # FFT size (= window length)
    win_length: int = 2048  # Hann window length
    hop_length: int = 512  # samples per frame (≈ 11.6 ms)
    n_mels: int = 128  # mel bins
    f_min: float = 0.0  # lowest filter edge, Hz
    f_max: float | None = None  # None = Nyquist
    mag_eps: float = 1e-6  # added under the square root of the magnitude (keeps its gradient finite)
    log_floor: float = 1e-5  # mel clamp before the log (silence ≈ log(1e-5) = -11.5)

    @property
    def pad(self) -> int:
        """Reflect padding on each side; makes frames ≈ samples / hop with center=False."""
        return (self.n_fft - self.hop_length) // 2


MEL = MelConfig()


@functools.lru_cache(maxsize=4)
def mel_filterbank(config: MelConfig = MEL) -> np.ndarray:
    """Slaney-scale, slaney-area-normalised filterbank, shape (n_mels, n_fft // 2 + 1), float64."""
    return librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.f_min,
        fmax=config.f_max,
        htk=False,
        norm="slaney",
        dtype=np.float64,
    )


@functools.lru_cache(maxsize=16)
def _filterbank_tensor(config: MelConfig, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(mel_filterbank(config)).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def hann_window(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(length, periodic=True, device=device, dtype=dtype)


def _as_float_tensor(audio) -> torch.Tensor:
    x = torch.as_tensor(audio)
    if not torch.is_floating_point(x):
        raise TypeError(f"audio must be floating point samples, got {x.dtype}")
    return x if x.dtype == torch.float64 else x.float()


def stft_frames(audio: torch.Tensor, config: MelConfig = MEL) -> torch.Tensor:
    """Complex STFT with the front end's framing: (B, samples) -> (B, n_fft // 2 + 1, samples // hop)."""
    if audio.shape[-1] <= config.pad:
        raise ValueError(
            f"audio of {audio.shape[-1]} samples is too short for the mel front end "
            f"(needs more than {config.pad} samples at {config.sample_rate} Hz)"
        )
    padded = F.pad(audio.unsqueeze(1), (config.pad, config.pad), mode="reflect").squeeze(1)  # (B, N + 2·pad)
    window = hann_window(config.win_length, audio.device, audio.dtype)
    return torch.stft(
        padded,
        config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )


def istft_same(spec: torch.Tensor, window: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Least-squares inverse of `stft_frames`: (B, n_fft // 2 + 1, T) complex -> (B, T · hop) samples.

    Overlap-add of windowed inverse FFTs divided by the summed squared window, trimming the same
    (win - hop) / 2 samples the forward transform padded ("same" padding, as Vocos' ISTFT head does).
    """
    win_length = window.shape[0]
    n_fft = 2 * (spec.shape[1] - 1)
    pad = (win_length - hop_length) // 2
    n_frames = spec.shape[-1]
    frames = torch.fft.irfft(spec, n_fft, dim=1, norm="backward") * window[None, :, None]  # (B, n_fft, T)
    out_len = (n_frames - 1) * hop_length + win_length
    fold = dict(output_size=(1, out_len), kernel_size=(1, win_length), stride=(1, hop_length))
    audio = F.fold(frames, **fold)[:, 0, 0, pad:-pad]  # (B, T · hop)
    envelope = F.fold(window.square().expand(1, n_frames, -1).transpose(1, 2), **fold)[0, 0, 0, pad:-pad]
    return audio / envelope.clamp(min=1e-11)


def mel_spectrogram(audio, config: MelConfig = MEL) -> torch.Tensor:
    """Log-mel spectrogram of 44.1 kHz audio.

    Args:
        audio: samples as a torch tensor or numpy array, shape (samples,) or (..., samples).
    Returns:
        log-mel of shape (..., n_mels, samples // hop), float32 (float64 for float64 input), on audio's device.
    """
    x = _as_float_tensor(audio)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])  # (B, N)
    spec = stft_frames(x, config)  # (B, F, T) complex
    magnitude = torch.sqrt(spec.real.square() + spec.imag.square() + config.mag_eps)
    mel = torch.matmul(_filterbank_tensor(config, x.device, x.dtype), magnitude)  # (B, n_mels, T)
    log_mel = torch.log(torch.clamp(mel, min=config.log_floor))
    return log_mel.reshape(*lead, config.n_mels, log_mel.shape[-1])


def silence_log_mel(config: MelConfig = MEL) -> torch.Tensor:
    """Log-mel of digital silence per bin, shape (n_mels,): the magnitude floor sqrt(mag_eps) through the
    filterbank (not log(log_floor): the filters sum the floor over many FFT bins)."""
    floor = mel_filterbank(config).sum(axis=1) * config.mag_eps**0.5
    return torch.log(torch.clamp(torch.from_numpy(floor).float(), min=config.log_floor))
