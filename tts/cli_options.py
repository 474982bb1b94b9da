"""Click options and voice loading shared by the TTS command lines (``inference_stabletts.py``,
``batch_tts_inference.py``, ``gradio_demo_stabletts.py``): here so that no command line imports another,
and each option's default is ``StableTTS.synthesis.SAMPLING``'s."""
from __future__ import annotations

import click

from StableTTS.synthesis import SAMPLING, SOLVERS

from .inference import TTSVoice, load_voice


def _apply(f, options):
    for option in reversed(options):
        f = option(f)
    return f


def voice_options(f):
    """--vocoder, --language, --device: what `load_voice_or_fail` needs besides the checkpoint."""
    return _apply(f, [
        click.option("--vocoder", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Vocos weights (vocos.pt); default: the Hugging Face cache, else Griffin-Lim."),
        click.option("--language", default=None, help="Language code, used only for checkpoints without a sidecar."),
        click.option("--device", default=None, help="torch device, e.g. cuda or cpu; default: cuda if available."),
    ])


def synthesis_options(f):
    """--reference, the sampling options, --seed, then `voice_options`."""
    return _apply(f, [
        click.option("--reference", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Voice reference audio (any format); default: the model's average voice."),
        click.option("--steps", type=click.IntRange(1, 1000), default=SAMPLING.steps, show_default=True,
                     help="ODE solver steps (fixed-step solvers)."),
        click.option("--cfg-scale", type=float, default=SAMPLING.cfg_scale, show_default=True,
                     help="Classifier-free guidance scale."),
        click.option("--temperature", type=float, default=SAMPLING.temperature, show_default=True,
                     help="Noise scale; 0 = deterministic."),
        click.option("--length-scale", type=float, default=SAMPLING.length_scale, show_default=True,
                     help="Duration factor; >1 = slower."),
        click.option("--solver", type=click.Choice(SOLVERS), default=SAMPLING.solver, show_default=True,
                     help="ODE solver."),
        click.option("--seed", type=int, default=None, help="Random seed for reproducible output."),
        voice_options,
    ])


def load_voice_or_fail(checkpoint, vocoder, device, language) -> TTSVoice:
    """load_voice with library errors turned into messages for the command line."""
    try:
        return load_voice(checkpoint, vocoder=vocoder, device=device, language=language)
    except (ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
