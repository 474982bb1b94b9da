"""Audio in and out: decode what translators record, clean it, and encode what the editor can play.

Decoding goes through PyAV (its wheels bundle FFmpeg, so no system ffmpeg is needed) for every format the
editor accepts (webm/opus, ogg, mp3, m4a/aac, wav) plus flac. Samples come back as float32 at the rate the
caller asks for (soxr resampling). Encoding writes wav/flac with soundfile and webm/ogg (Opus at 48 kHz, as the
editor's MediaRecorder does), mp3 and m4a with PyAV, and returns the metadata an attachment needs.

Every way a file can be unusable -- missing, empty, a Git LFS pointer instead of audio, corrupt, truncated,
silent, absurdly long -- raises one error type, ``AudioError``, whose message names the file.

CLI::

    python preprocess_audio.py IN OUT [--sample-rate N] [--trim-silence] [--loudness LUFS]
"""

from __future__ import annotations

import logging
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import click
import numpy as np
import pyloudnorm
import soundfile
import soxr

from git_lfs import POINTER_MAX_BYTES, is_lfs_pointer

logger = logging.getLogger(__name__)

#: Longest input accepted by default; a Bible verse is seconds long, a whole chapter a few minutes.
DEFAULT_MAX_SECONDS = 30 * 60.0

MIME_TYPES = {
    "webm": "audio/webm", "ogg": "audio/ogg", "mp3": "audio/mpeg",
    "m4a": "audio/mp4", "wav": "audio/wav", "flac": "audio/flac",
}
ENCODE_FORMATS = tuple(MIME_TYPES)

# FFmpeg container names -> our format names.
_CONTAINER_FORMATS = {
    "wav": "wav", "flac": "flac", "ogg": "ogg", "mp3": "mp3",
    "matroska,webm": "webm", "mov,mp4,m4a,3gp,3g2,mj2": "m4a",
}
# Containers whose declared duration is exact (not guessed from a bitrate), so a shortfall means truncation.
_EXACT_DURATION_CONTAINERS = {"flac", "ogg", "matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2"}


@dataclass(frozen=True)
class _Encoder:
    container: str
    codec: str
    rates: tuple[int, ...]      # rates the codec accepts; () = any
    bitrate: int                # bits per second; 0 = lossless/PCM


_PYAV_ENCODERS = {
    # Opus only runs at 48 kHz here: it is what the editor records, and what browsers play best.
    "webm": _Encoder("webm", "libopus", (48000,), 96_000),
    "ogg": _Encoder("ogg", "libopus", (48000,), 96_000),
    "mp3": _Encoder("mp3", "libmp3lame", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000), 128_000),
    "m4a": _Encoder("ipod", "aac", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000),
                    128_000),
}


class AudioError(Exception):
    """A file that cannot be used as audio. ``path`` names it; the message says why, for a person."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file is: what the editor's attachment ``metadata`` records, and a little more."""

    path: Path
    format: str            # wav | flac | ogg | mp3 | webm | m4a (or FFmpeg's name for anything else)
    codec: str
    sample_rate: int
    channels: int
    duration_sec: float
    size_bytes: int
    bitrate_kbps: int

    @property
    def mime_type(self) -> str:
        return MIME_TYPES.get(self.format, "application/octet-stream")

    def attachment_metadata(self) -> dict:
        """The ``metadata`` object of a Codex audio attachment, keys in the editor's order."""
        return {
            "mimeType": self.mime_type,
            "sizeBytes": self.size_bytes,
            "sampleRate": self.sample_rate,
            "channels": self.channels,
            "durationSec": round(self.duration_sec, 3),
            "bitrateKbps": self.bitrate_kbps,
        }


# ---------------------------------------------------------------------------------------------------------------
# Decoding


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None,
    *,
    mono: bool = True,
    trim_silence: bool = False,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    top_db: float = 40.0,
) -> np.ndarray:
    """Decode ``path`` to float32 samples at ``sample_rate`` (None keeps the file's own rate).

    Returns shape ``(n,)`` when ``mono`` (channels averaged), else ``(channels, n)``. With ``trim_silence``
    leading and trailing silence quieter than ``top_db`` below the peak is cut. Raises ``AudioError``.
    """
    samples, rate = decode_audio(path, max_seconds=max_seconds)
    if mono:
        samples = samples.mean(axis=0, keepdims=True)
    if sample_rate and sample_rate != rate:
        samples = resample(samples, rate, sample_rate)
    if trim_silence:
        samples = _trim(samples, sample_rate or rate, top_db=top_db)
        if samples.shape[-1] == 0:
            raise AudioError(path, "contains only silence")
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    return samples[0] if mono else samples


