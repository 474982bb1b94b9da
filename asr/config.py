"""Settings and outcome of an ASR training run (``asr.trainer.train_asr``); ``asr.job_settings`` reads them
from a job. Light on purpose (no torch): the handlers read settings before the model libraries load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr.text import TextNormalization
from skips import SkipReport

DEFAULT_BASE_MODEL = "facebook/w2v-bert-2.0"  # the pretrained encoder fine-tuned by default (docs/asr.md)

FINE_TUNING_LEARNING_RATE = 5e-5  # the recipe's, for the pretrained model or an earlier job's
SCRATCH_LEARNING_RATE = 2e-3  # a random preset (tests, the demo) learns next to nothing at fine-tuning rates
SCRATCH_PRESET = "full"  # model.from_scratch without a preset: the base model's architecture, random weights


@dataclass
class AsrTrainConfig:
    """Training settings; defaults follow the reference recipe, names follow the job manifest."""

    epochs: int = 10  # manifest `epochs`
    batch_size: int = 16  # per device; effective batch = batch_size × gradient_accumulation_steps
    learning_rate: float | None = None  # None: see peak_learning_rate
    warmup_steps: float = 0.1  # ≥ 1: steps; < 1: fraction of all steps (recipe: 5–15 %)
    gradient_accumulation_steps: int = 2
    val_split: float = 0.1  # picks the best epoch (validation CER)
    test_split: float = 0.1  # scored once at the end → test_results
    eval_steps: int | None = None  # accepted for manifest compatibility; evaluation runs once per epoch
    save_steps: int | None = None  # also checkpoint every N steps (resume mid-epoch); None = per epoch
    max_duration_seconds: float | None = 60.0  # longer clips are left out of training and reported
    text_normalization: TextNormalization = field(default_factory=TextNormalization)
    base_model: str = DEFAULT_BASE_MODEL  # hub id or local folder
    base_checkpoint: str | None = None  # asr_model.pth.tar (or its folder) of an earlier job: continue it
    preset: str | None = None  # "tiny" (tests), "demo" (make demo), "small": random model built in code, no download
    from_scratch: bool = False  # manifest `model.from_scratch`: random weights (preset "full" unless one is named)
    seed: int = 42
    min_char_count: int = 2  # rarer characters become [UNK]
    post_correction: bool = False  # manifest `transmorgrifier.enabled`
    adam_beta2: float = 0.98  # recipe tip: 0.95–0.98 smooths the loss
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool | None = None  # None: on GPU for models with hidden_size ≥ 512
    eval_batch_size: int | None = None  # None = batch_size
    data_workers: int = 4  # threads decoding audio and computing features
    keep_trainer_checkpoints: bool = False  # they hold optimizer state (≈ 3× the model): dropped when done

    def __post_init__(self) -> None:
        if self.from_scratch and self.preset is None:
            self.preset = SCRATCH_PRESET

    @property
    def peak_learning_rate(self) -> float:
        """The job's ``learning_rate``, else the fine-tuning rate, or the from-scratch one when a random preset
        is trained without a base checkpoint."""
        if self.learning_rate is not None:
            return self.learning_rate
        from_scratch = self.preset is not None and self.base_checkpoint is None
        return SCRATCH_LEARNING_RATE if from_scratch else FINE_TUNING_LEARNING_RATE

    def validate(self) -> None:
        """Raise ValueError with a message a translator's admin can act on."""
        if not 1 <= self.epochs <= 9999:
            raise ValueError(f"epochs must be between 1 and 9999, got {self.epochs}")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be at least 1")
        if not (0 <= self.val_split < 1 and 0 <= self.test_split < 1 and self.val_split + self.test_split < 1):
            raise ValueError(f"val_split + test_split must leave room for training ({self.val_split} + {self.test_split})")
        if (self.learning_rate is not None and self.learning_rate <= 0) or self.warmup_steps < 0:
            raise ValueError("learning_rate must be positive and warmup_steps not negative")


@dataclass
class AsrTrainResult:
    """What a training run produced."""

    checkpoint_path: Path | None  # model/asr_model.pth.tar (None when stopped early)
    model_dir: Path | None  # the Hugging Face folder packed into it
    metrics_csv: Path
    best_epoch: int | None
    best_val_cer: float | None
    test_results: dict[str, Any]  # {"wer", "cer", "n"} (None values when there is no test split)
    train_metrics: list[dict[str, Any]]  # the rows of the metrics file
    post_corrector_used: bool
    epochs_completed: int
    stopped: bool = False  # should_stop() ended training before the last epoch; nothing was exported
    vocabulary: dict[str, Any] = field(default_factory=dict)  # size, rare characters, new characters
    skipped: SkipReport = field(default_factory=lambda: SkipReport(noun="utterance"))  # clips left out, and why

    def job_result(self) -> dict[str, Any]:
        """The ``result`` keys of an ASR training job (plus a few extras the plugin ignores).

        ``checkpoint_path`` is the local archive here; the handler puts the repository path in its place.
        """
        return {
            "checkpoint_path": str(self.checkpoint_path) if self.checkpoint_path else None,
            "test_results": self.test_results,
            "train_metrics": self.train_metrics,
            "best_epoch": self.best_epoch,
            "best_metric_value": self.best_val_cer,
            "post_corrector_used": self.post_corrector_used,
        }
