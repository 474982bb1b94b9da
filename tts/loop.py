"""The StableTTS training loop: ``train(utterances, config, out_dir, ...) -> TrainResult``.

One epoch = length-bucketed batches under a frame budget -> the model's own objective (duration + prior +
flow-matching losses with monotonic alignment search, random reference crops and CFG dropout, see
``StableTTS.forward``) under bf16 autocast where the GPU has it -> AdamW with gradient clipping and a
warm-up + cosine learning rate -> a validation pass with fixed noise -> best model by validation loss ->
resumable state -> ``out_dir/training_metrics.csv`` -> ``hooks.epoch_end``. A saved state in ``resume_dir``
continues the run at the next epoch.
"""
from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from StableTTS import CheckpointError, ModelConfig, StableTTS, load_weights, save_checkpoint, sidecar_path
from StableTTS.synthesis import bf16_supported
from StableTTS.text import frontend_from_dict
from training_metrics import METRICS_FILE, TTS_METRICS_COLUMNS, MetricsLog

from .alignment import aligns_on_cpu, cpu_alignment
from .config import EpochReport, Losses, TrainConfig, TrainHooks, TrainResult
from .data import Clip, ClipDataset, Utterance, collate, length_batches, prepare_clips, split_clips
from .distributed import Ranks, barrier, init_distributed, shard, sum_over_ranks
from .model_setup import initial_model
from .state import BEST_FILE, ResumeState, capture_rng, load_state, restore_rng, save_state

logger = logging.getLogger(__name__)

VALIDATION_SEED = 20240601  # the same noise, crops and times for every validation pass: comparable epochs


class NoTrainingData(ValueError):
    """None of the clips can be used (the message says why, with counts)."""


