"""Try a fine-tuned Wav2Vec2-BERT CTC model in the browser: a recording (upload or microphone) in, text out.

A Gradio page over `asr.inference`: the model (the `asr_model.pth.tar` ASR training uploads, safely
extracted, or a model folder) is loaded once at start, and each recording is transcribed the way an ASR job
transcribes (long recordings in overlapping windows, the post-corrector when training marked it useful).
The page's event is also an HTTP API (`api_name="transcribe"`), so `gradio_client` can drive it.

CLI::

    python gradio_demo_w2v2bert_asr.py --model model/asr_model.pth.tar --port 7861
"""
from __future__ import annotations

import html
import logging
import time
from pathlib import Path

import click
import gradio as gr
import torch

from asr.audio import SAMPLE_RATE, load_audio
from asr.inference import load_transcriber, transcribe
from asr.model import pick_device
from preprocess_audio import AudioError

logger = logging.getLogger(__name__)

TITLE = "Wav2Vec2-BERT transcription demo"
AUDIO_LABEL = "Recording"


class TranscriptionRequestError(ValueError):
    """A recording that cannot be transcribed (none given, undecodable, or empty); the message is for a person."""


def transcribe_recording(model: str | Path, recording: str | Path | None,
                         device: str | torch.device | None = None) -> tuple[str, str]:
    """Transcribe one audio file with `model` (folder or archive); returns (text, a one-line report).

    Raises TranscriptionRequestError when there is no recording or it cannot be decoded.
    """
    if not recording:
        raise TranscriptionRequestError("Record or upload a clip first: there is no audio to transcribe.")
    try:
        wave = load_audio(recording)
    except AudioError as exc:
        raise TranscriptionRequestError(f"The recording is not usable audio: {exc.reason}.") from exc
    if wave.size == 0:
        raise TranscriptionRequestError("The recording is empty.")
    start = time.perf_counter()
    [text] = transcribe(model, [wave], device=device)
    elapsed = time.perf_counter() - start
    seconds = wave.size / SAMPLE_RATE
    return text, f"{seconds:.2f} s of audio transcribed in {elapsed:.2f} s"


def build_demo(model: str | Path, *, device: str | torch.device | None = None) -> gr.Blocks:
    """The demo page for an ASR model folder or archive, loaded here (errors surface now, not on the first
    request). The event "transcribe" takes an audio file and returns (text, info)."""
    device = pick_device(device)
    load_transcriber(model, device=device)

    def on_transcribe(recording):
        try:
            text, info = transcribe_recording(model, recording, device)
        except TranscriptionRequestError as exc:
            logger.warning("Request refused: %s", exc)
            raise gr.Error(html.escape(str(exc), quote=False), print_exception=False) from exc
        logger.info("%s", info)
        return text, info

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nModel `{Path(model).name}` on {device}. Upload a recording or use the "
                    "microphone; long recordings are transcribed in overlapping windows.")
        with gr.Row():
            with gr.Column():
                recording = gr.Audio(label=AUDIO_LABEL, sources=["upload", "microphone"], type="filepath")
                button = gr.Button("Transcribe", variant="primary")
            with gr.Column():
                text = gr.Textbox(label="Transcription", lines=4, interactive=False)
                info = gr.Textbox(label="Info", interactive=False)
        # One request at a time: every request shares the one model (and GPU).
        button.click(on_transcribe, [recording], [text, info], api_name="transcribe", concurrency_limit=1)
    return demo


@click.command()
@click.option("--model", "model", required=True, type=click.Path(exists=True, path_type=Path),
              help="Model folder or asr_model.pth.tar (extracted safely to a temporary folder).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when present).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on (0.0.0.0: every interface).")
@click.option("--port", type=int, default=7861, show_default=True, help="Port to serve on.")
def main(model, device, host, port):
    """Serve a page that transcribes recordings with a fine-tuned Wav2Vec2-BERT model.

    Example:

    \b
        python gradio_demo_w2v2bert_asr.py --model out/asr/model/asr_model.pth.tar --port 7861
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        demo = build_demo(model, device=device)
    except (ValueError, OSError) as exc:  # an unsafe or broken archive, a folder without a model
        raise click.ClickException(str(exc)) from exc
    demo.queue().launch(server_name=host, server_port=port)


if __name__ == "__main__":
    main()
