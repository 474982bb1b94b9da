"""Text encoder, reference (voice) encoder and duration predictor."""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .dit import DiTBlock, attention_pair_mask, channel_norm, sequence_mask

logger = logging.getLogger(__name__)


class TextEncoder(nn.Module):
    """Symbol ids -> hidden states x and the per-symbol mel prior mu_x, conditioned on the speaker vector."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hidden_channels = cfg.hidden_channels
        self.emb = nn.Embedding(cfg.n_vocab, cfg.hidden_channels)
        nn.init.normal_(self.emb.weight, 0.0, cfg.hidden_channels**-0.5)
        self.encoder = nn.ModuleList(
            DiTBlock(cfg.hidden_channels, cfg.filter_channels, cfg.n_heads, cfg.kernel_size, cfg.p_dropout, cfg.gin_channels)
            for _ in range(cfg.n_enc_layers)
        )
        self.proj = nn.Conv1d(cfg.hidden_channels, cfg.n_mels, 1)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # ids (B, T), lengths (B,), c (B, gin)
        x = self.emb(ids) * math.sqrt(self.hidden_channels)  # (B, T, C)
        x = x.transpose(1, 2)  # (B, C, T)
        mask = sequence_mask(lengths, ids.shape[1]).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        pair_mask = attention_pair_mask(mask)
        x = x * mask
        for block in self.encoder:
            x = block(x, c, mask, pair_mask)
        mu_x = self.proj(x) * mask  # (B, n_mels, T)
        return x * mask, mu_x, mask


class Conv1dGLU(nn.Module):
    """Residual gated convolution: x + dropout(GLU(conv(x)))."""

    def __init__(self, channels: int, kernel_size: int, p_dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # (B, C, T)
        h = self.conv1(x if mask is None else x * mask)  # (B, 2C, T)
        return x + self.drop(F.glu(h, dim=1))


class ReferenceEncoder(nn.Module):
    """Mel of a voice reference -> one speaker/style vector c (the model's only voice conditioning)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.ref_channels
        self.spectral = nn.Sequential(
            nn.Linear(cfg.n_mels, h), nn.Mish(), nn.Dropout(cfg.ref_dropout),
            nn.Linear(h, h), nn.Mish(), nn.Dropout(cfg.ref_dropout),
        )  # fmt: skip
        self.temporal = nn.ModuleList(Conv1dGLU(h, cfg.ref_kernel_size, cfg.ref_dropout) for _ in range(2))
        self.slf_attn = nn.MultiheadAttention(h, cfg.ref_heads, dropout=cfg.ref_dropout, batch_first=True)
        self.fc = nn.Linear(h, cfg.gin_channels)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """mel (B, n_mels, T), optional lengths (B,) for padded batches -> c (B, gin)."""
        mask = None
        if lengths is not None:
            mask = sequence_mask(lengths, mel.shape[-1]).unsqueeze(1).to(mel.dtype)  # (B, 1, T)
        x = self.spectral(mel.transpose(1, 2))  # (B, T, h)
        x = x.transpose(1, 2)  # (B, h, T)
        for glu in self.temporal:
            x = glu(x, mask)
        x = x.transpose(1, 2)  # (B, T, h)
        padding = None if mask is None else ~mask.squeeze(1).bool()  # (B, T), True = ignore
        x, _ = self.slf_attn(x, x, x, key_padding_mask=padding, need_weights=False)
        x = self.fc(x)  # (B, T, gin)
        if mask is None:
            return x.mean(dim=1)
        weights = mask.transpose(1, 2)  # (B, T, 1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1)  # (B, gin)


class DurationPredictor(nn.Module):
    """Predicts log-durations (in frames) per symbol from detached encoder states plus the speaker vector."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        k = cfg.kernel_size
        self.conv1 = nn.Conv1d(cfg.hidden_channels, cfg.filter_channels, k, padding=k // 2)
        self.norm1 = nn.LayerNorm(cfg.filter_channels)
        self.conv2 = nn.Conv1d(cfg.filter_channels, cfg.filter_channels, k, padding=k // 2)
        self.norm2 = nn.LayerNorm(cfg.filter_channels)
        self.proj = nn.Conv1d(cfg.filter_channels, 1, 1)
        self.cond = nn.Conv1d(cfg.gin_channels, cfg.hidden_channels, 1)
        self.drop = nn.Dropout(cfg.dp_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), mask (B, 1, T), c (B, gin) -> logw (B, 1, T)."""
        # Detached so the duration loss does not shape the text encoder or the speaker vector.
        x = x.detach() + self.cond(c.detach().unsqueeze(-1))  # (B, C, T)
        x = self.drop(channel_norm(self.norm1, torch.relu(self.conv1(x * mask))))  # (B, F, T)
        x = self.drop(channel_norm(self.norm2, torch.relu(self.conv2(x * mask))))
        return self.proj(x * mask) * mask  # (B, 1, T)
