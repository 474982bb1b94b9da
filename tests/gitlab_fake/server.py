"""The fake GitLab as an object: start/stop on loopback, and helpers tests use to look behind the API.

    server = GitLabTestServer("tok").start()
    server.add_project("bible/xyz", folder=Path("my_codex_project"))
    ... python-gitlab / the worker against server.url ...
    server.push("bible/xyz", {"gpu_jobs/manifest.yaml": "version: 1\\njobs: []\\n"})   # a translator's push
    server.stop()
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import date, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Sequence

from .commits import MSG_MOVED, CommitEngine
from .faults import FaultPlan, Stats
from .git import FILE_MODE, Entry
from .handler import GitLabHandler
from .lfs import LfsRules, parse_pointer
from .projects import MEMBERSHIPS, Project, Registry

TRANSLATOR = "Translator <translator@example.org>"


@dataclass
class TokenOwner:
    """The one user behind the server's token, and what GitLab says about the token itself."""

    id: int = 42
    username: str = "codex-worker"
    name: str = "Codex GPU Worker"
    scopes: tuple[str, ...] = ("api",)
    expires_at: date | None = None
    # GitLab before 15.5 (and tokens that are not access tokens) have no GET /personal_access_tokens/self.
    self_endpoint: bool = True


class GitLabApp:
    """Everything the request handlers share: projects, the commit engine, faults, counters, the token."""

    def __init__(self, token: str, root: Path, *, faults: str | None, seed: int | None,
                 max_commit_bytes: int | None, activity_throttle: float):
        if not token:
            raise ValueError("the test server needs a token")
        self.token = token
        self.owner = TokenOwner()
        self.registry = Registry(root, activity_throttle=activity_throttle)
        self.engine = CommitEngine(self.registry)
        self.faults = FaultPlan(faults, seed)
        self.stats = Stats()
        self.max_commit_bytes = max_commit_bytes
        self.url = ""

    def reset_stats(self) -> None:
        self.stats.reset()
        self.faults.injected.clear()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class GitLabTestServer:
    """A GitLab stand-in on 127.0.0.1, backed by real bare git repositories under ``root``."""

    def __init__(self, token: str, *, root: Path | None = None, port: int = 0, faults: str | None = None,
                 seed: int | None = 0, max_commit_bytes: int | None = None, activity_throttle: float = 0.0):
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="fake-gitlab-"))
        self.app = GitLabApp(token, self.root, faults=faults, seed=seed, max_commit_bytes=max_commit_bytes,
                             activity_throttle=activity_throttle)
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "GitLabTestServer":
        self._httpd = _HTTPServer(("127.0.0.1", self._port), GitLabHandler)
        self._httpd.app = self.app  # type: ignore[attr-defined]
        host, port = self._httpd.server_address[:2]
        self.app.url = f"http://{host}:{port}"
        # A short poll interval makes stop() quick (tests start and stop many servers).
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-gitlab", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "GitLabTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.app.url

    @property
    def token(self) -> str:
        return self.app.token

    # -- setup ---------------------------------------------------------------------------------------
    def add_project(self, path_with_namespace: str, folder: Path | None = None,
                    files: dict[str, bytes | str] | None = None, *, default_branch: str = "main") -> Project:
        """A project whose first commit holds ``folder`` (as git would commit it) or ``files``."""
        project = self.app.registry.create(path_with_namespace, default_branch=default_branch)
        if folder is not None:
            self.app.registry.import_folder(project, folder)
        elif files:
            self.push(project, files, message="Initial commit")
        return project

    # -- looking behind the API ----------------------------------------------------------------------
    def project(self, key: str | int | Project) -> Project:
        if isinstance(key, Project):
            return key
        project = self.app.registry.find(key)
        if project is None:
            raise KeyError(f"no project {key!r}")
        return project

    def read(self, project: str | int | Project, path: str, ref: str | None = None) -> bytes | None:
        """The blob git holds at ``path`` (an LFS pointer for LFS files)."""
        p = self.project(project)
        entry = p.repo.entry(p.repo.resolve(ref, p.default_branch), path)
        return p.repo.blob(entry.sha) if entry else None

    def read_lfs(self, project: str | int | Project, path: str, ref: str | None = None) -> bytes | None:
        """The real bytes of an LFS file (None when the path is not a pointer or the object is absent)."""
        p = self.project(project)
        pointer = parse_pointer(self.read(p, path, ref) or b"")
        if pointer is None or pointer[0] not in p.lfs_oids or not self.app.registry.lfs.has(*pointer):
            return None
        return self.app.registry.lfs.path(pointer[0]).read_bytes()

    def lfs_object(self, oid: str) -> bytes | None:
        store = self.app.registry.lfs
        return store.path(oid).read_bytes() if store.has(oid) else None

    def commits(self, project: str | int | Project, ref: str | None = None) -> list[dict]:
        """``[{"id", "message"}]`` of the branch, newest first."""
        p = self.project(project)
        head = p.repo.resolve(ref, p.default_branch)
        return [{"id": sha, "message": p.repo.commit(sha).message.decode()} for sha in p.repo.history(head)]

    def files(self, project: str | int | Project, ref: str | None = None) -> list[str]:
        p = self.project(project)
        return sorted(p.repo.files(p.repo.resolve(ref, p.default_branch)))

    def push(self, project: str | int | Project, changes: dict[str, bytes | str | None], *,
             message: str = "Translator edit", branch: str | None = None) -> str:
        """A translator's ``git push`` of one commit: LFS files as pointers + objects (git-lfs does that
        client-side), ``None`` deletes a path."""
        p = self.project(project)
        branch = branch or p.default_branch
        parent = p.repo.head(branch)
        before = p.repo.files(parent)
        after = dict(before)
        # A .gitattributes pushed in the same commit already applies to it, as with ``git add``.
        new_rules = changes.get(".gitattributes")
        rules = LfsRules(_as_bytes(new_rules)) if new_rules is not None else p.lfs_rules(parent)
        for path, data in changes.items():
            if data is None:
                after.pop(path, None)
                continue
            entry = self.app.registry.git_add(p, rules, path, _as_bytes(data))
            after[path] = Entry(before[path].mode if path in before else FILE_MODE, entry.sha)
        sha = p.repo.write_commit(parent, before, after, message, TRANSLATOR)
        with p.lock:
            if not p.repo.compare_and_swap(branch, parent, sha):
                raise RuntimeError(MSG_MOVED.format(branch=branch))
            self.app.registry.touch(p)
        return sha

    def set_last_activity(self, project: str | int | Project, moment: datetime) -> None:
        """Pretend the project was last active at ``moment`` (e.g. hours ago: an idle project)."""
        self.project(project).last_activity_at = moment

    def set_membership(self, project: str | int | Project, membership: str) -> None:
        """How the token's user belongs to the project: ``direct``, ``inherited`` (through its group),
        ``owner`` (of its personal namespace) or ``none``."""
        if membership not in MEMBERSHIPS:
            raise ValueError(f"membership must be one of {', '.join(MEMBERSHIPS)}")
        self.project(project).membership = membership

    def set_token(self, *, scopes: Sequence[str] | None = None, expires_at: date | None = None,
                  self_endpoint: bool | None = None) -> None:
        """What GitLab says about the token: its scopes (enforced as GitLab does), expiry, and whether
        ``GET /personal_access_tokens/self`` exists at all."""
        owner = self.app.owner
        if scopes is not None:
            owner.scopes = tuple(scopes)
        if expires_at is not None:
            owner.expires_at = expires_at
        if self_endpoint is not None:
            owner.self_endpoint = self_endpoint

    # -- faults and counters -------------------------------------------------------------------------
    @property
    def faults(self) -> FaultPlan:
        return self.app.faults

    def set_faults(self, spec: str | None) -> None:
        self.app.faults.set_rates(spec)

    @property
    def before_ref_update(self) -> Callable[[Project], None] | None:
        return self.app.engine.before_ref_update

    @before_ref_update.setter
    def before_ref_update(self, hook: Callable[[Project], None] | None) -> None:
        self.app.engine.before_ref_update = hook

    def stats(self) -> dict:
        return self.app.stats.snapshot(self.app.faults)

    def reset_stats(self) -> None:
        self.app.reset_stats()


def _as_bytes(data: bytes | str | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data
