"""The ASR handlers (handlers/asr/w2v2bert) end to end: a real worker on a copy of the demo project.

Every job runs in the worker's child process with the tiny random model (``model.preset: tiny``), on the CPU
and offline. Expectations are read from the notebook JSON and the job folder as the plugin reads them. A
translator who types while a job runs is played through a thin wrapper around the real inference handler
that pauses just before the write-back (the same ready/go files as tests/test_handler_common.py).
"""

from __future__ import annotations

import html
import json
import re
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import fast_config, run_worker, run_worker_in_thread, tar_file, tar_link, write_tar
from demo_env import BOOKS, DEMO, DemoProject, current_take, reference

pytestmark = pytest.mark.slow  # each test trains or transcribes with the demo project: 10 s to 2 min on 2 cores

METRICS_HEADER = "epoch,train_total_loss,val_total_loss,val_wer,val_cer"
AUTHOR = "ASR W2V2BERT"
NEEDING_TEXT = ("GEN 1:6", "GEN 1:13", "GEN 1:19", "JHN 1:5", "JHN 1:10", "JHN 1:16")   # audio, no text
TRANSLATOR_TEXT = "<span>Typed by the translator</span>"
CHANGED = "a translator changed the text since the job read it"
TEST_EPOCHS = 2     # the demo's 10 epochs take minutes on a 2-core CPU; 2 exercise every step
# The shortest recorded verses (27 s of the demo's 180 s): jobs that are not the demo's own train on these.
SHORT_VERSES = ["JHN 1:2", "JHN 1:11", "JHN 1:6", "JHN 1:4", "JHN 1:1", "GEN 1:1", "GEN 1:3", "JHN 1:20"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network: the job processes inherit this environment."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def demo(tmp_path) -> DemoProject:
    return DemoProject(tmp_path / "project")


def demo_asr_jobs() -> list[dict]:
    """The demo manifest's ASR jobs, in manifest order, with fewer epochs."""
    manifest = yaml.safe_load((DEMO / "gpu_jobs" / "manifest.yaml").read_text())
    jobs = [job for job in manifest["jobs"] if job["job_type"] == "asr"]
    for job in jobs:
        if "epochs" in job:
            job["epochs"] = TEST_EPOCHS
        job["model"]["preset"] = "tiny"  # the demo's preset and schedule learn, in minutes; tiny runs every step
        for key in ("batch_size", "gradient_accumulation_steps", "learning_rate"):
            job.pop(key, None)
    return jobs


def check_archive(path: Path) -> dict[str, int]:
    """The model archive holds a Hugging Face model folder at its top level; returns its vocabulary."""
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert {"config.json", "vocab.json", "model.safetensors"} <= set(members), sorted(members)
        assert all(m.isfile() and not m.name.startswith("/") and ".." not in m.name for m in members.values())
        return json.loads(tar.extractfile("vocab.json").read())


def check_metrics(demo: DemoProject, job_id: str, epochs: int) -> None:
    lines = demo.read_file(f"gpu_jobs/job_{job_id}/checkpoint/training_metrics.csv").decode().splitlines()
    assert lines[0] == METRICS_HEADER
    rows = [line.split(",") for line in lines[1:]]
    assert [row[0] for row in rows] == [str(n) for n in range(1, epochs + 1)]   # one row per epoch
    assert all(len(row) == 5 and float(row[1]) > 0 for row in rows)


def check_training_result(demo: DemoProject, job_id: str, result: dict, epochs: int) -> dict[str, int]:
    assert result["checkpoint_path"] == f"gpu_jobs/job_{job_id}/model/asr_model.pth.tar"
    assert set(result["test_results"]) == {"wer", "cer", "n"}
    assert [row["epoch"] for row in result["train_metrics"]] == list(range(1, epochs + 1))
    assert "post_corrector_used" not in result          # transmorgrifier not enabled
    check_metrics(demo, job_id, epochs)
    assert demo.job_files(job_id, "resume") == []       # resumable state removed once completed
    return check_archive(demo.root / result["checkpoint_path"])


def check_transcribed(before: dict, after: dict, refs, *, backfilled=()) -> None:
    """Each cell holds a transcription with the edit history the editor's merge needs."""
    for ref in refs:
        cell, meta = after[ref], after[ref]["metadata"]
        assert cell["value"].strip(), ref
        edits = meta["edits"]
        last = edits[-1]
        assert (last["editMap"], last["value"], last["type"], last["author"]) == (
            ["value"], cell["value"], "llm-generation", AUTHOR), ref
        if ref in backfilled:
            first = edits[-2]
            assert (first["type"], first["value"]) == ("initial-import", before[ref]["value"])
            assert first["timestamp"] < last["timestamp"]
        else:
            assert edits[:-1] == before[ref]["metadata"].get("edits", []), ref
        take = current_take(before[ref]["metadata"])
        assert meta["attachments"][take]["transcription"]["content"] == html.unescape(cell["value"])


PAUSING_HANDLER = '''
"""Test wrapper: the real ASR inference handler, paused just before it writes its transcriptions."""
import os
import time
from pathlib import Path

from handlers.asr.w2v2bert import inference


class PausingCallbacks:
    def __init__(self, callbacks, job_id):
        self._callbacks, self._job_id, self._paused = callbacks, job_id, False

    def __getattr__(self, name):
        return getattr(self._callbacks, name)

    def heartbeat(self, epochs_completed=None, message=None):
        if not self._paused and (message or "").startswith("saving transcriptions"):
            self._paused = True
            records = Path(os.environ["CODEX_TEST_RECORD_DIR"])
            (records / f"{self._job_id}.ready").write_text("ready")
            deadline = time.monotonic() + 120
            while not (records / f"{self._job_id}.go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return self._callbacks.heartbeat(epochs_completed, message)


def run(job_context, callbacks):
    return inference.run(job_context, PausingCallbacks(callbacks, job_context["job_id"]))
'''


def pausing_handlers(tmp_path: Path) -> Path:
    """A handler root whose asr/w2v2bert/inference.py wraps the built-in one (other modes stay built in)."""
    root = tmp_path / "pausing_handlers"
    folder = root / "asr" / "w2v2bert"
    folder.mkdir(parents=True)
    (folder / "inference.py").write_text(PAUSING_HANDLER)
    return root


# -- the demo's three ASR jobs -----------------------------------------------------------------------
def test_demo_asr_jobs_train_transcribe_and_keep_a_translators_edit(demo, tmp_path, record_dir):
    training, inference, both = demo_asr_jobs()
    assert [job["mode"] for job in (training, inference, both)] == ["training", "inference", "training_and_inference"]
    assert inference["model"]["base_checkpoint"] == f"gpu_jobs/job_{training['job_id']}/model/asr_model.pth.tar"
    demo.write_manifest([training, inference, both])
    before = demo.cells()
    assert all(before[ref]["value"] == "" and current_take(before[ref]["metadata"]) for ref in NEEDING_TEXT)

    def translator_types():
        data = demo.notebook("JHN")
        cell = next(c for c in data["cells"] if reference(c) == "JHN 1:5")
        cell["value"] = TRANSLATOR_TEXT
        cell["metadata"]["edits"].append({"editMap": ["value"], "value": TRANSLATOR_TEXT, "timestamp": 1900000000000,
                                          "type": "user-edit", "author": "translator", "validatedBy": []})
        demo.save_notebook("JHN", data)

    config = fast_config(tmp_path, handler_paths=(pausing_handlers(tmp_path),))
    _, thread = run_worker_in_thread(demo.source(), config)
    ready = record_dir / f"{inference['job_id']}.ready"
    demo.wait_for(lambda: ready.exists() or not thread.is_alive(), 600)
    assert ready.exists(), demo.response(inference["job_id"])
    translator_types()
    (record_dir / f"{inference['job_id']}.go").write_text("go")
    thread.join(600)
    assert not thread.is_alive()

    responses = [demo.response(job["job_id"]) for job in (training, inference, both)]
    assert [r["state"] for r in responses] == ["completed"] * 3, responses
    assert responses[0]["claimed_at"] < responses[1]["claimed_at"] < responses[2]["claimed_at"]   # manifest order
    trained, heard, trained_and_heard = (r["result"] for r in responses)
    assert responses[0]["epochs_completed"] == TEST_EPOCHS
    check_training_result(demo, training["job_id"], trained, TEST_EPOCHS)
    # The plugin shows status_message: a completed job says what it did, not "completed".
    assert re.fullmatch(r"best epoch \d+: validation CER [\d.]+", responses[0]["status_message"]), responses[0]
    assert responses[1]["status_message"].startswith("5 verses transcribed, 1 skipped; "), responses[1]
    assert "recordings differ from their text" in responses[1]["status_message"]

    # Inference: every cell with audio and no text got text, except the one the translator typed into.
    assert (heard["cells_transcribed"], heard["errors_count"], heard["files_modified"]) == (5, 1, 2), heard
    assert heard["skipped_reasons"] == {CHANGED: 1}
    after = demo.cells()
    transcribed = [ref for ref in NEEDING_TEXT if ref != "JHN 1:5"]
    assert after["JHN 1:5"]["value"] == TRANSLATOR_TEXT
    assert [e["author"] for e in after["JHN 1:5"]["metadata"]["edits"]][-1] == "translator"
    # Nothing else changed. (training_and_inference ran afterwards: no cell needed text any more.)
    for ref, cell in after.items():
        if ref not in NEEDING_TEXT:
            assert cell == before[ref], ref
    check_transcribed(before, after, transcribed)

    # training_and_inference: both result sets; its own model and metrics.
    check_training_result(demo, both["job_id"], trained_and_heard, TEST_EPOCHS)
    assert (trained_and_heard["cells_transcribed"], trained_and_heard["errors_count"]) == (0, 0)
    # The translator's typed text counts; the ASR's own transcriptions are not ground truth.
    assert trained_and_heard["training_clips"] == trained["training_clips"] + 1


# -- inference needs a trustworthy model ----------------------------------------------------------
def test_inference_without_a_usable_model_fails_cleanly_and_writes_nothing(demo, tmp_path, record_dir):
    outside = tmp_path / "outside"
    outside.mkdir()
    # Extracted into work-worker-a/<project>/job_<id>/inputs/base_checkpoint: five levels below tmp_path.
    up = "../" * 5
    hostile = {
        "dotdot": (tar_file(f"{up}outside/evil.json"), "leaves the folder"),
        "absolute": (tar_file(str(outside / "absolute.json")), "absolute path"),
        "symlink": (tar_link("config.json", f"{up}outside/linked.json"), "outside the folder"),
    }
    jobs = [{"job_id": "nomodel", "model": {"type": "W2V2BERT", "preset": "tiny"}},
            {"job_id": "gone", "model": {"type": "W2V2BERT",
                                         "base_checkpoint": "gpu_jobs/job_gone/model/asr_model.pth.tar"}}]
    for name, (member, _) in hostile.items():
        path = f"gpu_jobs/job_old_{name}/model/asr_model.pth.tar"
        demo.write_file(path, write_tar(tmp_path / f"{name}.tar", [tar_file("vocab.json"), member]).read_bytes())
        jobs.append({"job_id": name, "model": {"type": "W2V2BERT", "base_checkpoint": path}})
    for minute, job in enumerate(jobs):
        job.update(job_type="asr", mode="inference", submitted_at=f"2025-10-15T19:{10 + minute}:00.000Z",
                   canceled=False)
    demo.write_manifest(jobs)
    notebooks = {book: demo.read_file(f"files/target/{book}.codex") for book in BOOKS}

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=()))

    expected = {"nomodel": "An ASR inference job needs model.base_checkpoint",
                "gone": "model.base_checkpoint names gpu_jobs/job_gone/model/asr_model.pth.tar, which is not in the "
                        "project",
                **{name: "cannot be used: Refusing model archive asr_model.pth.tar" for name in hostile}}
    for job_id, message in expected.items():
        response = demo.response(job_id)
        assert response["state"] == "failed", response
        assert message in response["error_message"], response["error_message"]
        assert "Traceback" not in response["error_message"] and "\n" not in response["error_message"]
    for name, (_, reason) in hostile.items():
        assert reason in demo.response(name)["error_message"]
    assert {book: demo.read_file(f"files/target/{book}.codex") for book in BOOKS} == notebooks
    assert list(outside.iterdir()) == []
    assert not any(p.is_symlink() for p in (tmp_path / "work-worker-a").rglob("*"))


