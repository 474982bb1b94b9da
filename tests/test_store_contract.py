"""The storage contract (``storage.ProjectStore``), the same cases on both backends: a project folder on disk
(``local_store``) and a project on the GitLab test server (``gitlab_jobs``). The job protocol is written once
against this contract, so whatever one backend does here the other must do too. Where the backends keep a
file differently (GitLab: an LFS pointer; on disk: the bytes), the case says how each shows it.

``env`` (conftest) is the project: ``env.store`` is the worker's store, ``env.write_file``/``read_file`` are
a translator's push and checkout.
"""

from __future__ import annotations

import pickle

import pytest

import stores
from conftest import project_env
from git_lfs import LfsRules, lfs_pointer_for
from storage import FileAction, FileAlreadyExists, FileMissing, StorageError, UnsafePath, VersionConflict

CODEX_ATTRIBUTES = "*.webm filter=lfs diff=lfs merge=lfs -text\n"
RESPONSE = "gpu_jobs/job_c/response.yaml"


@pytest.fixture(params=["local", "gitlab"])
def env(request, tmp_path):
    """Both backends in every run, fast or not (conftest's ``env`` leaves GitLab to ``make test``): this
    suite is what shows they behave alike."""
    yield from project_env(request, tmp_path)


def snapshot(env) -> dict[str, bytes | None]:
    return {path: env.read_file(path) for path in env.store.list_files()}


# -- create, update, delete ----------------------------------------------------------------------------
def test_create_update_and_delete_each_give_the_version_the_next_change_needs(env):
    store = env.store
    assert store.read(RESPONSE) is None and store.version(RESPONSE) is None and not store.exists(RESPONSE)
    store.commit([FileAction.create(RESPONSE, "state: running\n")], "claim")
    first = store.read(RESPONSE)
    assert (first.path, first.content, first.text) == (RESPONSE, b"state: running\n", "state: running\n")
    assert store.version(RESPONSE) == first.version and store.exists(RESPONSE)
    assert env.read_file(RESPONSE) == b"state: running\n"  # what the next checkout holds

    store.commit([FileAction.update(RESPONSE, "state: completed\n", expected_version=first.version)], "finish")
    second = store.read(RESPONSE)
    assert second.content == b"state: completed\n" and second.version != first.version
    assert store.version(RESPONSE) == second.version

    store.commit([FileAction.update(RESPONSE, "state: failed\n")], "blind")  # no precondition: overwrites
    assert store.read(RESPONSE).content == b"state: failed\n"

    store.commit([FileAction.delete(RESPONSE, expected_version=store.version(RESPONSE))], "remove")
    assert store.read(RESPONSE) is None and not store.exists(RESPONSE) and env.read_file(RESPONSE) is None


def test_every_refused_precondition_names_its_file_and_changes_nothing(env):
    store = env.store
    store.commit([FileAction.create(RESPONSE, "state: running\n")], "claim")
    old = store.read(RESPONSE).version
    store.commit([FileAction.update(RESPONSE, "state: completed\n", expected_version=old)], "finish")
    before = snapshot(env)
    refusals = [
        ([FileAction.create(RESPONSE, "state: running\n")], FileAlreadyExists, RESPONSE),
        ([FileAction.update("gpu_jobs/nope.yaml", "x")], FileMissing, "gpu_jobs/nope.yaml"),
        ([FileAction.delete("gpu_jobs/nope.yaml")], FileMissing, "gpu_jobs/nope.yaml"),
        ([FileAction.update(RESPONSE, "state: failed\n", expected_version=old)], VersionConflict, RESPONSE),
        ([FileAction.delete(RESPONSE, expected_version=old)], VersionConflict, RESPONSE),
        # All or nothing: a good create and update travel with the refused one, and none of them lands.
        ([FileAction.create("gpu_jobs/job_c/logs.txt", "log"), FileAction.update("metadata.json", "{}"),
          FileAction.update(RESPONSE, "state: failed\n", expected_version=old)], VersionConflict, RESPONSE),
    ]
    for actions, error, path in refusals:
        with pytest.raises(error) as refused:
            store.commit(actions, "refused")
        assert isinstance(refused.value, StorageError) and refused.value.path == path, (actions, refused.value)
    with pytest.raises(ValueError):
        store.commit([], "nothing")
    assert snapshot(env) == before


