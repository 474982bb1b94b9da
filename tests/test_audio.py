"""Audio decode/encode for every format, cleaning, and one clear error for every kind of bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import io

import av
import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyloudnorm  # noqa: E402

from preprocess_audio import (  # noqa: E402
    ENCODE_FORMATS,
    AudioError,
    encode_audio,
    load_audio,
    main,
    normalize_loudness,
    probe_audio,
    trim_silence,
)

RATE = 22050


def tone(seconds: float = 1.0, freq: float = 440.0, rate: int = RATE, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def padded_tone() -> np.ndarray:
    """0.5 s silence, 1 s of 440 Hz, 0.5 s silence."""
    silence = np.zeros(RATE // 2, dtype=np.float32)
    return np.concatenate([silence, tone(), silence])


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.shape[-1], 1 / rate)[np.argmax(spectrum)])


def recorder_webm(path: Path, seconds: float) -> Path:
    """A webm like the editor's MediaRecorder makes: streamed, so it carries no duration."""
    class Stream(io.RawIOBase):
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.data += bytes(b)
            return len(b)

    sink = Stream()
    with av.open(sink, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone(seconds, rate=48000)[None, :], format="flt", layout="mono")
        frame.sample_rate = 48000
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    path.write_bytes(bytes(sink.data))
    return path


def test_recorder_webm_without_duration_decodes(tmp_path):
    path = recorder_webm(tmp_path / "take.webm", 1.0)
    with av.open(str(path)) as container:
        assert container.duration is None                               # nothing declared up front
    assert load_audio(path, 16000).shape[0] == 16000
    assert probe_audio(path).duration_sec == pytest.approx(1.0, abs=0.01)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, object]:
    """The padded tone in every output format, encoded once for the module."""
    folder = tmp_path_factory.mktemp("encoded")
    return {fmt: encode_audio(padded_tone(), RATE, folder / f"tone.{fmt}") for fmt in ENCODE_FORMATS}


@pytest.mark.parametrize("fmt", ENCODE_FORMATS)
def test_each_format_encodes_and_decodes(encoded, fmt):
    info = encoded[fmt]
    expected_rate = 48000 if fmt in ("webm", "ogg") else RATE          # Opus, as the editor records
    assert info.path.is_file() and info.format == fmt
    assert info.attachment_metadata() == {
        "mimeType": {"webm": "audio/webm", "ogg": "audio/ogg", "mp3": "audio/mpeg", "m4a": "audio/mp4",
                     "wav": "audio/wav", "flac": "audio/flac"}[fmt],
        "sizeBytes": info.path.stat().st_size, "sampleRate": expected_rate, "channels": 1,
        "durationSec": 2.0, "bitrateKbps": round(info.path.stat().st_size * 8 / 2.0 / 1000)}
    samples = load_audio(info.path, 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.shape[0] / 16000 - 2.0) < 0.1                   # codec priming may add a few ms
    assert abs(dominant_hz(samples, 16000) - 440) < 5
    probed = probe_audio(info.path)
    assert (probed.format, probed.sample_rate, probed.channels) == (fmt, expected_rate, 1)
    assert abs(probed.duration_sec - 2.0) < 0.1


@pytest.mark.parametrize("fmt", ["wav", "webm"])
def test_stereo_kept_or_mixed(tmp_path, fmt):
    stereo = np.stack([tone(freq=440), tone(freq=660)])
    info = encode_audio(stereo, RATE, tmp_path / f"st.{fmt}")
    assert info.channels == 2
    both = load_audio(info.path, RATE, mono=False)
    assert both.shape[0] == 2 and abs(both.shape[1] / RATE - 1.0) < 0.05
    assert load_audio(info.path, RATE).ndim == 1


def test_trim_silence(encoded):
    trimmed = load_audio(encoded["wav"].path, RATE, trim_silence=True)
    assert 1.0 <= trimmed.shape[0] / RATE <= 1.3                        # the tone plus at most the padding
    assert trim_silence(padded_tone(), RATE, pad_ms=0).shape[0] == pytest.approx(RATE, abs=RATE * 0.03)
    assert trim_silence(np.zeros(RATE, dtype=np.float32), RATE).shape[0] == 0
    assert trim_silence(np.stack([padded_tone()] * 2), RATE).shape[0] == 2


def test_silent_file_is_an_error_when_trimming(tmp_path):
    info = encode_audio(np.zeros(RATE, dtype=np.float32), RATE, tmp_path / "quiet.wav")
    assert load_audio(info.path, RATE).shape[0] == RATE                 # silence is still audio...
    with pytest.raises(AudioError, match="quiet.wav.*only silence"):
        load_audio(info.path, RATE, trim_silence=True)                  # ...but nothing is left to train on