# -- training_and_inference continues a base checkpoint ----------------------------------------------
def make_base_checkpoint(folder: Path, archive: Path) -> dict[str, int]:
    """A tiny model unlike the preset (one encoder layer) whose vocabulary has a character the demo never
    uses ("ŋ"): only a run that continues this checkpoint keeps both. Returns its vocabulary."""
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertForCTC

    from asr.archive import write_model_archive
    from asr.model import PRESETS, RECIPE_OVERRIDES
    from asr.vocab import build_vocabulary, load_feature_extractor, make_processor, save_processor

    vocabulary = build_vocabulary(["ŋa ŋe", "the earth and god"], min_char_count=1).vocabulary
    config = Wav2Vec2BertConfig(vocab_size=vocabulary.size, pad_token_id=vocabulary.pad_id, add_adapter=True,
                                **{**PRESETS["tiny"], "num_hidden_layers": 1}, **RECIPE_OVERRIDES)
    Wav2Vec2BertForCTC(config).save_pretrained(str(folder))
    save_processor(make_processor(vocabulary, load_feature_extractor(None)), folder)
    write_model_archive(folder, archive)
    return dict(vocabulary.token_to_id)


def test_training_and_inference_continues_the_base_checkpoint_and_its_vocabulary(demo, tmp_path, record_dir):
    base_path = "gpu_jobs/job_older/model/asr_model.pth.tar"
    old_vocab = make_base_checkpoint(tmp_path / "base", demo.root / base_path)
    data = demo.notebook("GEN")
    gen_1_2 = next(c for c in data["cells"] if reference(c) == "GEN 1:2")
    gen_1_2["metadata"]["edits"] = []                    # text without history: backfilled before the ASR edit
    demo.save_notebook("GEN", data)
    before = demo.cells()
    demo.write_manifest([{
        "job_id": "again", "job_type": "asr", "mode": "training_and_inference", "canceled": False,
        "submitted_at": "2025-10-15T19:20:00.000Z", "epochs": 1,
        "model": {"type": "W2V2BERT", "preset": "tiny", "base_checkpoint": base_path},
        "training": {"include_verses": SHORT_VERSES}, "inference": {"include_verses": [*NEEDING_TEXT, "GEN 1:2"]},
    }])

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=()))

    response = demo.response("again")
    assert response["state"] == "completed", response
    result = response["result"]
    new_vocab = check_training_result(demo, "again", result, 1)
    assert {token: new_vocab.get(token) for token in old_vocab} == old_vocab          # old ids stable
    new_chars = sorted(set(new_vocab) - set(old_vocab), key=new_vocab.get)
    assert new_chars and [new_vocab[c] for c in new_chars] == list(range(len(old_vocab), len(new_vocab)))
    assert result["new_characters"] == "".join(new_chars)
    with tarfile.open(demo.root / result["checkpoint_path"]) as tar:
        assert json.loads(tar.extractfile("config.json").read())["num_hidden_layers"] == 1   # its weights, too
    assert (result["cells_transcribed"], result["errors_count"], result["files_modified"]) == (7, 0, 2), result
    check_transcribed(before, demo.cells(), [*NEEDING_TEXT, "GEN 1:2"], backfilled=("GEN 1:2",))


