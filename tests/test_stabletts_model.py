"""StableTTS model package: published layout, mel front end, synthesis, training, checkpoints, vocoders, MAS,
and the two synthesis CLIs. CPU only, offline (the Hugging Face cache is pointed at an empty folder)."""
from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import pathlib
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
import torch

import StableTTS
from StableTTS import (
    CheckpointError,
    build_model,
    load_model,
    load_state_dict_file,
    load_vocoder,
    mel_spectrogram,
    save_checkpoint,
    synthesize_mel,
)
from StableTTS.alignment import generate_path, maximum_path_numba, maximum_path_torch

DATA = Path(__file__).resolve().parent / "data"  # published layouts (names and shapes only), kept with the tests


@pytest.fixture(autouse=True)
def offline_hub(tmp_path_factory, monkeypatch):
    """No test may find (let alone download) hub weights: point every HF cache variable at an empty folder."""
    empty = tmp_path_factory.mktemp("hf_cache")
    for var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(var, str(empty))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(empty), raising=False)


def randomized_tiny(seed: int = 0) -> StableTTS.StableTTS:
    """Tiny model with the zero-initialised adaLN gates and fake vectors randomised, so every block acts."""
    torch.manual_seed(seed)
    model = build_model("tiny")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or name.startswith("fake_"):
                p.normal_(0.0, 0.2)
    return model.eval()


def reference_audio(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(44100 * seconds)) / 44100
    return 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.randn(t.shape, generator=g)


def random_ids(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 69, (n,), generator=g)
        ids[i, 0:n:2] = 0  # blank-interspersed like real input
    return ids, torch.tensor(lengths)


# --- published layout -------------------------------------------------------------------------------------

def _layout(path: Path) -> dict:
    return json.loads(path.read_text())


def test_v11_state_dict_matches_published_names_shapes_order_and_count():
    ref = _layout(DATA / "stabletts_v1.1_state_dict.json")
    model = build_model("v1.1")
    state = model.state_dict()
    assert list(state) == [t["name"] for t in ref["tensors"]]
    assert [list(v.shape) for v in state.values()] == [t["shape"] for t in ref["tensors"]]
    assert sum(p.numel() for p in model.parameters()) == ref["total_parameters"] == 31_644_545
    assert list(model.buffers()) == []


def test_vocos_state_dict_matches_release():
    ref = _layout(DATA / "stabletts_vocos_state_dict.json")
    vocos = StableTTS.Vocos()
    state = vocos.state_dict()
    assert list(state) == [t["name"] for t in ref["tensors"]]
    assert [list(v.shape) for v in state.values()] == [t["shape"] for t in ref["tensors"]]
    assert sum(p.numel() for p in vocos.parameters()) == ref["total_parameters"]
    assert [n for n, _ in vocos.named_buffers()] == ref["buffers"]


def test_presets_and_custom_sizes():
    tiny = build_model("tiny")
    assert 100_000 < sum(p.numel() for p in tiny.parameters()) < 1_000_000
    custom = build_model("tiny", hidden_channels=96, n_heads=3, gin_channels=48, n_dec_layers=4, n_vocab=450)
    ids, lengths = random_ids([9])
    mel, n = synthesize_mel(custom, ids, lengths, None, steps=2)
    assert mel.shape == (1, 128, int(n[0])) and torch.isfinite(mel).all()
    with pytest.raises(ValueError, match="even"):
        build_model("tiny", n_dec_layers=3)


# --- mel front end ----------------------------------------------------------------------------------------

def numpy_log_mel(audio: np.ndarray) -> np.ndarray:
    """The published definition, computed independently in float64 with numpy/librosa."""
    padded = np.pad(audio.astype(np.float64), 768, mode="reflect")
    window = np.hanning(2049)[:-1]  # periodic Hann
    n_frames = 1 + (len(padded) - 2048) // 512
    frames = np.stack([padded[i * 512 : i * 512 + 2048] * window for i in range(n_frames)], axis=1)
    spec = np.fft.rfft(frames, n=2048, axis=0)
    magnitude = np.sqrt(spec.real**2 + spec.imag**2 + 1e-6)
    basis = librosa.filters.mel(sr=44100, n_fft=2048, n_mels=128, fmin=0.0, fmax=22050, htk=False, norm="slaney")
    return np.log(np.maximum(basis @ magnitude, 1e-5))


