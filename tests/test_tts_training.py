"""StableTTS training (``tts``, ``train_stabletts.py``, ``preprocess_stabletts.py``) on the demo project's
recordings: CPU, offline (no hub downloads), tiny models, a few epochs.

Monotonic alignment search itself is checked against a brute-force dynamic programme, for both the numba
(CPU) and the batched torch (GPU) backend, in tests/test_stabletts_model.py::test_mas_equals_brute_force;
training uses those same functions through ``StableTTS.forward``, so that check is not repeated here.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import codex
import model_hub
import preprocess_stabletts
import train_stabletts
from conftest import ROOT
from preprocess_audio import encode_audio
from StableTTS.alignment import maximum_path_numba
from StableTTS.dit import sequence_mask
from StableTTS import CheckpointError, build_model, load_model, load_state_dict_file, read_sidecar, save_checkpoint
from StableTTS.text import PhonemeFrontend
from tts import (
    STATE_FILE,
    TrainConfig,
    TrainHooks,
    Utterance,
    hub_file,
    learning_rate,
    length_batches,
    load_state,
    prepare_clips,
    split_clips,
    train,
)
from tts.alignment import maximum_path_threaded
from training_metrics import METRICS_FILE, TTS_METRICS_COLUMNS

DEMO = ROOT / "examples" / "demo_project"


pytestmark = pytest.mark.usefixtures("hub_offline")  # no hub downloads


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One mel/symbol cache for the module: each recording is decoded once."""
    return tmp_path_factory.mktemp("tts_cache")


def demo_utterances(count: int | None = None) -> list[Utterance]:
    """The demo's recorded verses with text (the selected or newest take), shortest recordings first."""
    utterances = []
    for book in ("GEN", "JHN"):
        path = f"files/target/{book}.codex"
        notebook = codex.parse_notebook((DEMO / path).read_bytes(), path)
        for cell in codex.select_training_pairs([notebook]).cells:
            audio = DEMO / ".project/attachments/files" / book / Path(cell.audio_take.url).name
            utterances.append(Utterance(cell.cell_id, cell.text, audio, str(audio)))
    utterances.sort(key=lambda u: u.audio_path.stat().st_size)
    return utterances[:count]


def tiny_config(**overrides) -> TrainConfig:
    values = dict(preset="tiny", language="rus", batch_size=2, epochs=3)
    return TrainConfig(**{**values, **overrides})


def test_demo_recordings_are_all_there():
    utterances = demo_utterances()
    assert len(utterances) == 28
    assert all(u.audio_path.is_file() and u.text for u in utterances)


@pytest.mark.slow  # trains the tiny voice on the demo recordings long enough to see the loss fall
def test_training_loss_falls_clearly_on_the_demo_recordings(tmp_path, cache_dir):
    epochs = []
    result = train(demo_utterances(8), tiny_config(epochs=10, val_split=0.0, learning_rate=2e-3), tmp_path / "run",
                   cache_dir=cache_dir, hooks=TrainHooks(epoch_end=lambda report: epochs.append(report.epoch)))
    totals = [row["train_total_loss"] for row in result.history]
    assert epochs == list(range(1, 11)) and len(totals) == 10
    assert all(math.isfinite(t) for t in totals)
    # Flow-matching losses are noisy batch to batch: compare the first epoch with the mean of the last three.
    assert np.mean(totals[-3:]) < 0.7 * totals[0], totals
    for part in ("diff", "dur", "prior"):
        assert result.history[-1][f"train_{part}_loss"] < result.history[0][f"train_{part}_loss"]
    assert result.best_metric == "train_total_loss" and result.val_clips == 0  # no validation clip asked for
    assert result.best_value == min(totals) and totals[result.best_epoch - 1] == result.best_value


