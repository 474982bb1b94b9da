"""StableTTS inference: a trained voice (model + text front end + vocoder) speaking many texts, fast.

Texts are encoded by the voice's own front end, sorted by length, synthesized in padded batches with
classifier-free guidance as one stacked pass and a fixed-step solver, and vocoded in batches. Results
come back in input order. The command lines over it: ``inference_stabletts.py`` (one text),
``batch_tts_inference.py`` (a CSV) and ``gradio_demo_stabletts.py`` (a page); the TTS handlers speak
verses with it (docs/stabletts.md, "Synthesis").
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from preprocess_audio import load_audio
from StableTTS import load_model, load_vocoder, mel_spectrogram, synthesize_mel
from StableTTS.mel import MEL, silence_log_mel
from StableTTS.synthesis import SAMPLING
from StableTTS.text import (
    EncodedText,
    TextFrontend,
    describe_counts,
    frontend_from_dict,
    select_frontend,
    summarize,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = MEL.sample_rate  # of the mel, hence of every generated sample
MAX_REFERENCE_SECONDS = 30.0  # see load_reference


@dataclass
class TTSVoice:
    """Everything needed to speak with one trained voice.

    model: the StableTTS acoustic model; frontend: the text front end it was trained with;
    vocoder: Vocos, or Griffin-Lim when no Vocos weights were available (see `vocoder_name`).
    """

    model: nn.Module
    frontend: TextFrontend
    vocoder: nn.Module
    device: torch.device

    @property
    def vocoder_name(self) -> str:
        return getattr(self.vocoder, "vocoder_name", type(self.vocoder).__name__)

    @property
    def vocoder_is_fallback(self) -> bool:
        return bool(getattr(self.vocoder, "is_fallback", False))


@dataclass
class SpokenText:
    index: int  # position in the input list
    audio: np.ndarray  # float32 samples at 44.1 kHz (empty if the text had nothing to speak)
    encoded: EncodedText  # symbols used, and characters that could not be represented


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_voice(
    checkpoint: str | os.PathLike,
    *,
    vocoder: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    language: str | None = None,
) -> TTSVoice:
    """Load a checkpoint with its sidecar front end, plus the best available vocoder.

    Checkpoints without a sidecar (upstream's `checkpoint_0.pt`) get a front end chosen for `language`
    (default English, the closest to what the published model was trained on), with a warning.
    """
    device = torch.device(device) if device else default_device()
    model, sidecar = load_model(checkpoint, device=device)
    if sidecar and "frontend" in sidecar:
        frontend = frontend_from_dict(sidecar["frontend"])
    else:
        frontend = select_frontend(language or "eng")
        logger.warning("%s has no front-end sidecar; encoding text with %s", checkpoint, frontend.to_dict())
    if frontend.n_vocab != model.config.n_vocab:
        raise ValueError(
            f"{checkpoint}: front end has {frontend.n_vocab} symbols but the model embeds {model.config.n_vocab}"
        )
    return TTSVoice(model=model, frontend=frontend, vocoder=load_vocoder(vocoder, device=device), device=device)


def load_reference(path: str | os.PathLike) -> np.ndarray:
    """A voice reference recording as jobs and demos use it: 44.1 kHz mono, silence trimmed, at most
    MAX_REFERENCE_SECONDS (a longer one adds compute, not voice). Raises preprocess_audio.AudioError."""
    samples = load_audio(path, SAMPLE_RATE, trim_silence=True)
    return samples[: int(MAX_REFERENCE_SECONDS * SAMPLE_RATE)]


def reference_mel(reference, device: torch.device) -> torch.Tensor | None:
    """Voice reference -> log-mel (1, 128, T) on `device`.

    reference: a path to any audio file (decoded and resampled to 44.1 kHz), a 1-D array/tensor of
    44.1 kHz samples, or None (no reference: the model's learned average voice, `fake_speaker`).
    """
    if reference is None:
        return None
    if isinstance(reference, (str, os.PathLike)):
        samples = torch.from_numpy(load_audio(reference, SAMPLE_RATE))
    else:
        samples = torch.as_tensor(np.asarray(reference, dtype=np.float32))
        if samples.ndim != 1:
            raise ValueError(f"a reference array must be 1-D 44.1 kHz samples, got shape {tuple(samples.shape)}")
    return mel_spectrogram(samples.to(device)).unsqueeze(0)


def _pad_ids(batch: list[EncodedText], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(e.ids) for e in batch], device=device)
    ids = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long, device=device)
    for row, e in enumerate(batch):
        ids[row, : len(e.ids)] = torch.tensor(e.ids, device=device)
    return ids, lengths


@torch.inference_mode()
def vocode(vocoder: nn.Module, mel: torch.Tensor, mel_lengths: torch.Tensor) -> list[np.ndarray]:
    """Batched vocoding; frames past each item's length are set to silence so they cannot ring into it."""
    silence = silence_log_mel().to(mel.device).view(1, -1, 1)  # (1, n_mels, 1)
    frames = torch.arange(mel.shape[-1], device=mel.device)
    padded = torch.where(frames[None, None, :] < mel_lengths[:, None, None], mel, silence.expand_as(mel))
    audio = vocoder(padded).float().clamp(-1.0, 1.0).cpu().numpy()
    return [audio[i, : int(n) * MEL.hop_length].copy() for i, n in enumerate(mel_lengths.tolist())]


def default_batch_size(device: torch.device | str) -> int:
    """Texts per synthesis batch: 16 on a GPU, which batching keeps busy; 1 on a CPU, where batches only
    cost. Measured on 2 cores: random v1.1 weights, 8 verses, 2.38 s of audio per second at 1, 1.90 at 2,
    1.60 at 4; the demo's trained tiny voice, 24 verses, 14.5 s at 1, 14.9 s at 4, 23.3 s at 16. (Padding
    is not the cause: sorted by symbol count, 200 verses pad by 6%.)"""
    return 16 if torch.device(device).type == "cuda" else 1


def synthesize_iter(
    model: TTSVoice,
    texts: Sequence[str],
    reference=None,
    *,
    steps: int = SAMPLING.steps,
    cfg_scale: float = SAMPLING.cfg_scale,
    temperature: float = SAMPLING.temperature,
    length_scale: float = SAMPLING.length_scale,
    solver: str = SAMPLING.solver,
    batch_size: int | None = None,
    seed: int | None = None,
    precision: str = "auto",
) -> Iterator[SpokenText]:
    """Like `synthesize`, but yields a SpokenText per text as its batch finishes (longest texts first)."""
    voice = model
    device = voice.device
    batch_size = batch_size or default_batch_size(device)
    encoded = voice.frontend.encode_batch(list(texts))
    unknown, _ = summarize(encoded)
    if unknown:
        logger.warning("Characters not representable by the %s front end were dropped: %s",
                       voice.frontend.kind, describe_counts(unknown))
    ref = reference_mel(reference, device)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids), reverse=True)
    empty = [i for i in order if not encoded[i].symbols]
    if empty:
        logger.warning("%d text(s) have nothing to speak; returning empty audio for them: %s", len(empty), empty)
        for i in empty:
            yield SpokenText(i, np.zeros(0, dtype=np.float32), encoded[i])
    order = [i for i in order if encoded[i].symbols]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, lengths = _pad_ids([encoded[i] for i in chunk], device)
        # One generator per text, seeded by its input position: a text's audio does not depend on batching.
        generators = [torch.Generator().manual_seed(seed + i) for i in chunk] if seed is not None else None
        mel, mel_lengths = synthesize_mel(
            voice.model, ids, lengths, ref, steps=steps, cfg_scale=cfg_scale, temperature=temperature,
            length_scale=length_scale, solver=solver, generator=generators, precision=precision,
        )
        for i, audio in zip(chunk, vocode(voice.vocoder, mel, mel_lengths)):
            yield SpokenText(i, audio, encoded[i])


