"""Transcribe recordings with a fine-tuned Wav2Vec2-BERT CTC model: the command line over
``asr.transcribe``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
from transformers.utils import logging as hf_logging

from asr import transcribe
from preprocess_audio import AudioError


@click.command()
@click.option("--model", "model", required=True, type=click.Path(exists=True, path_type=Path), help="Model folder or asr_model.pth.tar.")
@click.option("--batch-size", default=16, show_default=True, help="Clips per batch.")
@click.option("--device", help="cpu or cuda (default: cuda when present).")
@click.option("--chunk-length", "chunk_length_s", default=30.0, show_default=True, help="Seconds per window for long recordings.")
@click.option("--keep-unk", is_flag=True, help="Write [UNK] where the model is unsure instead of --unk-replacement.")
@click.option("--unk-replacement", default="", help="Text written for [UNK] (default: nothing).")
@click.argument("audio", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def main(model, batch_size, device, chunk_length_s, keep_unk, unk_replacement, audio):
    """Print one transcript per AUDIO file, tab-separated after its path.

    Example:

    \b
        python inference_w2v2bert_asr.py --model out/asr/model/asr_model.pth.tar clip1.webm clip2.wav
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    hf_logging.disable_progress_bar()  # stdout is the result; no weight-loading bars on stderr either
    try:
        texts = transcribe(
            model, list(audio), batch_size=batch_size, device=device, suppress_unk=not keep_unk,
            unk_replacement=unk_replacement, chunk_length_s=chunk_length_s,
        )
    except (ValueError, FileNotFoundError, AudioError) as exc:
        raise click.ClickException(str(exc)) from exc
    for path, text in zip(audio, texts):
        click.echo(f"{path}\t{text}")


if __name__ == "__main__":
    main()
