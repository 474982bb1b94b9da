"""Training data: examples in, prepared clips (normalised text + log-mel features) out, splits, batches.

Features are computed once and kept in memory as float16 (about 16 kB per second of audio, so 20 h of
verses take about 1.2 GB): every epoch then only pads and stacks. Items that cannot be used are
counted, named and skipped, never silently dropped.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from transformers import SeamlessM4TFeatureExtractor

from asr.audio import SAMPLE_RATE, as_waveform, log_mel
from asr.text import TextNormalization, normalize_text
from asr.vocab import Vocabulary
from skips import EMPTY_TEXT, TOO_LONG, TOO_SHORT, UNDECODABLE_AUDIO, SkipReport, SkippedItem

logger = logging.getLogger(__name__)


@dataclass
class AsrExample:
    """One recorded verse: audio (a path, or a 16 kHz mono float32 array), its transcript and an id."""

    audio: Union[str, Path, np.ndarray]
    text: str
    id: str


@dataclass
class PreparedClip:
    """An example ready for training: normalised text and its features."""

    id: str
    text: str  # normalised transcript
    features: np.ndarray  # (T, 160) float16 log-mel frames at 20 ms
    duration: float  # seconds


def prepare_clips(
    examples: Sequence[AsrExample],
    normalization: TextNormalization,
    feature_extractor: SeamlessM4TFeatureExtractor,
    *,
    max_duration_seconds: float | None,
    workers: int = 4,
) -> tuple[list[PreparedClip], SkipReport]:
    """Decode, normalise and featurise ``examples`` (in parallel threads: decoding and FFTs release the GIL)."""
    report = SkipReport(noun="utterance")

    def prepare(example: AsrExample) -> PreparedClip | SkippedItem:
        clip_id = str(example.id)
        text = normalize_text(example.text, normalization)
        if not text:
            return SkippedItem.of(clip_id, EMPTY_TEXT, "nothing left once normalised")
        try:
            wave = as_waveform(example.audio)
        except Exception as exc:  # any decoder failure is one bad file, not a failed job
            return SkippedItem.of(clip_id, UNDECODABLE_AUDIO, f"{type(exc).__name__}: {exc}")
        duration = len(wave) / SAMPLE_RATE
        if duration < 0.1:
            return SkippedItem.of(clip_id, UNDECODABLE_AUDIO, f"only {duration:.3f} s of audio")
        if max_duration_seconds and duration > max_duration_seconds:
            seconds = round(duration, 2)
            return SkippedItem.of(clip_id, TOO_LONG, f"{seconds} s > max_duration_seconds {max_duration_seconds:g} s",
                                  seconds=seconds)
        feats = log_mel(feature_extractor, wave)
        return PreparedClip(clip_id, text, feats.astype(np.float16), duration)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(prepare, examples))
    clips: list[PreparedClip] = []
    for outcome in outcomes:
        if isinstance(outcome, PreparedClip):
            clips.append(outcome)
        else:
            report.append(outcome)
    too_long = [item for item in report if item.reason == TOO_LONG]
    if too_long:
        logger.warning(
            "%d clip(s) longer than %ss left out of training: %s",
            len(too_long),
            max_duration_seconds,
            ", ".join(f"{item.id} ({item.facts['seconds']}s)" for item in too_long[:20]),
        )
    for item in [item for item in report if item.reason == UNDECODABLE_AUDIO][:20]:
        logger.warning("Unreadable audio for %s: %s", item.id, item.detail)
    return clips, report


def ctc_alignable(labels: Sequence[int], output_frames: int) -> bool:
    """CTC needs a frame per label plus a blank between each pair of equal neighbours."""
    repeats = sum(1 for a, b in zip(labels, labels[1:]) if a == b)
    return len(labels) + repeats <= output_frames


def drop_unalignable(
    clips: list[PreparedClip],
    vocabulary: Vocabulary,
    output_frames: Callable[[int], int],
    report: SkipReport,
) -> list[PreparedClip]:
    """Leave out clips whose transcript cannot fit their audio (usually a wrong text or a cut recording)."""
    kept, dropped = [], []
    for clip in clips:
        labels, frames = vocabulary.encode(clip.text), output_frames(len(clip.features))
        if ctc_alignable(labels, frames):
            kept.append(clip)
        else:
            report.add(clip.id, TOO_SHORT, f"{len(labels)} characters for {frames} output frames")
            dropped.append(clip.id)
    if dropped:
        logger.warning(
            "%d clip(s) have more characters than their audio has output frames; left out: %s",
            len(dropped),
            ", ".join(dropped[:20]),
        )
    return kept


def _split_rank(seed: int, clip_id: str) -> str:
    return hashlib.sha1(f"{seed}:{clip_id}".encode("utf-8")).hexdigest()


def split_clips(
    clips: Sequence[PreparedClip], val_split: float, test_split: float, seed: int
) -> tuple[list[PreparedClip], list[PreparedClip], list[PreparedClip]]:
    """Train/validation/test by a hash of each id, so a verse keeps its split as a project grows.

    Tiny sets: validation gets at least one clip from 3 clips on, test from 5 on (when asked for), and
    training always keeps at least one; an empty split is logged.
    """
    ordered = sorted(clips, key=lambda c: _split_rank(seed, c.id))
    n = len(ordered)
    n_test = int(round(n * test_split)) if test_split > 0 else 0
    n_val = int(round(n * val_split)) if val_split > 0 else 0
    if test_split > 0 and n_test == 0 and n >= 5:
        n_test = 1
    if val_split > 0 and n_val == 0 and n >= 3:
        n_val = 1
    while n_test + n_val > n - 1 and (n_test or n_val):
        if n_test:
            n_test -= 1
        else:
            n_val -= 1
    test, val, train = ordered[:n_test], ordered[n_test : n_test + n_val], ordered[n_test + n_val :]
    logger.info("Split %d clip(s): %d train, %d validation, %d test", n, len(train), len(val), len(test))
    if not val:
        logger.warning("Validation split is empty: no WER/CER per epoch; the last epoch's model is kept")
    if not test:
        logger.warning("Test split is empty: no test results")
    return train, val, test


@dataclass
class CtcCollator:
    """Pads a list of table rows (``idx`` into ``clips``) into a model batch."""

    clips: Sequence[PreparedClip]
    labels: Sequence[Sequence[int]]

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        indices = [int(r["idx"]) for r in rows]
        feats = [self.clips[i].features for i in indices]
        longest = max(len(f) for f in feats)
        x = np.zeros((len(feats), longest, feats[0].shape[1]), dtype=np.float32)
        mask = np.zeros((len(feats), longest), dtype=np.int64)
        longest_label = max(1, max(len(self.labels[i]) for i in indices))
        y = np.full((len(feats), longest_label), -100, dtype=np.int64)  # -100: ignored by the CTC loss
        for row, i in enumerate(indices):
            x[row, : len(feats[row])] = feats[row]
            mask[row, : len(feats[row])] = 1
            y[row, : len(self.labels[i])] = self.labels[i]
        return {
            "input_features": torch.from_numpy(x),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(y),
        }
