"""Batched greedy CTC transcription.

Clips are sorted by length and batched with attention masks, so a batch pads little; recordings longer
than a chunk (whole chapters) are cut into overlapping windows whose edges fall on logit frames, each
window's overlap is thrown away and the frame-wise best ids are stitched back together before decoding.
Greedy decoding only needs the best id of each frame, so only those leave the device.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertForCTC

from asr.audio import SAMPLE_RATE, AudioInput, as_waveform, log_mel
from asr.model import install_padding_guard, logit_lengths, pick_device, supports_bf16
from asr.postcorrect import UNK_MARK, PostCorrector
from asr.vocab import Vocabulary

logger = logging.getLogger(__name__)



@dataclass
class DecodeOptions:
    """How outputs are written and long recordings cut (manifest ``inference.*``)."""

    suppress_unk: bool = True  # write `unk_replacement` for [UNK]; False writes "[UNK]" itself
    unk_replacement: str = ""
    chunk_length_s: float = 30.0  # longer inputs are transcribed in overlapping windows
    stride_length_s: float | None = None  # overlap on each side; None = chunk_length_s / 6

    def render_unk(self, text: str, unk_token: str = "[UNK]") -> str:
        """Write the [UNK] marks of a decoded text as asked."""
        if UNK_MARK not in text:
            return text
        replacement = self.unk_replacement if self.suppress_unk else unk_token
        return " ".join(text.replace(UNK_MARK, replacement).split())


@dataclass
class BatchStats:
    """Work done by the last call, for benchmarks and logs."""

    items: int = 0
    batches: int = 0
    real_frames: int = 0
    padded_frames: int = 0

    @property
    def padding_overhead(self) -> float:
        """Padded frames computed per real frame (0.0 = no waste)."""
        return self.padded_frames / self.real_frames - 1.0 if self.real_frames else 0.0


@dataclass
class _Window:
    """A piece of one input: which logit frames of it to keep."""

    owner: int
    features: np.ndarray  # (T, 160)
    skip: int = 0  # logit frames of left context to drop
    keep: int | None = None  # logit frames to keep after that; None = to the end


@dataclass
class Transcriber:
    """A loaded CTC model ready to transcribe lists of clips."""

    model: Wav2Vec2BertForCTC
    feature_extractor: SeamlessM4TFeatureExtractor
    vocabulary: Vocabulary
    device: torch.device | None = None
    post_corrector: PostCorrector | None = None
    options: DecodeOptions = field(default_factory=DecodeOptions)
    dtype: torch.dtype | None = None
    feature_workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))  # decoding threads
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self.device = pick_device(self.device)
        if self.dtype is None:
            self.dtype = torch.bfloat16 if supports_bf16(self.device) else torch.float32
        install_padding_guard(self.model)

    # -- features ---------------------------------------------------------------------------------
    def features(self, wave: np.ndarray) -> np.ndarray:
        """Log-mel features (T, 160) of one 16 kHz clip, normalised over that clip alone."""
        min_samples = int(self.model.config.inputs_to_logits_ratio)
        if len(wave) < min_samples:  # shorter than one output frame: pad with silence rather than fail
            wave = np.pad(wave, (0, min_samples - len(wave)))
        return log_mel(self.feature_extractor, wave)

    # -- model ------------------------------------------------------------------------------------
    def best_ids(self, features: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
        """Frame-wise best token ids of each feature matrix (valid frames only), in input order."""
        self.stats = BatchStats(items=len(features))
        results: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(features)
        order = sorted(range(len(features)), key=lambda i: -len(features[i]))  # longest first: OOM shows early
        was_training = self.model.training
        self.model.eval()
        self.model.to(device=self.device, dtype=self.dtype)
        try:
            for start in range(0, len(order), max(1, batch_size)):
                batch = order[start : start + batch_size]
                for i, ids in zip(batch, self._run_batch([features[i] for i in batch])):
                    results[i] = ids
        finally:
            self.model.train(was_training)
        return results

    @torch.inference_mode()
    def _run_batch(self, feats: list[np.ndarray]) -> list[np.ndarray]:
        longest = max(len(f) for f in feats)
        dim = feats[0].shape[1]
        x = np.zeros((len(feats), max(longest, 1), dim), dtype=np.float32)
        mask = np.zeros((len(feats), max(longest, 1)), dtype=np.int64)
        for row, f in enumerate(feats):
            x[row, : len(f)] = f
            mask[row, : len(f)] = 1
        self.stats.batches += 1
        self.stats.real_frames += int(mask.sum())
        self.stats.padded_frames += int(mask.size)
        inputs = torch.from_numpy(x).to(self.device, self.dtype)
        attention = torch.from_numpy(mask).to(self.device)
        logits = self.model(input_features=inputs, attention_mask=attention).logits  # (B, T', V)
        lengths = logit_lengths(self.model, attention.sum(-1)).tolist()
        best = logits.argmax(-1).cpu().numpy()
        return [best[row, : max(0, min(n, best.shape[1]))] for row, n in enumerate(lengths)]

    # -- text -------------------------------------------------------------------------------------
    def decode(self, ids: np.ndarray) -> str:
        """Greedy CTC text of one clip's best ids, post-corrected and with [UNK] rendered."""
        text = self.vocabulary.decode_ctc(ids, unk_replacement=UNK_MARK)
        if self.post_corrector is not None and self.post_corrector.use:
            text = self.post_corrector.apply(text)
        return self.options.render_unk(text, self.vocabulary.unk_token)

    def raw_texts(self, features: Sequence[np.ndarray], batch_size: int = 16) -> list[str]:
        """Texts before post-correction and [UNK] rendering (what the post-corrector learns from)."""
        return [self.vocabulary.decode_ctc(ids, unk_replacement=UNK_MARK) for ids in self.best_ids(features, batch_size)]

    def transcribe_features(self, features: Sequence[np.ndarray], batch_size: int = 16) -> list[str]:
        """Final texts of clips whose features are already computed (no chunking: verse-length clips)."""
        return [self.decode(ids) for ids in self.best_ids(features, batch_size)]

    def transcribe(
        self,
        audio: Sequence[AudioInput],
        batch_size: int = 16,
        on_error: Callable[[int, Exception], None] | None = None,
    ) -> list[str]:
        """Transcribe paths or 16 kHz arrays; results in input order.

        A file that cannot be decoded raises, unless ``on_error(index, error)`` is given: then it is
        reported there and its transcript is "" (one bad recording does not cost the whole batch).
        """
        failures: dict[int, Exception] = {}

        def prepare(owner: int) -> list[_Window]:
            try:
                return self._windows(owner, as_waveform(audio[owner]))
            except Exception as exc:  # decoder errors of every kind: one bad file, reported per item
                if on_error is None:
                    raise
                failures[owner] = exc
                return []

        windows: list[_Window] = []
        if len(audio) > 1 and self.feature_workers > 1:
            # decoding and log-mel features are CPU work that releases the GIL: overlap them, or they
            # become the bottleneck once the model runs batched on a GPU
            with ThreadPoolExecutor(max_workers=self.feature_workers) as pool:
                for pieces in pool.map(prepare, range(len(audio))):
                    windows.extend(pieces)
        else:
            for owner in range(len(audio)):
                windows.extend(prepare(owner))
        for owner, exc in sorted(failures.items()):
            on_error(owner, exc)
        ids = self.best_ids([w.features for w in windows], batch_size)
        pieces: list[list[np.ndarray]] = [[] for _ in audio]
        for window, best in zip(windows, ids):
            end = None if window.keep is None else window.skip + window.keep
            pieces[window.owner].append(best[window.skip : end])
        return [self.decode(np.concatenate(p) if p else np.zeros(0, dtype=np.int64)) for p in pieces]

    def _windows(self, owner: int, wave: np.ndarray) -> list[_Window]:
        """One window for a short clip; overlapping frame-aligned windows for a long one."""
        ratio = int(self.model.config.inputs_to_logits_ratio)  # samples per logit frame (640 = 40 ms)
        chunk = max(ratio, int(round(self.options.chunk_length_s * SAMPLE_RATE / ratio)) * ratio)
        stride_s = self.options.stride_length_s
        stride_s = self.options.chunk_length_s / 6 if stride_s is None else stride_s
        stride = int(round(stride_s * SAMPLE_RATE / ratio)) * ratio
        if len(wave) <= chunk:
            return [_Window(owner, self.features(wave))]
        step = chunk - 2 * stride
        if step <= 0:
            raise ValueError(f"stride {stride_s}s on each side leaves nothing of a {self.options.chunk_length_s}s chunk")
        windows = []
        for start in range(0, len(wave), step):
            left = max(0, start - stride)
            last = start + step >= len(wave)
            right = len(wave) if last else min(len(wave), start + step + stride)
            keep = None if last else step // ratio
            windows.append(_Window(owner, self.features(wave[left:right]), (start - left) // ratio, keep))
            if last:
                break
        return windows
