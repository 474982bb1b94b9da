"""The StableTTS handlers (handlers/tts/stabletts/) through a real worker on a copy of the demo project.

Local mode, CPU, offline (HF_HUB_OFFLINE=1: no hub downloads, so the Griffin-Lim vocoder), tiny models. The
demo's three TTS jobs run once, in manifest order, as the demo runs them; the other tests run smaller jobs.
Expectations are read from the notebook JSON and the audio files themselves, not from the handlers' code.
"""
from __future__ import annotations

import io
import json
import re
import os
import random
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

import codex
from conftest import fast_config, run_worker
from demo_env import BOOKS, FILES, DemoProject, live_audio
import model_hub
from handlers.common import TTS_METRICS_COLUMNS
from preprocess_audio import probe_audio
from StableTTS import build_model, load_state_dict_file, save_checkpoint
from StableTTS.text import PhonemeFrontend

pytestmark = pytest.mark.slow  # the demo's TTS jobs (train, synthesize, write back) run once: ~2 min on 2 cores


def verse_cells(data: dict) -> dict[str, dict]:
    return {c["metadata"]["id"]: c for c in data["cells"] if c["metadata"].get("type") == "text"}


def at(minutes_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# The jobs' processes inherit these: no hub downloads, and one CPU thread -- the tiny models' tensors gain
# little from a second one, and on a shared CI machine OpenMP's spinning threads make it several times slower.
TEST_ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TEST_EPOCHS = 5  # the demo's 10 take minutes on a 2-core CPU; 5 already learn durations (checked below)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    model_hub.hub_reachable.cache_clear()


# -- the demo's TTS jobs, once ----------------------------------------------------------------------
@dataclass
class DemoRun:
    env: DemoProject
    jobs: list[dict]
    before: dict[str, dict]

    def job(self, mode: str) -> dict:
        return next(j for j in self.jobs if j["mode"] == mode)

    def response(self, mode: str) -> dict:
        return self.env.response(self.job(mode)["job_id"])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> DemoRun:
    tmp = tmp_path_factory.mktemp("demo_tts")
    env = DemoProject(tmp / "project")
    jobs = [j for j in env.manifest_jobs() if j["job_type"] == "tts"]
    assert [j["mode"] for j in jobs] == ["training", "inference", "training_and_inference"]
    for job in jobs:
        if "epochs" in job:
            job["epochs"] = TEST_EPOCHS
        for key in ("batch_size", "learning_rate", "warmup_steps"):  # the demo's learning schedule: slower
            job.pop(key, None)
    env.write_manifest(jobs)
    before = {book: env.notebook(book) for book in BOOKS}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in TEST_ENV.items():
            patch.setenv(key, value)
        run_worker(env.source(), fast_config(tmp, handler_paths=(), grace_seconds=30.0))
    return DemoRun(env, jobs, before)


def test_the_demo_tts_jobs_complete_in_manifest_order(demo_run):
    responses = [demo_run.env.response(j["job_id"]) for j in demo_run.jobs]
    assert [r["state"] for r in responses] == ["completed"] * 3, [r.get("error_message") for r in responses]
    claimed = [r["claimed_at"] for r in responses]
    assert claimed == sorted(claimed)
    assert responses[0]["epochs_completed"] == TEST_EPOCHS and responses[2]["epochs_completed"] == TEST_EPOCHS
    # The plugin shows status_message: a completed job says what it did, not "completed".
    training, inference, both = (r["status_message"] for r in responses)
    assert re.fullmatch(r"best epoch \d+: val total loss [\d.]+ \(\d+ \+ \d+ clips\)", training), training
    spoken = responses[1]["result"]["uploaded_count"]
    assert inference.startswith(f"{spoken} verse{'s' if spoken != 1 else ''} spoken"), inference
    assert both.startswith("best epoch ") and " spoken" in both, both


def test_training_uploads_a_plain_checkpoint_its_sidecar_and_the_metrics(demo_run):
    env, job = demo_run.env, demo_run.job("training")
    result = demo_run.response("training")["result"]
    folder = f"gpu_jobs/job_{job['job_id']}/checkpoint"
    assert result["checkpoint_path"] == f"{folder}/best_model.pt"
    state = torch.load(io.BytesIO(env.read_file(f"{folder}/best_model.pt")), map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and "fake_speaker" in state
    sidecar = json.loads(env.read_file(f"{folder}/best_model.json"))
    frontend = {k: v for k, v in sidecar["frontend"].items() if k != "reason"}
    # metadata.json's tag, shown to be the Cyrillic verses' language: espeak reads them, numbers as Russian words
    assert frontend == {"kind": "phonemes", "language": "rus", "espeak_voice": "ru", "numbers": "ru"}
    assert sidecar["frontend"]["reason"] == result["frontend_reason"]  # the demo's Russian + English verses:
    assert "ru reads this Cyrillic text and switches to en for the Latin text" in result["frontend_reason"]
    assert sidecar["extra"]["training"]["epochs"] == TEST_EPOCHS and sidecar["extra"]["training"]["preset"] == "tiny"

    lines = env.read_file(f"{folder}/training_metrics.csv").decode().splitlines()
    assert tuple(lines[0].split(",")) == TTS_METRICS_COLUMNS
    rows = [dict(zip(TTS_METRICS_COLUMNS, map(float, line.split(",")))) for line in lines[1:]]
    assert [int(r["epoch"]) for r in rows] == list(range(1, TEST_EPOCHS + 1))
    best = min(rows, key=lambda r: r["val_total_loss"])  # the plugin's star
    assert result["best_epoch"] == int(best["epoch"])
    assert result["best_metric_value"] == pytest.approx(best["val_total_loss"], rel=1e-4)
    assert rows[-1]["val_total_loss"] < rows[0]["val_total_loss"]
    # 28 recorded verses with text; the 6 recordings without text are reported, not silently dropped.
    assert result["train_clips"] + result["val_clips"] == 28
    assert result["skipped_clips"] == 6 and result["skipped_clip_reasons"] == {"empty text": 6}
    assert result["unknown_characters"] == 0 and result["initialised_from"] == "scratch (tiny)"
    assert f"epoch {TEST_EPOCHS}/{TEST_EPOCHS}" in env.logs(job["job_id"])


def test_every_verse_without_audio_gets_one_plausible_generated_take(demo_run):
    env = demo_run.env
    result = demo_run.response("inference")["result"]
    expected = {book: [cid for cid, cell in verse_cells(demo_run.before[book]).items()
                       if cell["value"].strip() and not live_audio(cell)] for book in BOOKS}
    assert sum(map(len, expected.values())) == 6
    assert result["processed_count"] == 6 and result["uploaded_count"] == 6 and result["skipped_count"] == 0
    assert result["vocoder"] == "griffin-lim"
    assert "griffin-lim" in env.logs(demo_run.job("inference")["job_id"])
    assert result["voice"].startswith("default: the training data's median-length take")

    lengths, seconds = [], []
    for book in BOOKS:
        before, after = verse_cells(demo_run.before[book]), verse_cells(env.notebook(book))
        for cid, cell in after.items():
            old = before[cid]
            old_takes, new_takes = live_audio(old), live_audio(cell)
            # Human takes and selections untouched (the later t&i job adds nothing: every verse has audio).
            assert {k: new_takes[k] for k in old_takes} == old_takes
            added = {k: a for k, a in new_takes.items() if k not in old_takes}
            if cid not in expected[book]:
                assert not added and cell["metadata"].get("selectedAudioId") == old["metadata"].get("selectedAudioId")
                continue
            assert len(added) == 1
            take_id, take = next(iter(added.items()))
            assert take["isGenerated"] is True and cell["metadata"]["selectedAudioId"] == take_id
            info = probe_audio(env.root / FILES / book / f"{take_id}.webm")
            assert info.format == "webm" and info.sample_rate == 48000
            assert 0.2 <= info.duration_sec <= 30.0
            lengths.append(len(codex.html_to_text(cell["value"])))
            seconds.append(info.duration_sec)
    assert np.corrcoef(lengths, seconds)[0, 1] > 0.3, (lengths, seconds)  # longer verses take longer to say


def test_training_and_inference_never_trains_on_generated_takes(demo_run):
    result = demo_run.response("training_and_inference")["result"]
    job = demo_run.job("training_and_inference")
    assert result["checkpoint_path"] == f"gpu_jobs/job_{job['job_id']}/checkpoint/best_model.pt"
    assert demo_run.env.read_file(result["checkpoint_path"]) is not None
    # The inference job before it voiced the 6 verses without recordings: those takes are not training data.
    assert result["skipped_clip_reasons"]["only a machine-generated take"] == 6
    assert result["train_clips"] + result["val_clips"] == 28
    assert result["audio_generated"] == 0 and result["processed_count"] == 0  # nothing is left to voice
    assert result["voice"] == f"voice_reference {job['voice_reference']}"


def test_finished_jobs_leave_no_resume_state(demo_run):
    for job in demo_run.jobs:
        assert not list((demo_run.env.root / "gpu_jobs" / f"job_{job['job_id']}").glob("resume/*"))


# -- checkpoints that must not be used ---------------------------------------------------------------
class Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tts_job(job_id: str, mode: str, minutes_ago: float, **extra) -> dict:
    return {"job_id": job_id, "job_type": "tts", "mode": mode, "submitted_at": at(minutes_ago),
            "model": {"type": "StableTTS", "preset": "tiny"}, "epochs": 2, "canceled": False, **extra}


def test_bad_base_checkpoints_fail_cleanly_and_html_never_reaches_the_model(tmp_path, monkeypatch):
    env = DemoProject(tmp_path / "project")
    marker = tmp_path / "pwned"
    (env.root / "gpu_jobs" / "evil").mkdir()
    torch.save({"encoder.emb.weight": Payload(marker)}, env.root / "gpu_jobs/evil/best_model.pt")
    good = build_model("tiny", n_vocab=401)
    save_checkpoint(good, env.root / "gpu_jobs/random/best_model.pt", frontend=PhonemeFrontend("rus").to_dict())
    state = load_state_dict_file(env.root / "gpu_jobs/random/best_model.pt")
    state["decoder.estimator.final_proj.weight"] = torch.zeros(5, 5, 1)
    (env.root / "gpu_jobs/wrong").mkdir()
    torch.save(state, env.root / "gpu_jobs/wrong/best_model.pt")
    shutil.copyfile(env.root / "gpu_jobs/random/best_model.json", env.root / "gpu_jobs/wrong/best_model.json")
    for seed in (0, 2, 20):  # bytes on which torch.load raises UnpicklingError, IndexError and KeyError
        (env.root / f"gpu_jobs/garbage{seed}.pt").write_bytes(random.Random(seed).randbytes(2000))
    shutil.copyfile(env.root / "gpu_jobs/random/best_model.pt", tmp_path / "outside.pt")
    cases = {  # job id -> (base_checkpoint, words the message must contain)
        "evil": ("gpu_jobs/evil/best_model.pt", ["cannot be used", "refused to load"]),
        "evil_training": ("gpu_jobs/evil/best_model.pt", ["cannot be used", "refused to load"]),
        "wrong": ("gpu_jobs/wrong/best_model.pt", ["cannot be used", "shape mismatches", "final_proj"]),
        **{f"garbage{seed}": (f"gpu_jobs/garbage{seed}.pt", ["cannot be used", "not a", "torch checkpoint"])
           for seed in (0, 2, 20)},
        "outside": ("../outside.pt", ["leaves the project"]),
        "absolute": (str(tmp_path / "outside.pt"), ["absolute"]),
        "missing": ("gpu_jobs/job_nothing/checkpoint/best_model.pt", ["not in the project"]),
        "none": (None, ["needs model.base_checkpoint"]),
    }
    jobs = []
    for number, (job_id, (path, _)) in enumerate(cases.items()):
        job = tts_job(job_id, "training" if job_id == "evil_training" else "inference", 30 - number)
        if path:
            job["model"]["base_checkpoint"] = path
        jobs.append(job)
    jobs.append(tts_job("random_voice", "inference", 1, model={"type": "StableTTS",
                                                                "base_checkpoint": "gpu_jobs/random/best_model.pt"},
                        inference={"include_verses": ["GEN 1:4", "GEN 1:11", "JHN 1:3"], "diffusion_steps": 2}))
    env.write_manifest(jobs)
    spoken_texts: list[str] = []
    import handlers.tts.stabletts.synthesis as synthesis

    original = synthesis.synthesize_iter

    def recording(voice, texts, *args, **kwargs):
        spoken_texts.extend(texts)
        return original(voice, texts, *args, **kwargs)

    monkeypatch.setattr(synthesis, "synthesize_iter", recording)
    run_worker(env.source(), fast_config(tmp_path, handler_paths=(), in_process=True))

    for job_id, (_, words) in cases.items():
        response = env.response(job_id)
        assert response["state"] == "failed", (job_id, response)
        message = response["error_message"]
        assert all(word in message for word in words), (job_id, message)
        assert "Traceback" not in message and len(message) < 500
    assert not marker.exists()  # the payload never ran
    assert env.response("random_voice")["state"] == "completed"
    assert env.response("random_voice")["result"]["uploaded_count"] == 3
    values = {c["metadata"]["data"]["globalReferences"][0]: c["value"] for book in BOOKS
              for c in env.notebook(book)["cells"] if c["metadata"].get("type") == "text"}
    assert sorted(spoken_texts) == sorted(codex.html_to_text(values[r]) for r in ("GEN 1:4", "GEN 1:11", "JHN 1:3"))
    assert not any("<" in t or "&quot;" in t or "&#" in t for t in spoken_texts)
    assert any('"' in t for t in spoken_texts)  # GEN 1:11's &quot; arrived as a quote mark
