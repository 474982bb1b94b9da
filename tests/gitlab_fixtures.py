"""Pytest fixtures (and a lifecycle-test environment) backed by the fake GitLab in ``tests/gitlab_fake``.

Use them from a test module or a conftest (tests/ is on sys.path when pytest runs, no package needed):

    from gitlab_fixtures import (codex_project_dir, gitlab_client, gitlab_env, gitlab_project, gitlab_server,
                                 gitlab_store, gitlab_token)

Every fixture is function-scoped: each test gets its own server on a free loopback port and its own
repositories under ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

import gitlab
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gitlab_fake import GitLabTestServer  # noqa: E402
from gitlab_fake.projects import Project  # noqa: E402
from gitlab_jobs import TOKEN_ENV, GitLabProjectStore, GitLabSource, RetryPolicy  # noqa: E402
from project_env import ProjectEnv  # noqa: E402

# Tests wait milliseconds, not seconds, between retries.
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
CODEX_GITATTRIBUTES = "".join(f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n"
                              for ext in ("wav", "mp3", "m4a", "ogg", "webm", "png", "jpg", "mp4"))
CODEX_GITIGNORE = ".project/attachments/files/**\n"


def pointer_for(data: bytes) -> str:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"


def fake_audio(seed: str, size: int = 2000) -> bytes:
    """Deterministic bytes that look nothing like a pointer (a WebM magic number, then noise)."""
    block = hashlib.sha256(seed.encode()).digest()
    return (b"\x1a\x45\xdf\xa3" + block * (size // len(block) + 1))[:size]


def make_codex_project(folder: Path, *, book: str = "MAT", verses: int = 3, manifest: dict | None = None) -> Path:
    """A tiny Codex project as it lies on a translator's disk: audio bytes in the git-ignored ``files/``
    folder with pointer texts in ``pointers/`` — except the last verse, whose ``pointers/`` file holds the
    real bytes (the editor allows both)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".gitattributes").write_text(CODEX_GITATTRIBUTES)
    (folder / ".gitignore").write_text(CODEX_GITIGNORE)
    (folder / "metadata.json").write_text(json.dumps({"projectName": "fixture", "meta": {"version": "0.32"}}))
    cells = []
    for number in range(1, verses + 1):
        audio_id = f"audio-{book.lower()}-1-{number}-1763655321982-abc{number:06d}"
        data = fake_audio(f"{book}{number}")
        pointers = folder / ".project/attachments/pointers" / book / f"{audio_id}.webm"
        files = folder / ".project/attachments/files" / book / f"{audio_id}.webm"
        pointers.parent.mkdir(parents=True, exist_ok=True)
        files.parent.mkdir(parents=True, exist_ok=True)
        if number < verses:
            pointers.write_text(pointer_for(data))
            files.write_bytes(data)
        else:
            pointers.write_bytes(data)
        cells.append({"kind": 2, "languageId": "html", "value": f"<span>Verse {number}</span>",
                      "metadata": {"id": f"{book} 1:{number}", "type": "text",
                                   "attachments": {audio_id: {"url": f".project/attachments/files/{book}/{audio_id}.webm",
                                                              "type": "audio", "createdAt": 1763655321982,
                                                              "updatedAt": 1763655321982, "isDeleted": False}},
                                   "selectedAudioId": audio_id, "selectionTimestamp": 1763655321982}})
    target = folder / "files/target" / f"{book}.codex"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"cells": cells, "metadata": {"id": book}}, indent=2))
    if manifest is not None:
        (folder / "gpu_jobs").mkdir(exist_ok=True)
        (folder / "gpu_jobs/manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


@pytest.fixture
def gitlab_token() -> str:
    """A fresh random token; the only one the test server accepts."""
    return "glpat-" + secrets.token_hex(12)


@pytest.fixture
def gitlab_server(gitlab_token, tmp_path) -> GitLabTestServer:
    """A started fake GitLab on 127.0.0.1 with no projects yet."""
    server = GitLabTestServer(gitlab_token, root=tmp_path / "gitlab").start()
    yield server
    server.stop()


@pytest.fixture
def codex_project_dir(tmp_path) -> Path:
    """A small Codex project folder (3 verses of MAT with audio) on disk."""
    return make_codex_project(tmp_path / "codex_project")


@pytest.fixture
def gitlab_project(gitlab_server, codex_project_dir) -> Project:
    """``codex_project_dir`` imported as the project ``bible/demo``."""
    return gitlab_server.add_project("bible/demo", folder=codex_project_dir)


@pytest.fixture
def gitlab_client(gitlab_server) -> gitlab.Gitlab:
    """python-gitlab, authenticated, pointed at the server."""
    client = gitlab.Gitlab(gitlab_server.url, private_token=gitlab_server.token, retry_transient_errors=False)
    yield client
    client.session.close()


@pytest.fixture
def gitlab_store(gitlab_server, gitlab_project, monkeypatch) -> GitLabProjectStore:
    """The worker's store for ``bible/demo``; ``$GITLAB_TOKEN`` is set, so ``from_spec`` works too."""
    monkeypatch.setenv(TOKEN_ENV, gitlab_server.token)
    store = GitLabProjectStore(gitlab_server.url, gitlab_project.path_with_namespace, retry=FAST_RETRY)
    yield store
    store.close()


class GitLabEnv(ProjectEnv):
    """The GitLab twin of conftest's ``LocalEnv``: a project the lifecycle tests drive through a real
    (fake) GitLab. Translators' and the plugin's edits are git pushes (``server.push``)."""

    kind = "gitlab"

    def __init__(self, server: GitLabTestServer, path: str = "bible/lifecycle", folder: Path | None = None):
        """A new project at ``path``: the files of ``folder`` (a Codex project on disk), else a bare one."""
        self.server = server
        if folder is not None:
            self.project = server.add_project(path, folder=folder)
        else:
            self.project = server.add_project(path, files={"metadata.json": '{"projectName": "test"}\n',
                                                           ".gitattributes": CODEX_GITATTRIBUTES,
                                                           ".gitignore": CODEX_GITIGNORE})
        os.environ[TOKEN_ENV] = server.token  # job child processes reopen stores from their spec
        self.store = GitLabProjectStore(server.url, path, retry=FAST_RETRY)

    def write_file(self, path: str, content: bytes | str) -> None:
        self.server.push(self.project, {path: content})

    def read_file(self, path: str) -> bytes | None:
        """The real bytes (LFS resolved), as a checkout made by the editor would have them."""
        return self.server.read_lfs(self.project, path) or self.server.read(self.project, path)

    def remove_file(self, path: str) -> None:
        self.server.push(self.project, {path: None})

    def source(self) -> GitLabSource:
        return GitLabSource(self.server.url, self.server.token, retry=FAST_RETRY)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def gitlab_env(gitlab_server, monkeypatch) -> GitLabEnv:
    """A ``GitLabEnv`` (for conftest's ``env`` fixture, param "gitlab")."""
    monkeypatch.setenv(TOKEN_ENV, gitlab_server.token)
    environment = GitLabEnv(gitlab_server)
    yield environment
    environment.close()