def test_normalize_loudness():
    quiet = tone(3.0, amp=0.01)
    louder = normalize_loudness(quiet, RATE, -23.0)
    assert pyloudnorm.Meter(RATE).integrated_loudness(louder.astype(np.float64)) == pytest.approx(-23.0, abs=0.5)
    limited = normalize_loudness(quiet, RATE, 0.0)                      # would clip: held under the peak limit
    assert np.max(np.abs(limited)) <= 0.99 + 1e-6
    short = tone(0.2, amp=0.01)
    assert np.array_equal(normalize_loudness(short, RATE, -23.0), short)  # too short to measure


def bad_inputs(folder: Path, encoded: dict) -> dict[str, tuple[Path, dict]]:
    """name -> (file, load_audio kwargs); every one must raise AudioError naming the file."""
    def write(name: str, data: bytes) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    def cut(fmt: str, fraction: float) -> Path:
        data = encoded[fmt].path.read_bytes()
        return write(f"cut-{fraction}.{fmt}", data[: int(len(data) * fraction)])

    return {
        "empty": (write("empty.webm", b""), {}),
        "junk": (write("junk.mp3", b"this is not audio at all " * 40), {}),
        "lfs pointer": (write("pointer.webm", b"version https://git-lfs.github.com/spec/v1\noid sha256:"
                              + b"0" * 64 + b"\nsize 10\n"), {}),
        "missing": (folder / "never-written.wav", {}),
        "truncated wav": (cut("wav", 0.5), {}),
        "truncated flac": (cut("flac", 0.5), {}),
        "truncated webm": (cut("webm", 0.5), {}),
        "truncated ogg": (cut("ogg", 0.5), {}),
        "truncated m4a": (cut("m4a", 0.5), {}),
        "header only": (cut("webm", 0.02), {}),
        "too long": (encoded["flac"].path, {"max_seconds": 1.0}),
        "too long, no declared duration": (recorder_webm(folder / "long.webm", 1.0), {"max_seconds": 0.5}),
        "directory": (folder, {}),
    }


BAD_NAMES = ["empty", "junk", "lfs pointer", "missing", "truncated wav", "truncated flac", "truncated webm",
             "truncated ogg", "truncated m4a", "header only", "too long", "too long, no declared duration",
             "directory"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_inputs_raise_audio_error_naming_the_file(tmp_path, encoded, name):
    path, kwargs = bad_inputs(tmp_path, encoded)[name]
    with pytest.raises(AudioError) as caught:
        load_audio(path, 16000, **kwargs)
    assert caught.value.path == str(path) and str(path) in str(caught.value)
    with pytest.raises(AudioError):
        probe_audio(path, **kwargs)


def test_pointer_error_says_what_happened(tmp_path, encoded):
    path, _ = bad_inputs(tmp_path, encoded)["lfs pointer"]
    with pytest.raises(AudioError, match="Git LFS pointer"):
        load_audio(path, 16000)


def test_a_pointer_of_the_old_lfs_spec_is_named_too(tmp_path):
    """git-lfs still reads pointers naming its old spec (hawser); so does every check here (git_lfs)."""
    path = tmp_path / "old.webm"
    path.write_text(f"version https://hawser.github.com/spec/v1\noid sha256:{'ab' * 32}\nsize 5120\n", encoding="ascii")
    with pytest.raises(AudioError, match="Git LFS pointer"):
        load_audio(path, 16000)


def test_encode_refuses_unknown_format_and_empty_input(tmp_path):
    with pytest.raises(ValueError, match="format"):
        encode_audio(tone(), RATE, tmp_path / "x.aiff")
    with pytest.raises(ValueError, match="no samples"):
        encode_audio(np.zeros(0, dtype=np.float32), RATE, tmp_path / "x.wav")
    assert list(tmp_path.iterdir()) == []                               # no half-written files left behind


def test_cli_converts(tmp_path, encoded):
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(main, [str(encoded["webm"].path), str(out), "--sample-rate", "16000",
                                       "--trim-silence", "--loudness", "-23"])
    assert result.exit_code == 0, result.output
    assert "16000 Hz" in result.output
    info = probe_audio(out)
    assert info.sample_rate == 16000 and 1.0 <= info.duration_sec <= 1.3


def test_cli_reports_bad_input_by_name(tmp_path):
    bad = tmp_path / "broken.webm"
    bad.write_bytes(b"\x00" * 100)
    result = CliRunner().invoke(main, [str(bad), str(tmp_path / "o.wav")])
    assert result.exit_code == 1
    assert "broken.webm" in result.output and "Error" in result.output
    assert not (tmp_path / "o.wav").exists()