def train(
    utterances: Sequence[Utterance], config: TrainConfig, out_dir: str | Path, *,
    cache_dir: str | Path | None = None, resume_dir: str | Path | None = None,
    hooks: TrainHooks | None = None, device: str | torch.device | None = None,
) -> TrainResult:
    """Train a StableTTS voice on ``utterances``; the best epoch's model ends up in ``out_dir/best_model.pt``
    and one row per epoch in ``out_dir/training_metrics.csv`` (written before ``hooks.epoch_end`` runs).

    ``cache_dir`` keeps mels and symbol ids between runs (default ``out_dir/cache``). ``resume_dir`` keeps the
    resumable state (default: none kept); a state found there is continued at its next epoch. ``hooks`` follow
    progress and may stop the run by raising. Raises NoTrainingData, CheckpointError (bad base checkpoint).
    """
    hooks = hooks or TrainHooks()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dir = Path(resume_dir) if resume_dir is not None else out_dir
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ranks, device = init_distributed(device)
    torch.manual_seed(config.seed)
    sampler_rng = torch.Generator().manual_seed(config.seed)
    say = hooks.progress if ranks.main and hooks.progress else (lambda message: None)

    # -- the model and its front end: from the saved state, else from the configured start ----------
    saved = load_state(resume_dir)
    restored = _restore_model(saved) if saved is not None else None
    if restored is None:
        saved = None
        start = initial_model(config, [u.text for u in utterances])
        model, frontend, origin, trained_weights = start.model, start.frontend, start.origin, start.trained_weights
    else:
        model, frontend = restored
        origin, trained_weights = saved.origin, saved.trained_weights
    say(frontend.status())
    model.to(device).train()
    raw_model = model
    if ranks.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    peak_lr = config.peak_learning_rate(trained_weights)
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=peak_lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    if saved is not None:
        optimizer.load_state_dict(saved.optimizer)

    # -- data ---------------------------------------------------------------------------------------
    data = prepare_clips(utterances, frontend, cache_dir or out_dir / "cache", max_seconds=config.max_clip_seconds,
                         trim_silence=config.trim_silence, progress=say)
    if not data.clips:
        raise NoTrainingData(f"none of the {len(utterances)} recording(s) can be used for training "
                             f"({data.skip_summary()})")
    train_clips, val_clips = split_clips(data.clips, config.val_split, config.seed)
    train_frames = [c.frames for c in train_clips]
    batches_per_epoch = len(shard(length_batches(train_frames, config.batch_frames, config.batch_size), ranks))
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    warmup = min(config.warmup_steps, max(1, total_steps // 5))
    workers = config.data_workers if config.data_workers is not None else (2 if device.type == "cuda" else 0)
    autocast = _autocast(device, config.precision)
    precision = "bf16" if autocast is not None else "fp32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    metric = "val_total_loss" if val_clips else "train_total_loss"
    logger.info("Training on %d clip(s), validating on %d; %d batch(es) per epoch on %s (%s), peak learning "
                "rate %.1e with %d warm-up step(s) of %d", len(train_clips), len(val_clips), batches_per_epoch,
                device, precision, peak_lr, warmup, total_steps)
    if aligns_on_cpu(device):
        logger.info("Monotonic alignment search runs on the CPU (numba, in threads), not as a per-frame GPU loop")
    if not val_clips:
        logger.warning("Too few clips for a validation split: the best epoch is chosen by training loss")

    history = list(saved.history) if saved else []
    best_epoch, best_value = (saved.best_epoch, saved.best_value) if saved else (0, math.inf)
    step = saved.step if saved else 0
    start_epoch = saved.epoch + 1 if saved else 1
    elapsed = saved.elapsed_seconds if saved else 0.0
    if saved is not None:
        restore_rng(saved.rng, sampler_rng)
        logger.info("Resuming at epoch %d of %d (best so far: epoch %d, %s %.4f)", start_epoch, config.epochs,
                    best_epoch, metric, best_value)
    extra = _sidecar_extra(config, origin, metric, train_clips, val_clips)
    metrics = MetricsLog(out_dir / METRICS_FILE, TTS_METRICS_COLUMNS) if ranks.main else None
    epoch_seconds: list[float] = []

    for epoch in range(start_epoch, config.epochs + 1):
        started = time.monotonic()
        batches = shard(length_batches(train_frames, config.batch_frames, config.batch_size, sampler_rng), ranks)
        loader = torch.utils.data.DataLoader(ClipDataset(train_clips), batch_sampler=batches, collate_fn=collate,
                                             num_workers=workers, pin_memory=device.type == "cuda")
        sums = _LossSums()
        model.train()
        for number, batch in enumerate(loader, 1):
            batch = batch.to(device)
            boundary = number % config.gradient_accumulation_steps == 0 or number == len(batches)
            sync = contextlib.nullcontext() if boundary or not ranks.enabled else model.no_sync()
            with sync:
                losses = _losses(model, batch, config.cfg_dropout, device, autocast)
                (losses.total / config.gradient_accumulation_steps).backward()
            sums.add(losses, len(batch))
            if boundary:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, peak_lr, warmup, total_steps, config.min_lr_ratio)
                norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.max_grad_norm)
                if torch.isfinite(norm):
                    optimizer.step()
                else:  # the same on every rank: gradients are averaged before the norm is taken
                    sums.skipped_steps += 1
                    logger.warning("Epoch %d step %d: non-finite gradient norm; step skipped", epoch, number)
                optimizer.zero_grad(set_to_none=True)
                step += 1
            say(f"epoch {epoch}/{config.epochs} · step {number}/{len(batches)}")
        train_losses = sums.mean(ranks, device)
        val_losses = evaluate(raw_model, val_clips, config, device, ranks, autocast) if val_clips else None

        score = (val_losses or train_losses).total
        history.append({"epoch": epoch, **train_losses.columns("train"),
                        **(val_losses.columns("val") if val_losses else {})})
        if math.isfinite(score) and score < best_value:  # losses are averaged over ranks: all agree
            best_epoch, best_value = epoch, score
            if ranks.main:
                save_checkpoint(raw_model, state_dir / BEST_FILE, frontend=frontend.to_dict(),
                                extra={**extra, "best_epoch": epoch, "best_value": score})
        seconds = time.monotonic() - started
        epoch_seconds.append(seconds)
        elapsed += seconds
        if ranks.main and resume_dir is not None:
            save_state(state_dir, ResumeState(
                epoch=epoch, step=step, model=raw_model.state_dict(), optimizer=optimizer.state_dict(),
                model_config=raw_model.config.to_dict(), frontend=frontend.to_dict(), config=config.to_dict(),
                best_epoch=best_epoch, best_value=best_value, history=history, rng=capture_rng(sampler_rng),
                origin=origin, trained_weights=trained_weights, elapsed_seconds=elapsed))
        barrier(ranks)
        eta = sum(epoch_seconds) / len(epoch_seconds) * (config.epochs - epoch)
        report = EpochReport(epoch, config.epochs, train_losses, val_losses, best_epoch, best_value, seconds, eta,
                             optimizer.param_groups[0]["lr"], history)
        if metrics is not None:
            metrics.follow(history)
        if ranks.main:
            logger.info("epoch %d/%d · train loss %.4f (diff %.4f, dur %.4f, prior %.4f)%s%s · %.1f s", epoch,
                        config.epochs, train_losses.total, train_losses.diff, train_losses.dur, train_losses.prior,
                        f" · val loss {val_losses.total:.4f}" if val_losses else "",
                        " · best" if best_epoch == epoch else "", seconds)
            if hooks.epoch_end:
                hooks.epoch_end(report)

    # -- the best model where the caller expects it ---------------------------------------------------
    best = state_dir / BEST_FILE
    if ranks.main and not best.is_file():
        logger.warning("No epoch reached a finite %s; saving the last model instead", metric)
        best_epoch = config.epochs
        save_checkpoint(raw_model, best, frontend=frontend.to_dict(), extra={**extra, "best_epoch": best_epoch})
    target = out_dir / BEST_FILE
    if ranks.main and best.resolve() != target.resolve():
        shutil.copyfile(best, target)
        shutil.copyfile(sidecar_path(best), sidecar_path(target))
    if metrics is not None:
        metrics.follow(history)  # a resumed run with no epoch left to run still leaves the file complete
    barrier(ranks)
    return TrainResult(
        checkpoint=target, best_epoch=best_epoch, best_metric=metric, best_value=best_value, epochs=config.epochs,
        start_epoch=start_epoch, history=history, train_clips=len(train_clips), val_clips=len(val_clips),
        skipped=data.skipped, unknown_characters=data.unknown, initialised_from=origin,
        frontend=frontend.to_dict(), device=str(device), precision=precision)


