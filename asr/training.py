"""The steps of a training run that ``asr.trainer.train_asr`` strings together: the output
folder layout, the run's vocabulary, Trainer arguments and tables, post-corrector fitting and scoring.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import torch
from datasets import Dataset
from transformers import TrainingArguments, Wav2Vec2BertForCTC

from asr.archive import MODEL_ARCHIVE_NAME, WEIGHT_FILES
from asr.config import AsrTrainConfig
from asr.data import PreparedClip
from asr.decode import Transcriber
from asr.model import supports_bf16
from asr.postcorrect import learn_post_corrector, validate_post_corrector
from asr.vocab import VocabularyReport, build_vocabulary, load_vocabulary
from training_metrics import METRICS_FILE

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint"            # the Trainer's checkpoint-<step> folders
TRAINER_STATE_FILE = "trainer_state.json"   # written last of a checkpoint's files


@dataclass
class OutputLayout:
    """Where everything lives under the output folder."""

    root: Path

    @property
    def metrics_csv(self) -> Path:
        return self.root / "checkpoint" / METRICS_FILE

    @property
    def archive(self) -> Path:
        return self.root / "model" / MODEL_ARCHIVE_NAME

    @property
    def trainer(self) -> Path:
        return self.root / "trainer"

    @property
    def best_model(self) -> Path:
        return self.root / "best_model"

    @property
    def processor(self) -> Path:
        return self.root / "processor"

    @property
    def base_checkpoint(self) -> Path:
        return self.root / "base_checkpoint"

    def last_checkpoint(self) -> Path | None:
        """The newest complete Trainer checkpoint to resume from, or None.

        The Trainer writes ``trainer_state.json`` after the weights, optimizer and RNG state, so a checkpoint
        without a readable one was cut off mid-save (a kill -9, a preempted machine). Such folders are removed:
        the run continues from the newest complete checkpoint before them and saves those steps again.
        """
        if not self.trainer.is_dir():
            return None
        numbered = [(int(p.name.split("-", 1)[1]), p) for p in self.trainer.iterdir()
                    if p.is_dir() and p.name.startswith(f"{CHECKPOINT_PREFIX}-") and p.name.split("-", 1)[1].isdigit()]
        for _, folder in sorted(numbered, reverse=True):
            if _complete_checkpoint(folder):
                return folder
            logger.warning("Removing %s: its save was cut off (no readable %s, or no weights)", folder.name,
                           TRAINER_STATE_FILE)
            shutil.rmtree(folder, ignore_errors=True)
        return None

    def epochs_saved(self) -> int:
        """Whole epochs in the Trainer checkpoint an earlier run left here: a rerun continues after them
        (0: it starts afresh)."""
        checkpoint = self.last_checkpoint()
        if checkpoint is None:
            return 0
        try:
            state = json.loads((checkpoint / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
            return int(math.floor(float(state.get("epoch") or 0) + 1e-6))
        except (OSError, ValueError) as exc:
            logger.warning("Cannot read the state of %s (%s); the Trainer decides where to resume", checkpoint, exc)
            return 0


def _complete_checkpoint(folder: Path) -> bool:
    try:
        json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def run_vocabulary(
    train: list[PreparedClip], config: AsrTrainConfig, layout: OutputLayout, base_dir: Path | None, resuming: bool
) -> VocabularyReport:
    """The vocabulary of this run: the saved one when resuming (ids must not move), else built from the
    training transcripts, extending the base checkpoint's vocabulary when there is one."""
    texts = [c.text for c in train]
    if resuming and (layout.processor / "vocab.json").exists():
        saved = load_vocabulary(layout.processor)
        report = build_vocabulary(texts, min_char_count=config.min_char_count, base=saved)
        if report.new_chars:
            raise ValueError(
                "The training data changed since the interrupted run (new characters "
                f"{''.join(report.new_chars)!r}); use a fresh output folder"
            )
        return report
    base = load_vocabulary(base_dir) if base_dir is not None else None
    return build_vocabulary(texts, min_char_count=config.min_char_count, base=base)


def index_tables(clips: list[PreparedClip], sizes: tuple[int, int, int]) -> list[Dataset]:
    """One table per split: ``idx`` into ``clips`` and ``length`` for length-grouped batches."""
    tables, start = [], 0
    for size in sizes:
        rows = range(start, start + size)
        tables.append(Dataset.from_dict({"idx": list(rows), "length": [len(clips[i].features) for i in rows]}))
        start += size
    return tables


def training_arguments(
    config: AsrTrainConfig, layout: OutputLayout, dev: torch.device, model: Wav2Vec2BertForCTC, *, has_validation: bool
) -> TrainingArguments:
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = dev.type == "cuda" and model.config.hidden_size >= 512
    warmup = config.warmup_steps if config.warmup_steps < 1 else int(config.warmup_steps)
    return TrainingArguments(
        output_dir=str(layout.trainer),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.peak_learning_rate,
        warmup_steps=warmup,
        lr_scheduler_type="linear",
        adam_beta2=config.adam_beta2,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        eval_strategy="epoch" if has_validation else "no",
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,
        save_total_limit=1,  # only for resuming; the best model is kept separately
        logging_strategy="epoch",
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        remove_unused_columns=False,  # the collator needs `idx`
        label_names=["labels"],
        bf16=supports_bf16(dev),
        activation_checkpointing=checkpointing,
        use_cpu=dev.type == "cpu",
        dataloader_num_workers=0,  # batches are padded in-memory features: nothing to parallelise
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        data_seed=config.seed,
    )


def fit_post_corrector(
    transcriber: Transcriber, train: list[PreparedClip], val: list[PreparedClip], config: AsrTrainConfig, path: Path
) -> bool:
    """Learn the post-corrector on training verses, keep it only if it lowers validation CER."""
    batch = config.eval_batch_size or config.batch_size
    # float16 features go in as they are: each batch is widened to float32 on its own
    hyps = transcriber.raw_texts([c.features for c in train], batch)
    corrector = learn_post_corrector(hyps, [c.text for c in train])
    val_hyps = transcriber.raw_texts([c.features for c in val], batch) if val else []
    validate_post_corrector(corrector, val_hyps, [c.text for c in val])
    corrector.save(path)
    transcriber.post_corrector = corrector
    return corrector.use


def score_clips(transcriber: Transcriber, clips: list[PreparedClip], config: AsrTrainConfig) -> dict[str, Any]:
    """WER/CER of the exported model (with its post-corrector when used) on held-out clips."""
    scored = [c for c in clips if c.text]
    if not scored:
        logger.info("No test clips: test results are empty")
        return {"wer": None, "cer": None, "n": 0}
    hyps = transcriber.transcribe_features([c.features for c in scored], config.eval_batch_size or config.batch_size)
    refs = [c.text for c in scored]
    results = {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps)), "n": len(scored)}
    logger.info("Test (%d clips): WER %.4f, CER %.4f", results["n"], results["wer"], results["cer"])
    return results


def finite_or_none(value: float | None) -> float | None:
    """JSON has no inf/NaN: a metric that never got a value is None."""
    return None if value is None or not math.isfinite(value) else float(value)


def vocabulary_info(report: VocabularyReport) -> dict[str, Any]:
    """What the result and training_info.json say about the vocabulary."""
    return {
        "size": report.vocabulary.size,
        "rare_chars": report.rare_chars,
        "new_chars": report.new_chars,
    }


def jsonable(value: Any) -> Any:
    """``value`` with paths and other objects as strings."""
    return json.loads(json.dumps(value, default=str))