def synthesize(
    model: TTSVoice | str | os.PathLike,
    texts: Sequence[str],
    reference=None,
    *,
    steps: int = SAMPLING.steps,
    cfg_scale: float = SAMPLING.cfg_scale,
    temperature: float = SAMPLING.temperature,
    length_scale: float = SAMPLING.length_scale,
    solver: str = SAMPLING.solver,
    batch_size: int | None = None,
    seed: int | None = None,
    precision: str = "auto",
) -> list[np.ndarray]:
    """Speak `texts` with a voice; returns one float32 numpy array at 44.1 kHz per text, in input order.

    model: a TTSVoice (see `load_voice`) or a checkpoint path. reference: audio path, 1-D 44.1 kHz samples,
    or None for the model's learned average voice. steps/solver: fixed-step "euler"/"midpoint" (fast) or
    "dopri5" (adaptive, for comparison). cfg_scale: guidance strength. temperature: noise scale (0 =
    deterministic). length_scale: > 1 speaks slower. seed: reproducible noise per text, independent of
    batching. precision: "auto" uses bf16 on GPUs that support it, else fp32. batch_size: texts per
    batch (default: `default_batch_size`). Texts with nothing to speak give empty arrays (logged).
    """
    voice = load_voice(model) if isinstance(model, (str, os.PathLike)) else model
    out: list[np.ndarray | None] = [None] * len(texts)
    for spoken in synthesize_iter(
        voice, texts, reference, steps=steps, cfg_scale=cfg_scale, temperature=temperature,
        length_scale=length_scale, solver=solver, batch_size=batch_size, seed=seed, precision=precision,
    ):
        out[spoken.index] = spoken.audio
    return out  # type: ignore[return-value]
