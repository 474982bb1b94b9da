"""DiT building blocks shared by the text encoder and the decoder.

A DiT block here is a 1-D (channels-first) transformer layer: non-affine LayerNorms modulated by the speaker
vector (adaLN-Zero, as in DiT), rotary multi-head self-attention and a convolutional FFN, everything masked
so that padded frames never influence real ones (batched results equal one-by-one results).
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Epsilon of the two non-affine norms in every DiT block. The published v1.1 model uses PyTorch's LayerNorm
# default, 1e-5 (DiT's customary 1e-6 is only in upstream's older models/dit.py, which v1.1 does not import). Not
# in the state_dict, so a wrong value loads silently; it shifts outputs of quiet (low-variance) frames most.
LAYER_NORM_EPS = 1e-5


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True on valid positions. Float lengths compare as fractional bounds."""
    if max_length is None:
        max_length = int(lengths.max())
    positions = torch.arange(max_length, device=lengths.device, dtype=lengths.dtype)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def attention_pair_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """(B, 1, T) 0/1 mask -> (B, 1, T, T) bool (True = query and key both valid), or None without padding.

    Returning None when nothing is padded lets SDPA take its fastest kernel, and for a single unpadded
    sequence it is exactly an unmasked attention.
    """
    valid = mask.bool()
    if bool(valid.all()):
        return None
    return valid.unsqueeze(-1) & valid.unsqueeze(-2)  # (B, 1, T, 1) & (B, 1, 1, T)


def channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """Apply a LayerNorm over the channel axis of a (B, C, T) tensor."""
    return norm(x.transpose(1, 2)).transpose(1, 2)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotate-half rotary position embedding applied to the first `dim` channels of each head.

    Holds no parameters or buffers (the published state_dict has none); the angles are recomputed per call.
    """

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.base = base

    def _cos_sin(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim))
        positions = torch.arange(length, device=device, dtype=torch.float32)
        freqs = torch.outer(positions, inv_freq)  # (T, dim / 2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T, dim)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T, D)
        cos, sin = self._cos_sin(x.shape[-2], x.device, x.dtype)
        rotated, passed = x[..., : self.dim], x[..., self.dim :]
        rotated = rotated * cos + rotate_half(rotated) * sin
        return torch.cat((rotated, passed), dim=-1)


class MultiHeadAttention(nn.Module):
    """Self-attention with 1×1-conv projections and rotary embedding on half of each head's channels."""

    def __init__(self, channels: int, n_heads: int, p_dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.p_dropout = p_dropout
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.rotary = RotaryEmbedding(self.head_dim // 2)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, H, T, D)
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)

    def forward(self, x: torch.Tensor, pair_mask: torch.Tensor | None) -> torch.Tensor:  # x: (B, C, T)
        q = self.rotary(self._heads(self.conv_q(x)))
        k = self.rotary(self._heads(self.conv_k(x)))
        v = self._heads(self.conv_v(x))
        bias = None
        if pair_mask is not None:
            # Additive bias, not a bool mask: fully padded query rows then stay finite (a bool mask makes
            # them NaN, and NaN · 0 would leak through the later masking).
            bias = torch.zeros(pair_mask.shape, dtype=q.dtype, device=q.device)
            bias = bias.masked_fill(~pair_mask, torch.finfo(q.dtype).min)
        dropout = self.p_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)  # (B, H, T, D)
        b, _, t, _ = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(b, -1, t))  # (B, C, T)


class ConvFFN(nn.Module):
    """Conv1d -> SiLU -> dropout -> Conv1d, with padded frames zeroed before every convolution."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int, p_dropout: float):
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size, padding=kernel_size // 2)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, C, T), (B, 1, T)
        x = self.drop(F.silu(self.conv_1(x * mask)))  # (B, F, T)
        return self.conv_2(x * mask) * mask  # (B, C, T)


class DiTBlock(nn.Module):
    """Transformer block conditioned on a vector c through adaLN-Zero (shift/scale/gate ×2)."""

    def __init__(
        self,
        channels: int,
        filter_channels: int,
        n_heads: int,
        kernel_size: int,
        p_dropout: float,
        gin_channels: int,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.attn = MultiHeadAttention(channels, n_heads, p_dropout)
        self.norm2 = nn.LayerNorm(channels, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.mlp = ConvFFN(channels, filter_channels, kernel_size, p_dropout)
        # Index 0 is Identity when c already has the block's width (the published layout, key
        # `adaLN_modulation.2`); a Linear adapts other widths without changing that key.
        self.adaLN_modulation = nn.Sequential(
            nn.Linear(gin_channels, channels) if gin_channels != channels else nn.Identity(),
            nn.SiLU(),
            nn.Linear(channels, 6 * channels),
        )
        # Zero init makes every block start as the identity (adaLN-Zero), which keeps early training stable.
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor, pair_mask: torch.Tensor | None
    ) -> torch.Tensor:  # x (B, C, T), c (B, gin), mask (B, 1, T)
        modulation = self.adaLN_modulation(c).unsqueeze(-1)  # (B, 6C, 1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)
        h = modulate(channel_norm(self.norm1, x), shift_msa, scale_msa)
        x = x + gate_msa * self.attn(h, pair_mask) * mask
        h = modulate(channel_norm(self.norm2, x), shift_mlp, scale_mlp)
        x = x + gate_mlp * self.mlp(h, mask)
        return x


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Grad-TTS-style sinusoidal embedding of (scale · t): (B,) -> (B, dim) as [sin, cos]."""
    half = dim // 2
    exponent = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -exponent)  # (half,)
    args = scale * t.float().unsqueeze(1) * freqs.unsqueeze(0)  # (B, half)
    return torch.cat((args.sin(), args.cos()), dim=-1)
