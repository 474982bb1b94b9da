"""The training step of the ASR training modes: recorded verses in, ``model/asr_model.pth.tar`` and
``checkpoint/training_metrics.csv`` out.

Data: the verse cells with text and a usable take (the job's ``training`` filter), their takes decoded to
16 kHz mono WAV by ``handlers.common``. The library normalises the text (``text_normalization``, NFC, any
script), builds or continues the vocabulary and does the fine-tuning (``asr.train_asr``); the settings come
from ``asr.job_settings.train_config_from_job``.

Progress and stops: after each epoch a heartbeat ("epoch 3/10 · val CER 0.41 · ETA 2 min") carrying the
metrics file (committed with the response.yaml that counts the epoch, so the plugin's chart keeps up), and
once the Trainer has saved that epoch an offer of the resumable state to ``save_resume_state`` (the worker
throttles the uploads). The
library asks ``should_stop`` after every step: when the worker stops the job, training stops there (keeping
the last finished epoch's checkpoint, or saving the epoch that just ended -- see ``EpochReporter``), the
state is uploaded at once (``force``) and the stop goes on.

Resume: ``train_asr``'s output folder (its Trainer checkpoints, the run's vocabulary, the best epoch so far,
the metrics file) lives in ``callbacks.get_resume_dir()/asr``. A worker that takes the job over gets the
folder back, and ``train_asr`` continues after the last saved step: the next epoch. Once the model is
uploaded, a training_and_inference job swaps that state for a small marker (``trained.json``), so a takeover
during transcription reuses the uploaded model instead of training again.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.utils import logging as hf_logging

from asr.audio import SAMPLE_RATE
from asr.data import AsrExample
from asr.job_settings import initialised_from, train_config_from_job
from asr.recording_check import TRAINED_TAKES_FILE, TrainedTakes, read_trained_takes
from asr.trainer import train_asr
from asr.training import OutputLayout
from handler_api import JobInterrupted
from handlers.common import collect_training_pairs, count, fetch_project_file, job_paths, upload_job_files
from job_settings import JobInputError
from skips import SkipReport

from .job_inputs import MODEL_NAME, fetch_base_checkpoint, resolve_base_model

logger = logging.getLogger(__name__)

OUTPUT_DIR = "asr"                  # under the resume dir: train_asr's output folder
TRAINED_MARKER = "trained.json"     # under the resume dir: the model is trained and uploaded


@dataclass
class TrainedModel:
    """A finished training step: the job result keys and a local copy of the model archive."""

    result: dict[str, Any]
    archive: Path


def train_model(callbacks, job_context: dict, notebooks, *, inference_follows: bool = False) -> TrainedModel:
    """Train (or resume training) on the project's recorded verses and upload the model and its metrics.

    Raises ``JobInputError`` for what a translator can fix, and ``JobInterrupted`` (after saving the
    resumable state) when the worker stops the job.
    """
    hf_logging.disable_progress_bar()   # one bar per saved shard would flood the worker's console
    work = Path(callbacks.get_work_dir())
    paths = job_paths(job_context)
    resume = Path(callbacks.get_resume_dir())
    if (resume / TRAINED_MARKER).is_file():
        return _reuse_uploaded_model(callbacks, resume / TRAINED_MARKER, paths.asr_model, work)

    base_checkpoint = fetch_base_checkpoint(callbacks, work)
    config = train_config_from_job(job_context, base_checkpoint=base_checkpoint,
                                   base_model=resolve_base_model(callbacks, work))
    pairs = collect_training_pairs(callbacks, notebooks, work, sample_rate=SAMPLE_RATE,
                                   max_seconds=config.max_duration_seconds)
    if not pairs.items:
        raise JobInputError("There is nothing to train on: no verse has both text and a usable recording "
                            f"(skipped: {pairs.skipped.reasons()})")
    examples = [AsrExample(item.audio_path, item.text, item.cell.cell_id) for item in pairs]
    model_files = _trained_takes_file(pairs, base_checkpoint)

    layout = OutputLayout(resume / OUTPUT_DIR)
    done_before = layout.epochs_saved()
    reporter = EpochReporter(callbacks, config.epochs, done_before, layout.metrics_csv, paths.metrics)
    hours = sum(item.duration_sec for item in pairs) / 3600
    callbacks.heartbeat(
        epochs_completed=done_before or None,
        message=(f"training: resuming after epoch {done_before}/{config.epochs}" if done_before else
                 f"training on {len(examples)} verses ({hours:.1f} h of audio)"))
    try:
        trained = train_asr(examples, layout.root, config, on_epoch_end=reporter.epoch_end,
                            should_stop=reporter.should_stop, device=callbacks.get_device(), model_files=model_files)
    except JobInterrupted:
        _save_for_takeover(callbacks, layout)
        raise
    except (ValueError, FileNotFoundError) as exc:
        logger.exception("ASR training failed")
        raise JobInputError(f"ASR training could not run: {exc}") from exc
    if trained.stopped or reporter.stop is not None:
        _save_for_takeover(callbacks, layout)
        reporter.raise_stop()

    # A stop from here on is not saved: the library has dropped its Trainer checkpoints, and the last
    # state uploaded during training is a better start for the next worker than none.
    callbacks.heartbeat(epochs_completed=trained.epochs_completed, message="uploading the ASR model")
    upload_job_files(callbacks, {paths.asr_model: trained.checkpoint_path, paths.metrics: trained.metrics_csv},
                     f"ASR {MODEL_NAME}: model and training metrics")
    result = trained.job_result() | {
        "checkpoint_path": paths.asr_model,     # the plugin offers this path as a base for later jobs
        "initialised_from": initialised_from(job_context, config),
        "epochs_completed": trained.epochs_completed,
        "training_clips": len(examples),
        "training_skipped": _skip_counts(pairs.skipped, trained.skipped),
        "vocabulary_size": trained.vocabulary.get("size"),
        "new_characters": "".join(trained.vocabulary.get("new_chars") or []),
    }
    if not config.post_correction:
        result.pop("post_corrector_used", None)
    if done_before:
        result["resumed_from_epoch"] = done_before
    archive = trained.checkpoint_path
    if inference_follows:
        archive = _keep_only_marker(callbacks, resume, layout, result, work)
    return TrainedModel(result, archive)


def training_phrase(result: dict[str, Any]) -> str:
    """The status line's part for training: ``best epoch 34: validation CER 0.025``."""
    cer = result.get("best_metric_value")
    if cer is None:
        return f"{count(result['epochs_completed'], 'epoch')} trained"  # no validation CER to name
    return f"best epoch {result['best_epoch']}: validation CER {cer:.3f}"


