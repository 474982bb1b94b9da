"""Training data: recordings + texts -> cached log-mels and symbol ids -> length-bucketed padded batches.

Mels are cached under ``cache_dir/mels`` by a hash of the audio bytes and the front-end settings, and symbol
ids under ``cache_dir/text`` by a hash of the text front end and the text, so a rerun (or a resumed job)
recomputes nothing. A clip that cannot be used is logged, counted and skipped, never fatal:
undecodable audio, a text with nothing to speak, a clip over the hard length cap, or a text with more
symbols than its audio has frames (no monotonic alignment exists). A text whose numbers or abbreviations
the front end will not say as the recording does ("12" left as digits, "Mt.") is kept, and counted and
listed in the log: the recording is still the reader's voice, but the model learns that verse's words less well.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from preprocess_audio import AudioError, load_audio
from skips import EMPTY_TEXT, TOO_LONG, TOO_SHORT, UNDECODABLE_AUDIO, SkipReport
from StableTTS.mel import MEL, mel_spectrogram
from StableTTS.text import TextFrontend, describe_counts

from .config import skip_summary, too_short_advice

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the cached mel or id format changes
FRAMES_PER_SECOND = MEL.sample_rate / MEL.hop_length  # ≈ 86.1


@dataclass(frozen=True)
class Utterance:
    """One recording and what is said in it (plain text, no markup)."""

    id: str  # unique and stable (a cell id, a file name): decides the validation split
    text: str
    audio_path: Path  # any format preprocess_audio decodes
    source: str = ""  # where the audio came from (a project path); recorded for the default voice


@dataclass(frozen=True)
class Clip:
    """An utterance ready for training."""

    id: str
    text: str
    ids: tuple[int, ...]  # blank-interspersed symbol ids
    mel_path: Path  # cached (n_mels, frames) float32 .npy
    frames: int
    source: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / FRAMES_PER_SECOND


@dataclass
class PreparedData:
    clips: list[Clip] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=lambda: SkipReport(noun="clip"))
    unknown: Counter = field(default_factory=Counter)  # characters the front end could not represent
    approximated: Counter = field(default_factory=Counter)
    unspeakable: list[tuple[str, str]] = field(default_factory=list)  # (clip id, "digits 12, abbreviation Mt.")

    @property
    def total(self) -> int:
        """Clips offered: those kept and those skipped."""
        return len(self.clips) + len(self.skipped)

    def skip_summary(self) -> str:
        """Counts by reason, and advice when many of all the clips were too short for their text."""
        return skip_summary(self.skipped, self.total)


def prepare_clips(
    utterances: Sequence[Utterance], frontend: TextFrontend, cache_dir: str | Path, *,
    max_seconds: float = 40.0, trim_silence: bool = True, progress: Callable[[str], None] | None = None,
) -> PreparedData:
    """Encode texts and compute (or reuse) log-mels; skipped clips are counted with their reasons."""
    cache = Path(cache_dir)
    data = PreparedData()
    encoded = encode_texts([u.text for u in utterances], frontend, cache / "text")
    unspeakable = frontend.unspeakable([u.text for u in utterances])
    max_frames = int(max_seconds * FRAMES_PER_SECOND)
    for number, (utt, enc, unsaid) in enumerate(zip(utterances, encoded, unspeakable), 1):
        if progress is not None:
            progress(f"preparing clips {number}/{len(utterances)}")
        data.unknown.update(enc["unknown"])
        data.approximated.update(enc["approximated"])
        if len(enc["ids"]) <= 1:  # only the blank: nothing the front end could speak
            data.skipped.add(utt.id, EMPTY_TEXT, repr(utt.text[:60]))
            continue
        try:
            mel_path, frames = cached_mel(utt.audio_path, cache / "mels", trim_silence=trim_silence)
        except AudioError as exc:
            data.skipped.add(utt.id, UNDECODABLE_AUDIO, exc.reason)
            continue
        if frames > max_frames:
            data.skipped.add(utt.id, TOO_LONG, f"{frames / FRAMES_PER_SECOND:.1f} s > {max_seconds:g} s")
        elif frames < len(enc["ids"]):
            data.skipped.add(utt.id, TOO_SHORT, f"{frames} frames for {len(enc['ids'])} symbols",
                             symbols=len(enc["ids"]), frames=frames, frontend=frontend.describe(),
                             frontend_kind=frontend.kind)
        else:
            data.clips.append(Clip(utt.id, utt.text, tuple(enc["ids"]), mel_path, frames, utt.source))
            if unsaid:
                data.unspeakable.append((utt.id, ", ".join(unsaid)))
    log_prepared(data)
    return data


def log_prepared(data: PreparedData) -> None:
    seconds = sum(c.seconds for c in data.clips)
    logger.info("Prepared %d clip(s) (%.1f min of audio)", len(data.clips), seconds / 60)
    if data.skipped:
        data.skipped.log()
        advice = too_short_advice(data.skipped, data.total)
        if advice:
            logger.warning("%s", advice)
    if data.unknown:
        logger.warning("%d character(s) in the texts cannot be represented by the text front end and were "
                       "dropped: %s", sum(data.unknown.values()), describe_counts(data.unknown))
    if data.approximated:
        logger.info("Characters approximated by the front end: %s", describe_counts(data.approximated))
    if data.unspeakable:
        logger.warning("%d training text(s) have numbers or abbreviations the text front end does not write as "
                       "the recordings say them; trained as written: %s", len(data.unspeakable),
                       "; ".join(f"{clip_id} ({what})" for clip_id, what in data.unspeakable[:20])
                       + ("; …" if len(data.unspeakable) > 20 else ""))


def encode_texts(texts: Sequence[str], frontend: TextFrontend, cache_dir: Path) -> list[dict]:
    """``{"ids", "unknown", "approximated"}`` per text, from the cache where possible (one front-end call
    for all the others, which matters for espeak)."""
    key = _digest(json.dumps(frontend.to_dict(), sort_keys=True), str(CACHE_VERSION))
    path = cache_dir / f"{key}.json"
    cached: dict[str, dict] = {}
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("Ignoring unreadable text cache %s (%s)", path, exc)
    keys = [_digest(t) for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in cached}.items())
    if missing:
        for (k, _), enc in zip(missing, frontend.encode_batch([t for _, t in missing])):
            cached[k] = {"ids": enc.ids, "unknown": dict(enc.unknown), "approximated": dict(enc.approximated)}
        _write_atomic(path, json.dumps(cached, ensure_ascii=False).encode("utf-8"))
    return [cached[k] for k in keys]


def cached_mel(audio_path: str | Path, cache_dir: Path, *, trim_silence: bool = True) -> tuple[Path, int]:
    """Path of the (n_mels, frames) float32 log-mel of a recording, and its frame count. Raises AudioError."""
    audio_path = Path(audio_path)
    try:
        content = audio_path.read_bytes()
    except OSError as exc:
        raise AudioError(audio_path, f"cannot be read ({exc})") from exc
    key = _digest(content, repr(MEL), f"trim={trim_silence}", str(CACHE_VERSION))
    target = cache_dir / key[:2] / f"{key}.npy"
    if target.is_file():
        try:
            return target, int(np.load(target, mmap_mode="r").shape[1])
        except (OSError, ValueError, IndexError) as exc:
            logger.warning("Recomputing unreadable cached mel %s (%s)", target, exc)
    samples = load_audio(audio_path, MEL.sample_rate, trim_silence=trim_silence)
    if samples.shape[0] <= MEL.n_fft:
        raise AudioError(audio_path, f"is too short ({samples.shape[0] / MEL.sample_rate * 1000:.0f} ms)")
    mel = mel_spectrogram(torch.from_numpy(samples)).numpy().astype(np.float32)  # (n_mels, frames)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mel-", suffix=".npy", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, mel, allow_pickle=False)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target, int(mel.shape[1])


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _write_atomic(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# -- split and batches ---------------------------------------------------------------------------------
def split_clips(clips: Sequence[Clip], val_split: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Hold out ``val_split`` of the clips (at least one when there are two or more, never all of them).

    The split depends only on the clip ids and the seed, so a resumed run validates on the same clips.
    """
    ranked = sorted(clips, key=lambda c: _digest(str(seed), c.id))
    n_val = 0 if len(clips) < 2 or val_split <= 0 else min(len(clips) - 1, max(1, round(len(clips) * val_split)))
    val_ids = {c.id for c in ranked[:n_val]}
    return [c for c in clips if c.id not in val_ids], [c for c in clips if c.id in val_ids]


