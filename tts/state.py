"""Resumable training state: everything needed to continue a run at the next epoch on another machine.

``<resume_dir>/state.pt`` holds the model, the optimizer, the schedule position, the epoch, the RNG states,
the best metric, the metrics history, and the model config + text front end the run uses;
``<resume_dir>/best_model.pt`` (+ ``.json`` sidecar) is the best epoch's model. Both are written through a
temporary file and a rename after each epoch, so the folder always holds one consistent finished epoch.
The state is read with ``weights_only=True``: it may come back from a project repository, so it is data,
never code.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_FILE = "best_model.pt"
STATE_FORMAT = "stabletts-train-state"
STATE_VERSION = 1


@dataclass
class ResumeState:
    epoch: int  # last finished epoch
    step: int  # optimizer steps taken (the schedule position)
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    model_config: dict[str, Any]
    frontend: dict[str, Any]
    config: dict[str, Any]  # the TrainConfig of the run that wrote it
    best_epoch: int
    best_value: float
    history: list[dict[str, float]]
    rng: dict[str, Any]
    origin: str
    trained_weights: bool
    elapsed_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def save_state(folder: str | Path, state: ResumeState) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, **asdict(state)}, tmp)
    os.replace(tmp, path)
    return path


def load_state(folder: str | Path | None) -> ResumeState | None:
    """The saved state, or None when there is none or it cannot be used (logged: the run starts over)."""
    if folder is None:
        return None
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        logger.warning("Ignoring resumable state %s: it cannot be read (%s); starting from epoch 1", path,
                       str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT or data.get("version") != STATE_VERSION:
        logger.warning("Ignoring %s: not a training state of this version; starting from epoch 1", path)
        return None
    fields = set(ResumeState.__dataclass_fields__)
    try:
        return ResumeState(**{k: v for k, v in data.items() if k in fields})
    except TypeError as exc:
        logger.warning("Ignoring %s: incomplete training state (%s); starting from epoch 1", path, exc)
        return None


def capture_rng(sampler: torch.Generator) -> dict[str, Any]:
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "sampler": sampler.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any], sampler: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    sampler.set_state(rng["sampler"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
