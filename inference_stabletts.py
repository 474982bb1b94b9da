"""Speak one text with a trained StableTTS voice: the command line over ``tts.inference``.

CLI::

    python inference_stabletts.py --checkpoint best_model.pt --text "In the beginning…" \
        --reference ref.webm --out verse.wav
"""
from __future__ import annotations

import logging
from pathlib import Path

import click

from tts.cli_options import load_voice_or_fail, synthesis_options
from tts.inference import SAMPLE_RATE, synthesize


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="StableTTS checkpoint (.pt or .safetensors; its .json sidecar is read if present).")
@click.option("--text", required=True, help="Text to speak.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output WAV file.")
@synthesis_options
def main(checkpoint, text, out_path, reference, steps, cfg_scale, temperature, length_scale, solver, seed,
         vocoder, language, device):
    """Speak one text with a trained StableTTS voice and write a 44.1 kHz WAV.

    Example:

        python inference_stabletts.py --checkpoint best_model.pt --text "In the beginning" --reference ref.webm --out x.wav
    """
    import soundfile

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    voice = load_voice_or_fail(checkpoint, vocoder, device, language)
    from preprocess_audio import AudioError

    try:
        [audio] = synthesize(voice, [text], reference, steps=steps, cfg_scale=cfg_scale, temperature=temperature,
                             length_scale=length_scale, solver=solver, seed=seed)
    except (AudioError, ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if audio.size == 0:
        raise click.ClickException("the text has nothing the voice can speak")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(out_path, audio, SAMPLE_RATE, subtype="PCM_16")
    click.echo(f"Wrote {out_path} ({audio.size / SAMPLE_RATE:.2f} s, vocoder: {voice.vocoder_name})")


if __name__ == "__main__":
    main()
