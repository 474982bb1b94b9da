"""stores.py opens every project the programs use (CLI, fleet, exporter, demo, job process); the storage
errors form one family; local_jobs is the old name of local_store."""

from __future__ import annotations

import pickle

import pytest

import codex
import codex.changes
import gitlab_jobs
import gitlab_to_hf_dataset
import local_jobs
import local_store
import scale_workers
import storage
import stores
import worker_entry
from storage import FileAction, StorageError, StoreSpec


def test_local_jobs_is_the_old_name_of_the_same_store():
    assert local_jobs.LocalProjectStore is local_store.LocalProjectStore
    assert local_jobs.LocalSource is local_store.LocalSource


def test_open_store_rebuilds_a_local_store_from_its_spec(tmp_path):
    store = stores.open_project(tmp_path)
    store.commit([FileAction.create("a.txt", "a")], "a")
    again = stores.open_store(store.spec())
    assert isinstance(again, local_store.LocalProjectStore) and again.read("a.txt").content == b"a"
    with pytest.raises(ValueError, match="unknown store kind 'ftp'"):
        stores.open_store(StoreSpec("ftp", {}))
    with pytest.raises(FileNotFoundError):
        stores.open_project(tmp_path / "missing")


def test_open_source_and_open_project_reach_gitlab(gitlab_server, gitlab_project, monkeypatch):
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    source = stores.open_source((), gitlab_server.token, gitlab_server.url)
    try:
        assert isinstance(source, gitlab_jobs.GitLabSource) and source.poll() == []  # no manifest yet
    finally:
        source.close()
    store = stores.open_project(project="bible/demo", token=gitlab_server.token, gitlab_url=gitlab_server.url)
    try:
        assert isinstance(store, gitlab_jobs.GitLabProjectStore) and store.exists("metadata.json")
        assert store.spec().kind == "gitlab"
    finally:
        store.close()
    with pytest.raises(gitlab_jobs.GitLabAuthError):   # no token anywhere: a StorageError, not a crash
        stores.open_source((), None, gitlab_server.url)


def test_open_source_serves_local_folders_without_a_token(tmp_path):
    source = stores.open_source([tmp_path], None)
    assert isinstance(source, local_store.LocalSource) and [s.root for s in source.poll()] == [tmp_path.resolve()]


def test_the_programs_share_one_default_gitlab_url():
    def default(command, name):
        return next(p.default for p in command.params if p.name == name)

    assert default(worker_entry.main, "gitlab_url") == stores.DEFAULT_GITLAB_URL
    assert default(scale_workers.main, "gitlab_url") == stores.DEFAULT_GITLAB_URL
    assert gitlab_to_hf_dataset.DEFAULT_GITLAB_URL is stores.DEFAULT_GITLAB_URL


def test_both_commit_too_large_errors_are_storage_errors():
    """Each keeps its name (``gitlab_jobs.CommitTooLarge``, ``codex.CommitTooLarge``), both are caught by an
    ``except StorageError``, and the notebook writer's own stays its own: a caller that splits a batch on it
    must not take the backend's refusal of a single change for it."""
    backend = gitlab_jobs.CommitTooLarge("commit of 3 action(s) needs a 400-byte body")
    applied = codex.CommitTooLarge("2 file(s) over 100 bytes")
    assert gitlab_jobs.CommitTooLarge is storage.CommitTooLarge
    assert codex.CommitTooLarge is codex.changes.CommitTooLarge
    for error in (backend, applied):
        assert isinstance(error, StorageError) and isinstance(error, storage.CommitTooLarge)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
    assert not isinstance(backend, codex.CommitTooLarge)


def test_the_exporter_opens_its_project_through_stores(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(gitlab_to_hf_dataset, "open_project", lambda *a, **k: opened.append((a, k)) or "store")
    config = {"gitlab": {"project_id": 42, "access_token": "glpat-x", "server_url": ""}}
    assert gitlab_to_hf_dataset.open_project_store(config) == "store"
    assert gitlab_to_hf_dataset.open_project_store({}, tmp_path) == "store"
    assert opened == [((), {"project": "42", "token": "glpat-x", "gitlab_url": stores.DEFAULT_GITLAB_URL}),
                      ((tmp_path,), {})]
