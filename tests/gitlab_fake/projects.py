"""Projects of the fake GitLab: their repositories, activity times, and importing a folder as a project."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .git import EXEC_MODE, FILE_MODE, Entry, GitRepo
from .lfs import LfsObjectStore, LfsRules, parse_pointer, pointer_text

IMPORT_AUTHOR = "Codex Editor <translator@example.org>"
# Codex keeps the real bytes of ``pointers/...`` in this git-ignored twin folder.
CODEX_POINTERS = ".project/attachments/pointers/"
CODEX_FILES = ".project/attachments/files/"
MEMBERSHIPS = ("direct", "inherited", "owner", "none")
MEMBERSHIP_NONE = "none"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """GitLab's timestamp format: ``2026-03-24T10:11:12.345Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Project:
    id: int
    path_with_namespace: str
    repo: GitRepo
    default_branch: str = "main"
    created_at: datetime = field(default_factory=utc_now)
    last_activity_at: datetime = field(default_factory=utc_now)
    lfs_oids: set[str] = field(default_factory=set)  # objects linked to this project
    lock: threading.Lock = field(default_factory=threading.Lock)
    # How the token's user belongs to this private project: a direct member (may leave it), a member through
    # its group (cannot leave here), the owner of its personal namespace (may not leave), or none (left it:
    # GitLab no longer lists or serves the project to that user).
    membership: str = "direct"

    @property
    def visible(self) -> bool:
        return self.membership != MEMBERSHIP_NONE

    @property
    def name(self) -> str:
        return self.path_with_namespace.rsplit("/", 1)[-1]

    @property
    def namespace(self) -> str:
        return self.path_with_namespace.rsplit("/", 1)[0]

    def lfs_rules(self, commit_sha: str | None) -> LfsRules:
        entry = self.repo.entry(commit_sha, ".gitattributes")
        return LfsRules(self.repo.blob(entry.sha) if entry else None)


class Registry:
    """All projects of one server, by id and by path."""

    def __init__(self, root: Path, *, activity_throttle: float = 0.0):
        self.root = root
        self.lfs = LfsObjectStore(root / "lfs-objects")
        # Real GitLab moves last_activity_at at most once an hour (Event::RESET_PROJECT_ACTIVITY_INTERVAL);
        # 0 moves it on every commit.
        self.activity_throttle = activity_throttle
        self._projects: dict[int, Project] = {}
        self._lock = threading.Lock()

    def all(self) -> list[Project]:
        with self._lock:
            return list(self._projects.values())

    def find(self, key: str | int) -> Project | None:
        """By numeric id or ``namespace/name`` (case-insensitive, like GitLab)."""
        with self._lock:
            if isinstance(key, int) or str(key).isdigit():
                return self._projects.get(int(key))
            wanted = str(key).lower()
            return next((p for p in self._projects.values() if p.path_with_namespace.lower() == wanted), None)

    def create(self, path_with_namespace: str, *, default_branch: str = "main") -> Project:
        if "/" not in path_with_namespace:
            raise ValueError(f"project path {path_with_namespace!r} needs a namespace")
        if self.find(path_with_namespace):
            raise ValueError(f"project {path_with_namespace} exists")
        with self._lock:
            project_id = len(self._projects) + 1
            repo = GitRepo(self.root / "repos" / f"{project_id}.git")
            repo.set_default_branch(default_branch)
            project = Project(project_id, path_with_namespace, repo, default_branch)
            self._projects[project_id] = project
        return project

    def touch(self, project: Project, moment: datetime | None = None) -> None:
        moment = moment or utc_now()
        if (moment - project.last_activity_at).total_seconds() >= self.activity_throttle:
            project.last_activity_at = moment

    def git_add(self, project: Project, rules: LfsRules, path: str, data: bytes) -> Entry:
        """What ``git add`` + ``git lfs`` put in a tree for ``data`` at ``path``: a pointer and an LFS
        object for tracked paths (pointer texts are kept as they are), the bytes otherwise."""
        if rules.tracks(path) and parse_pointer(data) is None:
            oid, size = self.lfs.put_bytes(data)
            project.lfs_oids.add(oid)
            data = pointer_text(oid, size)
        return Entry(FILE_MODE, project.repo.add_blob(data))

    def import_folder(self, project: Project, folder: Path, message: str = "Initial commit") -> str:
        """One commit on the default branch with what git would commit from ``folder``."""
        folder = Path(folder)
        rules = LfsRules(_read_if_exists(folder / ".gitattributes"))
        files: dict[str, Entry] = {}
        for path in committable_files(folder):
            source = folder / path
            data = source.read_bytes()
            pointer = parse_pointer(data) if rules.tracks(path) else None
            if pointer is not None:
                self._adopt_local_object(project, folder, path, pointer)
            entry = self.git_add(project, rules, path, data)
            mode = EXEC_MODE if os.access(source, os.X_OK) else FILE_MODE
            files[path] = Entry(mode, entry.sha)
        sha = project.repo.write_commit(None, {}, files, message, IMPORT_AUTHOR)
        if not project.repo.compare_and_swap(project.default_branch, None, sha):
            raise ValueError(f"project {project.path_with_namespace} already has commits")
        self.touch(project)
        return sha

    def _adopt_local_object(self, project: Project, folder: Path, path: str, pointer: tuple[str, int]) -> None:
        """A committed pointer whose bytes sit in Codex's ignored ``files/`` twin: upload them, as the
        editor's sync does."""
        if not path.startswith(CODEX_POINTERS):
            return
        twin = folder / (CODEX_FILES + path[len(CODEX_POINTERS):])
        if not twin.is_file():
            return
        with twin.open("rb") as handle:
            try:
                oid, _ = self.lfs.put_stream(handle, twin.stat().st_size, expected_oid=pointer[0])
            except ValueError:
                return  # the local bytes are another version than the pointer names: nothing to adopt
        project.lfs_oids.add(oid)


def committable_files(folder: Path) -> list[str]:
    """The files ``git add -A`` would take from ``folder`` (its .gitignore files honoured), by git itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, HOME=str(folder))
    with tempfile.TemporaryDirectory() as scratch:
        git_dir = Path(scratch) / "index.git"
        subprocess.run(["git", "init", "-q", "--bare", str(git_dir)], check=True, env=env)
        listing = subprocess.run(
            ["git", f"--git-dir={git_dir}", f"--work-tree={folder}", "ls-files", "-z", "--others",
             "--exclude-standard"],
            check=True, env=env, capture_output=True,
        ).stdout
    return sorted(p for p in listing.decode("utf-8").split("\0") if p)


def _read_if_exists(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None
