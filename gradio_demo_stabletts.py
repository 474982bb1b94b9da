"""Try a trained StableTTS voice in the browser: text, and optionally a voice recording, in; speech out.

A Gradio page over `tts.inference`: the checkpoint (a `best_model.pt` with its `best_model.json`
sidecar, as TTS training writes it) is loaded once, safely (plain state_dicts only), with the best vocoder
available offline: Vocos from `--vocoder` or the local Hugging Face cache, else Griffin-Lim (said on the
page). Without a voice reference the model's learned average voice speaks. The page's one event is also an
HTTP API (`api_name="synthesize"`), so `gradio_client` can drive it.

CLI::

    python gradio_demo_stabletts.py --checkpoint checkpoint/best_model.pt --port 7860
"""
from __future__ import annotations

import html
import logging
import time
from pathlib import Path

import click
import gradio as gr
import numpy as np

from preprocess_audio import AudioError
from StableTTS import CheckpointError, read_sidecar
from StableTTS.synthesis import SAMPLING
from StableTTS.text import describe_counts
from tts.cli_options import load_voice_or_fail, voice_options
from tts.inference import SAMPLE_RATE, TTSVoice, load_reference, synthesize_iter

logger = logging.getLogger(__name__)

TITLE = "StableTTS voice demo"
TEXT_LABEL = "Text to speak"
REFERENCE_LABEL = "Voice reference (optional)"

# Slider defaults are SAMPLING's, as a job's are, so the page sounds like a job's takes.
STEPS = dict(minimum=1, maximum=100, value=SAMPLING.steps, step=1)
TEMPERATURE = dict(minimum=0.0, maximum=2.0, value=SAMPLING.temperature, step=0.05)
LENGTH_SCALE = dict(minimum=0.5, maximum=2.0, value=SAMPLING.length_scale, step=0.05)
CFG_SCALE = dict(minimum=0.0, maximum=10.0, value=SAMPLING.cfg_scale, step=0.5)


class SynthesisRequestError(ValueError):
    """A request the voice cannot serve (no text, an unreadable reference); the message is for a person."""


def reference_samples(path: str | Path) -> np.ndarray:
    """A voice reference file -> 44.1 kHz mono samples, silence-trimmed and cut as TTS jobs cut theirs."""
    try:
        return load_reference(path)
    except AudioError as exc:
        raise SynthesisRequestError(f"The voice reference is not usable audio: {exc.reason}.") from exc


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16, the page's WAV format (Gradio would convert too, with a warning)."""
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def speak(
    voice: TTSVoice,
    text: str,
    reference: str | Path | None = None,
    *,
    steps: int = STEPS["value"],
    temperature: float = TEMPERATURE["value"],
    length_scale: float = LENGTH_SCALE["value"],
    cfg_scale: float = CFG_SCALE["value"],
) -> tuple[np.ndarray, str]:
    """Speak one text; returns (float32 samples at 44.1 kHz, a one-line report: duration, RTF, voice).

    reference: an audio file of the voice to imitate, or None for the model's average voice. Raises
    SynthesisRequestError for empty text, text the voice cannot represent, or an unreadable reference.
    """
    if not text or not text.strip():
        raise SynthesisRequestError("Enter some text to speak: the text box is empty.")
    samples = reference_samples(reference) if reference else None
    start = time.perf_counter()
    [spoken] = synthesize_iter(voice, [text], samples, steps=int(steps), temperature=float(temperature),
                               length_scale=float(length_scale), cfg_scale=float(cfg_scale))
    elapsed = time.perf_counter() - start
    if spoken.audio.size == 0:
        raise SynthesisRequestError(
            "The text has nothing this voice can speak"
            + (f" (characters it cannot represent: {describe_counts(spoken.encoded.unknown)})."
               if spoken.encoded.unknown else ".")
        )
    seconds = spoken.audio.size / SAMPLE_RATE
    parts = [
        f"{seconds:.2f} s of speech in {elapsed:.2f} s (RTF {elapsed / seconds:.2f})",
        "voice: the reference clip" if samples is not None else "voice: the model's average voice",
        f"vocoder: {voice.vocoder_name}" + (" (fallback: no Vocos weights here)" if voice.vocoder_is_fallback else ""),
    ]
    if spoken.encoded.unknown:
        parts.append(f"dropped: {describe_counts(spoken.encoded.unknown)}")
    return spoken.audio, " · ".join(parts)


