"""Mel -> waveform: our Vocos implementation (loads the released StableTTS `vocos.pt`) and a Griffin-Lim
fallback for machines without vocoder weights.

Every vocoder module has `vocoder_name` ("vocos" or "griffin-lim") and `is_fallback`, so callers can
report which one produced the audio.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import load_state_dict_file, load_weights
from .mel import MEL, MelConfig, _filterbank_tensor, hann_window, istft_same, stft_frames

logger = logging.getLogger(__name__)

HUB_REPO = "KdaiP/StableTTS1.1"  # where the released weights live on the Hugging Face hub
HUB_VOCOS_FILE = "vocoders/vocos.pt"
HUB_TTS_FILE = "StableTTS/checkpoint_0.pt"


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> pointwise MLP (GELU) -> layer scale, residual. (B, C, T) in and out."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).transpose(1, 2)  # (B, T, C)
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, 1.0 / num_layers) for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, n_mels, T) -> (B, T, C)
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)  # (B, C, T)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding; `window` is a persistent buffer (it is in the released state_dict)."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(win_length))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # (B, n_fft/2+1, T) complex -> (B, T·hop)
        return istft_same(spec, self.window, self.hop_length)


class ISTFTHead(nn.Module):
    """Linear to log-magnitude and phase, then ISTFT."""

    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length, n_fft)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T·hop)
        h = self.out(x).transpose(1, 2).float()  # (B, n_fft + 2, T); complex maths in fp32
        log_mag, phase = h.chunk(2, dim=1)
        mag = torch.exp(log_mag).clip(max=1e2)  # clipped so a wild frame cannot blow up the waveform
        return self.istft(torch.polar(mag, phase))


class Vocos(nn.Module):
    """Vocos vocoder for the 44.1 kHz / 128-mel StableTTS front end (14,157,314 parameters as released)."""

    vocoder_name = "vocos"
    is_fallback = False

    def __init__(self, input_channels: int = 128, dim: int = 512, intermediate_dim: int = 1536,
                 num_layers: int = 8, n_fft: int = 2048, hop_length: int = 512):
        super().__init__()
        self.backbone = VocosBackbone(input_channels, dim, intermediate_dim, num_layers)
        self.head = ISTFTHead(dim, n_fft, hop_length)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, 128, T) -> audio (B, T·512) at 44.1 kHz."""
        return self.head(self.backbone(mel))


class GriffinLim(nn.Module):
    """Fallback vocoder: slaney-mel inversion (non-negative least squares) + fast Griffin-Lim phase recovery.

    Intelligible but audibly phasey; used only when no Vocos weights can be had, and always reported.
    """

    vocoder_name = "griffin-lim"
    is_fallback = True

    def __init__(self, config: MelConfig = MEL, n_iter: int = 32, momentum: float = 0.99, nnls_iter: int = 30,
                 seed: int = 0):
        super().__init__()
        self.config, self.n_iter, self.momentum, self.nnls_iter, self.seed = config, n_iter, momentum, nnls_iter, seed

    def mel_to_magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, n_mels, T) -> non-negative linear magnitude (B, F, T) with mel_basis·S ≈ mel.

        Pseudo-inverse start, then multiplicative NNLS updates S <- S·(Mᵀy)/(MᵀM S), which keep S >= 0.
        """
        basis = _filterbank_tensor(self.config, log_mel.device, torch.float32)  # (n_mels, F)
        mel = torch.exp(log_mel.float())
        s = torch.matmul(torch.linalg.pinv(basis), mel).clamp(min=1e-6)  # (B, F, T)
        numerator = torch.matmul(basis.T, mel)
        for _ in range(self.nnls_iter):
            s = s * numerator / (torch.matmul(basis.T, torch.matmul(basis, s)) + 1e-10)
            s = s.clamp_(min=1e-8)  # keeps values out of the (very slow) denormal range on CPU
        return s

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:  # (B, n_mels, T) -> (B, T·hop)
        cfg = self.config
        mag = self.mel_to_magnitude(log_mel)
        window = hann_window(cfg.win_length, mag.device, mag.dtype)
        g = torch.Generator().manual_seed(self.seed)  # fixed initial phase: same mel, same audio
        phase = torch.exp(2j * torch.pi * torch.rand(mag.shape, generator=g)).to(mag.device)
        previous = torch.zeros_like(phase)
        for _ in range(self.n_iter):
            audio = istft_same(mag * phase, window, cfg.hop_length)
            rebuilt = stft_frames(audio, cfg)[..., : mag.shape[-1]]
            phase = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            phase = phase / (phase.abs() + 1e-16)
            previous = rebuilt
        return istft_same(mag * phase, window, cfg.hop_length)


def cached_hub_file(filename: str, repo_id: str = HUB_REPO) -> Path | None:
    """Path of a file already in the local Hugging Face cache, or None. Never downloads."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, (str, os.PathLike)) and Path(found).is_file() else None


def load_vocos(path: str | os.PathLike, device: str | torch.device = "cpu") -> Vocos:
    """Load the released (or a compatible) Vocos state_dict strictly; errors name the file."""
    vocos = Vocos()
    load_weights(vocos, load_state_dict_file(path), source=str(path))
    return vocos.to(device).eval()


def load_vocoder(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 allow_fallback: bool = True) -> nn.Module:
    """The best available vocoder: Vocos from `path`, else from the local hub cache, else Griffin-Lim.

    An explicit `path` that fails to load raises (the caller asked for it). The fallback is logged as a
    warning; check `vocoder.vocoder_name` / `vocoder.is_fallback` to report it.
    """
    if path is not None:
        return load_vocos(path, device)
    cached = cached_hub_file(HUB_VOCOS_FILE)
    if cached is not None:
        logger.info("Using Vocos weights from the Hugging Face cache: %s", cached)
        return load_vocos(cached, device)
    if not allow_fallback:
        raise FileNotFoundError(f"no Vocos weights given and none cached for {HUB_REPO}/{HUB_VOCOS_FILE}")
    logger.warning(
        "No Vocos weights available (none given, none in the Hugging Face cache for %s/%s); "
        "falling back to Griffin-Lim: audio will sound phasey", HUB_REPO, HUB_VOCOS_FILE,
    )
    return GriffinLim().to(device)