def _trained_takes_file(pairs, base_checkpoint: Path | None):
    """``train_asr``'s ``model_files``: the model's ``trained_takes.json`` -- the (cell, take) pairs of its
    training split, plus those its base checkpoint was trained on -- so a recording check can tell the takes
    the model may have memorised."""
    take_of = {item.cell.cell_id: item.audio_id for item in pairs}
    inherited = read_trained_takes(base_checkpoint) if base_checkpoint is not None else None

    def files(train_ids: list[str]) -> dict[str, str]:
        trained = {(cell_id, take_of[cell_id]) for cell_id in train_ids if cell_id in take_of}
        if inherited is not None:
            trained |= inherited.pairs
        return {TRAINED_TAKES_FILE: TrainedTakes.of(trained).to_json()}

    return files


def _save_for_takeover(callbacks, layout: OutputLayout) -> None:
    """Upload the resumable state now: the worker is stopping the job."""
    logger.info("Training stopped; saving its state (%d epoch(s) done) for the next worker", layout.epochs_saved())
    callbacks.save_resume_state(force=True)


def _skip_counts(selection: SkipReport, library: SkipReport) -> dict[str, int]:
    """Cells left out of training, by reason: by the cell selection and by the library, one name per reason."""
    return dict((Counter(selection.counts()) + Counter(library.counts())).most_common())


