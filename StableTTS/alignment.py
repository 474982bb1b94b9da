"""Monotonic alignment search (MAS, Glow-TTS) and duration -> alignment-path expansion.

MAS finds, for each utterance, the monotonic hard alignment of T_y mel frames to T_x text symbols (each
symbol at least one frame, frames in order) that maximises the summed log-likelihood. Two backends with the
same result: numba on CPU (fast, per item) and a batched torch version (runs on GPU; also used when numba
is missing).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

try:
    import numba
except ImportError:  # pragma: no cover - numba is a project dependency, but keep the torch path usable alone
    numba = None


def gaussian_log_likelihood(mu_x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log N(y_j; mu_i, I) for every symbol i and frame j: (B, C, T_x), (B, C, T_y) -> (B, T_x, T_y).

    Expanded as −½(|y|² − 2·mu·y + |mu|²) so the whole matrix is one batched matmul.
    """
    n_feats = mu_x.shape[1]
    y_sq = torch.sum(y**2, dim=1, keepdim=True)  # (B, 1, T_y)
    mu_sq = torch.sum(mu_x**2, dim=1).unsqueeze(-1)  # (B, T_x, 1)
    cross = torch.matmul(mu_x.transpose(1, 2), y)  # (B, T_x, T_y)
    return -0.5 * (y_sq - 2 * cross + mu_sq) - 0.5 * n_feats * math.log(2 * math.pi)


def _check_lengths(t_x: np.ndarray, t_y: np.ndarray) -> None:
    bad = np.nonzero(t_y < t_x)[0]
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"monotonic alignment impossible for batch item {i}: {int(t_x[i])} symbols but only {int(t_y[i])} "
            "frames (each symbol needs at least one frame); filter such utterances before training"
        )


def _mas_single_py(value: np.ndarray, t_x: int, t_y: int, path: np.ndarray) -> None:
    """One item: fill `path[:t_x, :t_y]` with the best monotonic alignment (0/1) of `value[:t_x, :t_y]`."""
    q = np.full((t_x, t_y), -np.inf)
    q[0, 0] = value[0, 0]
    for j in range(1, t_y):
        lo = max(0, t_x - t_y + j)  # later symbols must still fit in the remaining frames
        hi = min(t_x - 1, j)  # symbol i cannot start before frame i
        for i in range(lo, hi + 1):
            stay = q[i, j - 1]
            move = q[i - 1, j - 1] if i > 0 else -np.inf
            q[i, j] = value[i, j] + max(stay, move)
    i = t_x - 1
    for j in range(t_y - 1, -1, -1):
        path[i, j] = 1
        if j > 0 and i > 0 and (i == j or q[i - 1, j - 1] > q[i, j - 1]):
            i -= 1


_mas_single = numba.njit(cache=True, nogil=True)(_mas_single_py) if numba is not None else _mas_single_py


def maximum_path_numba(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MAS per item with the numba kernel. value, mask: (B, T_x, T_y) -> 0/1 path of value's dtype."""
    v = value.detach().cpu().double().numpy()
    m = mask.detach().cpu().numpy()
    t_x = (m[:, :, 0] > 0).sum(axis=1).astype(np.int64)
    t_y = (m[:, 0, :] > 0).sum(axis=1).astype(np.int64)
    _check_lengths(t_x, t_y)
    path = np.zeros(v.shape, dtype=np.float64)
    for b in range(v.shape[0]):
        if t_x[b] > 0 and t_y[b] > 0:
            _mas_single(v[b], int(t_x[b]), int(t_y[b]), path[b])
    return torch.from_numpy(path).to(device=value.device, dtype=value.dtype)


def maximum_path_torch(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Batched MAS in torch (vectorised over batch and symbols, loops over frames); same result as numba."""
    b, tx, ty = value.shape
    device = value.device
    t_x = (mask[:, :, 0] > 0).sum(dim=1)  # (B,)
    t_y = (mask[:, 0, :] > 0).sum(dim=1)
    _check_lengths(t_x.cpu().numpy(), t_y.cpu().numpy())
    v = value.detach().double()
    neg_inf = torch.tensor(-math.inf, dtype=torch.float64, device=device)
    i_idx = torch.arange(tx, device=device).unsqueeze(0)  # (1, T_x)
    q = torch.full((b, tx, ty), -math.inf, dtype=torch.float64, device=device)
    q[:, 0, 0] = v[:, 0, 0]
    for j in range(1, ty):
        prev = q[:, :, j - 1]  # (B, T_x)
        moved = F.pad(prev, (1, 0), value=-math.inf)[:, :-1]  # q[i-1, j-1]
        feasible = (i_idx <= j) & (i_idx >= (t_x - t_y + j).unsqueeze(1)) & (i_idx < t_x.unsqueeze(1))
        q[:, :, j] = torch.where(feasible, v[:, :, j] + torch.maximum(prev, moved), neg_inf)
    path = torch.zeros(b, tx, ty, dtype=value.dtype, device=device)
    rows = torch.arange(b, device=device)
    i = (t_x - 1).clamp(min=0)
    for j in range(ty - 1, -1, -1):
        active = j < t_y  # (B,)
        path[rows, i, j] = active.to(value.dtype)
        if j == 0:
            break
        stay = q[rows, i, j - 1]
        move = q[rows, (i - 1).clamp(min=0), j - 1]
        step = active & (i > 0) & ((i == j) | (move > stay))
        i = i - step.long()
    return path


def maximum_path(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Best monotonic alignment. value: log-likelihoods (B, T_x, T_y); mask: (B, T_x, T_y) 0/1.

    Returns a 0/1 path (B, T_x, T_y) in value's dtype/device. Uses numba for CPU tensors, torch otherwise.
    """
    with torch.no_grad():
        if value.device.type == "cpu" and numba is not None:
            return maximum_path_numba(value, mask)
        return maximum_path_torch(value, mask)


def generate_path(durations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Expand per-symbol durations into a hard alignment. durations (B, T_x) (may be fractional),
    mask (B, T_x, T_y) -> path (B, T_x, T_y) with path[b, i, j] = 1 iff cum[i-1] <= j < cum[i].
    """
    cum = torch.cumsum(durations, dim=1)  # (B, T_x)
    frames = torch.arange(mask.shape[-1], device=durations.device, dtype=cum.dtype)  # (T_y,)
    covered = (frames.view(1, 1, -1) < cum.unsqueeze(-1)).to(mask.dtype)  # frame j before the end of symbol i
    path = covered - F.pad(covered, (0, 0, 1, 0))[:, :-1]  # minus frames already covered by symbols < i
    return path * mask