def test_a_version_follows_its_file_not_the_project(env):
    """Another file's change leaves our version good; a translator's change of our file makes it stale."""
    store = env.store
    store.commit([FileAction.create(RESPONSE, "state: running\n")], "claim")
    version = store.version(RESPONSE)
    env.write_file("files/target/GEN.codex", '{"cells": []}')
    store.commit([FileAction.update(RESPONSE, "state: completed\n", expected_version=version)], "finish")

    version = store.version(RESPONSE)
    env.write_file(RESPONSE, "state: canceled\n")
    assert store.version(RESPONSE) != version
    with pytest.raises(VersionConflict):
        store.commit([FileAction.update(RESPONSE, "state: failed\n", expected_version=version)], "late")
    assert env.read_file(RESPONSE) == b"state: canceled\n"


def test_a_commit_writes_exactly_its_files(env):
    """No lock, staging or temporary file is left in the translators' project (the local lock lives outside)."""
    store = env.store
    before = set(store.list_files())
    store.commit([FileAction.create("gpu_jobs/job_e/response.yaml", "a"),
                  FileAction.create("gpu_jobs/job_e/logs.txt", "b")], "two files")
    store.commit([FileAction.update("gpu_jobs/job_e/logs.txt", "c")], "one more")
    assert set(store.list_files()) == before | {"gpu_jobs/job_e/response.yaml", "gpu_jobs/job_e/logs.txt"}
    if env.kind == "local":  # what a directory listing shows, hidden files included
        assert sorted(p.name for p in (env.root / "gpu_jobs/job_e").iterdir()) == ["logs.txt", "response.yaml"]


# -- listing and reading -------------------------------------------------------------------------------
def test_list_files_is_recursive_sorted_and_empty_for_a_missing_folder(env):
    store = env.store
    files = ["gpu_jobs/job_l/b.txt", "gpu_jobs/job_l/a/z.txt", "gpu_jobs/job_l/a/y/x.txt", "gpu_jobs/job_lx.txt"]
    store.commit([FileAction.create(path, path) for path in files], "files")
    expected = sorted(files[:3])
    assert store.list_files("gpu_jobs/job_l") == store.list_files("gpu_jobs/job_l/") == expected
    assert store.list_files("gpu_jobs/job_l/a/y") == ["gpu_jobs/job_l/a/y/x.txt"]
    assert store.list_files("gpu_jobs/no_such_folder") == [] and store.list_files("nowhere/at/all") == []
    everything = store.list_files()
    assert everything == sorted(everything) and set(files) <= set(everything) and "metadata.json" in everything
    assert store.read("gpu_jobs/job_l") is None and store.version("gpu_jobs/job_l") is None  # a folder
    if env.kind == "local":  # git's own folder is not part of the project
        (env.root / ".git").mkdir()
        (env.root / ".git/HEAD").write_text("ref: refs/heads/main\n")
        assert store.list_files() == everything


def test_a_folder_a_delete_empties_is_gone_but_never_the_project(env):
    store = env.store
    store.commit([FileAction.create("gpu_jobs/job_a/resume/asr/state.bin", b"s"),
                  FileAction.create("gpu_jobs/job_a/response.yaml", "state: running\n")], "state")
    store.commit([FileAction.delete("gpu_jobs/job_a/resume/asr/state.bin")], "done")
    assert store.list_files("gpu_jobs/job_a/resume") == []
    assert store.list_files("gpu_jobs/job_a") == ["gpu_jobs/job_a/response.yaml"]
    store.commit([FileAction.delete("gpu_jobs/job_a/response.yaml")], "gone")
    assert store.list_files("gpu_jobs") == [] and store.exists("metadata.json")
    if env.kind == "local":  # git keeps no empty folders, so neither does the folder on disk
        assert not (env.root / "gpu_jobs").exists() and env.root.is_dir()


def test_download_and_download_many_write_the_files_where_asked(env, tmp_path):
    store = env.store
    model = tmp_path / "source.bin"
    model.write_bytes(bytes(range(256)) * 40)
    store.commit([FileAction.create("gpu_jobs/job_d/model.bin", source=model),
                  FileAction.create("gpu_jobs/job_d/notes.txt", "notes")], "results")
    target = store.download("gpu_jobs/job_d/model.bin", tmp_path / "dl" / "deep" / "model.bin")
    assert target == tmp_path / "dl" / "deep" / "model.bin" and target.read_bytes() == model.read_bytes()
    with pytest.raises(FileNotFoundError):
        store.download("gpu_jobs/job_d/nope.bin", tmp_path / "dl" / "nope.bin")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["deep"]  # no partial file left

    wanted = ["gpu_jobs/job_d/model.bin", "gpu_jobs/job_d/notes.txt"]
    got = store.download_many(wanted, tmp_path / "many")
    assert got == {path: tmp_path / "many" / path for path in wanted}
    assert got["gpu_jobs/job_d/notes.txt"].read_bytes() == b"notes"
    with pytest.raises(FileNotFoundError):
        store.download_many([*wanted, "gpu_jobs/job_d/nope.bin"], tmp_path / "many2")
    assert sorted(store.download_many([*wanted, "gpu_jobs/job_d/nope.bin"], tmp_path / "many3",
                                      missing_ok=True)) == wanted


