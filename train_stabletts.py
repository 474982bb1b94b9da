"""Train a StableTTS voice from recordings: fine-tune the published v1.1 model (default), continue a
checkpoint, or train a new model (``--preset tiny`` for quick CPU runs).

Writes to ``--out``: ``best_model.pt`` (a plain state_dict, loadable with ``weights_only=True`` and by upstream
StableTTS) with ``best_model.json`` (model config, text front end, training settings), ``training_metrics.csv``
(one row per epoch), ``resume/`` (continue an interrupted run by running the same command again) and
``cache/`` (mels and symbol ids, see preprocess_stabletts.py). Several GPUs: launch with torchrun, e.g.
``torchrun --nproc_per_node=4 train_stabletts.py ...`` (plain DistributedDataParallel).

The library entry point is ``tts.train``; the worker's TTS handlers call it the same way.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from audio_folder import DatasetError
from StableTTS import PRESETS, CheckpointError
from StableTTS.text import FrontendUnavailable
from tts import STATE_FILE, NoTrainingData, TrainConfig, TrainHooks, train
from tts.config import FRONTEND_CHOICES, PRECISIONS
from tts.datasets import read_dataset

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainHooks", "main", "train"]


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="AudioFolder (folder with metadata.csv: file_name,transcription,...) or a filelist (audio|text).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (best model, metrics, resumable state, caches).")
@click.option("--epochs", type=click.IntRange(1, 9999), default=100, show_default=True, help="Epochs to train.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="v1.1", show_default=True,
              help="Model size for a new model.")
@click.option("--base-checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Continue this checkpoint (.pt/.safetensors, with its .json sidecar if any).")
@click.option("--no-pretrained", is_flag=True, help="Do not start v1.1 from the published weights (KdaiP/StableTTS1.1).")
@click.option("--language", default=None, help="ISO 639 code of the recordings (picks the text front end).")
@click.option("--frontend", type=click.Choice(FRONTEND_CHOICES), default="auto", show_default=True,
              help="Text front end.")
@click.option("--learning-rate", type=float, default=None, help="Peak learning rate (default: 1e-4 fine-tuning, "
              "1e-3 from scratch).")
@click.option("--batch-frames", type=click.IntRange(1), default=TrainConfig.batch_frames, show_default=True,
              help="Mel frames per batch, padding included.")
@click.option("--batch-size", type=click.IntRange(1), default=TrainConfig.batch_size, show_default=True,
              help="At most this many clips per batch.")
@click.option("--max-clip-seconds", type=float, default=TrainConfig.max_clip_seconds, show_default=True,
              help="Longer clips are skipped (and listed).")
@click.option("--val-split", type=float, default=TrainConfig.val_split, show_default=True,
              help="Share of clips held out for validation.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: bf16 autocast on GPUs that support it.")
@click.option("--device", default=None, help="torch device (default: cuda when available).")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True, help="Random seed.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Mel and symbol cache (default: OUT/cache).")
@click.option("--fresh", is_flag=True, help="Ignore a resumable state in OUT/resume and start at epoch 1.")
def main(data, out, epochs, preset, base_checkpoint, no_pretrained, language, frontend, learning_rate,
         batch_frames, batch_size, max_clip_seconds, val_split, precision, device, seed, cache_dir, fresh):
    """Train a StableTTS voice.

    Example:

        python train_stabletts.py --data dataset/ --out runs/voice --language swh --epochs 200
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out.mkdir(parents=True, exist_ok=True)
    resume = out / "resume"
    if fresh:
        (resume / STATE_FILE).unlink(missing_ok=True)
    try:
        utterances = read_dataset(data)
        config = TrainConfig(epochs=epochs, preset=preset, pretrained=not no_pretrained,
                             base_checkpoint=base_checkpoint, language=language, frontend=frontend,
                             learning_rate=learning_rate, batch_frames=batch_frames, batch_size=batch_size,
                             max_clip_seconds=max_clip_seconds, val_split=val_split, precision=precision, seed=seed)
        result = train(utterances, config, out, cache_dir=cache_dir or out / "cache", resume_dir=resume,
                       device=device)
    except (DatasetError, NoTrainingData, CheckpointError, FrontendUnavailable, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return
    click.echo(f"Best epoch {result.best_epoch} ({result.best_metric} {result.best_value:.4f}): {result.checkpoint}; "
               f"{result.train_clips} training + {result.val_clips} validation clip(s), {len(result.skipped)} skipped")


if __name__ == "__main__":
    main()