def test_training_fine_tunes_a_base_model_folder_from_the_project(demo, tmp_path, record_dir):
    """``model.base_model`` naming a project folder: fetched, then fine-tuned with a fresh CTC head."""
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    from asr.model import PRESETS

    encoder = tmp_path / "encoder"
    Wav2Vec2BertModel(Wav2Vec2BertConfig(**{**PRESETS["tiny"], "num_hidden_layers": 1})).save_pretrained(str(encoder))
    for file in encoder.iterdir():
        demo.write_file(f"models/encoder/{file.name}", file.read_bytes())
    demo.write_manifest([{"job_id": "tuned", "job_type": "asr", "mode": "training", "canceled": False,
                          "submitted_at": "2025-10-15T19:20:00.000Z", "epochs": 1,
                          "model": {"type": "W2V2BERT", "base_model": "models/encoder"},
                          "training": {"include_verses": SHORT_VERSES}}])

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=()))

    response = demo.response("tuned")
    assert response["state"] == "completed", response
    check_training_result(demo, "tuned", response["result"], 1)
    with tarfile.open(demo.root / response["result"]["checkpoint_path"]) as tar:
        assert json.loads(tar.extractfile("config.json").read())["num_hidden_layers"] == 1


def test_a_takeover_after_training_reuses_the_uploaded_model(demo, tmp_path, record_dir):
    """An earlier worker trained and uploaded the model of a training_and_inference job, then lost the job
    while transcribing: the next worker transcribes with that model instead of training again."""
    model_path = "gpu_jobs/job_taken/model/asr_model.pth.tar"
    make_base_checkpoint(tmp_path / "model", demo.root / model_path)
    earlier = {"checkpoint_path": model_path, "epochs_completed": 7, "test_results": {"wer": 1.0, "cer": 0.9, "n": 3},
               "train_metrics": [{"epoch": 7, "train_total_loss": 1.5}]}
    demo.write_file("gpu_jobs/job_taken/resume/trained.json", json.dumps(earlier))
    before = demo.cells()
    demo.write_manifest([{"job_id": "taken", "job_type": "asr", "mode": "training_and_inference",
                          "canceled": False, "submitted_at": "2025-10-15T19:20:00.000Z", "epochs": 7,
                          "model": {"type": "W2V2BERT", "preset": "tiny"},
                          "inference": {"check_recordings": False}}])     # its keys: tests/test_recording_check.py

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=()))

    response = demo.response("taken")
    assert response["state"] == "completed", response
    assert response["result"] == {**earlier, "cells_transcribed": 6, "errors_count": 0, "files_modified": 2,
                                  "skipped_reasons": {}, "summary": "7 epochs trained; 6 verses transcribed"}
    assert response["status_message"] == "7 epochs trained; 6 verses transcribed"
    assert response["epochs_completed"] == 7
    assert demo.read_file("gpu_jobs/job_taken/checkpoint/training_metrics.csv") is None     # nothing trained
    assert demo.job_files("taken", "resume") == []
    check_transcribed(before, demo.cells(), NEEDING_TEXT)


