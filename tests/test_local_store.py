"""The local backend's own rules beyond the lifecycle tests: large results get a Git LFS line, and deletes
leave no empty folders behind."""

from __future__ import annotations

from git_lfs import LfsRules
from local_jobs import LocalProjectStore
from storage import FileAction

CODEX_ATTRIBUTES = "*.webm filter=lfs diff=lfs merge=lfs -text\n"


def test_a_large_result_gets_an_lfs_line_once_and_small_ones_none(tmp_path):
    (tmp_path / ".gitattributes").write_text(CODEX_ATTRIBUTES)
    store = LocalProjectStore(tmp_path)
    store.lfs_min_bytes = 1000
    store.commit([FileAction.create("gpu_jobs/job_a/logs.txt", "small\n")], "small")
    assert (tmp_path / ".gitattributes").read_text() == CODEX_ATTRIBUTES

    model = tmp_path.parent / "model.tar"
    model.write_bytes(b"m" * 5000)
    store.commit([FileAction.create("gpu_jobs/job_a/model/asr_model.pth.tar", source=model),
                  FileAction.create("gpu_jobs/job_a/model/notes.txt", "x")], "model")
    attributes = (tmp_path / ".gitattributes").read_text()
    assert attributes == CODEX_ATTRIBUTES + "gpu_jobs/**/*.tar filter=lfs diff=lfs merge=lfs -text\n"
    assert (tmp_path / "gpu_jobs/job_a/model/asr_model.pth.tar").read_bytes() == model.read_bytes()  # plain here
    assert LfsRules(attributes).tracks("gpu_jobs/job_b/model/asr_model.pth.tar")

    store.commit([FileAction.create("gpu_jobs/job_b/model/asr_model.pth.tar", source=model)], "again")
    assert (tmp_path / ".gitattributes").read_text() == attributes  # that kind is tracked now: no second line


def test_deletes_remove_the_folders_they_empty_but_never_the_project(tmp_path):
    store = LocalProjectStore(tmp_path)
    store.commit([FileAction.create("gpu_jobs/job_a/resume/asr/state.bin", b"s"),
                  FileAction.create("gpu_jobs/job_a/response.yaml", "state: running\n")], "state")
    store.commit([FileAction.delete("gpu_jobs/job_a/resume/asr/state.bin")], "done")
    assert not (tmp_path / "gpu_jobs/job_a/resume").exists()
    assert (tmp_path / "gpu_jobs/job_a/response.yaml").is_file()
    store.commit([FileAction.delete("gpu_jobs/job_a/response.yaml")], "gone")
    assert not (tmp_path / "gpu_jobs").exists() and tmp_path.is_dir()


def test_a_large_notebook_keeps_its_form_no_lfs_line(tmp_path):
    """The size rule is for results under gpu_jobs/ only: a translators' notebook of any size stays a plain
    JSON file and never gets a .gitattributes line (the editor would then read a pointer as its notebook)."""
    (tmp_path / ".gitattributes").write_text(CODEX_ATTRIBUTES)
    notebook = "files/target/GEN.codex"
    (tmp_path / "files/target").mkdir(parents=True)
    (tmp_path / notebook).write_text('{"cells": []}')
    store = LocalProjectStore(tmp_path)
    store.lfs_min_bytes = 1000
    big = '{"cells": [' + ",".join(['{"kind": 2, "value": "x"}'] * 200) + '], "metadata": {}}'
    store.commit([FileAction.update(notebook, big, expected_version=store.version(notebook)),
                  FileAction.create(".project/sourceTexts/GEN.source", big)], "notebooks")
    assert (tmp_path / ".gitattributes").read_text() == CODEX_ATTRIBUTES
    assert (tmp_path / notebook).read_text() == big
