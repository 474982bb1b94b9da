"""handlers.common -- the shared handler steps -- on a copy of the demo project.

The end-to-end tests run a real worker on the copy with the CommonProbe test handler
(tests/handlers/test/common_probe), so every step goes through the job's child process and the claim-checked
commits. Expectations are computed from the notebook JSON independently of the codex package. The in-process tests
drive the same functions through a real ``JobCallbacks`` whose channel performs commits at once, to force
conflicts and name clashes at exact moments.
"""

from __future__ import annotations

import collections
import hashlib
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

import codex
import handler_api
import handlers.common.write_back as write_back
from conftest import fast_config, make_job, run_worker, run_worker_in_thread
from demo_env import BOOKS, DEMO, FILES, POINTERS, DemoProject, current_take, reference
from handler_api import JobCallbacks
from handlers.common import (
    ALREADY_RECORDED,
    ASR_METRICS_COLUMNS,
    TTS_METRICS_COLUMNS,
    MetricsLog,
    ProjectFileMissing,
    Progress,
    cells_needing_audio,
    collect_training_pairs,
    fetch_project_file,
    job_filter,
    load_notebooks,
    upload_job_files,
    write_generated_takes,
)
from job_settings import JobSettingError
from local_store import LocalProjectStore
from preprocess_audio import encode_audio, probe_audio
from storage import StorageError, UnsafePath

JHN_1_1 = "88195489-d273-336c-d1fb-ad7cc13e783b"
JHN_1_5 = "c0a76be5-984f-27ba-f9fb-921750125b26"


@pytest.fixture
def demo(tmp_path) -> DemoProject:
    return DemoProject(tmp_path / "project")


def by_reference(data: dict) -> dict[str, dict]:
    return {reference(c): c for c in data["cells"]}


