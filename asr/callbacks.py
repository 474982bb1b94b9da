"""Glue between the Hugging Face ``Trainer`` and the worker: per-epoch metrics rows, best-model
tracking, progress/stop hooks, and WER/CER from greedy CTC decoding.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable

import jiwer
import numpy as np
import torch
from transformers import TrainerCallback

from asr.decode import UNK_MARK
from asr.vocab import Vocabulary
from training_metrics import ASR_METRICS_COLUMNS, MetricsLog

logger = logging.getLogger(__name__)

BEST_STATE_FILE = "asr_best.json"


def _whole_epoch(state) -> bool:
    """The Trainer stands at an epoch's end (a stop during an epoch's last step still ends a whole epoch,
    which gets its evaluation and metrics row like any other)."""
    return state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-6


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def argmax_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keep only each frame's best id during evaluation (greedy decoding needs no more, and full
    logits of a whole validation set would not fit in memory)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


def make_compute_metrics(vocabulary: Vocabulary) -> Callable:
    """WER/CER of greedy decoding against the labels ([UNK] scored as one character on both sides)."""

    def compute_metrics(prediction) -> dict[str, float]:
        best = np.asarray(prediction.predictions)
        labels = np.asarray(prediction.label_ids)
        hyps = [vocabulary.decode_ctc(row, unk_replacement=UNK_MARK) for row in best]  # -100 padding is skipped
        refs = [vocabulary.decode_labels(row, unk_replacement=UNK_MARK) for row in labels]
        pairs = [(r, h) for r, h in zip(refs, hyps) if r]
        if not pairs:
            return {"wer": float("nan"), "cer": float("nan")}
        refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
        return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}

    return compute_metrics


class AsrProgressCallback(TrainerCallback):
    """Writes the metrics row and keeps the best model after each epoch's evaluation, reports the epoch
    to the caller, and stops training cleanly when the caller asks.

    ``on_epoch_end(epoch, metrics)`` and ``should_stop()`` come from the worker (heartbeats, cancel
    checks); whatever they raise propagates, BaseException included.
    """

    def __init__(
        self,
        metrics: MetricsLog,
        best_dir: Path,
        save_best: Callable[[torch.nn.Module, Path], None],
        *,
        has_validation: bool,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        self.metrics = metrics
        self.best_dir = Path(best_dir)
        self.save_best = save_best
        self.has_validation = has_validation
        self.user_epoch_end = on_epoch_end
        self.user_should_stop = should_stop
        self.stop_requested = False
        self.train_loss: float | None = None
        state = self._load_best_state()
        self.best_cer: float = state.get("cer", math.inf)
        self.best_epoch: int | None = state.get("epoch")

    # -- best-model bookkeeping (survives a resume) ------------------------------------------------
    def _load_best_state(self) -> dict:
        path = self.best_dir / BEST_STATE_FILE
        if path.exists():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                logger.warning("Unreadable %s; best model tracking starts over", path)
        return {}

    def _record_best(self, model, epoch: int, cer: float) -> None:
        self.save_best(model, self.best_dir)
        self.best_cer, self.best_epoch = cer, epoch
        (self.best_dir / BEST_STATE_FILE).write_text(json.dumps({"epoch": epoch, "cer": cer}), encoding="utf-8")
        logger.info("Epoch %d: new best validation CER %.4f", epoch, cer)

    # -- stop requests ---------------------------------------------------------------------------------
    def _check_stop(self, control) -> None:
        if self.user_should_stop is not None and not self.stop_requested and self.user_should_stop():
            logger.info("Stop requested: training ends after this step")
            self.stop_requested = True
        if self.stop_requested:
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        self._check_stop(control)
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stop_requested and not _whole_epoch(state):
            control.should_evaluate = False  # a stopping job has no use for a partial-epoch evaluation
        return control

    # -- per-epoch rows ------------------------------------------------------------------------------
    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs and "eval_loss" not in logs:
            self.train_loss = float(logs["loss"])
            if not self.has_validation and _whole_epoch(state):
                self._finish_epoch(int(round(state.epoch)), {}, control)
        return control

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        metrics = metrics or {}
        epoch = int(round(state.epoch or 0))
        cer = metrics.get("eval_cer")
        if model is not None and cer is not None and not math.isnan(cer) and cer < self.best_cer:
            self._record_best(model, epoch, float(cer))
        self._finish_epoch(epoch, metrics, control)
        return control

    def _finish_epoch(self, epoch: int, metrics: dict, control) -> None:
        row = {
            "epoch": epoch,
            "train_total_loss": self.train_loss,
            "val_total_loss": metrics.get("eval_loss"),
            "val_wer": metrics.get("eval_wer"),
            "val_cer": metrics.get("eval_cer"),
        }
        self.metrics.append(epoch, **{k: v for k, v in row.items() if k != "epoch"})
        logger.info(
            "Epoch %d: train loss %s, val loss %s, WER %s, CER %s",
            epoch,
            *(_cell(row[k]) or "-" for k in ASR_METRICS_COLUMNS[1:]),
        )
        if self.user_epoch_end is not None:
            self.user_epoch_end(epoch, dict(row))
        self._check_stop(control)
