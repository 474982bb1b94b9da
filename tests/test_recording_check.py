"""Recordings checked against their text (asr.recording_check, asr.check_page, the ASR handlers' check).

The end-to-end test trains a tiny model on eight short demo verses with a schedule that lets it learn them
(one worker run, shared by the module), then breaks three of those recordings -- two takes swapped between
cells, one cut to half -- and runs an ASR inference job: the three must come out on top of the report.
Expectations are read from the job folder's CSV and page, as a translator would read them.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import codex

from asr.check_page import char_diff_html, write_check_page
from asr.job_settings import CheckSettings
from asr.recording_check import (CSV_COLUMNS, TRAINED_TAKES_FILE, CheckedRecording, CheckSummary, TrainedTakes,
                                 character_error_rate, read_trained_takes, worst_first, write_check_csv)
from asr.text import TextNormalization
from conftest import fast_config, run_worker
from demo_env import BOOKS, FILES, DemoProject, current_take, reference
from job_settings import JobSettingError

SHORT_VERSES = ["JHN 1:2", "JHN 1:11", "JHN 1:6", "JHN 1:4", "JHN 1:1", "GEN 1:1", "GEN 1:3", "JHN 1:20"]
SWAPPED = ("GEN 1:1", "GEN 1:3")
TRUNCATED = "JHN 1:1"
# Enough for the tiny preset to learn the eight verses (train CER about 0.08) in about 20 s of one CPU core:
# the demo's own schedule (batch 16 x 2 accumulation = one optimizer step per epoch) learns next to nothing.
MODEL_PATH = "gpu_jobs/job_learn/model/asr_model.pth.tar"
LEARNING_SCHEDULE = {"epochs": 60, "batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 3e-3,
                     "val_split": 0, "test_split": 0}


def row(ref: str, cer: float, trained: bool | None = False) -> CheckedRecording:
    return CheckedRecording(f"id-{ref}", ref, f"audio-{ref}", "verse", "verse", cer, trained,
                            "files/target/GEN.codex", f".project/attachments/pointers/GEN/audio-{ref}.webm")


# -- the library -------------------------------------------------------------------------------------
def test_cer_uses_the_training_normalisation_and_skips_texts_with_nothing_to_hear():
    plain = TextNormalization()
    assert character_error_rate("In the beginning, God…", "in the beginning god", plain) == 0.0
    assert character_error_rate("abcd", "abed", plain) == 0.25
    assert character_error_rate("abcd", "", plain) == 1.0
    assert character_error_rate("— , !", "anything", plain) is None
    assert character_error_rate("ABC", "abc", TextNormalization(lowercase=False)) == 1.0


def test_rows_rank_worst_first_and_the_summary_reads_as_a_sentence(tmp_path):
    rows = worst_first([row("GEN 1:2", 0.1), row("GEN 1:3", 0.9, trained=True), row("GEN 1:4", 0.9),
                        row("GEN 1:5", 0.5)])
    # Equal CER: the take the model never heard first; 0.5 is not "more than 50 %".
    assert [r.reference for r in rows] == ["GEN 1:4", "GEN 1:3", "GEN 1:5", "GEN 1:2"]
    summary = CheckSummary.of(rows, 0.5)
    assert (summary.checked, summary.disagreeing) == (4, 2)
    assert summary.message == "2 of 4 recordings differ from their text by more than 50 %"
    assert CheckSummary.of(rows[:1], 0.25).message == "1 of 1 recording differ from their text by more than 25 %"
    path = write_check_csv(rows, tmp_path / "check.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        read = list(csv.DictReader(fh))
    assert tuple(read[0]) == CSV_COLUMNS
    assert [(r["reference"], r["cer"], r["trained_on"]) for r in read[:2]] == [("GEN 1:4", "0.9000", "no"),
                                                                                ("GEN 1:3", "0.9000", "yes")]


def test_the_check_csv_writer_takes_other_columns_and_replaces_the_table_whole(tmp_path):
    """The listening check of generated takes writes its own columns with the same writer."""
    path = tmp_path / "check.csv"
    path.write_text("old table")
    columns = ("cell_id", "cer", "over_max_cer")
    write_check_csv([{"cell_id": "c1", "cer": "0.7000", "over_max_cer": "yes"}], path, columns)
    with path.open(newline="", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == [{"cell_id": "c1", "cer": "0.7000", "over_max_cer": "yes"}]
    assert [p.name for p in tmp_path.iterdir()] == ["check.csv"]       # no part file left behind


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True, float("nan"), float("inf")])
def test_a_threshold_outside_zero_to_one_is_refused_naming_the_key(value):
    with pytest.raises(JobSettingError,
                       match=r"^job setting 'inference.check_threshold' must be (a number|between 0 and 1)"):
        CheckSettings.from_job({"inference": {"check_threshold": value}})
    assert [CheckSettings.from_job({"inference": {"check_threshold": v}}).threshold for v in ("0.3", 1, None)] == \
        [0.3, 1.0, 0.5]


def test_trained_takes_round_trip_and_a_hostile_file_is_ignored(tmp_path):
    takes = TrainedTakes.of([("GEN 1:1", "audio-1"), ("c2", "audio-2")])
    (tmp_path / TRAINED_TAKES_FILE).write_text(takes.to_json(), encoding="utf-8")
    assert read_trained_takes(tmp_path) == takes
    assert ("GEN 1:1", "audio-1") in read_trained_takes(tmp_path) and ("GEN 1:1", "audio-2") not in takes
    assert read_trained_takes(tmp_path / "nothing") is None
    for hostile in ("[1, 2]", "{not json", '{"takes": "all"}', "[" * 100_000):
        (tmp_path / TRAINED_TAKES_FILE).write_text(hostile, encoding="utf-8")
        assert read_trained_takes(tmp_path) is None, hostile
    (tmp_path / TRAINED_TAKES_FILE).write_text(
        json.dumps({"takes": [{"cell_id": "a", "take_id": "b"}, {"cell_id": 3, "take_id": "x"}, "junk"]}))
    assert read_trained_takes(tmp_path).pairs == {("a", "b")}


def test_the_difference_is_marked_character_by_character_and_escaped():
    assert char_diff_html("abcd", "abxd") == ("ab<del>c</del>d", "ab<ins>x</ins>d")
    assert char_diff_html("a<b", "a") == ("a<del>&lt;b</del>", "a")


def test_the_page_escapes_everything_embeds_within_its_budget_and_caps_its_rows(tmp_path, monkeypatch, caplog):
    import asr.check_page as page_module

    monkeypatch.setattr(page_module, "MAX_EMBEDDED_BYTES", 3000)
    monkeypatch.setattr(page_module, "MAX_PAGE_ROWS", 3)
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    rows = worst_first([
        CheckedRecording("c1", hostile, "audio-<b>", hostile, "script alert", 0.9, True, "files/<i>.codex", "x"),
        row("GEN 1:2", 0.7), row("GEN 1:3", 0.6), row("GEN 1:4", 0.1)])
    links = []

    def link(r):
        links.append(r.reference)
        return f"../../.project/attachments/files/GEN/{r.take_id}.webm?\"onload=x"

    path = write_check_page(rows, tmp_path / "page.html", title="Check <b>", summary=CheckSummary.of(rows, 0.5),
                            normalization=TextNormalization(lowercase=False, remove_punctuation=False),
                            embed=lambda r: b"\x1aE" * 1000, link=link)
    text = path.read_text(encoding="utf-8")
    lowered = text.lower()
    assert "<script" not in lowered and "<img" not in lowered and "onerror=\"" not in lowered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Check &lt;b&gt;" in text and "audio-&lt;b&gt;" in text and "files/&lt;i&gt;.codex" in text
    assert "http" not in lowered                   # nothing fetched from a network
    assert text.count("data:audio/webm;base64,") == 1     # 2000 bytes each: the budget of 3000 holds one
    assert links == ["GEN 1:2", "GEN 1:3"]           # the rest are linked, in rank order
    assert "&quot;onload=x" in text and '"onload=x' not in text
    assert "1 more row(s) with a lower CER are in the CSV" in text
    assert "trained on it" in text
    # Its log line lands in the project's logs.txt: the page's name, never the worker's folders.
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "asr.check_page"]
    assert logged.startswith("Wrote page.html (") and str(tmp_path) not in logged


# -- write-back: a take attached without selecting it ----------------------------------------------------
@pytest.mark.parametrize("case", ["earlier generated selected", "earlier generated by fallback", "human by fallback",
                                  "nothing else"])
def test_an_unselected_generated_take_never_becomes_the_one_the_editor_plays_where_another_can(case):
    from test_codex import NOW, cell, find, notebook_text, take

    earlier = take(100, generated=case.startswith("earlier"))
    attachments = {} if case == "nothing else" else dict([earlier])
    selected = earlier[0] if case == "earlier generated selected" else ""
    text = notebook_text([cell("MAT 1:1", "text", attachments=attachments, selected=selected, selectionTimestamp=7)])
    ref = codex.make_cell_ref("files/target/MAT.codex", find(text, "MAT 1:1"))
    change = codex.audio_take_change(ref, audio_id=codex.new_audio_id(NOW), extension="webm", metadata={},
                                     created_by="TTS StableTTS", now_ms=NOW, select=False)
    new_text, report = codex.apply_changes(text, [change], now_ms=NOW)
    meta = find(new_text, "MAT 1:1")["metadata"]
    assert meta["attachments"][change.payload.audio_id]["isGenerated"] is True and report.applied == [change]
    if case == "nothing else":       # nothing to keep: not selected, though the editor's fallback will play it
        assert (meta["selectedAudioId"], meta["selectionTimestamp"]) == ("", 7)
    else:
        assert meta["selectedAudioId"] == earlier[0]
        assert meta["selectionTimestamp"] == (7 if selected else 8)     # a pin newer only than the old selection
    assert bool(report.kept_selection) == (case == "human by fallback")     # "kept a translator's take"


# -- the ASR handlers: a model that knows eight verses, three of them broken afterwards ----------------------
@dataclass(frozen=True)
class Learnt:
    """The finished training job: its manifest entry, its response.yaml and its model archive."""

    job: dict
    response: bytes
    archive: bytes
    path: str = MODEL_PATH

    def add_to(self, demo: DemoProject) -> None:
        """The job and its model in ``demo`` as the job left them (the manifest is the caller's)."""
        demo.write_file(self.path, self.archive)
        demo.write_file("gpu_jobs/job_learn/response.yaml", self.response)


@pytest.fixture(scope="module")
def learnt() -> Learnt:
    """A tiny model trained on SHORT_VERSES until it knows them (one worker run for the whole module)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="learn-") as tmp, pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("TRANSFORMERS_OFFLINE", "1")
        env.setenv("OMP_NUM_THREADS", "1")  # tiny models on a busy 2-core machine: threads only wait for each other
        demo = DemoProject(Path(tmp) / "project")
        job = {"job_id": "learn", "job_type": "asr", "mode": "training", "canceled": False,
               "submitted_at": "2025-10-15T19:00:00.000Z", **LEARNING_SCHEDULE,
               "model": {"type": "W2V2BERT", "preset": "tiny"}, "training": {"include_verses": SHORT_VERSES}}
        demo.write_manifest([job])
        run_worker(demo.source(), fast_config(Path(tmp), handler_paths=()))
        response = demo.response("learn")
        assert response["state"] == "completed", response
        assert response["result"]["checkpoint_path"] == MODEL_PATH
        return Learnt(job, demo.read_file("gpu_jobs/job_learn/response.yaml"), demo.read_file(MODEL_PATH))


def take_file(demo: DemoProject, cell: dict) -> Path:
    book = reference(cell).split()[0]
    path = demo.root / FILES / book / f"{current_take(cell['metadata'])}.webm"
    assert path.is_file(), path
    return path


def keep_only_short_verses(demo: DemoProject) -> None:
    """Delete the takes of every other verse with text, so the model is asked only about verses it learnt."""
    for book in BOOKS:
        data = demo.notebook(book)
        for cell in data["cells"]:
            if reference(cell) not in SHORT_VERSES and cell.get("value", "").strip():
                for attachment in (cell["metadata"].get("attachments") or {}).values():
                    attachment["isDeleted"] = True
        demo.save_notebook(book, data)


def break_recordings(demo: DemoProject) -> None:
    """Two takes swapped between their cells' files, one cut to its first half."""
    from preprocess_audio import encode_audio, load_audio

    cells = demo.cells()
    first, second = (take_file(demo, cells[ref]) for ref in SWAPPED)
    first_bytes, second_bytes = first.read_bytes(), second.read_bytes()
    first.write_bytes(second_bytes)
    second.write_bytes(first_bytes)
    cut = take_file(demo, cells[TRUNCATED])
    samples = load_audio(cut, 48_000)
    encode_audio(samples[: len(samples) // 2], 48_000, cut, "webm")


@pytest.mark.slow  # trains the module's small ASR model (~30 s)
def test_inference_ranks_the_swapped_and_the_cut_recordings_first_and_changes_no_verse(learnt, tmp_path,
                                                                                       monkeypatch, record_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    demo = DemoProject(tmp_path / "project")
    learnt.add_to(demo)
    keep_only_short_verses(demo)
    break_recordings(demo)
    before = demo.cells()
    job = {"job_type": "asr", "mode": "inference", "canceled": False,
           "model": {"type": "W2V2BERT", "base_checkpoint": learnt.path}}
    demo.write_manifest([{**job, "job_id": "check", "submitted_at": "2025-10-15T19:20:00.000Z"},
                         {**job, "job_id": "quiet", "submitted_at": "2025-10-15T19:21:00.000Z",
                          "inference": {"check_recordings": False}},
                         {**job, "job_id": "bad", "submitted_at": "2025-10-15T19:22:00.000Z",
                          "inference": {"check_threshold": "half"}}])

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=()))

    response = demo.response("check")
    assert response["state"] == "completed", response
    result = response["result"]
    with io.StringIO(demo.read_file("gpu_jobs/job_check/audio_text_check.csv").decode("utf-8")) as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["reference"] for r in rows[:3]) == sorted([*SWAPPED, TRUNCATED]), rows
    assert sorted(r["reference"] for r in rows) == sorted(SHORT_VERSES)
    cers = [float(r["cer"]) for r in rows]
    assert cers == sorted(cers, reverse=True)
    assert min(cers[:3]) > max(cers[3:]) + 0.2, rows      # a clear gap, not a photo finish
    assert all(float(r["cer"]) > 0.5 for r in rows if r["reference"] in SWAPPED)
    assert {r["trained_on"] for r in rows} == {"yes"}       # the takes kept their ids: the model learnt them
    cells = {ref: before[ref] for ref in SHORT_VERSES}
    assert all(r["take_id"] == current_take(cells[r["reference"]]["metadata"]) for r in rows)
    assert all(r["verse_text"] and r["cell_id"] == cells[r["reference"]]["metadata"]["id"] for r in rows)
    disagreeing = sum(c > 0.5 for c in cers)
    assert (result["recordings_checked"], result["recordings_disagreeing"], result["check_threshold"]) == (
        8, disagreeing, 0.5)
    assert result["recordings_check"] == f"{disagreeing} of 8 recordings differ from their text by more than 50 %"
    assert result["recordings_check_report"] == "gpu_jobs/job_check/audio_text_check.html"
    # The deleted takes are not "missing": only live takes that play are checked.
    assert result["recordings_not_checked"] == 0, result

    page = demo.read_file("gpu_jobs/job_check/audio_text_check.html").decode("utf-8")
    assert "<script" not in page.lower() and "http" not in page.lower()
    assert page.count("data:audio/webm;base64,") == 8
    positions = [page.index(f"<b>{r['reference']}</b>") for r in rows]
    assert positions == sorted(positions)                  # the page lists them in the CSV's order
    assert page.count('<div class="note">trained on it</div>') == 8

    # The check changes no verse: the cells with text are as they were (the inference itself wrote text only
    # into cells that had none).
    after = demo.cells()
    assert all(after[ref] == before[ref] for ref in SHORT_VERSES)

    quiet = demo.response("quiet")
    assert quiet["state"] == "completed", quiet
    assert not any(key.startswith("recordings_") for key in quiet["result"]), quiet["result"]
    assert demo.read_file("gpu_jobs/job_quiet/audio_text_check.csv") is None
    bad = demo.response("bad")      # refused before the model is even fetched
    assert bad["state"] == "failed"
    assert bad["error_message"] == "job setting 'inference.check_threshold' must be a number, not 'half'"


@pytest.mark.slow  # trains the module's small ASR model (~30 s)
def test_the_trained_model_lists_the_takes_it_learnt(learnt, tmp_path):
    with tarfile.open(fileobj=io.BytesIO(learnt.archive)) as tar:
        listed = json.loads(tar.extractfile(TRAINED_TAKES_FILE).read())
    demo = DemoProject(tmp_path / "project")
    cells = demo.cells()
    expected = sorted([cells[ref]["metadata"]["id"], current_take(cells[ref]["metadata"])] for ref in SHORT_VERSES)
    assert sorted([t["cell_id"], t["take_id"]] for t in listed["takes"]) == expected


# -- TTS: generated takes heard by the project's ASR model -------------------------------------------------
def fake_speech(monkeypatch, demo: DemoProject, spoken: dict[str, str]) -> None:
    """TTS "speaks" a verse with a translator's recording (``spoken``: verse -> the verse whose recording it
    says), so the check has takes it can and cannot hear as their verse; the rest of the job is real."""
    import handlers.tts.stabletts.synthesis as synthesis
    from tts.inference import SAMPLE_RATE, SpokenText
    from preprocess_audio import load_audio

    cells = demo.cells()
    audio = {ref: load_audio(take_file(demo, cells[said]), SAMPLE_RATE) for ref, said in spoken.items()}
    by_text = {codex.cell_text(cells[ref]): ref for ref in spoken}

    def speak(voice, texts, *args, **kwargs):
        for index, text in enumerate(texts):
            yield SpokenText(index, audio[by_text[text]], voice.frontend.encode_batch([text])[0])

    monkeypatch.setattr(synthesis, "synthesize_iter", speak)


def tts_project(path: Path, jobs: list[dict]) -> DemoProject:
    """The demo with a random tiny voice at gpu_jobs/voice/best_model.pt and GEN 1:1 and GEN 1:3 playing
    takes an earlier TTS job generated (their recordings, marked generated)."""
    from StableTTS import build_model, save_checkpoint
    from StableTTS.text import RomanizedFrontend

    demo = DemoProject(path)
    save_checkpoint(build_model("tiny", n_vocab=401), demo.root / "gpu_jobs/voice/best_model.pt",
                    frontend=RomanizedFrontend("eng", romanizer="latin").to_dict())
    data = demo.notebook("GEN")
    for cell in data["cells"]:
        if reference(cell) in SWAPPED:
            for attachment in cell["metadata"]["attachments"].values():
                attachment["isGenerated"] = True
    demo.save_notebook("GEN", data)
    demo.write_manifest(jobs)
    return demo


def tts_job(job_id: str, minute: int, **inference) -> dict:
    return {"job_id": job_id, "job_type": "tts", "mode": "inference", "canceled": False,
            "submitted_at": f"2025-10-15T19:{minute:02d}:00.000Z",
            "model": {"type": "StableTTS", "base_checkpoint": "gpu_jobs/voice/best_model.pt"},
            "inference": {"include_verses": list(SWAPPED), "diffusion_steps": 1, **inference}}


@pytest.mark.slow  # trains the module's small ASR model (~30 s)
def test_a_generated_take_the_asr_hears_as_another_verse_is_attached_but_not_selected(learnt, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    demo = tts_project(tmp_path / "project", [learnt.job, tts_job("speak", 10),
                                              tts_job("wrong", 11, check_with="gpu_jobs/job_none/model.tar")])
    learnt.add_to(demo)
    before = demo.cells()
    earlier = {ref: current_take(before[ref]["metadata"]) for ref in SWAPPED}
    fake_speech(monkeypatch, demo, {"GEN 1:1": "GEN 1:1", "GEN 1:3": "GEN 1:1"})    # GEN 1:3 says GEN 1:1

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=(), in_process=True))

    response = demo.response("speak")
    assert response["state"] == "completed", response
    result = response["result"]
    assert result["uploaded_count"] == 2
    assert (result["generated_checked"], result["generated_over_max_cer"], result["max_check_cer"]) == (2, 1, 0.6)
    assert result["generated_not_selected"] == ["GEN 1:3"]
    assert result["generated_check_model"] == learnt.path       # the newest completed ASR job's model
    assert "generated_not_selected_but_only_take" not in result  # both cells had an earlier take to keep
    after = demo.cells()
    for ref in SWAPPED:
        new = set(after[ref]["metadata"]["attachments"]) - set(before[ref]["metadata"]["attachments"])
        assert len(new) == 1, ref
        (take,) = new
        assert after[ref]["metadata"]["attachments"][take]["isGenerated"] is True
        expected = take if ref == "GEN 1:1" else earlier[ref]     # the one it cannot hear is not selected
        assert after[ref]["metadata"]["selectedAudioId"] == expected, ref
        assert current_take(after[ref]["metadata"]) == expected   # and so the editor plays the earlier take
    with io.StringIO(demo.read_file("gpu_jobs/job_speak/generated_check.csv").decode("utf-8")) as fh:
        rows = {r["reference"]: r for r in csv.DictReader(fh)}
    assert float(rows["GEN 1:3"]["cer"]) > 0.6 and rows["GEN 1:3"]["over_max_cer"] == "yes"
    assert float(rows["GEN 1:1"]["cer"]) < 0.5 and rows["GEN 1:1"]["over_max_cer"] == "no"
    assert rows["GEN 1:1"]["verse_text"] == codex.cell_text(before["GEN 1:1"])

    wrong = demo.response("wrong")      # a model named by hand that is not there: nothing is spoken
    assert wrong["state"] == "failed"
    assert wrong["error_message"] == ("inference.check_with names gpu_jobs/job_none/model.tar, which is not in "
                                      "the project")