def test_mel_matches_independent_numpy_computation():
    audio = reference_audio(0.7).numpy()
    expected = numpy_log_mel(audio)
    got = mel_spectrogram(audio)  # numpy in, torch out
    assert got.shape == (128, len(audio) // 512) == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)
    batch = mel_spectrogram(torch.stack([torch.from_numpy(audio), torch.from_numpy(audio[::-1].copy())]))
    assert batch.shape == (2, 128, expected.shape[1])
    np.testing.assert_allclose(batch[0].numpy(), expected, atol=2e-4)
    silence = mel_spectrogram(torch.zeros(4096))
    np.testing.assert_allclose(silence.numpy(), numpy_log_mel(np.zeros(4096)), atol=1e-5)
    np.testing.assert_allclose(silence[:, 0].numpy(), StableTTS.mel.silence_log_mel().numpy(), atol=1e-5)


# --- synthesis --------------------------------------------------------------------------------------------

def test_temperature_zero_is_deterministic():
    model = randomized_tiny()
    ids, lengths = random_ids([15, 11])
    ref = mel_spectrogram(reference_audio()).unsqueeze(0)
    a, la = synthesize_mel(model, ids, lengths, ref, steps=3, temperature=0.0, generator=torch.Generator().manual_seed(1))
    b, lb = synthesize_mel(model, ids, lengths, ref, steps=3, temperature=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and torch.equal(la, lb)
    c, _ = synthesize_mel(model, ids, lengths, ref, steps=3, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_batched_equals_one_by_one(solver):
    model = randomized_tiny(1)
    lengths = [23, 9, 17]
    ids, lens = random_ids(lengths, seed=3)
    ref = mel_spectrogram(reference_audio()).unsqueeze(0)
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(3)]  # noqa: E731
    batched, blens = synthesize_mel(model, ids, lens, ref, steps=4, solver=solver, length_scale=1.3, generator=gens())
    two_pass, _ = synthesize_mel(model, ids, lens, ref, steps=4, solver=solver, length_scale=1.3, generator=gens(),
                                 batched_cfg=False)
    torch.testing.assert_close(two_pass, batched, atol=1e-5, rtol=0)
    for i, n in enumerate(lengths):
        single, slen = synthesize_mel(model, ids[i : i + 1, :n], lens[i : i + 1], ref, steps=4, solver=solver,
                                      length_scale=1.3, generator=[gens()[i]])
        assert int(slen) == int(blens[i])
        torch.testing.assert_close(batched[i, :, : int(slen)], single[0], atol=1e-5, rtol=0)
        assert not batched[i, :, int(slen) :].any()  # padding frames are zero


def test_sampling_decides_the_attention_mask_once_per_batch(monkeypatch):
    """Whether a batch is padded is read back from the device once per batch, not once per estimator call
    (on a GPU each read is a sync, and a graph break under torch.compile)."""
    import StableTTS.decoder as decoder
    import StableTTS.synthesis as synthesis

    calls = {"sampler": 0}
    real = synthesis.attention_pair_mask

    def counted(mask):
        calls["sampler"] += 1
        return real(mask)

    def per_call(mask):
        raise AssertionError("the estimator recomputed the attention mask during sampling")

    model = randomized_tiny(1)
    ids, lens = random_ids([23, 9, 17], seed=3)
    expected, _ = synthesize_mel(model, ids, lens, None, steps=4, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(synthesis, "attention_pair_mask", counted)
    monkeypatch.setattr(decoder, "attention_pair_mask", per_call)
    mel, _ = synthesize_mel(model, ids, lens, None, steps=4, generator=torch.Generator().manual_seed(1))
    assert calls["sampler"] == 1
    torch.testing.assert_close(mel, expected, atol=0, rtol=0)


def reference_inference(model, ids, ref_mel, z, steps, cfg, length_scale):
    """Straightforward one-utterance inference written from the published description: explicit loops for
    durations and frame expansion, Euler steps over linspace(0, 1), two separate guidance passes."""
    c = model.ref_encoder(ref_mel)
    x, mu_x, mask = model.encoder(ids, torch.tensor([ids.shape[1]]), c)
    logw = model.dp(x, mask, c)
    w_ceil = torch.ceil(torch.exp(logw) * mask) * length_scale  # (1, 1, T_x)
    n_frames = max(1, int(float(w_ceil.sum())))
    ends = torch.cumsum(w_ceil[0, 0], 0)
    mu_y = torch.zeros(1, 128, n_frames)
    for j in range(n_frames):
        covering = [i for i in range(ids.shape[1]) if (i == 0 or j >= ends[i - 1]) and j < ends[i]]
        if covering:
            mu_y[0, :, j] = mu_x[0, :, covering[0]]
    y_mask = torch.ones(1, 1, n_frames)
    x_t = z[:, :, :n_frames].clone()
    est = model.decoder.estimator
    fake_mu = model.fake_content.repeat(1, 1, n_frames)
    grid = torch.linspace(0, 1, steps + 1)
    for k in range(steps):
        t = grid[k].reshape(1)
        v_c = est(x_t, y_mask, mu_y, t, c)
        v_u = est(x_t, y_mask, fake_mu, t, model.fake_speaker)
        x_t = x_t + (grid[k + 1] - grid[k]) * (v_u + cfg * (v_c - v_u))
    return x_t, n_frames


@pytest.mark.parametrize("length_scale", [1.0, 1.37])
def test_synthesis_matches_plain_reference_inference(length_scale):
    model = randomized_tiny(2)
    ids, lens = random_ids([19], seed=5)
    ref = mel_spectrogram(reference_audio(seed=4)).unsqueeze(0)
    z = torch.randn(1, 128, 400, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, n = reference_inference(model, ids, ref, z * 0.8, steps=5, cfg=2.5, length_scale=length_scale)
    mel, mel_len = synthesize_mel(model, ids, lens, ref, steps=5, cfg_scale=2.5, temperature=0.8,
                                  length_scale=length_scale, solver="euler", noise=z)
    assert int(mel_len[0]) == n
    torch.testing.assert_close(mel[0], expected[0], atol=1e-5, rtol=1e-5)


def test_dopri5_agrees_with_fine_fixed_steps():
    pytest.importorskip("torchdiffeq")
    model = randomized_tiny(3)
    ids, lens = random_ids([13], seed=6)
    stats: dict = {}
    adaptive, _ = synthesize_mel(model, ids, lens, None, solver="dopri5", temperature=0.0, stats=stats)
    fine, _ = synthesize_mel(model, ids, lens, None, solver="midpoint", steps=64, temperature=0.0)
    assert stats["nfe"] > 6
    # Random weights make a rough vector field (1000·t time embedding), so both solvers are only close.
    torch.testing.assert_close(adaptive, fine, atol=1.5e-2, rtol=0)


# --- training objective -----------------------------------------------------------------------------------

def test_training_losses_backward_on_tiny():
    torch.manual_seed(0)
    model = randomized_tiny(4).train()
    ids, lens = random_ids([21, 15, 9], seed=7)
    mel = torch.randn(3, 128, 64)
    mel_lens = torch.tensor([64, 50, 30])
    losses = model(ids, lens, mel, mel_lens, cfg_dropout=0.5)
    for value in (losses.duration, losses.prior, losses.flow):
        assert value.ndim == 0 and torch.isfinite(value)
    losses.total.backward()
    for prefix in ("encoder.", "dp.", "decoder.", "ref_encoder."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, prefix
    # A precomputed alignment is used as given: two frames per symbol -> log-duration targets log(2).
    model.eval()
    ids9, len9, mel18, len18 = ids[2:, :9], lens[2:], mel[2:, :, :18], torch.tensor([18])
    attn = torch.zeros(1, 9, 18)
    attn[0, torch.arange(18) // 2, torch.arange(18)] = 1
    fixed = model(ids9, len9, mel18, len18, ref_mel=mel18, ref_lengths=len18, attn=attn, cfg_dropout=0.0)
    with torch.no_grad():
        c = model.ref_encoder(mel18, len18)
        x, mu_x, mask = model.encoder(ids9, len9, c)
        logw = model.dp(x, mask, c)
        mu_y = mu_x.repeat_interleave(2, dim=2)
    torch.testing.assert_close(fixed.duration, ((logw - math.log(2)) ** 2).sum() / 9)
    torch.testing.assert_close(fixed.prior, (0.5 * ((mel18 - mu_y) ** 2 + math.log(2 * math.pi))).mean())


# --- monotonic alignment search ---------------------------------------------------------------------------

def brute_force_alignment(value: np.ndarray) -> tuple[float, np.ndarray]:
    """Best monotonic alignment by enumerating every duration split (each symbol >= 1 frame)."""
    t_x, t_y = value.shape
    best, best_path = -np.inf, None
    for cuts in itertools.combinations(range(1, t_y), t_x - 1):
        bounds = (0, *cuts, t_y)
        path = np.zeros_like(value)
        for i in range(t_x):
            path[i, bounds[i] : bounds[i + 1]] = 1
        score = float((value * path).sum())
        if score > best:
            best, best_path = score, path
    return best, best_path


@pytest.mark.parametrize("backend", [maximum_path_numba, maximum_path_torch])
def test_mas_equals_brute_force(backend):
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (1, 4), (2, 2), (3, 5), (4, 7), (5, 8), (3, 8)]
    t_x_max, t_y_max = max(s[0] for s in sizes), max(s[1] for s in sizes)
    value = torch.from_numpy(rng.normal(size=(len(sizes), t_x_max, t_y_max)))
    mask = torch.zeros_like(value)
    for b, (tx, ty) in enumerate(sizes):
        mask[b, :tx, :ty] = 1
    path = backend(value, mask)
    for b, (tx, ty) in enumerate(sizes):
        best, expected = brute_force_alignment(value[b, :tx, :ty].numpy())
        np.testing.assert_array_equal(path[b, :tx, :ty].numpy(), expected)
        assert path[b].sum() == ty  # nothing outside the valid region
        assert math.isclose(float((path[b] * value[b]).sum()), best)


def test_mas_rejects_impossible_lengths():
    value, mask = torch.zeros(1, 5, 3), torch.ones(1, 5, 3)
    with pytest.raises(ValueError, match="5 symbols but only 3 frames"):
        maximum_path_torch(value, mask)


def test_generate_path_with_fractional_durations():
    path = generate_path(torch.tensor([[1.5, 1.5, 2.0]]), torch.ones(1, 3, 5))
    # cumulative ends 1.5, 3.0, 5.0 -> frames {0, 1}, {2}, {3, 4}
    np.testing.assert_array_equal(path[0].numpy(), [[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1]])


# --- checkpoints ------------------------------------------------------------------------------------------

def test_checkpoint_round_trip_with_sidecar(tmp_path):
    model = randomized_tiny(5)
    frontend = {"kind": "romanized", "language": "swh", "romanizer": "latin"}
    for name in ("best_model.pt", "best_model2.safetensors"):
        path = save_checkpoint(model, tmp_path / name, frontend=frontend)
        if path.suffix == ".pt":  # a plain state_dict in the published order: upstream can load it
            assert list(torch.load(path, weights_only=True)) == list(model.state_dict())
        else:  # safetensors stores keys sorted
            assert set(load_state_dict_file(path)) == set(model.state_dict())
        loaded, sidecar = load_model(path)
        assert sidecar["frontend"] == frontend and sidecar["model_config"]["n_heads"] == 2
        assert loaded.config == model.config
        for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), k


def test_upstream_style_checkpoints_load(tmp_path):
    state = build_model("tiny").state_dict()
    torch.save({"model": state, "optimizer": {"lr": 1e-4}, "epoch": 3}, tmp_path / "wrapped.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    for name in ("wrapped.pt", "ddp.pt"):
        loaded = load_state_dict_file(tmp_path / name)
        assert list(loaded) == list(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    # Upstream's checkpoint_0.pt: a raw v1.1 state_dict without sidecar; sizes are inferred from the tensors.
    torch.save(build_model("v1.1").state_dict(), tmp_path / "checkpoint_0.pt")
    loaded, sidecar = load_model(tmp_path / "checkpoint_0.pt")
    assert sidecar is None and loaded.config == StableTTS.get_config("v1.1")


class _Payload:
    """Pickles to a call that would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="evil.pt.*refused"):
        load_state_dict_file(evil)
    assert not marker.exists()


@pytest.mark.parametrize("seed", [0, 2, 20])  # bytes on which torch.load raises UnpicklingError, IndexError, KeyError
def test_random_bytes_are_a_checkpoint_error_naming_the_file(tmp_path, seed):
    import random

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(random.Random(seed).randbytes(2000))
    with pytest.raises(CheckpointError, match=r"garbage\.pt: not a (readable )?torch checkpoint"):
        load_state_dict_file(garbage)


def test_mismatched_checkpoint_names_file_and_problem(tmp_path):
    path = save_checkpoint(build_model("tiny"), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match=r"tiny\.pt.*shape mismatches.*encoder\.emb\.weight"):
        StableTTS.load_weights(build_model("v1.1"), load_state_dict_file(path), source=str(path))
    state = build_model("tiny").state_dict()
    del state["fake_speaker"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial\.pt.*missing keys: fake_speaker"):
        load_model(tmp_path / "partial.pt")


# --- vocoders ---------------------------------------------------------------------------------------------

def test_vocos_weights_load_from_path(tmp_path):
    torch.manual_seed(0)
    torch.save(StableTTS.Vocos().state_dict(), tmp_path / "vocos.pt")
    vocoder = load_vocoder(tmp_path / "vocos.pt")
    assert vocoder.vocoder_name == "vocos" and not vocoder.is_fallback
    with torch.no_grad():
        audio = vocoder(torch.randn(2, 128, 10))
    assert audio.shape == (2, 10 * 512) and torch.isfinite(audio).all()


def test_griffin_lim_fallback_is_reported_and_inverts_the_mel(caplog):
    with caplog.at_level(logging.WARNING, logger="StableTTS.vocoder"):
        vocoder = load_vocoder(None)
    assert vocoder.vocoder_name == "griffin-lim" and vocoder.is_fallback
    assert "Griffin-Lim" in caplog.text
    mel = mel_spectrogram(reference_audio(0.5)).unsqueeze(0)
    audio = vocoder(mel)
    assert audio.shape == (1, mel.shape[-1] * 512)
    error = (mel_spectrogram(audio[0]) - mel[0]).abs().mean()
    assert error < 0.5, error  # loud partials are recovered (log-mel units)


# --- high-level API and CLIs ------------------------------------------------------------------------------

@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    return save_checkpoint(randomized_tiny(6), tmp_path / "voice.pt",
                           frontend={"kind": "romanized", "language": "swh", "romanizer": "latin"})


def test_synthesize_returns_input_order(tiny_checkpoint):
    from tts import inference as inf

    voice = inf.load_voice(tiny_checkpoint, device="cpu")
    assert voice.vocoder_name == "griffin-lim"
    texts = ["Mwanzo.", "Hapo mwanzo Mungu aliziumba mbingu na nchi, na nchi ilikuwa ukiwa.", "", "Na Mungu akasema"]
    audio = inf.synthesize(voice, texts, reference_audio().numpy(), steps=2, batch_size=2, seed=0, temperature=0)
    assert [a.dtype for a in audio] == [np.float32] * 4 and audio[2].size == 0
    for text, a in zip(texts, audio):
        if text:
            [single] = inf.synthesize(voice, [text], reference_audio().numpy(), steps=2, seed=0, temperature=0)
            assert single.size == a.size > 0


def test_inference_cli_writes_wav(tiny_checkpoint, tmp_path):
    from click.testing import CliRunner

    import inference_stabletts

    ref = tmp_path / "ref.wav"
    soundfile.write(ref, reference_audio().numpy(), 44100)
    out = tmp_path / "x.wav"
    result = CliRunner().invoke(inference_stabletts.main, [
        "--checkpoint", str(tiny_checkpoint), "--text", "Hapo mwanzo.", "--reference", str(ref),
        "--out", str(out), "--steps", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "griffin-lim" in result.output
    samples, rate = soundfile.read(out)
    assert rate == 44100 and samples.size > 0


def test_batch_cli_writes_one_wav_per_row(tiny_checkpoint, tmp_path):
    from click.testing import CliRunner

    import batch_tts_inference

    table = tmp_path / "texts.csv"
    table.write_text("id,text\nGEN 1:1,Hapo mwanzo.\nGEN 1:2,Na nchi ilikuwa ukiwa © tena.\nGEN 1:3,\n", encoding="utf-8")
    out = tmp_path / "audio"
    args = ["--input", str(table), "--output", str(out), "--checkpoint", str(tiny_checkpoint), "--steps", "2"]
    result = CliRunner().invoke(batch_tts_inference.main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.wav")) == ["GEN_1_1.wav", "GEN_1_2.wav"]
    rows = list(csv.DictReader(open(out / "manifest.csv", encoding="utf-8")))
    assert [r["id"] for r in rows] and {r["id"]: r["unknown_characters"] for r in rows}["GEN 1:2"] == "©"
    result = CliRunner().invoke(batch_tts_inference.main, args + ["--text-column", "verse"])
    assert result.exit_code != 0 and "no 'verse' column" in result.output


# --- agreement with the published v1.1 definition (checked without upstream code) --------------------------
# Each test pins one fact of the published model that a side-by-side run against upstream found (or confirmed);
# every expected value comes from an independent numpy formula or a structural property of that definition.

def _np_layer_norm(x: np.ndarray, eps: float) -> np.ndarray:  # over channels of (C, T)
    mean = x.mean(axis=0, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=0, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _np_conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'same' 1-D convolution (odd kernel, zero padding): x (C_in, T), weight (C_out, C_in, K) -> (C_out, T)."""
    k = weight.shape[-1]
    padded = np.pad(x, ((0, 0), (k // 2, k // 2)))
    t = x.shape[1]
    return np.einsum("oik,ikt->ot", weight, np.stack([padded[:, j : j + t] for j in range(k)], axis=1)) + bias[:, None]


def _np_silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def _np_rotary(x: np.ndarray, n_rot: int) -> np.ndarray:
    """Rotate-half RoPE (base 10000) on the first n_rot channels of x (T, D); positions 0..T-1."""
    t = x.shape[0]
    theta = 10000.0 ** (-np.arange(0, n_rot, 2) / n_rot)  # (n_rot / 2,)
    angles = np.arange(t)[:, None] * np.concatenate([theta, theta])[None, :]  # (T, n_rot)
    rot, rest = x[:, :n_rot], x[:, n_rot:]
    half = n_rot // 2
    rotated_half = np.concatenate([-rot[:, half:], rot[:, :half]], axis=1)
    return np.concatenate([rot * np.cos(angles) + rotated_half * np.sin(angles), rest], axis=1)


def numpy_dit_block(block, x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The published DiT block for one unpadded sequence, in float64 numpy: adaLN-Zero modulation split
    (shift, scale, gate) × (attention, FFN), LayerNorm eps 1e-5 (torch's default, as upstream v1.1 uses),
    rotary on the first half of each head, SiLU conv FFN."""
    p = {k: v.detach().double().numpy() for k, v in block.state_dict().items()}
    channels, t = x.shape
    mod = p["adaLN_modulation.2.weight"] @ _np_silu(c) + p["adaLN_modulation.2.bias"]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (m[:, None] for m in np.split(mod, 6))
    h = _np_layer_norm(x, 1e-5) * (1 + scale_msa) + shift_msa
    n_heads = block.attn.n_heads
    d = channels // n_heads

    def proj(name, inp):
        return p[f"attn.{name}.weight"][:, :, 0] @ inp + p[f"attn.{name}.bias"][:, None]

    q, k, v = proj("conv_q", h), proj("conv_k", h), proj("conv_v", h)
    heads = []
    for i in range(n_heads):
        sl = slice(i * d, (i + 1) * d)
        qh, kh, vh = _np_rotary(q[sl].T, d // 2), _np_rotary(k[sl].T, d // 2), v[sl].T  # (T, d)
        scores = qh @ kh.T / np.sqrt(d)
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        heads.append((weights @ vh).T)
    x = x + gate_msa * proj("conv_o", np.concatenate(heads, axis=0))
    h = _np_layer_norm(x, 1e-5) * (1 + scale_mlp) + shift_mlp
    ffn = _np_silu(_np_conv1d(h, p["mlp.conv_1.weight"], p["mlp.conv_1.bias"]))
    return x + gate_mlp * _np_conv1d(ffn, p["mlp.conv_2.weight"], p["mlp.conv_2.bias"])


def test_dit_block_matches_numpy_definition_including_layer_norm_eps():
    model = randomized_tiny(7)
    block = model.encoder.encoder[0]
    g = torch.Generator().manual_seed(0)
    c = torch.randn(1, 64, generator=g)
    # Quiet frames (std 3e-3, variance ≈ 1e-5) make the LayerNorm epsilon matter: with DiT's 1e-6 instead of
    # upstream v1.1's 1e-5 the normalised values differ by tens of percent.
    for scale in (1.0, 3e-3):
        x = torch.randn(1, 64, 13, generator=g) * scale
        with torch.no_grad():
            got = block(x, c, torch.ones(1, 1, 13), None)[0].double().numpy()
        expected = numpy_dit_block(block, x[0].double().numpy(), c[0].double().numpy())
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5 * np.abs(expected).max())
    for module in model.modules():
        if isinstance(module, StableTTS.dit.DiTBlock):
            assert module.norm1.eps == module.norm2.eps == 1e-5


def test_time_embedding_is_sin_then_cos_of_1000t():
    t = torch.tensor([0.0, 0.3, 1.0])
    emb = StableTTS.dit.sinusoidal_embedding(t, 256).double().numpy()
    assert emb.shape == (3, 256)
    np.testing.assert_array_equal(emb[0], np.r_[np.zeros(128), np.ones(128)])  # t = 0: [sin 0…, cos 0…]
    freqs = np.exp(-np.arange(128) * np.log(10000) / 127)  # 10000^(-k / (half - 1))
    args = 1000 * t.double().numpy()[:, None] * freqs[None, :]
    np.testing.assert_allclose(emb, np.c_[np.sin(args), np.cos(args)], atol=2e-4)  # float32 args up to 1000


def test_time_film_is_gamma_times_x_plus_beta_with_gamma_first():
    film = StableTTS.decoder.TimeFiLM(4, 8)
    with torch.no_grad():
        film.film.weight.zero_()
        film.film.bias.copy_(torch.tensor([2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]))  # [gamma | beta]
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(film(x, torch.randn(2, 8)), 2 * x + 3)
    with torch.no_grad():
        film.film.bias.zero_()
    assert not film(x, torch.randn(2, 8)).any()  # no "+1": an all-zero FiLM outputs zeros, not x


def test_long_skips_fuse_the_inputs_of_the_first_half_blocks():
    """Upstream's decoder stacks x BEFORE each first-half block (in_proj output, then block 0, 1 outputs) and
    block n_skip + j concatenates [its input, input of block n_skip - 1 - j] before lsc_layers[j]."""
    torch.manual_seed(0)
    model = build_model("tiny", n_dec_layers=6).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0.0, 0.2)
    est = model.decoder.estimator
    block_in, lsc_in = {}, {}
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: block_in.__setitem__(i, (a[0], o)))
             for i, b in enumerate(est.blocks)]
    hooks += [layer.register_forward_hook(lambda m, a, o, j=j: lsc_in.__setitem__(j, a[0]))
              for j, layer in enumerate(est.lsc_layers)]
    try:
        with torch.no_grad():
            est(torch.randn(1, 128, 11), torch.ones(1, 1, 11), torch.randn(1, 128, 11), torch.tensor([0.4]),
                torch.randn(1, 64))
    finally:
        for h in hooks:
            h.remove()
    n_skip, h = 3, 64
    for j in range(n_skip):
        fused = lsc_in[j]  # (1, 2h, T): [current x | skip]
        torch.testing.assert_close(fused[:, :h], block_in[n_skip + j - 1][1])  # previous block's output
        torch.testing.assert_close(fused[:, h:], block_in[n_skip - 1 - j][0])  # input of the mirrored block
        assert not torch.allclose(fused[:, h:], block_in[n_skip - 1 - j][1])  # … not its output