def _keep_only_marker(callbacks, resume: Path, layout: OutputLayout, result: dict, work: Path) -> Path:
    """After the upload, the training state is no longer needed: keep the archive in the work dir and
    leave a marker for a worker that takes over during transcription."""
    archive = work / "trained" / layout.archive.name
    archive.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(layout.archive), archive)
    (resume / TRAINED_MARKER).write_text(json.dumps(result, default=str), encoding="utf-8")
    shutil.rmtree(layout.root, ignore_errors=True)
    callbacks.save_resume_state(force=True)     # uploads the marker, drops the training state
    return archive


def _reuse_uploaded_model(callbacks, marker: Path, model_path: str, work: Path) -> TrainedModel:
    result = json.loads(marker.read_text(encoding="utf-8"))
    logger.info("The model was trained and uploaded by an earlier run of this job; reusing %s", model_path)
    callbacks.heartbeat(epochs_completed=result.get("epochs_completed"), message="model already trained")
    archive = fetch_project_file(callbacks, model_path, work / "trained" / Path(model_path).name,
                                 field="the job's own model")
    return TrainedModel(result, archive)


class EpochReporter:
    """The library's per-epoch hook and stop check, speaking to the worker.

    The Trainer saves an epoch's checkpoint after ``on_epoch_end`` returns, so the resumable state is offered
    to ``save_resume_state`` at the next step, when that checkpoint exists. A stop that arrives during an
    epoch is raised at the next step: the Trainer keeps the checkpoint of the last finished epoch, and the
    next worker starts the interrupted epoch again. A stop that arrives at an epoch's end waits for the
    Trainer to save that epoch, so a finished epoch is never trained twice.
    """

    def __init__(self, callbacks, epochs: int, done_before: int, metrics_local: Path, metrics_path: str):
        self.callbacks = callbacks
        self.epochs = epochs
        self.done_before = done_before
        self.metrics_local = metrics_local
        self.metrics_path = metrics_path
        self.started = time.monotonic()
        self.stop: JobInterrupted | None = None
        self._epoch_just_ended = False
        self._state_to_offer = False

    def epoch_end(self, epoch: int, row: dict) -> None:
        """``on_epoch_end`` of ``train_asr``: the heartbeat."""
        self._epoch_just_ended = True
        if self.stop is not None:
            return
        try:
            self.callbacks.heartbeat(epochs_completed=epoch, message=self.status(epoch, row),
                                     files={self.metrics_path: self.metrics_local})
        except JobInterrupted as stop:
            self.stop = stop    # not raised through the Trainer: this epoch's checkpoint comes after the hook
        self._state_to_offer = True

    def should_stop(self) -> bool:
        """``should_stop`` of ``train_asr``: asked after every optimizer step and right after each epoch."""
        at_epoch_end, self._epoch_just_ended = self._epoch_just_ended, False
        if self.stop is not None:
            return True
        if at_epoch_end:
            return self.callbacks.should_stop()     # yes: the Trainer saves this epoch, then stops
        if self._state_to_offer:
            self._state_to_offer = False
            self._offer_state()
        if self.callbacks.should_stop():
            self.callbacks.heartbeat(message="stopping")    # raises the pending JobInterrupted
        return False

    def _offer_state(self) -> None:
        self.callbacks.save_resume_state()     # the worker decides whether an upload is due

    def raise_stop(self) -> None:
        """Raise the stop that ended training."""
        if self.stop is not None:
            raise self.stop
        self.callbacks.heartbeat(message="stopping")        # raises the pending JobInterrupted
        raise RuntimeError("training stopped although the worker asked for no stop")

    def status(self, epoch: int, row: dict) -> str:
        """``epoch 3/10 · val CER 0.41 · ETA 2 min``."""
        parts = [f"epoch {epoch}/{self.epochs}"]
        cer, loss = row.get("val_cer"), row.get("train_total_loss")
        if _finite(cer):
            parts.append(f"val CER {cer:.2f}")
        elif _finite(loss):
            parts.append(f"train loss {loss:.3g}")
        done_here = epoch - self.done_before
        if 0 < done_here and epoch < self.epochs:
            per_epoch = (time.monotonic() - self.started) / done_here
            parts.append(f"ETA {_duration(per_epoch * (self.epochs - epoch))}")
        return " · ".join(parts)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "< 1 min"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