def test_inference_runs_the_earlier_workers_archive_and_reports_its_skipped_transmorgrifier(demo, tmp_path,
                                                                                          record_dir):
    """An archive as the earlier worker tarred it (its vocabulary without "|", a pickled training_args.bin,
    a SentenceTransmorgrifier .tm added by hand) is a valid base checkpoint; without the package (not a
    dependency) the .tm is skipped and the result says so."""
    import importlib.util

    from test_model_files import earlier_worker_model_folder, tar_like_the_earlier_worker, transmorgrifier_file

    if importlib.util.find_spec("sentence_transmorgrifier") is not None:
        pytest.skip("sentence-transmorgrifier is installed here: the .tm would be loaded, not skipped")
    folder = tmp_path / "final_model"
    folder.mkdir()
    earlier_worker_model_folder(folder, tmp_path / "pwned")
    transmorgrifier_file(folder / "fix_spelling.tm")
    model_path = "gpu_jobs/job_earlier/model/asr_model.pth.tar"
    demo.write_file(model_path, tar_like_the_earlier_worker(folder, tmp_path / "asr_model.pth.tar").read_bytes())
    demo.write_manifest([{"job_id": "old_model", "job_type": "asr", "mode": "inference", "canceled": False,
                          "submitted_at": "2025-10-15T19:20:00.000Z",
                          "model": {"type": "W2V2BERT", "base_checkpoint": model_path}}])

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=()))

    response = demo.response("old_model")
    assert response["state"] == "completed", response
    result = response["result"]
    assert (result["cells_transcribed"], result["errors_count"]) == (6, 0), result
    assert result["post_corrector_used"] is False
    assert result["post_corrector_skipped"] == ("fix_spelling.tm: a SentenceTransmorgrifier model; the "
                                                "sentence-transmorgrifier package is not installed on this worker")
    assert not (tmp_path / "pwned").exists()
