"""Fine-tune Wav2Vec2-BERT with a character CTC head on recorded verses: the command line over
``asr.train_asr`` (what it writes, and the recipe, are described there and in docs/asr.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
from transformers.utils import logging as hf_logging

from asr import AsrTrainConfig, train_asr
from asr.datasets import DEFAULT_ID_COLUMN, read_metadata
from asr.text import TextNormalization
from audio_folder import AUDIO_COLUMN, TEXT_COLUMN, DatasetError

DEFAULTS = AsrTrainConfig()  # the options' defaults are the library's


@click.command()
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV of audio paths and transcripts.")
@click.option("--audio-column", default=AUDIO_COLUMN, show_default=True, help="CSV column with audio paths (relative to the CSV or --audio-base).")
@click.option("--text-column", default=TEXT_COLUMN, show_default=True, help="CSV column with transcripts.")
@click.option("--id-column", default=DEFAULT_ID_COLUMN, show_default=True, help="CSV column with ids (row numbers when absent).")
@click.option("--audio-base", type=click.Path(file_okay=False, path_type=Path), help="Folder that relative audio paths start from.")
@click.option("--synthetic", type=int, help="Train on N synthetic tone clips instead of a CSV (demo/smoke test).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Where the metrics, checkpoints and model archive go.")
@click.option("--preset", type=click.Choice(["tiny", "small"]), help="Random model built in code instead of --base-model.")
@click.option("--base-model", default=DEFAULTS.base_model, show_default=True, help="Pretrained encoder (hub id or folder).")
@click.option("--base-checkpoint", type=click.Path(exists=True, path_type=Path), help="asr_model.pth.tar of an earlier job to continue.")
@click.option("--epochs", default=DEFAULTS.epochs, show_default=True, help="Training epochs.")
@click.option("--batch-size", default=DEFAULTS.batch_size, show_default=True, help="Clips per device batch.")
@click.option("--gradient-accumulation-steps", default=DEFAULTS.gradient_accumulation_steps, show_default=True, help="Batches per optimizer step.")
@click.option("--learning-rate", type=float, default=DEFAULTS.learning_rate,
              help="Peak learning rate (default: 5e-5 fine-tuning, 2e-3 for a --preset from scratch).")
@click.option("--warmup-steps", default=DEFAULTS.warmup_steps, show_default=True, help="Warm-up steps (< 1: fraction of all steps).")
@click.option("--val-split", default=DEFAULTS.val_split, show_default=True, help="Fraction of clips for validation.")
@click.option("--test-split", default=DEFAULTS.test_split, show_default=True, help="Fraction of clips for the final test.")
@click.option("--max-duration-seconds", default=DEFAULTS.max_duration_seconds, show_default=True, help="Longer clips are left out (and listed).")
@click.option("--post-correction/--no-post-correction", default=DEFAULTS.post_correction, show_default=True, help="Learn the character post-corrector.")
@click.option("--keep-case", is_flag=True, help="Do not lowercase transcripts.")
@click.option("--keep-punctuation", is_flag=True, help="Do not remove punctuation.")
@click.option("--remove-numbers", is_flag=True, help="Remove digits from transcripts.")
@click.option("--device", help="cpu or cuda (default: cuda when present).")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, help="Random seed (splits, initialisation, order).")
def main(metadata, audio_column, text_column, id_column, audio_base, synthetic, output_dir, preset, base_model,
         base_checkpoint, epochs, batch_size, gradient_accumulation_steps, learning_rate, warmup_steps, val_split,
         test_split, max_duration_seconds, post_correction, keep_case, keep_punctuation, remove_numbers, device, seed):
    """Fine-tune Wav2Vec2-BERT CTC on recorded verses.

    Example (a tiny random model learning synthetic tones, on the CPU):

    \b
        python train_w2v2bert_asr.py --synthetic 64 --preset tiny --epochs 10 \\
            --batch-size 4 --gradient-accumulation-steps 1 --output-dir out/asr
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hf_logging.disable_progress_bar()
    if synthetic:
        from asr.synthetic import synthetic_examples

        examples = synthetic_examples(synthetic, seed=seed)
    elif metadata:
        try:
            examples = read_metadata(metadata, audio_column=audio_column, text_column=text_column,
                                     id_column=id_column, audio_base=audio_base)
        except DatasetError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        raise click.UsageError("Give --metadata CSV or --synthetic N")
    config = AsrTrainConfig(
        epochs=epochs, batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate, warmup_steps=warmup_steps, val_split=val_split, test_split=test_split,
        max_duration_seconds=max_duration_seconds, post_correction=post_correction, preset=preset,
        base_model=base_model, base_checkpoint=str(base_checkpoint) if base_checkpoint else None, seed=seed,
        text_normalization=TextNormalization(not keep_case, not keep_punctuation, remove_numbers),
    )
    try:
        result = train_asr(examples, output_dir, config, device=device)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result.job_result(), indent=1, default=str))


if __name__ == "__main__":
    main()
