"""The two Gradio demos, served on loopback and driven through their HTTP API with gradio_client.

Tiny local models only (a random StableTTS voice, a one-epoch ASR archive), CPU, offline: telemetry and
version checks are switched off, the Hugging Face cache points at an empty folder, and a socket guard
refuses (and records) every connection or name lookup that is not loopback. The record must be empty.
"""
from __future__ import annotations

import math
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402

import gradio_demo_stabletts as tts_demo  # noqa: E402
import gradio_demo_w2v2bert_asr as asr_demo  # noqa: E402
from asr import AsrTrainConfig, train_asr, transcribe  # noqa: E402
from asr.synthetic import synth_speech, synthetic_examples  # noqa: E402
from tts.inference import SAMPLE_RATE, load_voice  # noqa: E402
from StableTTS import build_model, save_checkpoint  # noqa: E402

# gradio's queue uses pandas options that pandas 3 deprecates: its business, not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")

TEXT = "Hapo mwanzo Mungu aliziumba mbingu na nchi."
LOOPBACK_NAMES = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0"}


def _is_loopback(host) -> bool:
    host = host.decode() if isinstance(host, bytes) else host
    return host in LOOPBACK_NAMES or str(host).startswith("127.")


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory) -> Iterator[list[str]]:
    """Env switches for Gradio and Hugging Face, an empty hub cache, and a guard on sockets for the whole
    module (the servers' threads included). Fails the module if anything tried to leave the machine."""
    attempts: list[str] = []
    empty = tmp_path_factory.mktemp("hf_cache")
    real_connect, real_connect_ex, real_getaddrinfo = (
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"network access in an offline test: {address}")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            attempts.append(f"lookup {host}")
            raise socket.gaierror(f"name lookup in an offline test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        for var, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                           "HF_HOME": str(empty), "HF_HUB_CACHE": str(empty)}.items():
            mp.setenv(var, value)
        import huggingface_hub.constants as constants

        # read at import, which came earlier: no Vocos weights to find, and gradio_client's Hugging Face
        # headers must not fetch the hub's agent registry
        mp.setattr(constants, "HF_HUB_CACHE", str(empty), raising=False)
        mp.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
        mp.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True, raising=False)
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield attempts
    assert attempts == [], f"the demos or their clients tried to use the network: {attempts}"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(demo: gr.Blocks) -> Iterator[gradio_client.Client]:
    """Launch `demo` on a free loopback port without blocking; yield a client of its HTTP API; close both."""
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    client = None
    try:
        client = gradio_client.Client(demo.local_url, verbose=False, analytics_enabled=False)
        yield client
    finally:
        if client is not None:
            client.close()
        demo.close()


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


# --- text to speech ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tts_checkpoint(tmp_path_factory) -> Path:
    """A random tiny voice with its sidecar, as training writes one (random weights: it babbles)."""
    torch.manual_seed(0)
    return save_checkpoint(build_model("tiny"), tmp_path_factory.mktemp("tts") / "best_model.pt",
                           frontend={"kind": "romanized", "language": "swh", "romanizer": "latin"})


@pytest.fixture(scope="module")
def tts(tts_checkpoint) -> Iterator[gradio_client.Client]:
    voice = load_voice(tts_checkpoint, device="cpu")
    with served(tts_demo.build_demo(voice, checkpoint=tts_checkpoint)) as client:
        yield client


@pytest.fixture(scope="module")
def reference_wav(tmp_path_factory) -> Path:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    noise = np.random.default_rng(0).normal(0.0, 0.05, t.size)
    return write_wav(tmp_path_factory.mktemp("ref") / "reference.wav", 0.3 * np.sin(2 * math.pi * 220 * t) + noise,
                     SAMPLE_RATE)


def synthesize(client, text: str, reference: Path | None = None, *, steps: int = 2, temperature: float = 1.0,
               length_scale: float = 1.0, cfg_scale: float = 3.0) -> tuple[np.ndarray, int, str]:
    reference_file = gradio_client.handle_file(str(reference)) if reference else None
    path, info = client.predict(text, reference_file, steps, temperature, length_scale, cfg_scale,
                                api_name="/synthesize")
    samples, rate = soundfile.read(path, dtype="float32")
    return samples, rate, info


