"""Settings of a StableTTS training run, and what a run reports back (per epoch and at the end).

The resolved ``TrainConfig`` is saved in every checkpoint sidecar and in the resumable state, so a run can
be understood (and continued) from its files alone.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from skips import TOO_SHORT, SkipReport
from StableTTS.config import PRESETS

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
FRONTEND_CHOICES = ("auto", "phonemes", "romanized", "characters")


@dataclass
class TrainConfig:
    """Training settings; names follow the job manifest where it has them."""

    epochs: int = 100  # manifest `epochs`; one row of training_metrics.csv each
    preset: str = "v1.1"  # model size for a new model: "v1.1" (published sizes) or "tiny" (CPU tests, demo)
    pretrained: bool = True  # start a v1.1 model from KdaiP/StableTTS1.1 (cache or hub; fails without it);
    #                           False: from scratch (manifest `model.from_scratch: true`)
    base_checkpoint: str | None = None  # local .pt/.safetensors (+ .json sidecar) to continue instead
    language: str | None = None  # ISO 639 code of the recordings; a hint for the text front end, checked on the texts
    frontend: str = "auto"  # auto (espeak phonemes if the voice reads the texts > romanisation > project
    #                         characters) | one of those
    learning_rate: float | None = None  # None: 1e-4 from trained weights (upstream's rate), 1e-3 from scratch
    weight_decay: float = 0.01  # AdamW
    warmup_steps: int = 200  # linear warm-up (optimizer steps), then cosine decay; capped at 1/5 of the run
    min_lr_ratio: float = 0.05  # the cosine ends at this share of the peak rate
    max_grad_norm: float = 1.0  # gradient clipping (upstream has none; fine-tuning on little data needs it)
    batch_frames: int = 20_000  # mel frames per batch, padding included (≈ 230 s of audio); length-bucketed
    batch_size: int = 32  # at most this many clips per batch
    gradient_accumulation_steps: int = 1  # batches per optimizer step
    max_clip_seconds: float = 40.0  # hard cap: longer clips are skipped and reported by id, never silently
    val_split: float = 0.1  # share of clips held out to pick the best epoch (≥ 1 clip, never all of them)
    cfg_dropout: float = 0.2  # share of items trained without voice/content condition (guidance)
    trim_silence: bool = True  # cut leading/trailing silence (40 dB below the peak, 100 ms kept)
    precision: str = "auto"  # auto: bf16 autocast on CUDA GPUs that have it, else fp32 | fp32 | bf16
    data_workers: int | None = None  # DataLoader processes; None: 2 on CUDA, 0 on CPU
    seed: int = 1234  # model init, batching, noise; the validation noise is fixed separately

    def __post_init__(self) -> None:
        if not 1 <= int(self.epochs) <= 9999:
            raise ValueError(f"epochs must be between 1 and 9999, got {self.epochs}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.frontend not in FRONTEND_CHOICES:
            raise ValueError(f"frontend must be one of {FRONTEND_CHOICES}, got {self.frontend!r}")
        if not 0.0 <= self.val_split < 1.0:
            raise ValueError(f"val_split must be in [0, 1), got {self.val_split}")
        if self.batch_frames < 1 or self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_frames, batch_size and gradient_accumulation_steps must be positive")
        if self.max_clip_seconds <= 0:
            raise ValueError(f"max_clip_seconds must be positive, got {self.max_clip_seconds}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def peak_learning_rate(self, from_trained_weights: bool) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 1e-4 if from_trained_weights else 1e-3


@dataclass(frozen=True)
class Losses:
    """Mean losses over an epoch (or a validation pass); the names are the plugin's column suffixes."""

    total: float
    diff: float  # flow matching ("diffusion") loss
    dur: float  # duration loss
    prior: float  # prior (Gaussian NLL) loss

    def columns(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{name}_loss": getattr(self, name) for name in ("total", "diff", "dur", "prior")}


@dataclass
class EpochReport:
    """Handed to ``TrainHooks.epoch_end`` after an epoch's state is saved."""

    epoch: int
    epochs: int
    train: Losses
    val: Losses | None
    best_epoch: int
    best_value: float
    seconds: float  # wall time of this epoch (training + validation)
    eta_seconds: float | None  # for the remaining epochs, from this run's epoch times
    learning_rate: float
    history: list[dict[str, float]]  # training_metrics.csv rows ("epoch", "train_total_loss", ...) of every
    #                                   epoch so far, including those of earlier (resumed) runs

    def status(self) -> str:
        """``"epoch 12/100 · val loss 1.23 · ETA 41 min"``."""
        loss = f"val loss {self.val.total:.2f}" if self.val else f"train loss {self.train.total:.2f}"
        eta = f" · ETA {format_duration(self.eta_seconds)}" if self.eta_seconds is not None and \
            self.epoch < self.epochs else ""
        return f"epoch {self.epoch}/{self.epochs} · {loss}{eta}"


@dataclass
class TrainHooks:
    """How a caller follows (and stops) a run. Either callable may raise to stop it: the state of the last
    finished epoch is already on disk, so the run can be resumed from ``resume_dir``."""

    progress: Callable[[str], None] | None = None  # "preparing clips 120/480", "epoch 3/10 · step 40/120"
    epoch_end: Callable[[EpochReport], None] | None = None


def skip_summary(skipped: SkipReport, total: int) -> str:
    """``"2 undecodable audio, 1 empty text"`` (``"none"`` when nothing was skipped); when many of the
    ``total`` clips (kept and skipped: the share decides) have audio too short for their text, what to do."""
    advice = too_short_advice(skipped, total)
    return f"{skipped.reasons()}; {advice}" if advice else skipped.reasons()


def too_short_advice(skipped: SkipReport, total: int, share: float = 0.1) -> str:
    """When at least ``share`` of ``total`` clips are too short for their text, the usual cause is a front end
    that writes far too many symbols (letter names, a wrong language): name it, the figure, and the way out.
    Reads the facts tts.data gives each TOO_SHORT clip: ``symbols`` its text needs (blanks included),
    ``frames`` its audio has, and the ``frontend`` (described) and ``frontend_kind`` that wrote them."""
    short = [s.facts for s in skipped if s.reason == TOO_SHORT and s.facts.get("frames", 0) > 0]
    if not short or len(short) < share * total:
        return ""
    ratio = statistics.median(s["symbols"] / s["frames"] for s in short)
    frontend, kind = Counter((s.get("frontend", ""), s.get("frontend_kind", "")) for s in short).most_common(1)[0][0]
    figure = (f"with {frontend or 'the text front end'} these texts need a median {ratio:.1f} symbols per audio "
              "frame, where at most 1 fits")
    if kind == "characters":  # already one symbol a letter: the recordings do not say the texts
        return f"{figure}: check that each recording speaks its whole text"
    if kind == "phonemes":
        return (f"{figure}: set model.language to the language of the recordings, or model.frontend: characters "
                "to read the letters as written")
    return f"{figure}: set model.frontend: characters to read the letters as written"


@dataclass
class TrainResult:
    """What ``train`` produced."""

    checkpoint: Path  # best_model.pt (plain state_dict) with best_model.json beside it
    best_epoch: int
    best_metric: str  # "val_total_loss", or "train_total_loss" when there was no validation clip
    best_value: float
    epochs: int
    start_epoch: int  # first epoch this call ran (> 1 after a resume)
    history: list[dict[str, float]]
    train_clips: int
    val_clips: int
    skipped: SkipReport = field(default_factory=lambda: SkipReport(noun="clip"))
    unknown_characters: Counter = field(default_factory=Counter)  # not representable by the front end
    initialised_from: str = ""  # "KdaiP/StableTTS1.1", a checkpoint path, or "scratch (tiny)"
    frontend: dict = field(default_factory=dict)  # the text front end's to_dict(), "reason" included
    device: str = "cpu"
    precision: str = "fp32"

    @property
    def frontend_reason(self) -> str:
        """Why the run's text front end was chosen (one line for people)."""
        return str(self.frontend.get("reason") or "")


def format_duration(seconds: float | None) -> str:
    """41 min, 1 h 05 min, 40 s."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