@pytest.mark.parametrize("bad", ["../outside.txt", "/etc/passwd", "gpu_jobs/../../outside.txt", "a\\b.txt",
                                 "C:/outside.txt", "a\x00b", "", ".", "gpu_jobs/.."])
def test_a_path_leaving_the_project_is_refused_by_every_operation(env, tmp_path, bad):
    store = env.store
    with pytest.raises(UnsafePath):
        FileAction.create(bad, "x")
    for operation in (lambda: store.read(bad), lambda: store.version(bad), lambda: store.exists(bad),
                      lambda: store.download(bad, tmp_path / "dl" / "x"),
                      lambda: store.download_many([bad], tmp_path / "dl")):
        with pytest.raises(UnsafePath):
            operation()
    if bad.strip("/"):  # "" lists the whole project
        with pytest.raises(UnsafePath):
            store.list_files(bad)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "dl" / "x").exists()


# -- Git LFS -------------------------------------------------------------------------------------------
def test_a_translators_lfs_file_downloads_as_its_bytes(env, tmp_path):
    """A recording a translator pushed: GitLab holds a pointer (``read`` gives its text), a folder on disk
    the bytes git-lfs checked out; ``download`` gives the real bytes on both, and so does an update."""
    store = env.store
    env.write_file(".gitattributes", CODEX_ATTRIBUTES)
    path = ".project/attachments/pointers/MAT/audio-mat-1-1.webm"
    audio = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 12
    env.write_file(path, audio)
    read_as = {"local": audio, "gitlab": lfs_pointer_for(audio)}[env.kind]
    assert store.read(path).content == read_as
    assert store.download(path, tmp_path / "a.webm").read_bytes() == audio
    assert store.download_many([path], tmp_path / "many")[path].read_bytes() == audio

    newer = b"\x1a\x45\xdf\xa3" + bytes(range(255, -1, -1)) * 9
    store.commit([FileAction.update(path, newer, expected_version=store.version(path))], "a new take")
    assert store.download(path, tmp_path / "b.webm").read_bytes() == newer and env.read_file(path) == newer
    assert store.read(path).content == {"local": newer, "gitlab": lfs_pointer_for(newer)}[env.kind]


def test_an_attachment_committed_under_pointers_lands_where_its_backend_keeps_takes(env):
    """What git holds is ``pointers/`` (GitLab: an LFS object); a folder on disk is a translator's checkout,
    whose editor plays ``files/``, so the local store writes that copy too -- as a create, never overwriting
    one, and again on an update. ``written_paths`` and ``commit_bytes`` say so to callers beforehand."""
    store = env.store
    env.write_file(".gitattributes", CODEX_ATTRIBUTES)
    pointers = ".project/attachments/pointers/MAT/audio-1-generated.webm"
    files = ".project/attachments/files/MAT/audio-1-generated.webm"
    copies = {"local": [pointers, files], "gitlab": [pointers]}[env.kind]
    audio = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8
    assert store.written_paths(pointers) == copies
    assert store.written_paths(files) == [files] and store.written_paths(RESPONSE) == [RESPONSE]
    assert store.commit_bytes([FileAction.create(pointers, audio), FileAction.create(RESPONSE, "x")]) == (
        len(audio) * len(copies) + 1)

    store.commit([FileAction.create(pointers, audio)], "a generated take")
    assert store.list_files(".project/attachments") == sorted(copies)
    assert all(env.read_file(path) == audio for path in copies)
    assert store.read(pointers).content == {"local": audio, "gitlab": lfs_pointer_for(audio)}[env.kind]

    newer = b"\x1a\x45\xdf\xa3" + bytes(range(255, -1, -1)) * 8
    store.commit([FileAction.update(pointers, newer, expected_version=store.version(pointers))], "a new take")
    assert store.list_files(".project/attachments") == sorted(copies)
    assert all(env.read_file(path) == newer for path in copies)

    # Another take whose files/ copy a translator already has (no pointer beside it): on disk that is an
    # existing file, which a create never overwrites; GitLab keeps no files/ copy to collide with.
    second = pointers.replace("generated", "second")
    env.write_file(second.replace("/pointers/", "/files/"), b"a translator's take")
    if env.kind == "local":
        with pytest.raises(FileAlreadyExists) as refused:
            store.commit([FileAction.create(second, audio)], "a clash")
        assert refused.value.path == second.replace("/pointers/", "/files/") and not store.exists(second)
    else:
        store.commit([FileAction.create(second, audio)], "no clash")
        assert env.read_file(second) == audio
    assert env.read_file(second.replace("/pointers/", "/files/")) == b"a translator's take"