def test_tts_speaks_the_text_with_a_reference_voice(tts, reference_wav):
    samples, rate, info = synthesize(tts, TEXT, reference_wav)
    seconds = samples.size / rate
    assert rate == SAMPLE_RATE and samples.ndim == 1
    assert 0.3 < seconds < 30, seconds
    assert np.sqrt(np.mean(samples**2)) > 1e-3  # not silence
    assert f"{seconds:.2f} s of speech" in info and "RTF" in info
    assert "reference clip" in info and "griffin-lim" in info  # no Vocos weights here: the fallback, said


def test_tts_settings_reach_the_model(tts):
    # temperature 0: durations are deterministic, and length scale 2 doubles every one of them
    normal, _, _ = synthesize(tts, TEXT, temperature=0.0)
    slow, _, info = synthesize(tts, TEXT, temperature=0.0, length_scale=2.0)
    assert abs(slow.size - 2 * normal.size) <= 512, (normal.size, slow.size)  # within one mel hop
    assert "average voice" in info  # no reference given


def test_tts_refuses_empty_text_with_a_message(tts):
    with pytest.raises(AppError, match="text box is empty"):
        synthesize(tts, "   ")


def test_tts_refuses_text_it_cannot_speak(tts):
    with pytest.raises(AppError, match=r"nothing this voice can speak \(characters it cannot represent: '©'"):
        synthesize(tts, "© ©")


def test_tts_refuses_an_unreadable_reference(tts, tmp_path):
    bad = tmp_path / "reference.wav"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(AppError, match="voice reference is not usable audio"):
        synthesize(tts, TEXT, bad)


def test_tts_api_is_named(tts):
    api = tts.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/synthesize"]


def test_tts_cli_reports_a_broken_checkpoint(tmp_path):
    broken = tmp_path / "best_model.pt"
    broken.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(tts_demo.main, ["--checkpoint", str(broken), "--device", "cpu"])
    assert result.exit_code == 1 and "not a torch checkpoint" in result.output


# --- speech recognition ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def asr_archive(tmp_path_factory) -> Path:
    """asr_model.pth.tar as ASR training uploads it: the tiny preset, one epoch (it transcribes nonsense)."""
    config = AsrTrainConfig(epochs=1, val_split=0.0, test_split=0.0, preset="tiny", batch_size=4,
                            gradient_accumulation_steps=1, learning_rate=3e-3, warmup_steps=0.1, seed=3)
    result = train_asr(synthetic_examples(4, seed=1), tmp_path_factory.mktemp("asr"), config, device="cpu")
    return result.checkpoint_path


@pytest.fixture(scope="module")
def asr(asr_archive) -> Iterator[gradio_client.Client]:
    with served(asr_demo.build_demo(asr_archive, device="cpu")) as client:
        yield client


def test_asr_transcribes_as_the_inference_module_does(asr, asr_archive, tmp_path):
    clip = write_wav(tmp_path / "clip.wav", synth_speech("abc fed", seed=5), 16000)
    text, info = asr.predict(gradio_client.handle_file(str(clip)), api_name="/transcribe")
    assert isinstance(text, str)
    assert text == transcribe(asr_archive, [clip], device="cpu")[0]
    seconds = soundfile.info(clip).duration
    assert f"{seconds:.2f} s of audio transcribed in" in info


def test_asr_refuses_a_request_without_audio(asr):
    with pytest.raises(AppError, match="no audio to transcribe"):
        asr.predict(None, api_name="/transcribe")


def test_asr_refuses_an_undecodable_file(asr, tmp_path):
    bad = tmp_path / "verse.webm"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(AppError, match="recording is not usable audio: cannot be decoded"):
        asr.predict(gradio_client.handle_file(str(bad)), api_name="/transcribe")


def test_asr_cli_reports_a_folder_without_a_model(tmp_path):
    result = CliRunner().invoke(asr_demo.main, ["--model", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 1 and "No config.json" in result.output


# --- docs --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("demo", [tts_demo, asr_demo], ids=["tts", "asr"])
def test_every_demo_option_is_documented(demo):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for param in demo.main.params:
        for name in param.opts:
            if name.startswith("--"):
                assert f"`{name}`" in readme, f"{demo.__name__} {name} is not documented in README.md"