def length_batches(frames: Sequence[int], batch_frames: int, batch_size: int,
                   generator: torch.Generator | None = None) -> list[list[int]]:
    """Group clip indices into batches of similar length whose padded size stays within ``batch_frames``.

    With a generator, clips of similar length are shuffled among themselves and the batch order is
    shuffled; a clip longer than the budget gets a batch of its own (nothing is ever dropped).
    """
    n = len(frames)
    if n == 0:
        return []
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    order.sort(key=lambda i: frames[i] // 32)  # stable: shuffled within buckets of ~0.4 s
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, frames[i])
        if current and (len(current) >= batch_size or longest_if_added * (len(current) + 1) > batch_frames):
            batches.append(current)
            current, longest_if_added = [], frames[i]
        current.append(i)
        longest = longest_if_added
    batches.append(current)
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T_x) long, blank-interspersed, zero-padded
    id_lengths: torch.Tensor  # (B,)
    mels: torch.Tensor  # (B, n_mels, T_y) float32, zero-padded
    mel_lengths: torch.Tensor  # (B,)

    def to(self, device: torch.device) -> "Batch":
        nb = device.type == "cuda"
        return Batch(*(t.to(device, non_blocking=nb) for t in self._tensors()))

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True), so the copies to the GPU can overlap."""
        return Batch(*(t.pin_memory() for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.ids, self.id_lengths, self.mels, self.mel_lengths

    def __len__(self) -> int:
        return self.ids.shape[0]


class ClipDataset(torch.utils.data.Dataset):
    """Clip index -> (ids, mel) tensors, mels read from the cache."""

    def __init__(self, clips: Sequence[Clip]):
        self.clips = list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clip = self.clips[index]
        mel = torch.from_numpy(np.load(clip.mel_path, allow_pickle=False))  # (n_mels, frames)
        return torch.tensor(clip.ids, dtype=torch.long), mel


def collate(items: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    items = list(items)
    id_lengths = torch.tensor([ids.shape[0] for ids, _ in items])
    mel_lengths = torch.tensor([mel.shape[1] for _, mel in items])
    ids = torch.zeros(len(items), int(id_lengths.max()), dtype=torch.long)
    mels = torch.zeros(len(items), items[0][1].shape[0], int(mel_lengths.max()))
    for row, (i, m) in enumerate(items):
        ids[row, : i.shape[0]] = i
        mels[row, :, : m.shape[1]] = m
    return Batch(ids, id_lengths, mels, mel_lengths)
