"""The ASR training run: recorded verses in, a fine-tuned Wav2Vec2-BERT CTC model out.

``train_asr(examples, output_dir, config)`` writes, under ``output_dir``:

* ``checkpoint/training_metrics.csv`` — one row per epoch: epoch, train/val loss, val WER/CER;
* ``model/asr_model.pth.tar`` — tar.gz of the best model's Hugging Face folder (weights, config, processor,
  vocabulary, ``training_info.json`` and, when enabled, ``post_corrector.tm``);
* ``trainer/`` — the Trainer's own checkpoints, so an interrupted run resumes where it stopped.

The steps it strings together live in ``asr.training``; the recipe (settings, traps of transformers 5) is
described in docs/asr.md. The command line is ``train_w2v2bert_asr.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from transformers import PrinterCallback, Trainer, Wav2Vec2BertForCTC, set_seed

from asr.archive import write_model_archive
from asr.callbacks import BEST_STATE_FILE, AsrProgressCallback, argmax_logits, make_compute_metrics
from asr.config import AsrTrainConfig, AsrTrainResult
from asr.data import AsrExample, CtcCollator, drop_unalignable, prepare_clips, split_clips
from asr.decode import Transcriber
from asr.model import (
    install_eval_logit_mask,
    install_padding_guard,
    logit_lengths,
    model_from_base,
    model_from_checkpoint,
    model_from_preset,
    model_folder,
    pick_device,
)
from asr.postcorrect import FILE_NAME as POST_CORRECTOR_FILE
from asr.training import (
    OutputLayout,
    finite_or_none,
    fit_post_corrector,
    index_tables,
    jsonable,
    run_vocabulary,
    score_clips,
    training_arguments,
    vocabulary_info,
)
from asr.vocab import load_feature_extractor, make_processor, save_processor
from training_metrics import ASR_METRICS_COLUMNS, MetricsLog

logger = logging.getLogger(__name__)


def train_asr(
    examples: Sequence[AsrExample],
    output_dir: str | Path,
    config: AsrTrainConfig | None = None,
    *,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | torch.device | None = None,
    model_files: Callable[[list[str]], Mapping[str, str]] | None = None,
) -> AsrTrainResult:
    """Fine-tune a CTC model on ``examples`` and export the best epoch (by validation CER).

    ``model_files(train_ids)`` gives text files (name -> content) to ship in the exported model folder, from
    the ids of the examples it was trained on (the training split): e.g. the caller's list of trained takes.

    ``on_epoch_end(epoch, metrics_row)`` runs after each epoch's evaluation, ``should_stop()`` after every
    optimizer step and epoch; when it returns True training ends cleanly (a checkpoint is kept for a resume)
    and nothing is exported. Exceptions from either callable propagate. Rerunning with the same output
    folder resumes from the last Trainer checkpoint.
    """
    config = config or AsrTrainConfig()
    config.validate()
    layout = OutputLayout(Path(output_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    set_seed(config.seed)
    if config.eval_steps:
        logger.info("eval_steps=%s ignored: evaluation runs once per epoch (one metrics row per epoch)", config.eval_steps)

    base_dir = None
    if config.base_checkpoint:  # checked as model_from_checkpoint loads it
        base_dir = model_folder(config.base_checkpoint, layout.base_checkpoint, check=False)
    feature_source = base_dir if base_dir else (None if config.preset else config.base_model)
    feature_extractor = load_feature_extractor(feature_source)

    clips, skipped = prepare_clips(
        examples,
        config.text_normalization,
        feature_extractor,
        max_duration_seconds=config.max_duration_seconds,
        workers=config.data_workers,
    )
    if not clips:
        raise ValueError(f"No usable training examples ({len(examples)} given). {skipped.summary()}")
    train, val, test = split_clips(clips, config.val_split, config.test_split, config.seed)

    last = layout.last_checkpoint()
    resume_from = str(last) if last is not None else None
    vocab_report = run_vocabulary(train, config, layout, base_dir, resume_from is not None)
    vocabulary = vocab_report.vocabulary
    logger.info("Vocabulary: %s", vocab_report.summary())
    processor = make_processor(vocabulary, feature_extractor)
    save_processor(processor, layout.processor)

    if base_dir is not None:  # an earlier job's model outranks a preset: continuing it is the point
        model = model_from_checkpoint(base_dir, vocabulary)
    elif config.preset:
        model = model_from_preset(config.preset, vocabulary)
    else:
        model = model_from_base(config.base_model, vocabulary)
    install_padding_guard(model)
    install_eval_logit_mask(model)

    def output_frames(feature_frames: int) -> int:
        return int(logit_lengths(model, feature_frames))

    train, val, test = (drop_unalignable(split, vocabulary, output_frames, skipped) for split in (train, val, test))
    if not train:
        raise ValueError(f"No training examples left. {skipped.summary()}")
    if skipped:
        logger.warning("%s", skipped.summary())

    all_clips = train + val + test
    labels = [vocabulary.encode(c.text) for c in all_clips]
    tables = index_tables(all_clips, (len(train), len(val), len(test)))

    def save_best(best_model: torch.nn.Module, folder: Path) -> None:
        best_model.save_pretrained(str(folder))
        save_processor(processor, folder)

    callback = AsrProgressCallback(
        MetricsLog(layout.metrics_csv, ASR_METRICS_COLUMNS),
        layout.best_model,
        save_best,
        has_validation=bool(val),
        on_epoch_end=on_epoch_end,
        should_stop=should_stop,
    )
    if resume_from is None:
        # a fresh run: results of an older run in this folder must not leak into this one
        layout.metrics_csv.unlink(missing_ok=True)
        shutil.rmtree(layout.best_model, ignore_errors=True)
        callback.best_cer, callback.best_epoch = math.inf, None
    trainer = Trainer(
        model=model,
        args=training_arguments(config, layout, dev, model, has_validation=bool(val)),
        train_dataset=tables[0],
        eval_dataset=tables[1] if val else None,
        data_collator=CtcCollator(all_clips, labels),
        processing_class=processor,
        compute_metrics=make_compute_metrics(vocabulary),
        preprocess_logits_for_metrics=argmax_logits,
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts to stdout; our callback logs epochs
    if resume_from:
        logger.info("Resuming from %s", resume_from)
    trainer.train(resume_from_checkpoint=resume_from)
    epochs_completed = int(math.floor((trainer.state.epoch or 0) + 1e-6))
    train_metrics = MetricsLog(layout.metrics_csv, ASR_METRICS_COLUMNS).numbers()
    if callback.stop_requested:
        logger.info("Training stopped on request after %d epoch(s); nothing exported", epochs_completed)
        return AsrTrainResult(
            None, None, layout.metrics_csv, callback.best_epoch, finite_or_none(callback.best_cer), {}, train_metrics,
            False, epochs_completed, stopped=True, vocabulary=vocabulary_info(vocab_report), skipped=skipped,
        )

    if not val or not (layout.best_model / "config.json").exists():
        save_best(trainer.model, layout.best_model)  # no validation: the last epoch is the model
        callback.best_epoch = epochs_completed
    del trainer  # the optimizer state and the last epoch's weights make room for the best epoch's
    model.cpu()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    best = Wav2Vec2BertForCTC.from_pretrained(str(layout.best_model))
    transcriber = Transcriber(best, feature_extractor, vocabulary, dev)

    corrector_used = False
    (layout.best_model / POST_CORRECTOR_FILE).unlink(missing_ok=True)  # never ship one from an older run
    if config.post_correction:
        corrector_used = fit_post_corrector(transcriber, train, val, config, layout.best_model / POST_CORRECTOR_FILE)
    test_results = score_clips(transcriber, test, config)
    info = {
        "config": jsonable(dataclasses.asdict(config)),
        "best_epoch": callback.best_epoch,
        "best_val_cer": finite_or_none(callback.best_cer),
        "test_results": test_results,
        "splits": {"train": len(train), "validation": len(val), "test": len(test)},
        "vocabulary": vocabulary_info(vocab_report),
        "skipped": [{"id": item.id, "reason": item.reason, "detail": item.detail} for item in skipped],
        "post_corrector_used": corrector_used,
    }
    (layout.best_model / "training_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
    for name, text in (model_files([c.id for c in train]) if model_files else {}).items():
        (layout.best_model / Path(name).name).write_text(text, encoding="utf-8")
    archive = write_model_archive(layout.best_model, layout.archive, exclude={BEST_STATE_FILE})
    if not config.keep_trainer_checkpoints:
        shutil.rmtree(layout.trainer, ignore_errors=True)
    return AsrTrainResult(
        archive, layout.best_model, layout.metrics_csv, callback.best_epoch, finite_or_none(callback.best_cer),
        test_results, train_metrics, corrector_used, epochs_completed,
        vocabulary=vocabulary_info(vocab_report), skipped=skipped,
    )