def test_interrupted_run_resumes_at_the_next_epoch_with_the_same_state(tmp_path, cache_dir):
    """An uninterrupted run and a run stopped after epoch 2 and resumed end in identical tensors."""
    utterances, config = demo_utterances(6), tiny_config(epochs=3)

    class Stop(BaseException):  # as the worker's JobInterrupted: not an Exception
        pass

    at_epoch_2 = {}

    def remember(report):
        if report.epoch == 2:
            at_epoch_2.update(torch.load(tmp_path / "a" / "resume" / STATE_FILE, weights_only=True))

    train(utterances, config, tmp_path / "a", cache_dir=cache_dir, resume_dir=tmp_path / "a" / "resume",
          hooks=TrainHooks(epoch_end=remember))

    def stop_after_2(report):
        if report.epoch == 2:
            raise Stop()

    with pytest.raises(Stop):
        train(utterances, config, tmp_path / "b", cache_dir=cache_dir, resume_dir=tmp_path / "b" / "resume",
              hooks=TrainHooks(epoch_end=stop_after_2))
    stopped = load_state(tmp_path / "b" / "resume")
    assert stopped.epoch == 2 and len(stopped.history) == 2
    assert_same_tensors(stopped.optimizer["state"], at_epoch_2["optimizer"]["state"])
    assert_same_tensors(stopped.model, at_epoch_2["model"])

    resumed_epochs = []
    result = train(utterances, config, tmp_path / "b", cache_dir=cache_dir, resume_dir=tmp_path / "b" / "resume",
                   hooks=TrainHooks(epoch_end=lambda report: resumed_epochs.append(report.epoch)))
    assert result.start_epoch == 3 and resumed_epochs == [3]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    final_a, final_b = load_state(tmp_path / "a" / "resume"), load_state(tmp_path / "b" / "resume")
    assert final_b.step == final_a.step
    assert_same_tensors(final_b.optimizer["state"], final_a.optimizer["state"])
    assert_same_tensors(final_b.model, final_a.model)
    assert final_b.history == final_a.history