def test_a_large_result_gets_an_lfs_line_once_and_small_ones_none(env, tmp_path):
    """Large results under gpu_jobs/ must not travel in a commit body or bloat git history: GitLab stores
    them in LFS, the folder on disk keeps the plain file, and on both the same commit adds a .gitattributes
    line for that kind of job file, once."""
    store = env.store
    env.write_file(".gitattributes", CODEX_ATTRIBUTES)
    store.lfs_min_bytes = 1000
    store.commit([FileAction.create("gpu_jobs/job_a/logs.txt", "small\n")], "small")
    assert env.read_file(".gitattributes").decode() == CODEX_ATTRIBUTES

    model = tmp_path / "model.tar"
    model.write_bytes(b"m" * 5000)
    path = "gpu_jobs/job_a/model/asr_model.pth.tar"
    store.commit([FileAction.create(path, source=model), FileAction.create("gpu_jobs/job_a/model/notes.txt", "x")],
                 "model")
    attributes = env.read_file(".gitattributes").decode()
    assert attributes == CODEX_ATTRIBUTES + "gpu_jobs/**/*.tar filter=lfs diff=lfs merge=lfs -text\n"
    assert LfsRules(attributes).tracks("gpu_jobs/job_b/model/asr_model.pth.tar")
    assert env.read_file(path) == model.read_bytes()  # a checkout
    assert store.download(path, tmp_path / "back.tar").read_bytes() == model.read_bytes()
    kept_as = {"local": model.read_bytes(), "gitlab": lfs_pointer_for(model.read_bytes())}[env.kind]
    assert store.read(path).content == kept_as
    assert store.read("gpu_jobs/job_a/model/notes.txt").content == b"x"  # small: a plain file on both

    store.commit([FileAction.create("gpu_jobs/job_b/model/asr_model.pth.tar", source=model)], "again")
    assert env.read_file(".gitattributes").decode() == attributes  # that kind is tracked now: no second line


def test_a_large_notebook_keeps_its_form_and_gets_no_lfs_line(env):
    """The size rule is for results under gpu_jobs/ only: a translators' notebook of any size stays a plain
    JSON file and never gets a .gitattributes line (the editor would then read a pointer as its notebook)."""
    store = env.store
    env.write_file(".gitattributes", CODEX_ATTRIBUTES)
    notebook = "files/target/GEN.codex"
    env.write_file(notebook, '{"cells": []}')
    store.lfs_min_bytes = 1000
    big = '{"cells": [' + ",".join(['{"kind": 2, "value": "x"}'] * 200) + '], "metadata": {}}'
    store.commit([FileAction.update(notebook, big, expected_version=store.version(notebook)),
                  FileAction.create(".project/sourceTexts/GEN.source", big)], "notebooks")
    assert env.read_file(".gitattributes").decode() == CODEX_ATTRIBUTES
    assert store.read(notebook).text == big and env.read_file(notebook).decode() == big
    assert store.read(".project/sourceTexts/GEN.source").text == big


# -- reopening elsewhere -------------------------------------------------------------------------------
def test_a_spec_reopens_the_same_project_in_another_process(env):
    """A job's process rebuilds the store from its spec (pickled, token-free: GitLab's comes from the
    environment there)."""
    store = env.store
    store.commit([FileAction.create(RESPONSE, "state: running\n")], "claim")
    spec = pickle.loads(pickle.dumps(store.spec()))
    reopened = stores.open_store(spec)
    try:
        assert reopened.name == store.name and reopened.read(RESPONSE) == store.read(RESPONSE)
        assert "glpat" not in repr(spec)
    finally:
        reopened.close()
