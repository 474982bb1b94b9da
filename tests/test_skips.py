"""skips.py: one report of skipped items for every layer, its one-line summary, and one name per reason."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import codex
import handlers.common
import import_graph
import preprocess_stabletts
import skips
from preprocess_audio import encode_audio
from skips import EMPTY_TEXT, MISSING_AUDIO, TOO_SHORT, UNDECODABLE_AUDIO, SkippedItem, SkipReport
from tts.config import skip_summary


def cell_ref(cid: str, reference: str | None = None) -> codex.CellRef:
    return codex.CellRef("files/target/GEN.codex", cid, reference or cid, "", None)


# -- the report --------------------------------------------------------------------------------------------------

def test_summary_names_the_count_the_noun_and_the_reasons_most_common_first():
    report = SkipReport()
    report.add(cell_ref("GEN 1:1"), EMPTY_TEXT)
    report.add(cell_ref("GEN 1:2"), MISSING_AUDIO, "no file for take a2")
    report.add(cell_ref("GEN 1:3"), MISSING_AUDIO)
    assert report.summary("for training") == "Skipped 3 cell(s) for training: 2 missing audio, 1 empty text"
    assert report.reasons() == "2 missing audio, 1 empty text"
    assert report.counts() == {MISSING_AUDIO: 2, EMPTY_TEXT: 1}
    clips = SkipReport(noun="utterance")
    clips.add("u7", UNDECODABLE_AUDIO, "cannot be decoded")
    assert clips.summary() == "Skipped 1 utterance(s): 1 undecodable audio"
    assert SkipReport(noun="clip").summary("from training") == "No clip skipped from training"
    assert SkipReport().reasons() == "none" and SkipReport().counts() == {}


def test_cells_and_clips_are_told_apart_and_reports_combine():
    cells = SkipReport()
    cells.add(cell_ref("3ad7", "GEN 1:6"), MISSING_AUDIO, "no file")
    (item,) = cells
    assert (item.id, item.notebook_path, item.reference) == ("3ad7", "files/target/GEN.codex", "GEN 1:6")
    assert item.describe() == "files/target/GEN.codex GEN 1:6 (3ad7): missing audio -- no file"
    assert SkippedItem("v3", EMPTY_TEXT).describe() == "v3: empty text"
    assert SkippedItem("", skips.NOTEBOOK_UNPARSABLE, notebook_path="files/target/BAD.codex").describe() == \
        "files/target/BAD.codex: the notebook could not be parsed"
    more = SkipReport()
    more.add("v3", EMPTY_TEXT)
    cells.extend(more)
    cells.extend([SkippedItem("v4", EMPTY_TEXT)])
    assert [s.id for s in cells] == ["3ad7", "v3", "v4"] and len(cells) == 3
    assert cells.counts() == {EMPTY_TEXT: 2, MISSING_AUDIO: 1}


def test_a_reason_carries_its_facts_and_an_item_stays_hashable():
    report = SkipReport(noun="clip")
    report.add("v1", TOO_SHORT, "400 frames for 2400 symbols", symbols=2400, frames=400, frontend_kind="phonemes")
    (item,) = report
    assert item.facts == {"symbols": 2400, "frames": 400, "frontend_kind": "phonemes"}
    assert hash(item) == hash(SkippedItem("v1", TOO_SHORT, "400 frames for 2400 symbols"))
    # TTS's advice reads those facts: one clip too short of one is the front end's fault, of a hundred it is not.
    assert "6.0 symbols per audio frame" in skip_summary(report, total=1)
    assert skip_summary(report, total=100) == "1 audio too short for its text"


# -- one name per reason -----------------------------------------------------------------------------------------

def test_codex_selections_and_the_handlers_use_one_name_for_a_cell_without_text():
    book = codex.parse_notebook(json.dumps({"cells": [
        {"kind": 2, "languageId": "html", "value": "",
         "metadata": {"id": "GEN 1:1", "type": "text", "edits": [], "selectedAudioId": "",
                      "attachments": {"a1": {"url": ".project/attachments/files/GEN/a1.webm", "type": "audio",
                                             "createdAt": 1, "updatedAt": 1, "isDeleted": False}}}}],
        "metadata": {}}), "files/target/GEN.codex")
    selection = codex.select_training_pairs([book])
    assert isinstance(selection.skipped, SkipReport)
    assert [(s.id, s.reason) for s in selection.skipped] == [("GEN 1:1", "empty text")]
    # No table translates codex's words into the handlers': they are the same objects.
    assert handlers.common.SkipReport is SkipReport and handlers.common.EMPTY_TEXT is skips.EMPTY_TEXT


def test_every_reason_is_written_once_in_skips():
    reasons = {name: value for name, value in vars(skips).items() if name.isupper() and isinstance(value, str)}
    assert len(set(reasons.values())) == len(reasons)  # no two names for one wording
    written_elsewhere = {name: module for module, path in import_graph.project_modules().items() if module != "skips"
                         for name, value in reasons.items() if value in import_graph.string_constants(path)}
    assert written_elsewhere == {}


# -- preprocess_stabletts weighs too-short clips against every clip ------------------------------------------------

def audio_folder(folder: Path, good: int) -> Path:
    """``good`` one-second clips with a short text, and one 0.1 s clip with a text far too long for it."""
    (folder / "audio").mkdir(parents=True)
    tone = np.sin(np.arange(44100) / 5).astype(np.float32) * 0.1
    rows = []
    for i in range(good):
        encode_audio(tone, 44100, folder / "audio" / f"g{i}.wav", "wav")
        rows.append([f"audio/g{i}.wav", "abc", f"g{i}"])
    encode_audio(tone[:4410], 44100, folder / "audio" / "short.wav", "wav")
    rows.append(["audio/short.wav", " ".join(["word"] * 200), "short"])
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["file_name", "transcription", "cell_id"], *rows])
    return folder


def preprocess_output(tmp_path: Path, good: int) -> str:
    data = audio_folder(tmp_path / f"data{good}", good)
    result = CliRunner().invoke(preprocess_stabletts.main, ["--data", str(data), "--cache-dir",
                                                            str(tmp_path / f"cache{good}"), "--frontend", "characters"])
    assert result.exit_code == 0, result.output
    return result.output


def test_preprocess_gives_the_front_end_advice_only_when_many_of_all_clips_are_too_short(tmp_path):
    one_of_eleven = preprocess_output(tmp_path, 10)
    assert "10 clip(s) ready" in one_of_eleven
    assert "skipped 1: 1 audio too short for its text\n" in one_of_eleven   # one slip: the count alone
    assert "symbols per audio frame" not in one_of_eleven
    one_of_three = preprocess_output(tmp_path, 2)
    assert "skipped 1: 1 audio too short for its text; with" in one_of_three
    assert "check that each recording speaks its whole text" in one_of_three