def assert_same_tensors(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tensors(a[key], b[key])
    else:
        assert a == b


def test_the_library_writes_the_metrics_csv_before_each_epoch_hook(tmp_path, cache_dir):
    """``tts.train`` owns ``training_metrics.csv`` (as ``train_asr`` does): a hook that uploads it sees the epoch."""
    seen = []

    def read_metrics(report):
        with (tmp_path / "run" / METRICS_FILE).open() as fh:
            seen.append([row["epoch"] for row in csv.DictReader(fh)])

    result = train(demo_utterances(2), tiny_config(epochs=2, val_split=0.0), tmp_path / "run", cache_dir=cache_dir,
                   hooks=TrainHooks(epoch_end=read_metrics))
    assert seen == [["1"], ["1", "2"]]
    with (tmp_path / "run" / METRICS_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == TTS_METRICS_COLUMNS
    assert [float(r["train_total_loss"]) for r in rows] == pytest.approx([h["train_total_loss"] for h in result.history],
                                                                          rel=1e-5)


def test_best_model_is_a_plain_state_dict_with_a_sidecar(tmp_path, cache_dir):
    result = train(demo_utterances(5), tiny_config(epochs=2), tmp_path / "run", cache_dir=cache_dir)
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "encoder.emb.weight" in state and "decoder.estimator.final_proj.weight" in state
    sidecar = read_sidecar(result.checkpoint)
    assert sidecar["frontend"]["kind"] == "phonemes" and sidecar["frontend"]["language"] == "rus"
    assert sidecar["model_config"]["hidden_channels"] == 64
    extra = sidecar["extra"]
    assert extra["training"]["epochs"] == 2 and extra["initialised_from"] == "scratch (tiny)"
    assert extra["default_voice"]["id"] in {u.id for u in demo_utterances(5)}
    assert result.val_clips == 1 and result.train_clips == 4  # 10 % of 5, but at least one
    assert result.best_metric == "val_total_loss"


def test_a_base_checkpoint_is_continued_and_a_mismatched_one_refused(tmp_path, cache_dir):
    base = build_model("tiny", n_vocab=401)
    frontend = PhonemeFrontend("rus")
    save_checkpoint(base, tmp_path / "base.pt", frontend=frontend.to_dict())
    result = train(demo_utterances(3), tiny_config(epochs=1, base_checkpoint=str(tmp_path / "base.pt"),
                                                   preset="v1.1"), tmp_path / "run", cache_dir=cache_dir)
    assert result.initialised_from == "checkpoint base.pt"
    assert read_sidecar(result.checkpoint)["model_config"]["hidden_channels"] == 64  # sizes from the base

    state = load_state_dict_file(tmp_path / "base.pt")
    state["encoder.proj.weight"] = torch.zeros(3, 3, 3)
    torch.save(state, tmp_path / "wrong.pt")
    shutil.copyfile(tmp_path / "base.json", tmp_path / "wrong.json")
    with pytest.raises(CheckpointError, match="shape mismatches.*encoder.proj.weight"):
        train(demo_utterances(3), tiny_config(epochs=1, base_checkpoint=str(tmp_path / "wrong.pt")),
              tmp_path / "run2", cache_dir=cache_dir)


def test_bad_clips_are_counted_skipped_and_never_fatal(tmp_path, cache_dir):
    good, longest = demo_utterances(2), demo_utterances()[-1]
    short = tmp_path / "short.wav"
    encode_audio(np.zeros(4410, dtype=np.float32) + 0.1 * np.sin(np.arange(4410) / 5), 44100, short, "wav")
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"not audio at all")
    long_text = " ".join(["word"] * 200)
    bad = [Utterance("broken", "some text", broken), Utterance("silent-text", "«»", good[0].audio_path),
           Utterance("short", long_text, short), Utterance("long", longest.text, longest.audio_path)]
    prepared = prepare_clips(good + bad, PhonemeFrontend("rus"), cache_dir, max_seconds=6.0)
    reasons = {s.id: s.reason for s in prepared.skipped}
    assert reasons == {"broken": "undecodable audio", "silent-text": "empty text",
                       "short": "audio too short for its text", "long": "audio too long"}
    assert [c.id for c in prepared.clips] == [u.id for u in good]


def test_unrepresentable_characters_are_counted(tmp_path, cache_dir):
    u = demo_utterances(1)[0]
    prepared = prepare_clips([Utterance(u.id, u.text + " ☃☃ ✓", u.audio_path)], PhonemeFrontend("rus"), cache_dir)
    assert prepared.unknown == {"☃": 2, "✓": 1}
    assert len(prepared.clips) == 1


def test_mels_and_symbols_are_cached_by_content(tmp_path, monkeypatch):
    utterances = demo_utterances(2)
    first = prepare_clips(utterances, PhonemeFrontend("rus"), tmp_path)
    # A copy of a recording under another name hits the same cache entry; nothing is decoded again.
    copy = tmp_path / "copy.webm"
    shutil.copyfile(utterances[0].audio_path, copy)
    import tts.data as data

    monkeypatch.setattr(data, "load_audio", lambda *a, **k: pytest.fail("decoded a cached recording"))
    again = prepare_clips([Utterance("copy", utterances[0].text, copy), utterances[1]],
                          PhonemeFrontend("rus"), tmp_path)
    assert [c.mel_path for c in again.clips] == [c.mel_path for c in first.clips]
    assert again.clips[0].ids == first.clips[0].ids


def test_threaded_cpu_alignment_equals_the_builtin_one():
    """What training on CUDA uses instead of the per-frame torch loop (tts.alignment)."""
    generator = torch.Generator().manual_seed(5)
    t_x, t_y = torch.tensor([7, 3, 12, 1, 9]), torch.tensor([20, 3, 40, 6, 9])
    value = torch.randn(5, 12, 40, generator=generator)
    mask = (sequence_mask(t_x, 12).unsqueeze(2) & sequence_mask(t_y, 40).unsqueeze(1)).float()
    path = maximum_path_threaded(value, mask)
    assert torch.equal(path, maximum_path_numba(value, mask))
    assert torch.equal(path.sum(dim=1), mask[:, 0, :])  # every valid frame belongs to exactly one symbol


def test_batches_stay_under_the_frame_budget_and_keep_every_clip():
    generator = torch.Generator().manual_seed(0)
    frames = [int(x) for x in torch.randint(30, 900, (200,), generator=generator)] + [5000]
    batches = length_batches(frames, batch_frames=4000, batch_size=16, generator=generator)
    assert sorted(i for b in batches for i in b) == list(range(len(frames)))  # none lost, none twice
    for batch in batches:
        assert len(batch) <= 16
        assert max(frames[i] for i in batch) * len(batch) <= 4000 or len(batch) == 1
    assert [200] in batches  # longer than the budget: a batch of its own, not dropped
    again = length_batches(frames, batch_frames=4000, batch_size=16, generator=torch.Generator().manual_seed(1))
    assert again != batches  # shuffled per epoch


def test_validation_split_is_stable_and_never_empties_training():
    clips = [type("C", (), {"id": f"c{i}"})() for i in range(40)]
    train_a, val_a = split_clips(clips, 0.1, seed=3)
    train_b, val_b = split_clips(list(reversed(clips)), 0.1, seed=3)
    assert {c.id for c in val_a} == {c.id for c in val_b} and len(val_a) == 4 and len(train_a) == 36
    assert split_clips(clips[:1], 0.5, seed=3) == (clips[:1], [])
    assert [len(part) for part in split_clips(clips[:2], 0.1, seed=3)] == [1, 1]
    assert [len(part) for part in split_clips(clips[:5], 0.0, seed=3)] == [5, 0]


def test_offline_mode_never_touches_the_network(monkeypatch):
    import socket

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("tried the network"))
    model_hub.hub_reachable.cache_clear()
    assert model_hub.hub_reachable() is False
    assert hub_file("no/such/file.pt") is None