def default_voice_note(sidecar: dict | None) -> str:
    """What the page says about speaking without a reference, naming the training's default voice if known."""
    note = "Without a reference the model's average voice speaks."
    default = ((sidecar or {}).get("extra") or {}).get("default_voice") or {}
    if default.get("source"):
        note += (f" Jobs that ask for the default voice use the training recording `{default['source']}`"
                 f" ({default.get('seconds', '?')} s); upload it to hear that voice.")
    return note


def build_demo(voice: TTSVoice, *, checkpoint: str | Path | None = None) -> gr.Blocks:
    """The demo page for a loaded voice. `checkpoint` (optional) is named on the page, and its sidecar's
    default voice mentioned. The event "synthesize" takes (text, reference file or None, steps,
    temperature, length scale, cfg scale) and returns ((sample rate, samples), info)."""
    sidecar = None
    if checkpoint is not None:
        try:
            sidecar = read_sidecar(checkpoint)
        except CheckpointError as exc:  # load_voice read it already; a page without the note is still useful
            logger.warning("%s", exc)

    def on_synthesize(text, reference, steps, temperature, length_scale, cfg_scale):
        try:
            audio, info = speak(voice, text, reference, steps=steps, temperature=temperature,
                                length_scale=length_scale, cfg_scale=cfg_scale)
        except SynthesisRequestError as exc:
            logger.warning("Request refused: %s", exc)
            raise gr.Error(html.escape(str(exc), quote=False), print_exception=False) from exc
        logger.info("%s", info)
        return (SAMPLE_RATE, to_pcm16(audio)), info

    source = f"Voice `{Path(checkpoint).name}`, vocoder" if checkpoint is not None else "Vocoder"
    fallback = " (the fallback: no Vocos weights here, so the audio sounds phasey)" if voice.vocoder_is_fallback else ""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\n{source} {voice.vocoder_name}{fallback}. {default_voice_note(sidecar)}")
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label=TEXT_LABEL, lines=4, placeholder="In the beginning…")
                reference = gr.Audio(label=REFERENCE_LABEL, sources=["upload", "microphone"], type="filepath")
                with gr.Accordion("Synthesis settings", open=False):
                    steps = gr.Slider(label="Diffusion steps", **STEPS)
                    temperature = gr.Slider(label="Temperature (0 = deterministic)", **TEMPERATURE)
                    length_scale = gr.Slider(label="Length scale (> 1 speaks slower)", **LENGTH_SCALE)
                    cfg_scale = gr.Slider(label="Guidance (cfg) scale", **CFG_SCALE)
                button = gr.Button("Speak", variant="primary")
            with gr.Column():
                audio = gr.Audio(label="Speech", type="numpy", format="wav", interactive=False)
                info = gr.Textbox(label="Info", interactive=False)
        # One request at a time: every request shares the one model (and GPU).
        button.click(on_synthesize, [text, reference, steps, temperature, length_scale, cfg_scale], [audio, info],
                     api_name="synthesize", concurrency_limit=1)
    return demo


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="StableTTS checkpoint (best_model.pt; its .json sidecar is read if present).")
@voice_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on (0.0.0.0: every interface).")
@click.option("--port", type=int, default=7860, show_default=True, help="Port to serve on.")
def main(checkpoint, vocoder, language, device, host, port):
    """Serve a page that speaks typed text with a trained StableTTS voice.

    Example:

        python gradio_demo_stabletts.py --checkpoint checkpoint/best_model.pt --vocoder vocos.pt --port 7860
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    voice = load_voice_or_fail(checkpoint, vocoder, device, language)
    build_demo(voice, checkpoint=checkpoint).queue().launch(server_name=host, server_port=port)


if __name__ == "__main__":
    main()