def decode_audio(path: str | os.PathLike, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Decode ``path`` at its own rate: ``(samples (channels, n) float32, sample_rate)``. Raises ``AudioError``."""
    chunks: list[np.ndarray] = []
    rate = 0
    for chunk, rate in _iter_decoded(Path(path), max_seconds):
        chunks.append(chunk)
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


def probe_audio(path: str | os.PathLike, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> AudioInfo:
    """Describe an audio file. Decodes it to count samples, so a file that probes is a file that plays."""
    path = Path(path)
    frames = 0
    rate = channels = 0
    for chunk, rate in _iter_decoded(path, max_seconds):
        frames += chunk.shape[1]
        channels = chunk.shape[0]
    with av.open(str(path)) as container:
        fmt = _format_name(container.format.name, path)
        codec = container.streams.audio[0].codec_context.name
    return _info(path, fmt, codec, rate, channels, frames / rate)


def _iter_decoded(path: Path, max_seconds: float) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(chunk (channels, n) float32, rate)`` for the whole file, raising ``AudioError`` on any defect."""
    _check_file(path)
    decoded = 0
    rate = 0
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(path, "has no audio stream")
            stream = container.streams.audio[0]
            declared = container.duration / 1e6 if container.duration else None
            if declared and declared > max_seconds:
                raise AudioError(path, f"is {declared:.0f} s long; the limit is {max_seconds:.0f} s")
            # Planar float at the file's own rate and layout; resampling is soxr's job (better quality).
            resampler = av.AudioResampler(format="fltp")
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    rate = out.sample_rate
                    chunk = out.to_ndarray()
                    decoded += chunk.shape[1]
                    if decoded > max_seconds * rate:
                        raise AudioError(path, f"is longer than the limit of {max_seconds:.0f} s")
                    yield chunk, rate
            for out in resampler.resample(None):
                decoded += out.samples
                yield out.to_ndarray(), out.sample_rate
            container_name = container.format.name
    except AudioError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise AudioError(path, f"cannot be decoded ({type(exc).__name__}: {exc})") from exc
    if decoded == 0:
        raise AudioError(path, "contains no audio samples")
    seconds = decoded / rate
    # Declared durations of these containers are exact; a clear shortfall means the file was cut off.
    if declared and container_name in _EXACT_DURATION_CONTAINERS and seconds < 0.9 * declared - 0.05:
        raise AudioError(path, f"is truncated: {seconds:.2f} s decoded of {declared:.2f} s declared")


def _check_file(path: Path) -> None:
    """Reject what FFmpeg would misreport or silently half-decode: absent, empty, LFS pointer, short WAV."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(POINTER_MAX_BYTES + 1)  # enough to tell a pointer, and the formats below
    except OSError as exc:
        raise AudioError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if size == 0:
        raise AudioError(path, "is empty")
    if is_lfs_pointer(head):
        raise AudioError(path, "is a Git LFS pointer, not audio (the recording was never fetched)")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        _check_wav_complete(path, size)
    elif head[:4] == b"OggS":
        _check_ogg_complete(path, size)


def _check_wav_complete(path: Path, size: int) -> None:
    """FFmpeg decodes a cut-off WAV without complaint; compare the data chunk's declared size with the file."""
    with path.open("rb") as fh:
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                # 0 and 0xFFFFFFFF are written by streaming recorders that never knew the length.
                if chunk_size not in (0, 0xFFFFFFFF) and offset + 8 + chunk_size > size:
                    raise AudioError(path, f"is truncated: {size - offset - 8} of {chunk_size} data bytes present")
                return
            offset += 8 + chunk_size + (chunk_size & 1)


def _check_ogg_complete(path: Path, size: int) -> None:
    """An Ogg file declares no length, so a cut one decodes as shorter audio. A finished stream's last page
    carries the end-of-stream flag (header byte 5, bit 2); a cut file's last page does not."""
    with path.open("rb") as fh:
        fh.seek(max(0, size - 65536))
        tail = fh.read()
    last = tail.rfind(b"OggS\x00")        # capture pattern + stream structure version 0
    if last < 0 or last + 5 >= len(tail) or not tail[last + 5] & 0x04:
        raise AudioError(path, "is truncated: the Ogg stream has no end-of-stream page")


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample ``(channels, n)`` or ``(n,)`` float samples with soxr (high quality)."""
    if rate_in == rate_out:
        return samples
    if samples.ndim == 1:
        return soxr.resample(samples, rate_in, rate_out, quality="HQ").astype(np.float32)
    return soxr.resample(samples.T, rate_in, rate_out, quality="HQ").T.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Cleaning


def trim_silence(
    samples: np.ndarray, sample_rate: int, *, top_db: float = 40.0, frame_ms: float = 25.0, pad_ms: float = 100.0,
) -> np.ndarray:
    """Cut leading and trailing audio quieter than ``top_db`` below the loudest frame, keeping ``pad_ms``.

    Accepts ``(n,)`` or ``(channels, n)``; returns the same shape kind, empty when everything is silent.
    """
    if samples.ndim == 1:
        return _trim(samples[None, :], sample_rate, top_db=top_db, frame_ms=frame_ms, pad_ms=pad_ms)[0]
    return _trim(samples, sample_rate, top_db=top_db, frame_ms=frame_ms, pad_ms=pad_ms)


def _trim(samples: np.ndarray, rate: int, *, top_db: float, frame_ms: float = 25.0,
          pad_ms: float = 100.0) -> np.ndarray:
    mix = samples.mean(axis=0)
    hop = max(1, int(rate * frame_ms / 1000))
    n_frames = math.ceil(mix.shape[0] / hop)
    if n_frames == 0:
        return samples[:, :0]
    padded = np.zeros(n_frames * hop, dtype=np.float64)
    padded[: mix.shape[0]] = mix
    rms = np.sqrt(np.mean(padded.reshape(n_frames, hop) ** 2, axis=1))
    peak = float(rms.max())
    if peak < 1e-4:         # below -80 dBFS everywhere: nothing but silence (or digital zero)
        return samples[:, :0]
    loud = np.flatnonzero(rms >= peak * 10 ** (-top_db / 20))
    pad = int(rate * pad_ms / 1000)
    start = max(0, int(loud[0]) * hop - pad)
    end = min(mix.shape[0], (int(loud[-1]) + 1) * hop + pad)
    return samples[:, start:end]


def normalize_loudness(
    samples: np.ndarray, sample_rate: int, target_lufs: float = -23.0, *, peak_limit: float = 0.99,
) -> np.ndarray:
    """Scale to ``target_lufs`` integrated loudness (ITU-R BS.1770, pyloudnorm), never past ``peak_limit``.

    Clips shorter than one 400 ms measuring block, or silent ones, are returned unchanged.
    """
    data = samples if samples.ndim == 1 else samples.T      # pyloudnorm wants (n, channels)
    if data.shape[0] < int(0.4 * sample_rate) + 1:
        logger.debug("Clip of %d samples is too short to measure loudness; left as is", data.shape[0])
        return samples.astype(np.float32, copy=True)
    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(data.astype(np.float64))
    if not math.isfinite(loudness):
        return samples.astype(np.float32, copy=True)
    out = samples * 10 ** ((target_lufs - loudness) / 20)
    peak = float(np.max(np.abs(out)))
    if peak > peak_limit:
        out = out * (peak_limit / peak)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Encoding


def encode_audio(
    samples: np.ndarray, sample_rate: int, dest_path: str | os.PathLike, fmt: str | None = None,
    *, bitrate: int | None = None,
) -> AudioInfo:
    """Write ``samples`` ((n,) or (channels, n) float) to ``dest_path`` as ``fmt`` (default: its extension).

    webm/ogg are Opus at 48 kHz, mp3/m4a keep the rate when the codec allows it, wav/flac are 16-bit PCM.
    The file appears atomically (written beside it, then renamed). Returns the attachment metadata.
    """
    dest = Path(dest_path)
    fmt = (fmt or dest.suffix.lstrip(".")).lower()
    if fmt not in ENCODE_FORMATS:
        raise ValueError(f"cannot encode {dest}: format {fmt!r} is not one of {', '.join(ENCODE_FORMATS)}")
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 1:
        data = data[None, :]
    if data.shape[1] == 0:
        raise ValueError(f"cannot encode {dest}: no samples")
    data = np.clip(data, -1.0, 1.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}-", suffix=f".{fmt}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if fmt in ("wav", "flac"):
            soundfile.write(tmp, data.T, sample_rate, subtype="PCM_16", format=fmt.upper())
            rate, codec = sample_rate, ("pcm_s16le" if fmt == "wav" else "flac")
        else:
            rate, codec = _encode_with_pyav(data, sample_rate, tmp, _PYAV_ENCODERS[fmt], bitrate)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    duration = data.shape[1] / sample_rate
    return _info(dest, fmt, codec, rate, data.shape[0], duration)


def _encode_with_pyav(data: np.ndarray, rate: int, path: Path, enc: _Encoder, bitrate: int | None) -> tuple[int, str]:
    out_rate = rate if not enc.rates or rate in enc.rates else _nearest_rate(rate, enc.rates)
    if out_rate != rate:
        data = resample(data, rate, out_rate)
    layout = "mono" if data.shape[0] == 1 else "stereo"
    if data.shape[0] > 2:
        data = data.mean(axis=0, keepdims=True)
        layout = "mono"
    with av.open(str(path), "w", format=enc.container) as container:
        stream = container.add_stream(enc.codec, rate=out_rate)
        stream.layout = layout
        stream.bit_rate = bitrate or enc.bitrate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=layout)
        frame.sample_rate = out_rate
        # PyAV converts to the codec's sample format and cuts codec-sized frames itself.
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out_rate, enc.codec


def _nearest_rate(rate: int, allowed: tuple[int, ...]) -> int:
    higher = [r for r in allowed if r >= rate]
    return min(higher) if higher else max(allowed)


def convert_audio(
    src: str | os.PathLike, dest: str | os.PathLike, *, sample_rate: int | None = None, fmt: str | None = None,
    trim_silence: bool = False, loudness: float | None = None, mono: bool = True,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> AudioInfo:
    """Decode ``src``, optionally resample/trim/normalise, and encode to ``dest``. Raises ``AudioError``."""
    samples, rate = decode_audio(src, max_seconds=max_seconds)
    if mono:
        samples = samples.mean(axis=0, keepdims=True)
    if sample_rate and sample_rate != rate:
        samples, rate = resample(samples, rate, sample_rate), sample_rate
    if trim_silence:
        samples = _trim(samples, rate, top_db=40.0)
        if samples.shape[1] == 0:
            raise AudioError(src, "contains only silence")
    if loudness is not None:
        samples = normalize_loudness(samples, rate, loudness)
    return encode_audio(samples, rate, dest, fmt)


def _format_name(container_name: str, path: Path) -> str:
    name = _CONTAINER_FORMATS.get(container_name, container_name)
    if name == "webm" and path.suffix.lower() == ".mkv":
        return "matroska"
    return name


def _info(path: Path, fmt: str, codec: str, rate: int, channels: int, duration: float) -> AudioInfo:
    size = path.stat().st_size
    bitrate = round(size * 8 / duration / 1000) if duration > 0 else 0
    return AudioInfo(path=path, format=fmt, codec=codec, sample_rate=int(rate), channels=int(channels),
                     duration_sec=float(duration), size_bytes=size, bitrate_kbps=int(bitrate))


# ---------------------------------------------------------------------------------------------------------------
# CLI


@click.command()
@click.argument("input_path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sample-rate", type=click.IntRange(min=1000), default=None,
              help="Output sample rate in Hz (default: the input's). webm/ogg are always Opus at 48 kHz.")
@click.option("--trim-silence", is_flag=True, help="Cut leading and trailing silence (40 dB below the peak).")
@click.option("--loudness", type=float, default=None, metavar="LUFS",
              help="Normalise integrated loudness to this many LUFS, e.g. -23.")
@click.option("--format", "fmt", type=click.Choice(ENCODE_FORMATS), default=None,
              help="Output format (default: from OUTPUT_PATH's extension).")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_MAX_SECONDS,
              show_default=True, help="Refuse inputs longer than this.")
def main(input_path: Path, output_path: Path, sample_rate: int | None, trim_silence: bool,
         loudness: float | None, fmt: str | None, max_seconds: float) -> None:
    """Convert one audio file: decode, resample, optionally trim and normalise, encode.

    Example:

    \b
        python preprocess_audio.py take.webm take.wav --sample-rate 16000 --trim-silence --loudness -23
    """
    try:
        info = convert_audio(input_path, output_path, sample_rate=sample_rate, fmt=fmt, trim_silence=trim_silence,
                             loudness=loudness, max_seconds=max_seconds)
    except AudioError as exc:
        raise click.ClickException(str(exc)) from exc
    except ValueError as exc:       # an unsupported output format named by the extension
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Wrote {info.path}: {info.format}, {info.sample_rate} Hz, {info.channels} ch, "
               f"{info.duration_sec:.2f} s, {info.size_bytes} bytes, {info.bitrate_kbps} kbps")


if __name__ == "__main__":
    main()