def test_learning_rate_warms_up_then_follows_a_cosine():
    rates = [learning_rate(step, 1e-3, 10, 100, 0.05) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(5e-5, rel=0.05)


def audio_folder(folder: Path, count: int) -> Path:
    """The ``count`` shortest demo recordings as an AudioFolder, as the dataset exporter writes one."""
    (folder / "audio").mkdir(parents=True)
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "transcription", "cell_id", "reference", "notebook"])
        for u in demo_utterances(count):
            shutil.copyfile(u.audio_path, folder / "audio" / u.audio_path.name)
            writer.writerow([f"audio/{u.audio_path.name}", u.text, u.id, "", ""])
    return folder


def test_cli_preprocesses_trains_from_an_audio_folder_and_resumes(tmp_path):
    dataset = audio_folder(tmp_path / "dataset", 4)
    runner = CliRunner()
    cache = tmp_path / "out" / "cache"
    pre = runner.invoke(preprocess_stabletts.main, ["--data", str(dataset), "--cache-dir", str(cache),
                                                    "--language", "rus"])
    assert pre.exit_code == 0, pre.output
    assert "4 clip(s) ready" in pre.output and len((cache / "clips.jsonl").read_text().splitlines()) == 4
    args = ["--data", str(dataset), "--out", str(tmp_path / "out"), "--preset", "tiny", "--language", "rus",
            "--batch-size", "2"]
    first = runner.invoke(train_stabletts.main, args + ["--epochs", "1"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(train_stabletts.main, args + ["--epochs", "2"])
    assert second.exit_code == 0, second.output
    with (tmp_path / "out" / "training_metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # the second call continued, it did not start over
    assert list(rows[0]) == ["epoch", "train_total_loss", "train_diff_loss", "train_dur_loss", "train_prior_loss",
                             "val_total_loss", "val_diff_loss", "val_dur_loss", "val_prior_loss"]
    assert "Best epoch" in second.output and (tmp_path / "out" / "best_model.pt").is_file()

    missing = runner.invoke(train_stabletts.main, ["--data", str(dataset / "metadata.csv"), "--out",
                                                   str(tmp_path / "x"), "--preset", "tiny", "--max-clip-seconds",
                                                   "0.1"])
    assert missing.exit_code == 1 and "none of the 4 recording(s) can be used" in missing.output
    assert json.loads((cache / "frontend.json").read_text())["kind"] == "phonemes"


def test_the_training_library_never_imports_the_worker():
    import subprocess
    import sys

    code = ("import sys, tts, train_stabletts, preprocess_stabletts; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'handlers', 'worker', 'jobs', 'job_process', 'storage', 'stores', 'local_store', 'local_jobs', "
            "'gitlab_jobs', 'codex'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.slow  # torchrun with two training processes: ~17 s on 2 cores
def test_torchrun_trains_one_model_on_two_processes(tmp_path):
    """Several GPUs: ``torchrun train_stabletts.py`` (plain DistributedDataParallel). The same code path on
    two CPU processes with the gloo backend: each rank takes half of the batches, the losses are averaged
    over both, and only rank 0 writes the model, the metrics and the resumable state."""
    import subprocess
    import sys

    dataset = audio_folder(tmp_path / "dataset", 6)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "train_stabletts.py"), "--data", str(dataset), "--out", str(out), "--preset", "tiny",
               "--language", "rus", "--batch-size", "1", "--val-split", "0.34", "--epochs", "2", "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    log = done.stderr
    assert "rank 0 of 2" in log and "rank 1 of 2" in log, log[-4000:]
    # 4 training clips, one per batch: 2 batches per rank and epoch (each process logs its own count).
    assert log.count("Training on 4 clip(s), validating on 2; 2 batch(es) per epoch") == 2, log[-4000:]
    with (out / "training_metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(math.isfinite(float(r["val_total_loss"])) for r in rows)
    assert load_state(out / "resume").epoch == 2
    assert not any(name.startswith("module.") for name in load_state_dict_file(out / "best_model.pt"))
    load_model(out / "best_model.pt")  # strict: the names and shapes of a plain StableTTS
    assert done.stdout.count("Best epoch") == 1  # rank 0 reports, rank 1 does not