def learning_rate(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine down to ``min_ratio · peak`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: StableTTS, clips: Sequence[Clip], config: TrainConfig, device: torch.device, ranks: Ranks,
             autocast=None) -> Losses:
    """Mean losses on ``clips`` without dropout or CFG dropout, with fixed noise (comparable across epochs)."""
    batches = shard(length_batches([c.frames for c in clips], config.batch_frames, config.batch_size), ranks)
    loader = torch.utils.data.DataLoader(ClipDataset(clips), batch_sampler=batches, collate_fn=collate)
    sums = _LossSums()
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(VALIDATION_SEED)
        for batch in loader:
            batch = batch.to(device)
            sums.add(_losses(model, batch, 0.0, device, autocast), len(batch))
    model.train(was_training)
    return sums.mean(ranks, device)


def _losses(model, batch, cfg_dropout: float, device: torch.device, autocast):
    """The model's objective on a batch: bf16 autocast where enabled, alignment on the CPU when on CUDA."""
    with cpu_alignment(device), autocast or contextlib.nullcontext():
        return model(batch.ids, batch.id_lengths, batch.mels, batch.mel_lengths, cfg_dropout=cfg_dropout)


class _LossSums:
    """Item-weighted sums of the four losses over an epoch."""

    def __init__(self) -> None:
        self.values = [0.0, 0.0, 0.0, 0.0]
        self.items = 0
        self.skipped_steps = 0

    def add(self, losses, items: int) -> None:
        parts = torch.stack([losses.total, losses.flow, losses.duration, losses.prior]).detach().float().tolist()
        self.values = [v + p * items for v, p in zip(self.values, parts)]
        self.items += items

    def mean(self, ranks: Ranks, device: torch.device) -> Losses:
        totals = sum_over_ranks(torch.tensor([*self.values, self.items], dtype=torch.float64, device=device), ranks)
        n = max(1.0, float(totals[-1]))
        total, diff, dur, prior = (float(v) / n for v in totals[:-1])
        return Losses(total=total, diff=diff, dur=dur, prior=prior)


def _autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for ("bf16") or where the GPU supports it ("auto"); None for fp32."""
    if precision == "bf16" or (precision == "auto" and bf16_supported(device)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return None


def _restore_model(saved: ResumeState):
    """(model, front end) from a saved state, or None when they cannot be rebuilt (the run starts over)."""
    try:
        model = StableTTS(ModelConfig.from_dict(saved.model_config))
        load_weights(model, saved.model, source="the resumable state")
        return model, frontend_from_dict(saved.frontend)
    except (CheckpointError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        logger.warning("Cannot continue from the saved state (%s); starting from epoch 1", exc)
        return None


def _sidecar_extra(config: TrainConfig, origin: str, metric: str, train_clips: Sequence[Clip],
                   val_clips: Sequence[Clip]) -> dict:
    """What the checkpoint sidecar records besides the model config and front end."""
    by_length = sorted(train_clips, key=lambda c: c.frames)
    voice = by_length[len(by_length) // 2]
    return {
        "training": config.to_dict(), "initialised_from": origin, "best_metric": metric,
        "train_clips": len(train_clips), "val_clips": len(val_clips), "language": config.language,
        # The median-length training recording: the voice used when a job asks for "the default voice".
        "default_voice": {"id": voice.id, "source": voice.source, "seconds": round(voice.seconds, 2)},
    }
