"""The training step of the StableTTS training modes: recorded verses in, ``checkpoint/best_model.pt`` out.

The project's recorded verses with text (the job's ``training`` filter) are fetched, handed to ``tts.train``
as plain ``Utterance`` records (it writes ``checkpoint/training_metrics.csv``), and followed through hooks
that send a heartbeat per epoch ("epoch 12/100 · val loss 1.23 · ETA 41 min") and keep the resumable state in
``callbacks.get_resume_dir()``. When the worker stops the job (``JobInterrupted``) the state of the last
finished epoch is uploaded at once, so the next worker continues at the next epoch. The best model is
uploaded as ``checkpoint/best_model.pt`` (a plain state_dict) with its ``best_model.json`` sidecar (model
config, text front end, training settings, default voice).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler_api import JobInterrupted
from handlers.common import CollectedAudio, collect_training_pairs, job_paths, upload_job_files
from handlers.common.reports import PROGRESS_SECONDS
from job_settings import BASE_CHECKPOINT, FROM_SCRATCH
from StableTTS import sidecar_path
from StableTTS.text import describe_counts, frontend_from_dict
from tts import STATE_FILE, PretrainedUnavailable, TrainHooks, TrainResult, Utterance, pretrained_weights, train
from tts.job_settings import training_config
from training_metrics import METRICS_FILE

from .job_inputs import checkpoint_sidecar, fetch_base_checkpoint, project_language_tag
from .synthesis import Unspeakable

logger = logging.getLogger(__name__)


@dataclass
class TrainedVoice:
    result: TrainResult
    checkpoint_path: str  # project path of best_model.pt
    collected: CollectedAudio  # the training recordings (local files)
    summary: dict[str, Any]  # result keys of a training job
    language: str | None  # the language hint the run used (model.language, else metadata.json's)


class _Heartbeat:
    """Heartbeats at most every few seconds (always at an epoch's end, carrying the metrics CSV so the
    plugin's chart counts the same epochs as ``epochs_completed``), resumable state."""

    def __init__(self, callbacks, metrics: Path, metrics_path: str):
        self.callbacks = callbacks
        self.metrics = metrics  # tts.train's file, already holding the epoch when epoch_end runs
        self.metrics_path = metrics_path
        self.last = 0.0

    def progress(self, message: str) -> None:
        if time.monotonic() - self.last >= PROGRESS_SECONDS:
            self.callbacks.heartbeat(message=message)
            self.last = time.monotonic()

    def epoch_end(self, report) -> None:
        self.callbacks.heartbeat(epochs_completed=report.epoch, message=report.status(),
                                 files={self.metrics_path: self.metrics})
        self.last = time.monotonic()
        self.callbacks.save_resume_state()  # throttled by the worker


def train_voice(callbacks, job_context: dict, notebooks) -> TrainedVoice:
    """Collect the recordings, train (resuming when a state exists), upload checkpoint + metrics."""
    work = Path(callbacks.get_work_dir())
    paths = job_paths(job_context)
    base = fetch_base_checkpoint(callbacks, work)
    config = training_config(job_context, project_tag=project_language_tag(callbacks),
                             base_checkpoint=str(base) if base else None)
    if not (Path(callbacks.get_resume_dir()) / STATE_FILE).is_file():  # a resumed run needs no start
        try:
            pretrained_weights(config)  # fails the job before any audio is fetched
        except PretrainedUnavailable as exc:
            raise PretrainedUnavailable(f"{exc}; set {FROM_SCRATCH}: true to train from scratch instead "
                                        "(a usable voice then needs far more recordings)") from None
    # codex's training pairs leave out generated takes and machine-written text: never our own output.
    collected = collect_training_pairs(callbacks, notebooks, work, max_seconds=config.max_clip_seconds)
    utterances = [Utterance(item.cell.cell_id, item.text, item.audio_path, item.source_path) for item in collected]
    metrics = work / "checkpoint" / METRICS_FILE  # written by tts.train
    beat = _Heartbeat(callbacks, metrics, paths.metrics)
    try:
        result = train(utterances, config, work / "checkpoint", cache_dir=work / "tts_cache",
                       resume_dir=callbacks.get_resume_dir(), device=callbacks.get_device(),
                       hooks=TrainHooks(progress=beat.progress, epoch_end=beat.epoch_end))
    except JobInterrupted:
        # The folder holds the last finished epoch: make it survive this worker, then stop.
        callbacks.save_resume_state(force=True)
        raise
    sidecar = sidecar_path(result.checkpoint)
    upload_job_files(callbacks, {paths.checkpoint: result.checkpoint,
                                 str(Path(paths.checkpoint).with_suffix(".json").as_posix()): sidecar,
                                 paths.metrics: metrics}, "StableTTS: best model and training metrics")
    skipped = Counter(collected.skipped.counts()) + Counter(result.skipped.counts())
    summary = {
        "checkpoint_path": paths.checkpoint, "best_epoch": result.best_epoch,
        "best_metric_value": round(result.best_value, 6), "best_metric": result.best_metric,
        "train_clips": result.train_clips, "val_clips": result.val_clips,
        "skipped_clips": sum(skipped.values()), "skipped_clip_reasons": dict(skipped.most_common()),
        "unknown_characters": sum(result.unknown_characters.values()),
        "initialised_from": result.initialised_from, "text_frontend": result.frontend.get("kind"),
        "frontend_reason": _frontend_reason(result, base), "device": result.device, "precision": result.precision,
    }
    if base is not None:
        summary["initialised_from"] = str(callbacks.get_job_config(BASE_CHECKPOINT))
    if result.unknown_characters:
        summary["unknown_characters_detail"] = describe_counts(result.unknown_characters)
    trained_ids = {u.id for u in utterances} - {s.id for s in result.skipped}
    trained_cells = [item.cell for item in collected if item.cell.cell_id in trained_ids]
    unsaid = Unspeakable.find(frontend_from_dict(result.frontend), trained_cells)
    summary["unspeakable_training_texts"] = len(unsaid.cells)
    if unsaid.cells:
        summary["unspeakable_training_cells"] = unsaid.listed()
        logger.warning("Training: %s (trained as written)", unsaid.note("training texts"))
    logger.info("Training done: best epoch %d (%s %.4f), %d clip(s) trained, %d skipped", result.best_epoch,
                result.best_metric, result.best_value, result.train_clips + result.val_clips, sum(skipped.values()))
    return TrainedVoice(result, paths.checkpoint, collected, summary, config.language)


def training_phrase(summary: dict[str, Any]) -> str:
    """The status line's part for training: ``best epoch 12: val total loss 4.93 (24 + 4 clips)``."""
    metric = str(summary["best_metric"]).replace("_", " ")
    return (f"best epoch {summary['best_epoch']}: {metric} {summary['best_metric_value']:.3g} "
            f"({summary['train_clips']} + {summary['val_clips']} clips)")


def _frontend_reason(result: TrainResult, base: Path | None) -> str:
    """Why the run read the texts as it did; a base checkpoint's front end is kept whatever the texts are."""
    reason = result.frontend_reason
    if base is not None and "frontend" in (checkpoint_sidecar(base) or {}):
        reason = f"kept from {BASE_CHECKPOINT} (its symbols must keep their meaning)" + \
                 (f"; chosen then because {reason}" if reason else "")
    logger.info("Text front end: %s (%s)", result.frontend.get("kind"), reason or "no reason recorded")
    return reason