def plain(value: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", value)).split())


def take_path(folder: str, book: str, audio_id: str) -> str:
    return f"{folder}/{book}/{audio_id}.webm"


def probe_job(job_id: str, mode: str, *, minutes_ago: float = 5, **extra) -> dict:
    return make_job(job_id, minutes_ago=minutes_ago, mode=mode, **{"model": {"type": "CommonProbe"}, **extra})


def report(record_dir: Path, job_id: str) -> dict:
    return json.loads((record_dir / f"{job_id}.json").read_text())


def run_with_translator(demo: DemoProject, tmp_path: Path, record_dir: Path, job_id: str, edit) -> None:
    """Run the worker; when the probe is ready to write back, let ``edit`` change the project, then go on."""
    worker, thread = run_worker_in_thread(demo.source(), fast_config(tmp_path))
    demo.wait_for(lambda: (record_dir / f"{job_id}.ready").exists(), 60)
    edit()
    (record_dir / f"{job_id}.go").write_text("go")
    thread.join(60)
    assert not thread.is_alive()


# -- end to end through the worker ------------------------------------------------------------------
def test_training_pairs_skips_metrics_and_job_files(demo, tmp_path, record_dir):
    gen_1_5 = current_take(by_reference(demo.notebook("GEN"))["GEN 1:5"]["metadata"])
    jhn_1_1 = current_take(by_reference(demo.notebook("JHN"))["JHN 1:1"]["metadata"])
    demo.remove_file(take_path(FILES, "GEN", gen_1_5))             # only the LFS pointer is left
    demo.write_file(take_path(FILES, "JHN", jhn_1_1), b"this is not audio\n" * 64)
    demo.write_file("files/target/BAD.codex", '{"cells": [')
    voice = take_path(POINTERS, "GEN", "audio-gen-1-1-1757535113257-aw4w34swp")    # as the demo manifest names it
    job = probe_job("train1", "training", epochs=3, training={"exclude_verses": ["GEN 1:7"]},
                    probe={"sample_rate": 16000}, voice_reference=voice)
    demo.write_file("gpu_jobs/job_train1/checkpoint/training_metrics.csv", "left by an earlier attempt\n")
    demo.write_manifest([job])

    run_worker(demo.source(), fast_config(tmp_path))

    response = demo.response("train1")
    assert response["state"] == "completed", response
    got = report(record_dir, "train1")
    expected = {}
    for book in BOOKS:
        for cell in demo.notebook(book)["cells"]:
            take, text = current_take(cell["metadata"]), plain(cell["value"])
            if cell["metadata"].get("type") == "text" and take and text and reference(cell) != "GEN 1:7":
                expected[cell["metadata"]["id"]] = (take, text)
    assert len(expected) == 27
    broken = {"GEN 1:5", JHN_1_1}
    pairs = {p["cell_id"]: p for p in got["pairs"]}
    assert set(pairs) == set(expected) - broken
    for cell_id, pair in pairs.items():
        assert (pair["audio_id"], pair["text"]) == expected[cell_id]
        info = soundfile.info(pair["audio_path"])
        assert (info.samplerate, info.channels) == (16000, 1) and info.duration > 0.5
        assert pair["source_path"].startswith(FILES + "/")   # a local checkout's real bytes
    # The selected take wins over a newer one; a deleted take never counts.
    assert pairs["GEN 1:12"]["audio_id"] == "audio-gen-1-12-1757575856457-2eths6s23"
    assert pairs["GEN 1:8"]["audio_id"] == "audio-gen-1-8-1757562103837-903yoaro4"
    assert got["skipped_counts"] == {"empty text": 6, "missing audio": 1, "undecodable audio": 1}
    reasons = {s["id"]: s for s in got["skipped"]}
    assert reasons["GEN 1:5"]["reason"] == "missing audio" and "LFS pointer" in reasons["GEN 1:5"]["detail"]
    assert reasons[JHN_1_1]["reason"] == "undecodable audio"
    assert {c for c, s in reasons.items() if s["reason"] == "empty text"} == {
        "GEN 1:6", "GEN 1:13", "GEN 1:19", JHN_1_5, "e69b2917-8e51-f3ef-30a8-f8a688993034",
        "3ad72b44-ebae-4b0a-91d7-42c3b098c53f"}
    assert list(got["unreadable"]) == ["files/target/BAD.codex"]
    assert demo.read_file("files/target/BAD.codex") == b'{"cells": ['
    # voice_reference names the pointers/ path; a local checkout has the bytes at files/.
    voice_bytes = demo.read_file(voice.replace(POINTERS, FILES))
    assert got["fetched"]["voice_reference"] == hashlib.sha256(voice_bytes).hexdigest()
    metrics = demo.read_file("gpu_jobs/job_train1/checkpoint/training_metrics.csv").decode().splitlines()
    assert metrics[0] == ",".join(TTS_METRICS_COLUMNS)
    assert [line.split(",")[0] for line in metrics[1:]] == ["1", "2", "3"]
    assert metrics[3] == "3,0.333333,,,,0.666667,,,"
    assert demo.read_file("gpu_jobs/job_train1/checkpoint/best_model.pt") == b"probe checkpoint " * 64
    assert response["result"]["checkpoint_path"] == "gpu_jobs/job_train1/checkpoint/best_model.pt"
    assert response["result"]["best_epoch"] == 3


def test_missing_manifest_file_fails_the_job_with_a_clear_message(demo, tmp_path, record_dir):
    demo.write_manifest([probe_job("nobase", "training", model={
        "type": "CommonProbe", "base_checkpoint": "gpu_jobs/job_gone/checkpoint/best_model.pt"})])
    run_worker(demo.source(), fast_config(tmp_path))
    response = demo.response("nobase")
    assert response["state"] == "failed"
    assert "model.base_checkpoint names gpu_jobs/job_gone/checkpoint/best_model.pt, which is not in the project" \
        in response["error_message"]


def test_generated_takes_for_every_cell_needing_audio_keep_a_concurrent_edit(demo, tmp_path, record_dir):
    before = {book: demo.notebook(book) for book in BOOKS}
    files_before = demo.attachments()
    human = by_reference(before["GEN"])["GEN 1:3"]["metadata"]
    demo.write_manifest([probe_job("speak1", "inference", inference={"exclude_verses": ["GEN 1:4"]},
                                   probe={"scenario": "speak", "wait": True, "also_speak": ["GEN 1:3"]})])

    def translator_edits():
        data = demo.notebook("GEN")
        for ref, words in (("GEN 1:11", "<span>The translator's new words</span>"), ("GEN 1:2", "<span>Edited</span>")):
            cell = by_reference(data)[ref]
            cell["value"] = words
            cell["metadata"]["edits"].append({"editMap": ["value"], "value": words, "timestamp": 1900000000000,
                                              "type": "user-edit", "author": "translator", "validatedBy": []})
        demo.save_notebook("GEN", data)

    run_with_translator(demo, tmp_path, record_dir, "speak1", translator_edits)

    response = demo.response("speak1")
    assert response["state"] == "completed", response
    needing = {(book, reference(c)) for book in BOOKS for c in before[book]["cells"]
               if c["metadata"].get("type") == "text" and plain(c["value"]) and not current_take(c["metadata"])}
    assert len(needing) == 6
    expected = needing - {("GEN", "GEN 1:4")} | {("GEN", "GEN 1:3")}
    assert response["result"]["uploaded_count"] == response["result"]["processed_count"] == len(expected)
    after = {book: demo.notebook(book) for book in BOOKS}
    # The translator's edits survived the write-back.
    assert by_reference(after["GEN"])["GEN 1:11"]["value"] == "<span>The translator's new words</span>"
    assert by_reference(after["GEN"])["GEN 1:2"]["value"] == "<span>Edited</span>"
    files_after = demo.attachments()
    new_files = set(files_after) - set(files_before)
    assert all(files_after[p] == content for p, content in files_before.items())   # nothing overwritten
    assert len(new_files) == 2 * len(expected)
    for book in BOOKS:
        old_cells, new_cells = by_reference(before[book]), by_reference(after[book])
        for ref, cell in new_cells.items():
            meta = cell["metadata"]
            generated = {k: a for k, a in (meta.get("attachments") or {}).items() if a.get("isGenerated")}
            if (book, ref) not in expected:
                assert not generated, ref
                if ref not in ("GEN 1:11", "GEN 1:2"):
                    assert cell == old_cells[ref], ref
                continue
            assert len(generated) == 1, ref
            (audio_id, att), = generated.items()
            assert re.fullmatch(r"audio-\d{13}-[0-9a-z]{9}", audio_id)
            assert att["url"] == take_path(FILES, book, audio_id) and att["type"] == "audio"
            assert att["createdBy"] == "TTS CommonProbe" and att["isDeleted"] is False
            pointer_copy = files_after[take_path(POINTERS, book, audio_id)]
            assert files_after[att["url"]] == pointer_copy
            info = probe_audio(demo.root / att["url"])
            assert att["metadata"] == info.attachment_metadata()
            assert att["metadata"]["mimeType"] == "audio/webm" and info.duration_sec > 0.3
            if ref == "GEN 1:3":   # a translator's selection is never replaced
                assert (meta["selectedAudioId"], meta["selectionTimestamp"]) == (
                    human["selectedAudioId"], human["selectionTimestamp"])
            else:
                assert meta["selectedAudioId"] == audio_id and meta["selectionTimestamp"] >= att["createdAt"]


def test_transcriptions_record_edit_history_and_yield_to_a_translator(demo, tmp_path, record_dir):
    data = demo.notebook("GEN")
    by_reference(data)["GEN 1:2"]["metadata"]["edits"] = []          # text without any history
    demo.save_notebook("GEN", data)
    before = {book: by_reference(demo.notebook(book)) for book in BOOKS}
    needing = ["GEN 1:6", "GEN 1:13", "GEN 1:19", "JHN 1:5", "JHN 1:10", "JHN 1:16"]
    demo.write_manifest([probe_job("hear1", "inference", inference={"include_verses": needing + ["GEN 1:2"]},
                                   probe={"scenario": "transcribe", "wait": True})])

    def translator_types():
        jhn = demo.notebook("JHN")
        cell = by_reference(jhn)["JHN 1:5"]
        cell["value"] = "<span>Typed by the translator</span>"
        cell["metadata"]["edits"] = [{"editMap": ["value"], "value": cell["value"], "timestamp": 1900000000000,
                                      "type": "user-edit", "author": "translator", "validatedBy": []}]
        demo.save_notebook("JHN", jhn)

    run_with_translator(demo, tmp_path, record_dir, "hear1", translator_types)

    response = demo.response("hear1")
    assert response["state"] == "completed", response
    assert response["result"]["cells_transcribed"] == 6
    assert response["result"]["errors_count"] == 1
    assert response["result"]["files_modified"] == 2
    skipped = report(record_dir, "hear1")["skipped"]
    assert [(s["id"], s["reason"]) for s in skipped] == [
        (JHN_1_5, "a translator changed the text since the job read it")]
    after = {book: by_reference(demo.notebook(book)) for book in BOOKS}
    assert after["JHN"]["JHN 1:5"]["value"] == "<span>Typed by the translator</span>"
    for ref in [r for r in needing if r != "JHN 1:5"] + ["GEN 1:2"]:
        cell = after[ref[:3]][ref]
        meta = cell["metadata"]
        assert cell["value"] == f"heard {ref}"
        last = meta["edits"][-1]
        assert (last["editMap"], last["value"], last["type"], last["author"]) == (
            ["value"], f"heard {ref}", "llm-generation", "ASR probe")
        take = current_take(before[ref[:3]][ref]["metadata"])
        assert meta["attachments"][take]["transcription"]["content"] == f"heard {ref}"
    first, second = after["GEN"]["GEN 1:2"]["metadata"]["edits"]
    assert (first["type"], first["value"]) == ("initial-import", before["GEN"]["GEN 1:2"]["value"])
    assert second["type"] == "llm-generation" and first["timestamp"] < second["timestamp"]
    assert [e["type"] for e in after["GEN"]["GEN 1:6"]["metadata"]["edits"]] == ["llm-generation"]


# -- in process: exact moments ----------------------------------------------------------------------
class InlineChannel:
    """Plays the worker: performs each commit at once (after ``before_commit``), records heartbeats."""

    def __init__(self, store, before_commit=None):
        self.store = store
        self.before_commit = before_commit
        self.inbox: collections.deque = collections.deque()
        self.messages: list[str] = []
        self.attempts: list[list] = []
        self.commits: list[list] = []

    def send(self, obj) -> None:
        if isinstance(obj, handler_api.ProgressReport):
            self.messages.append(obj.message)
        elif isinstance(obj, handler_api.CommitRequest):
            actions = obj.actions
            self.attempts.append(actions)
            error = None
            try:
                if self.before_commit:
                    self.before_commit(len(self.attempts), actions)
                self.store.commit(actions, obj.message)
                self.commits.append(actions)
            except StorageError as exc:
                error = exc
            self.inbox.append(handler_api.CommitDone(obj.request_id, error))

    def poll(self, timeout=0.0) -> bool:
        return bool(self.inbox)

    def recv(self):
        return self.inbox.popleft()


def inline_callbacks(store, tmp_path, context=None, before_commit=None) -> tuple[JobCallbacks, InlineChannel]:
    channel = InlineChannel(store, before_commit)
    callbacks = JobCallbacks(channel, store, {"job_id": "inline1", **(context or {})}, tmp_path / "work")
    return callbacks, channel


def tone_takes(callbacks, cells, tmp_path, seconds=0.5) -> list[tuple]:
    takes = []
    for number, cell in enumerate(cells):
        path = tmp_path / "gen" / f"{number}.webm"
        square = 0.2 * np.sign(np.sin(2 * np.pi * (200 + 20 * number) * np.arange(int(16000 * seconds)) / 16000))
        encode_audio(square.astype(np.float32), 16000, path, "webm")
        takes.append((cell, path))
    return takes


def test_write_back_survives_a_name_clash_and_a_concurrent_commit(demo, tmp_path, monkeypatch):
    monkeypatch.setattr(write_back, "RETRY_DELAY", 0.01)

    clash = None

    def meddle(attempt, actions):
        nonlocal clash
        if attempt == 1:   # someone else's file at our first take's path: it must not be overwritten
            clash = actions[0].path
            demo.write_file(clash, b"someone else's file")
        elif attempt == 2:  # a translator commits an edit between our read and our commit
            data = demo.notebook("GEN")
            by_reference(data)["GEN 1:17"]["value"] = "<span>Concurrent</span>"
            demo.save_notebook("GEN", data)

    callbacks, channel = inline_callbacks(demo.store, tmp_path, before_commit=meddle)
    cells = [c for c in cells_needing_audio(callbacks, load_notebooks(callbacks.scanner))
             if c.notebook_path.endswith("GEN.codex")]
    assert [c.cell_id for c in cells] == ["GEN 1:4", "GEN 1:11", "GEN 1:17"]
    written = write_generated_takes(callbacks, tone_takes(callbacks, cells, tmp_path), model_name="m",
                                    audio_format="webm")
    assert (written.uploaded, written.commits, len(channel.attempts)) == (3, 1, 3)
    assert demo.read_file(clash) == b"someone else's file"
    cells_after = by_reference(demo.notebook("GEN"))
    assert cells_after["GEN 1:17"]["value"] == "<span>Concurrent</span>"
    for ref in ("GEN 1:4", "GEN 1:11", "GEN 1:17"):
        (att,) = [a for a in cells_after[ref]["metadata"]["attachments"].values() if a.get("isGenerated")]
        assert att["url"] != clash.replace(POINTERS, FILES) and demo.read_file(att["url"]) is not None


@pytest.mark.parametrize("when", ["before the job", "while it commits"])
def test_a_translators_file_at_the_files_copy_of_a_new_take_is_never_overwritten(demo, tmp_path, monkeypatch, when):
    """The local store also writes ``files/`` for a take committed under ``pointers/``: a file already
    there, with no pointer beside it, makes the take take a new id just as a clash under ``pointers/`` does."""
    monkeypatch.setattr(write_back, "RETRY_DELAY", 0.01)
    taken = take_path(FILES, "GEN", "audio-1000000000000-taken0000")
    ids = iter(["audio-1000000000000-taken0000"])
    new_audio_id = codex.new_audio_id
    monkeypatch.setattr(codex, "new_audio_id", lambda *a: next(ids, None) or new_audio_id(*a))
    if when == "before the job":
        demo.write_file(taken, b"a translator's take")

    def meddle(attempt, actions):
        if when == "while it commits" and attempt == 1:
            assert actions[0].path == taken.replace(FILES, POINTERS)  # the store adds the files/ copy itself
            demo.write_file(taken, b"a translator's take")

    callbacks, channel = inline_callbacks(demo.store, tmp_path, before_commit=meddle)
    cells = [c for c in cells_needing_audio(callbacks, load_notebooks(callbacks.scanner)) if c.cell_id == "GEN 1:4"]
    written = write_generated_takes(callbacks, tone_takes(callbacks, cells, tmp_path), model_name="m",
                                    audio_format="webm")
    assert (written.uploaded, written.commits, len(channel.attempts)) == (1, 1, 1 + (when == "while it commits"))
    assert demo.read_file(taken) == b"a translator's take"
    assert demo.read_file(taken.replace(FILES, POINTERS)) is None
    (att,) = [a for a in by_reference(demo.notebook("GEN"))["GEN 1:4"]["metadata"]["attachments"].values()
              if a.get("isGenerated")]
    assert att["url"] != taken and demo.read_file(att["url"]) == demo.read_file(att["url"].replace(FILES, POINTERS))


@pytest.mark.parametrize("allowance, slack", [
    ("planned", 4096),      # two takes per commit: 2 + 1 for GEN, 2 + 1 for JHN
    ("measured", 100),      # planning ignores notebook growth: the exact check after applying must split
])
def test_commits_split_under_the_body_cap_and_audio_never_trails_its_notebook(demo, tmp_path, monkeypatch,
                                                                              allowance, slack):
    if allowance == "measured":
        monkeypatch.setattr(write_back, "_CHANGE_BYTES", 0)
    callbacks, channel = inline_callbacks(demo.store, tmp_path)
    cells = list(cells_needing_audio(callbacks, load_notebooks(callbacks.scanner)))
    takes = tone_takes(callbacks, cells, tmp_path)
    notebook_size = max(len(demo.read_file(f"files/target/{b}.codex")) for b in BOOKS)
    take_size = max(path.stat().st_size for _, path in takes)
    # Room for a notebook and two takes (two copies each: pointers/ and files/), plus ``slack``.
    demo.store.max_commit_bytes = notebook_size + 4 * take_size + slack

    def every_referenced_file_exists(attempt, actions):
        # What the commit creates: its actions, and the copies the store writes beside them (files/).
        created = {path for a in actions if a.action == "create" for path in demo.store.written_paths(a.path)}
        for action in actions:
            if action.path.endswith(".codex"):
                for cell in json.loads(action.content)["cells"]:
                    for att in (cell["metadata"].get("attachments") or {}).values():
                        if att.get("isGenerated"):
                            assert demo.read_file(att["url"]) is not None or att["url"] in created
        carried = [a for a in actions if a.path.endswith((".webm", ".codex"))]
        assert demo.store.commit_bytes(carried) <= demo.store.max_commit_bytes

    channel.before_commit = every_referenced_file_exists
    written = write_generated_takes(callbacks, takes, model_name="m", audio_format="webm")
    assert written.uploaded == 6 and written.commits == len(channel.commits)
    assert written.commits == 4 if allowance == "planned" else written.commits > 4
    n = written.commits
    assert [m for m in channel.messages if m.startswith("saving generated audio")][-1] == \
        f"saving generated audio: commit {n}/{n}"


def test_bad_generated_files_are_skipped_not_fatal(demo, tmp_path):
    callbacks, _ = inline_callbacks(demo.store, tmp_path)
    cells = list(cells_needing_audio(callbacks, load_notebooks(callbacks.scanner)))[:3]
    takes = tone_takes(callbacks, cells, tmp_path)
    takes[1][1].write_bytes(b"garbage" * 100)
    wav = tmp_path / "gen" / "x.wav"
    encode_audio(np.full(8000, 0.1, dtype=np.float32), 16000, wav, "wav")
    takes[2] = (takes[2][0], wav)
    written = write_generated_takes(callbacks, takes, model_name="m", audio_format="webm")
    assert (written.processed, written.uploaded) == (3, 1)
    assert written.skipped.reasons() == "1 undecodable audio, 1 wrong audio format"
    assert written.as_result()["skipped_count"] == 2


def test_audio_is_fetched_per_folder_with_throttled_heartbeats(demo, tmp_path):
    class CountingStore(LocalProjectStore):
        bulk: list = []
        single = 0

        def download_many(self, paths, dest_dir, *, missing_ok=False):
            self.bulk.append(sorted(paths))
            return {p: LocalProjectStore.download(self, p, Path(dest_dir) / p) for p in paths}

        def download(self, path, dest):
            self.single += 1
            return super().download(path, dest)

    store = CountingStore(demo.root)
    callbacks, channel = inline_callbacks(store, tmp_path)
    pairs = collect_training_pairs(callbacks, load_notebooks(callbacks.scanner), tmp_path / "work")
    assert len(pairs) == 28 and store.single == 0
    assert [posixpath_dir(paths) for paths in store.bulk] == [f"{FILES}/GEN", f"{FILES}/JHN"]
    fetching = [m for m in channel.messages if m.startswith("fetching audio")]
    assert fetching[0] == "fetching audio 0/28" and fetching[-1] == "fetching audio 28/28"
    assert len(channel.messages) < 10   # not one heartbeat per file

    short = collect_training_pairs(callbacks, load_notebooks(callbacks.scanner), tmp_path / "work", max_seconds=6.0)
    too_long = {item.id for item in short.skipped if item.reason == "audio too long"}
    assert too_long == {p.cell.cell_id for p in pairs if p.duration_sec > 6.0} and too_long
    assert len(short) + len(too_long) == 28 and all(p.duration_sec <= 6.0 for p in short)


def posixpath_dir(paths: list[str]) -> str:
    folders = {p.rsplit("/", 1)[0] for p in paths}
    assert len(folders) == 1
    return folders.pop()


def test_progress_sends_at_most_one_heartbeat_every_few_seconds():
    class Recorder:
        messages: list = []

        def heartbeat(self, epochs_completed=None, message=None):
            self.messages.append(message)

    recorder = Recorder()
    progress = Progress(recorder, "fetching audio", 1000)
    for done in range(1001):
        progress.update(done)
    assert recorder.messages == ["fetching audio 0/1000", "fetching audio 1000/1000"]
    recorder.messages.clear()
    eager = Progress(recorder, "x", 3, every_seconds=0)
    for done in range(4):
        eager.update(done)
    assert recorder.messages == ["x 0/3", "x 1/3", "x 2/3", "x 3/3"]


def test_job_filters_come_from_the_manifest_sections(demo, tmp_path):
    context = {"inference": {"exclude_verses": ["GEN 1:4", "JHN 1:3"]}, "training": {"include_verses": "GEN 1:1"}}
    callbacks, _ = inline_callbacks(demo.store, tmp_path, context)
    notebooks = load_notebooks(callbacks.scanner)
    assert [c.reference for c in cells_needing_audio(callbacks, notebooks)] == [
        "GEN 1:11", "GEN 1:17", "JHN 1:12", "JHN 1:18"]
    training = job_filter(callbacks, "training")
    gen = next(nb for nb in notebooks if nb.path.endswith("GEN.codex"))
    assert [c["metadata"]["id"] for c in gen.cells if training.allows(c)] == ["GEN 1:1"]
    with pytest.raises(ValueError, match="training or inference"):
        job_filter(callbacks, "model")


@pytest.mark.parametrize("written, spoken", [(None, False), (False, False), ("no", False), (True, True),
                                             ("true", True), ("Yes", True)])
def test_replace_recorded_reads_as_a_flag(demo, tmp_path, written, spoken):
    """``"true"`` means true, as for every other flag; without it a listed recorded cell is left alone."""
    notebooks = load_notebooks(inline_callbacks(demo.store, tmp_path)[0].scanner)
    gen = next(nb for nb in notebooks if nb.path.endswith("GEN.codex"))
    recorded = next(c["metadata"]["id"] for c in gen.cells if codex.plays_human_take(c))
    inference = {"include_verses": [recorded, "GEN 1:4"], "replace_recorded": written}
    callbacks, _ = inline_callbacks(demo.store, tmp_path, {"inference": inference})
    selection = cells_needing_audio(callbacks, notebooks)
    assert [c.cell_id for c in selection] == ([recorded, "GEN 1:4"] if spoken else ["GEN 1:4"])
    assert selection.skipped.counts() == ({} if spoken else {ALREADY_RECORDED: 1})


@pytest.mark.parametrize("written", ["maybe", 2, ["true"]])
def test_replace_recorded_that_is_no_flag_fails_naming_the_key(demo, tmp_path, written):
    callbacks, _ = inline_callbacks(demo.store, tmp_path, {"inference": {"replace_recorded": written}})
    with pytest.raises(JobSettingError, match=r"'inference\.replace_recorded' must be true or false"):
        cells_needing_audio(callbacks, load_notebooks(callbacks.scanner))


def test_fetch_project_file_refuses_missing_pointer_only_and_outside_paths(demo, tmp_path):
    callbacks, _ = inline_callbacks(demo.store, tmp_path)
    take = "audio-gen-1-2-1757539106201-7sq7er0y0"
    dest = tmp_path / "fetched.webm"
    assert fetch_project_file(callbacks, take_path(POINTERS, "GEN", take), dest, field="voice_reference") == dest
    assert dest.read_bytes() == demo.read_file(take_path(FILES, "GEN", take))

    with pytest.raises(ProjectFileMissing, match=r"model\.base_checkpoint names gpu_jobs/job_x/best\.pt, "
                                                 r"which is not in the project"):
        fetch_project_file(callbacks, "gpu_jobs/job_x/best.pt", dest, field="model.base_checkpoint")
    demo.remove_file(take_path(FILES, "GEN", take))
    with pytest.raises(ProjectFileMissing, match="voice_reference names .*only a Git LFS pointer") as caught:
        fetch_project_file(callbacks, take_path(POINTERS, "GEN", take), dest, field="voice_reference")
    assert take_path(POINTERS, "GEN", take) in str(caught.value)
    assert not dest.exists()   # no pointer text left where a caller expects audio
    with pytest.raises(UnsafePath, match=r"voice_reference '\.\./outside\.webm' leaves the project"):
        fetch_project_file(callbacks, "../outside.webm", dest, field="voice_reference")


def test_upload_job_files_creates_then_updates_inside_the_job_folder_only(demo, tmp_path):
    callbacks, channel = inline_callbacks(demo.store, tmp_path)
    local = tmp_path / "model.bin"
    local.write_bytes(b"first")
    assert upload_job_files(callbacks, {"gpu_jobs/job_inline1/model/m.bin": local}, "model") == 1
    local.write_bytes(b"second")
    upload_job_files(callbacks, {"gpu_jobs/job_inline1/model/m.bin": local}, "model again")
    assert demo.read_file("gpu_jobs/job_inline1/model/m.bin") == b"second"
    assert [a.action for a in channel.commits[-1]] == ["update"]
    with pytest.raises(ValueError, match="only inside gpu_jobs/job_inline1/"):
        upload_job_files(callbacks, {"gpu_jobs/job_other/m.bin": local}, "model")
    with pytest.raises(ValueError, match="only inside"):
        upload_job_files(callbacks, {"files/target/GEN.codex": local}, "oops")


def test_metrics_log_has_the_plugins_columns_and_resumes(tmp_path):
    path = tmp_path / "training_metrics.csv"
    log = MetricsLog(path, TTS_METRICS_COLUMNS)
    for epoch in range(1, 6):
        log.append(epoch, train_total_loss=1.0 / epoch, val_total_loss=0.5 + abs(epoch - 3) / 10,
                   val_diff_loss=float("nan"))
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,train_total_loss,train_diff_loss,train_dur_loss,train_prior_loss,val_total_loss," \
                       "val_diff_loss,val_dur_loss,val_prior_loss"
    assert lines[1] == "1,1,,,,0.7,,,"
    assert MetricsLog(path, TTS_METRICS_COLUMNS).best() == (3, 0.5)

    resumed = MetricsLog(path, TTS_METRICS_COLUMNS)
    assert resumed.last_epoch == 5
    resumed.resume(3)
    assert [line.split(",")[0] for line in path.read_text().splitlines()[1:]] == ["1", "2"]
    resumed.append(3, train_total_loss=0.25)
    resumed.append(2, train_total_loss=0.75)    # a re-run epoch replaces its row and what followed
    assert path.read_text().splitlines()[1:] == ["1,1,,,,0.7,,,", "2,0.75,,,,,,,"]
    with pytest.raises(ValueError, match="unknown metrics column"):
        resumed.append(4, val_wer=0.1)

    asr = MetricsLog(tmp_path / "asr.csv", ASR_METRICS_COLUMNS)
    asr.append(1, train_total_loss=3.5, val_total_loss=3.0, val_wer=0.9, val_cer=0.5)
    assert (tmp_path / "asr.csv").read_text().splitlines() == [
        "epoch,train_total_loss,val_total_loss,val_wer,val_cer", "1,3.5,3,0.9,0.5"]


def test_metrics_log_reads_back_a_file_with_other_columns(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("epoch,train_total_loss,extra\n1,2.0,x\nnot-a-number,1,1\n2,1.5,y\n")
    log = MetricsLog(path, ASR_METRICS_COLUMNS)
    assert [row["epoch"] for row in log.rows] == ["1", "2"]
    log.resume(2)
    assert path.read_text() == "epoch,train_total_loss,val_total_loss,val_wer,val_cer\n1,2.0,,,\n"


def test_on_gitlab_audio_comes_from_lfs_and_generated_takes_go_to_lfs_only(tmp_path, monkeypatch):
    """The same steps over the GitLab backend (the fake server in tests/gitlab_fake): recordings are LFS
    content behind ``pointers/``, and generated takes are committed there as LFS objects, not to ``files/``."""
    fake = pytest.importorskip("gitlab_fake")
    gitlab_jobs = pytest.importorskip("gitlab_jobs")
    token = "glpat-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]
    shutil.copytree(DEMO, tmp_path / "demo")
    server = fake.GitLabTestServer(token, root=tmp_path / "gitlab").start()
    try:
        project = server.add_project("bible/demo", folder=tmp_path / "demo")
        monkeypatch.setenv(gitlab_jobs.TOKEN_ENV, token)
        store = gitlab_jobs.GitLabProjectStore(server.url, "bible/demo")
        callbacks, channel = inline_callbacks(store, tmp_path)
        assert callbacks.scanner.server_url == server.url.rstrip("/")  # the GitLab store, as handlers see it
        notebooks = load_notebooks(callbacks.scanner)
        pairs = collect_training_pairs(callbacks, notebooks, tmp_path / "work")
        assert len(pairs) == 28 and {p.source_path.split("/")[2] for p in pairs} == {"pointers"}
        cells = [c for c in cells_needing_audio(callbacks, notebooks) if c.cell_id == "GEN 1:4"]
        takes = tone_takes(callbacks, cells, tmp_path)
        written = write_generated_takes(callbacks, takes, model_name="m", audio_format="webm")
        assert (written.uploaded, written.commits) == (1, 1)
        (created,) = [a.path for a in channel.commits[-1] if a.action == "create"]
        assert created.startswith(POINTERS + "/GEN/")
        assert server.read(project, created).startswith(b"version https://git-lfs.github.com/spec/v1")
        assert server.read_lfs(project, created) == takes[0][1].read_bytes()
        store.close()
    finally:
        server.stop()


def test_progress_logs_plain_lines_when_not_on_a_terminal(caplog):
    from handlers.common import Progress

    class Callbacks:
        messages: list = []

        def heartbeat(self, epochs_completed=None, message=None):
            self.messages.append(message)

    callbacks = Callbacks()
    progress = Progress(callbacks, "fetching audio", 3, every_seconds=3600)
    with caplog.at_level("INFO"):
        for done in (1, 2, 3):
            progress.update(done)
    assert callbacks.messages == ["fetching audio 1/3", "fetching audio 3/3"]  # first, then throttled to the end
    assert [r.getMessage() for r in caplog.records if r.name == "handlers.common.reports"] == [
        "fetching audio 1/3", "fetching audio 3/3"]
