"""Flow-matching decoder: a DiT velocity estimator with time FiLM and long skip connections.

The estimator predicts the velocity v(x_t, t | mu_y, c) of a straight-path (rectified / OT-CFM) flow from
Gaussian noise at t = 0 to the mel at t = 1. Sampling (ODE solving, guidance) lives in `synthesis.py`.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn

from .config import ModelConfig
from .dit import DiTBlock, attention_pair_mask, sinusoidal_embedding

logger = logging.getLogger(__name__)


class TimeMLP(nn.Module):
    """Sinusoidal embedding of 1000·t followed by a two-layer MLP."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.channels = channels
        self.layer = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, C)
        emb = sinusoidal_embedding(t, self.channels)
        return self.layer(emb.to(self.layer[0].weight.dtype))


class TimeFiLM(nn.Module):
    """Feature-wise modulation by the time embedding: gamma · x + beta (no +1)."""

    def __init__(self, channels: int, time_channels: int):
        super().__init__()
        self.film = nn.Conv1d(time_channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:  # x (B, C, T), t_emb (B, Ct)
        gamma, beta = self.film(t_emb.unsqueeze(-1)).chunk(2, dim=1)  # (B, C, 1) each
        return gamma * x + beta


class DecoderBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.time_fusion = TimeFiLM(cfg.hidden_channels, cfg.hidden_channels)
        self.block = DiTBlock(
            cfg.hidden_channels, cfg.filter_channels, cfg.n_heads, cfg.kernel_size, cfg.p_dropout, cfg.gin_channels
        )

    def forward(self, x, t_emb, c, mask, pair_mask):  # x (B, C, T)
        x = self.time_fusion(x, t_emb) * mask
        return self.block(x, c, mask, pair_mask)


class DecoderEstimator(nn.Module):
    """Velocity network. `condition()` (mu_y -> cond) does not depend on t, so samplers compute it once."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, f, k = cfg.hidden_channels, cfg.filter_channels, cfg.kernel_size
        n_skip = cfg.n_dec_layers // 2
        self.time_mlp = TimeMLP(h, f)
        self.in_proj = nn.Conv1d(cfg.n_mels + h, h, 1)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_dec_layers))
        self.final_proj = nn.Conv1d(h, cfg.n_mels, 1)
        self.cond_proj = nn.Sequential(
            nn.Conv1d(cfg.n_mels, f, k, padding=k // 2), nn.SiLU(),
            nn.Conv1d(f, f, k, padding=k // 2), nn.SiLU(),
            nn.Conv1d(f, h, k, padding=k // 2),
        )  # fmt: skip
        self.lsc_layers = nn.ModuleList(nn.Conv1d(2 * h, h, k, padding=k // 2) for _ in range(n_skip))

    def condition(self, mu: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mu_y (B, n_mels, T) -> cond (B, C, T); padded frames zeroed before every convolution."""
        h = mu * mask
        for layer in self.cond_proj:
            h = layer(h * mask) if isinstance(layer, nn.Conv1d) else layer(h)
        return h * mask

    def velocity(
        self, x: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, c: torch.Tensor
    ) -> torch.Tensor:
        """x (B, n_mels, T), mask (B, 1, T), cond (B, C, T), t (B,), c (B, gin) -> v (B, n_mels, T)."""
        return self.masked_velocity(x, mask, attention_pair_mask(mask), cond, t, c)

    def masked_velocity(
        self, x: torch.Tensor, mask: torch.Tensor, pair_mask: torch.Tensor | None, cond: torch.Tensor,
        t: torch.Tensor, c: torch.Tensor,
    ) -> torch.Tensor:
        """``velocity`` with the attention mask given: a sampler calls the estimator 10-100 times on one
        batch, and deciding whether it is padded reads a GPU value back (a sync, and a graph break under
        torch.compile) every time."""
        t_emb = self.time_mlp(t)  # (B, C)
        x = self.in_proj(torch.cat((x, cond), dim=1)) * mask  # noise channels first: (B, C, T)
        n_skip = len(self.lsc_layers)
        skips = []  # the INPUTS of the first-half blocks: in_proj output, then blocks 0 .. n_skip-2 outputs
        for i, block in enumerate(self.blocks):
            if i < n_skip:
                skips.append(x)
            else:  # second half: block n_skip + j fuses the input of block n_skip - 1 - j (last saved first)
                x = self.lsc_layers[i - n_skip](torch.cat((x, skips.pop()), dim=1) * mask)
            x = block(x, t_emb, c, mask, pair_mask)
        return self.final_proj(x * mask) * mask

    def forward(self, x, mask, mu, t, c):
        """Full estimator call (condition + velocity), as used in training."""
        return self.velocity(x, mask, self.condition(mu, mask), t, c)


class FlowMatchingDecoder(nn.Module):
    """Holds the estimator (key prefix `decoder.estimator.`) and the flow-matching training loss."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.sigma_min = cfg.sigma_min
        self.estimator = DecoderEstimator(cfg)

    def loss(
        self,
        x1: torch.Tensor,
        mask: torch.Tensor,
        mu: torch.Tensor,
        c: torch.Tensor,
        noise: torch.Tensor | None = None,
        u: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Conditional flow-matching loss with cosine time sampling t = 1 − cos(u·π/2).

        x1 (B, n_mels, T) target mel, mask (B, 1, T), mu (B, n_mels, T), c (B, gin). `noise`/`u` fix the
        randomness (tests). The target is masked on padded frames (upstream leaves them in; harmless either way).
        """
        b = x1.shape[0]
        if u is None:
            u = torch.rand(b, device=x1.device, dtype=x1.dtype)
        t = 1 - torch.cos(u * math.pi / 2)  # (B,), denser near t = 0
        z = torch.randn_like(x1) if noise is None else noise
        tb = t.view(b, 1, 1)
        x_t = (1 - (1 - self.sigma_min) * tb) * z + tb * x1
        target = x1 - (1 - self.sigma_min) * z
        v = self.estimator(x_t, mask, mu, t, c)
        n_mels = x1.shape[1]
        return torch.sum(((v - target) ** 2) * mask) / (torch.sum(mask) * n_mels)
