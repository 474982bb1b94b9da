"""Data safety of the notebooks on both backends (a folder, the GitLab test server): a generated take never
displaces the recording the editor plays, and a notebook or recording that cannot be read is skipped by
name while the rest of the project is served.

Expectations are read from the notebook JSON with ``demo_env``'s own helpers (the editor's rule), not
through the codex package.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

import codex
from conftest import fast_config, run_worker
from demo_env import FILES, POINTERS, DemoProject, GitLabDemoProject, current_take
from gitlab_jobs import TOKEN_ENV
from handlers.common import UNSAFE_LINK, collect_training_pairs, load_notebooks
from test_handler_common import by_reference, inline_callbacks, probe_job, take_path

DEEP = 700          # nesting json.loads reads (a writer recursing per level would need ~2 frames each)


@pytest.fixture(params=["local", "gitlab"])
def project(request, tmp_path, monkeypatch):
    if request.param == "local":
        yield DemoProject(tmp_path / "project")
        return
    server = request.getfixturevalue("gitlab_server")
    monkeypatch.setenv(TOKEN_ENV, server.token)
    environment = GitLabDemoProject(server, tmp_path / "scratch")
    yield environment
    environment.close()


def human_takes(cell: dict) -> set[str]:
    return {k for k, a in cell["metadata"]["attachments"].items() if not a.get("isGenerated")}


def generated_takes(cell: dict) -> set[str]:
    return {k for k, a in cell["metadata"]["attachments"].items() if a.get("isGenerated")}


def synthesize(project, work, monkeypatch, inference: dict) -> dict:
    """synthesis.synthesize_cells with the voice replaced by tones: selection, write-back and the result keys."""
    synthesis = pytest.importorskip("handlers.tts.stabletts.synthesis")
    from handlers.tts.stabletts.job_inputs import Reference
    from tts.job_settings import SynthesisSettings

    def tones(voice, texts, reference, **settings):
        for index, _ in enumerate(texts):
            tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(8820) / 44100).astype(np.float32)
            yield SimpleNamespace(index=index, audio=tone, encoded=SimpleNamespace(unknown=Counter()))

    monkeypatch.setattr(synthesis, "synthesize_iter", tones)
    callbacks, _ = inline_callbacks(project.store, work, {"inference": inference})
    frontend = SimpleNamespace(kind="tones", unspeakable=lambda texts: [[] for _ in texts])  # speaks everything
    voice = SimpleNamespace(frontend=frontend, vocoder_name="none")
    return synthesis.synthesize_cells(callbacks, load_notebooks(callbacks.scanner), voice,
                                      Reference(None, "tones"), SynthesisSettings())


def test_a_recording_the_editor_plays_is_never_displaced_by_a_generated_take(project, tmp_path, monkeypatch):
    before = by_reference(project.notebook("GEN"))
    # GEN 1:2: one recording and no selectedAudioId (the plugin calls it unrecorded; the editor plays it by
    # its newest-take fallback). GEN 1:3: a selected recording. GEN 1:4: no audio at all.
    assert not before["GEN 1:2"]["metadata"].get("selectedAudioId") and current_take(before["GEN 1:2"]["metadata"])
    assert before["GEN 1:3"]["metadata"]["selectedAudioId"] and not before["GEN 1:4"]["metadata"]["attachments"]
    listed = {"include_verses": ["GEN 1:2", "GEN 1:3", "GEN 1:4"]}

    result = synthesize(project, tmp_path / "first", monkeypatch, listed)
    assert (result["uploaded_count"], result["skipped_recorded"]) == (1, 2)
    assert result["skipped_reasons"] == {"already recorded": 2}
    after = by_reference(project.notebook("GEN"))
    assert after["GEN 1:2"] == before["GEN 1:2"] and after["GEN 1:3"] == before["GEN 1:3"]
    assert current_take(after["GEN 1:4"]["metadata"]) in generated_takes(after["GEN 1:4"])

    # Asked to speak recorded cells too: new takes beside the recordings, which the editor still plays.
    result = synthesize(project, tmp_path / "second", monkeypatch, {**listed, "replace_recorded": True})
    assert (result["uploaded_count"], result["skipped_recorded"]) == (3, 0)
    after = by_reference(project.notebook("GEN"))
    for ref in ("GEN 1:2", "GEN 1:3"):
        meta = after[ref]["metadata"]
        assert len(generated_takes(after[ref])) == 1 and human_takes(after[ref]) == human_takes(before[ref])
        assert current_take(meta) == current_take(before[ref]["metadata"]), ref
    # GEN 1:2's recording is now selected, stamped newer only than "no selection": a translator's own
    # choice made meanwhile still wins the editor's merge. GEN 1:3's selection is untouched.
    assert after["GEN 1:2"]["metadata"]["selectionTimestamp"] == before["GEN 1:2"]["metadata"].get(
        "selectionTimestamp", 0) + 1
    assert after["GEN 1:3"]["metadata"]["selectionTimestamp"] == before["GEN 1:3"]["metadata"]["selectionTimestamp"]
    assert len(generated_takes(after["GEN 1:4"])) == 2      # a generated take may replace a generated one


def test_unreadable_notebooks_are_skipped_by_name_and_the_others_served(project, tmp_path, record_dir):
    gen = project.notebook("GEN")
    gen["metadata"]["outline"] = json.loads("[" * DEEP + "]" * DEEP)      # deep, but readable: kept as it is
    project.save_notebook("GEN", gen)
    broken = {"files/target/DEEP.codex": '{"cells": [{"kind": 2, "value": "", "metadata": {"x": '
                                         + "[" * 100_000 + "]" * 100_000 + "}}]}",
              "files/target/LIST.codex": "[1, 2]",
              "files/target/LONG.codex": '{"cells": [], "metadata": {"n": ' + "7" * 5000 + "}}"}
    for path, text in broken.items():
        project.write_file(path, text)
    project.write_manifest([probe_job("hear1", "inference", probe={"scenario": "transcribe"})])

    run_worker(project.source(), fast_config(tmp_path))

    response = project.response("hear1")
    assert response["state"] == "completed", response
    assert response["result"]["cells_transcribed"] == 6      # every verse with a recording and no text
    logs = project.logs("hear1")
    for line in ("files/target/DEEP.codex is nested too deeply to read", "files/target/LIST.codex has no 'cells'",
                 "files/target/LONG.codex is not valid notebook JSON"):
        assert line in logs
    for path, text in broken.items():
        assert project.read_file(path) == text.encode()
    after = project.notebook("GEN")
    assert after["metadata"]["outline"] == gen["metadata"]["outline"]
    assert by_reference(after)["GEN 1:6"]["value"] == "heard GEN 1:6"


def test_links_leading_outside_the_project_are_skipped_with_a_reason(tmp_path):
    """Local backend only: on GitLab a link is a file holding its target's path (a bad notebook at worst)."""
    demo = DemoProject(tmp_path / "project")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(demo.root / "files/target/GEN.codex", outside / "GEN.codex")
    os.symlink(outside / "GEN.codex", demo.root / "files/target/EVIL.codex")
    os.symlink("LOOP.codex", demo.root / "files/target/LOOP.codex")
    cell = by_reference(demo.notebook("GEN"))["GEN 1:1"]
    audio_id = current_take(cell["metadata"])
    recording = demo.root / take_path(FILES, "GEN", audio_id)
    shutil.move(recording, outside / recording.name)
    os.symlink(outside / recording.name, recording)                    # the bytes: outside the project
    pointer = demo.root / take_path(POINTERS, "GEN", audio_id)
    pointer.unlink()
    os.symlink(pointer.name, pointer)                                   # the pointer: a link to itself
    callbacks, _ = inline_callbacks(demo.store, tmp_path)

    notebooks = load_notebooks(callbacks.scanner)
    assert [nb.path for nb in notebooks] == ["files/target/GEN.codex", "files/target/JHN.codex"]
    assert notebooks.unreadable == {
        "files/target/EVIL.codex": "'files/target/EVIL.codex' resolves outside the project",
        "files/target/LOOP.codex": "'files/target/LOOP.codex' is a symbolic link loop"}
    pairs = collect_training_pairs(callbacks, notebooks, tmp_path / "work")
    assert len(pairs) == 27 and "GEN 1:1" not in {p.cell.cell_id for p in pairs}
    (skipped,) = [s for s in pairs.skipped if s.id == "GEN 1:1"]
    assert skipped.reason == UNSAFE_LINK == "unusable link"
    assert skipped.detail == f"{take_path(POINTERS, 'GEN', audio_id)}: " \
                             f"'{take_path(POINTERS, 'GEN', audio_id)}' is a symbolic link loop"
    take = next(t for t in codex.audio_takes(cell) if t.audio_id == audio_id)
    assert codex.fetch_take(demo.store, "files/target/GEN.codex", take, tmp_path / "one") is None
    assert str(tmp_path) not in json.dumps(notebooks.unreadable) + skipped.detail
