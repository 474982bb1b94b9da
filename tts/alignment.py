"""Monotonic alignment search for training on a GPU: numba on the CPU, batch items spread over threads.

``StableTTS.forward`` aligns with ``StableTTS.alignment.maximum_path``, which sends CUDA tensors through its
torch version: vectorised over batch and symbols, but a Python loop over mel frames (about twenty kernel
launches per frame, forward and back, whatever the batch size) -- on a fast GPU that loop, not the model,
would set the pace of a step. The numba kernel on the CPU releases the GIL, so a thread pool aligns a whole
batch in milliseconds, plus one copy of the log-likelihoods down and of the 0/1 path up. ``cpu_alignment``
installs it for the duration of a training run on CUDA; on the CPU the built-in numba path is used as is.
"""
from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import torch

import StableTTS.model as stabletts_model
from StableTTS.alignment import maximum_path_numba, numba
from StableTTS.dit import sequence_mask

logger = logging.getLogger(__name__)

_WORKERS = max(1, min(8, (os.cpu_count() or 2) - 1))
_POOL: ThreadPoolExecutor | None = None


def maximum_path_threaded(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Same result as ``StableTTS.alignment.maximum_path`` (B, T_x, T_y), computed on the CPU in threads."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="mas")
    b, t_x_max, t_y_max = value.shape
    t_x = (mask[:, :, 0] > 0).sum(dim=1).cpu()  # (B,) the lengths, not the whole mask, cross the bus
    t_y = (mask[:, 0, :] > 0).sum(dim=1).cpu()
    cpu_value = value.detach().float().cpu()
    cpu_mask = (sequence_mask(t_x, t_x_max).unsqueeze(2) & sequence_mask(t_y, t_y_max).unsqueeze(1)).float()
    chunks = [list(range(start, b, _WORKERS)) for start in range(min(_WORKERS, b))]
    paths = _POOL.map(lambda rows: maximum_path_numba(cpu_value[rows], cpu_mask[rows]), chunks)
    path = torch.empty(b, t_x_max, t_y_max)
    for rows, part in zip(chunks, paths):
        path[rows] = part.float()
    return path.to(device=value.device, dtype=value.dtype, non_blocking=True)


@contextlib.contextmanager
def cpu_alignment(device: torch.device) -> Iterator[bool]:
    """While active, a model on CUDA aligns on the CPU (yields whether it does). Cheap: enter it per step."""
    if not aligns_on_cpu(device):
        yield False
        return
    builtin = stabletts_model.maximum_path
    stabletts_model.maximum_path = maximum_path_threaded
    try:
        yield True
    finally:
        stabletts_model.maximum_path = builtin


def aligns_on_cpu(device: torch.device) -> bool:
    return device.type == "cuda" and numba is not None and hasattr(stabletts_model, "maximum_path")