def test_without_an_asr_model_generated_takes_are_written_unchecked_and_the_result_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    demo = tts_project(tmp_path / "project", [tts_job("speak", 10)])
    fake_speech(monkeypatch, demo, {"GEN 1:1": "GEN 1:1", "GEN 1:3": "GEN 1:1"})

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=(), in_process=True))

    response = demo.response("speak")
    assert response["state"] == "completed", response
    message = "no completed ASR model in the project: generated takes were not checked by listening"
    assert response["result"]["generated_check_skipped"] == message
    assert not any(key.startswith("generated_check") and key != "generated_check_skipped"
                   for key in response["result"])
    assert message in demo.logs("speak")
    after = demo.cells()
    assert all(after[ref]["metadata"]["attachments"][after[ref]["metadata"]["selectedAudioId"]]["createdBy"]
               == "TTS StableTTS" for ref in SWAPPED)      # unchecked takes are selected as before
    assert demo.read_file("gpu_jobs/job_speak/generated_check.csv") is None


# -- the demo's report shows each check --------------------------------------------------------------------
def test_the_demo_report_shows_each_check_with_its_worst_rows_and_a_link_to_its_page(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import demo_report
    from jobs import JobState, claim_job, finish_job, read_manifest
    from local_store import LocalProjectStore
    from storage import FileAction

    demo = DemoProject(tmp_path / "project")
    store = LocalProjectStore(demo.root)
    job = next(j for j in read_manifest(store).jobs if (j.job_type, j.mode) == ("asr", "inference"))
    rows = worst_first([row(f"GEN 1:{n}", n / 20) for n in range(1, 13)] +
                       [CheckedRecording("c", "JHN 1:1", "t", "<script>alert(1)</script>", "heard", 0.99, None)])
    table = write_check_csv(rows, tmp_path / "check.csv")
    folder = f"gpu_jobs/job_{job.job_id}"
    lease = claim_job(store, job, worker_id="test-worker", lease_seconds=600)
    finish_job(lease, JobState.COMPLETED, result={"recordings_check": "3 of 13 recordings differ from their text "
                                                                     "by more than 50 %"},
               extra=[FileAction.create(f"{folder}/audio_text_check.csv", table.read_bytes()),
                      FileAction.create(f"{folder}/audio_text_check.html", b"<html></html>")])

    out = tmp_path / "out" / "report.html"
    page = demo_report.write_report(demo.root, out).read_text(encoding="utf-8")

    section = page.split("<h2>Recordings checked against their text</h2>", 1)[1]
    assert f"<h3>{job.job_id}</h3><p>3 of 13 recordings differ from their text by more than 50 %." in section
    assert f'href="../project/{folder}/audio_text_check.html"' in section
    assert "The 10 worst of 13:" in section
    shown = [ref for ref in ("JHN 1:1", *(f"GEN 1:{n}" for n in range(12, 0, -1))) if f"<td>{ref}</td>" in section]
    assert shown == ["JHN 1:1", *(f"GEN 1:{n}" for n in range(12, 3, -1))]     # worst first, ten of them
    assert "&lt;script&gt;" in section and "<script" not in page.lower()
