"""A Codex project folder on disk as a ``ProjectStore`` — the embedded default backend.

Several workers on one machine (one per GPU) may point at the same folder, so commits are serialised by an
exclusive ``flock`` on a lock file that lives OUTSIDE the project (a translator's repository must not gain
worker files), creates use ``O_EXCL``-style hard links, and updates are checked against the version read.
A version is the SHA-256 of the file's bytes: it changes whenever the content does, whoever wrote it
(the editor, a ``git pull``, another worker). Being a translator's checkout, it also keeps the ``files/`` twin
of every attachment written under ``pointers/`` (``written_paths``), which is what the editor plays.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from codex.layout import POINTERS_DIR, attachment_twin
from git_lfs import GITATTRIBUTES, LFS_MIN_BYTES, tracking_actions
from storage import (
    FileAction,
    FileAlreadyExists,
    FileMissing,
    FileVersion,
    ProjectSource,
    ProjectStore,
    StoreSpec,
    UnsafePath,
    VersionConflict,
    confine_path,
)

__all__ = ["LocalProjectStore", "LocalSource"]

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


def _lock_dir() -> Path:
    base = Path(os.environ.get("CODEX_WORKER_LOCK_DIR") or tempfile.gettempdir()) / "codex-worker-locks"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class LocalProjectStore(ProjectStore):
    """A Codex project checkout on the local disk."""

    # Local writes have no request-size cap; keep commits bounded anyway so the atomic apply stays short.
    max_commit_bytes = 2 * 1024 * 1024 * 1024
    lfs_min_bytes = LFS_MIN_BYTES  # see _lfs_tracking

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"project folder {self.root} does not exist")
        key = hashlib.sha256(str(self.root).encode("utf-8")).hexdigest()[:24]
        self._lock_path = _lock_dir() / f"{key}.lock"

    @classmethod
    def from_spec(cls, spec: StoreSpec) -> "LocalProjectStore":
        return cls(spec.options["root"])

    @property
    def name(self) -> str:
        return str(self.root)

    def spec(self) -> StoreSpec:
        return StoreSpec("local", {"root": str(self.root)})

    def __repr__(self) -> str:
        return f"LocalProjectStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------------
    def _abs(self, path: str) -> Path:
        """Absolute path of a project path; symlinks may not lead outside the project. ``UnsafePath``
        messages name the project path only, never where the project lies on this machine."""
        relative = confine_path(path)
        target = self.root / relative
        try:
            resolved = target.resolve()
        except RuntimeError:    # a symlink loop, up to Python 3.12
            raise UnsafePath(f"{path!r} is a symbolic link loop") from None
        except OSError as exc:  # the same from Python 3.13 on (ELOOP), or a folder we may not enter
            why = "is a symbolic link loop" if exc.errno == errno.ELOOP else f"cannot be resolved ({exc.strerror})"
            raise UnsafePath(f"{path!r} {why}") from None
        if resolved != self.root and self.root not in resolved.parents:
            raise UnsafePath(f"{path!r} resolves outside the project")
        return target

    def local_path(self, path: str) -> Path:
        """Where ``path`` lives on disk (for handlers that can read in place)."""
        return self._abs(path)

    def written_paths(self, path: str) -> list[str]:
        """An attachment under ``pointers/`` is written to its ``files/`` twin too: git holds the first, the
        editor plays the second, which in a checkout is git-ignored (docs/codex_format.md)."""
        path = confine_path(path)
        return [path, attachment_twin(path)] if path.startswith(POINTERS_DIR + "/") else [path]

    # -- reads ---------------------------------------------------------------------------------------
    def read(self, path: str) -> FileVersion | None:
        target = self._abs(path)
        try:
            content = target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return FileVersion(confine_path(path), content, hashlib.sha256(content).hexdigest())

    def version(self, path: str) -> str | None:
        target = self._abs(path)
        if not target.is_file():
            return None
        return _file_digest(target)

    def list_files(self, prefix: str = "") -> list[str]:
        base = self._abs(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for filename in filenames:
                found.append(Path(dirpath, filename).relative_to(self.root).as_posix())
        return sorted(found)

    def download(self, path: str, dest: Path) -> Path:
        source = self._abs(path)
        if not source.is_file():
            raise FileNotFoundError(f"{path} is not in project {self.name}")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return dest

    # -- writes --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def commit(self, actions: Sequence[FileAction], message: str) -> str:
        if not actions:
            raise ValueError("a commit needs at least one action")
        actions = list(actions)
        with self._locked():
            actions = self._with_twins(actions)
            actions += self._lfs_tracking(actions)
            self._check(actions)
            staged = self._stage(actions)
            try:
                self._apply(actions, staged)
            finally:
                for tmp in staged.values():
                    tmp.unlink(missing_ok=True)
        logger.debug("committed %d action(s) to %s: %s", len(actions), self.name, message.splitlines()[0])
        return hashlib.sha256(repr([(a.action, a.path) for a in actions]).encode()).hexdigest()[:16]

    def _with_twins(self, actions: Sequence[FileAction]) -> list[FileAction]:
        """The actions, each write followed by the same write of its twins (``written_paths``) unless the
        commit names that twin itself. A create stays a create, so an existing twin refuses the commit as
        the file itself would; an update writes the twin whether or not the editor has one yet."""
        named = {act.path for act in actions}
        expanded: list[FileAction] = []
        for act in actions:
            expanded.append(act)
            if act.action == "delete":
                continue
            for twin in self.written_paths(act.path)[1:]:
                if twin in named:
                    continue
                action = "update" if act.action == "update" and self._abs(twin).is_file() else "create"
                expanded.append(replace(act, action=action, path=twin, expected_version=None))
        return expanded

    def _lfs_tracking(self, actions: Sequence[FileAction]) -> list[FileAction]:
        """Large results the project's .gitattributes does not put on LFS get a line there (git_lfs.py), as
        on GitLab: the files stay plain here, and the editor's next sync stores them in LFS, not in history."""
        return tracking_actions(actions, lambda: self.read(GITATTRIBUTES), self.lfs_min_bytes, self.name)

    def _check(self, actions: Sequence[FileAction]) -> None:
        """Every precondition, before anything is written: all or nothing."""
        seen: set[str] = set()
        for act in actions:
            if act.path in seen:
                raise ValueError(f"{act.path} appears twice in one commit")
            seen.add(act.path)
            target = self._abs(act.path)
            if act.action == "create":
                if target.exists():
                    raise FileAlreadyExists(f"A file with this name already exists: {act.path}", path=act.path)
                continue
            if not target.is_file():
                raise FileMissing(f"A file with this name doesn't exist: {act.path}", path=act.path)
            if act.expected_version is not None and _file_digest(target) != act.expected_version:
                raise VersionConflict(f"The file has changed since you started editing it: {act.path}", path=act.path)

    def _stage(self, actions: Sequence[FileAction]) -> dict[str, Path]:
        """Write new contents to temporary files beside their targets (same file system → atomic rename)."""
        staged: dict[str, Path] = {}
        try:
            for act in actions:
                if act.action == "delete":
                    continue
                target = self._abs(act.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                tmp = Path(tmp_name)
                staged[act.path] = tmp
                with os.fdopen(fd, "wb") as handle:
                    if act.content is not None:
                        handle.write(act.content)
                    else:
                        with open(act.source, "rb") as src:  # type: ignore[arg-type]
                            shutil.copyfileobj(src, handle, _CHUNK)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
        except BaseException:
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
            raise
        return staged

    def _apply(self, actions: Sequence[FileAction], staged: dict[str, Path]) -> None:
        # Creates first: they are the claim checks, and if one loses to a writer outside our lock
        # (the editor), nothing else has been touched yet.
        order = {"create": 0, "update": 1, "delete": 2}
        for act in sorted(actions, key=lambda a: order[a.action]):
            target = self._abs(act.path)
            if act.action == "create":
                # link() fails if the name exists: an O_EXCL create that also carries the full content,
                # so no reader ever sees a half-written response.yaml.
                try:
                    os.link(staged[act.path], target)
                except FileExistsError as exc:  # someone outside our lock (the editor) was faster
                    raise FileAlreadyExists(f"A file with this name already exists: {act.path}", path=act.path) from exc
            elif act.action == "update":
                os.replace(staged[act.path], target)
            else:
                target.unlink()
                self._prune(target.parent)

    def _prune(self, folder: Path) -> None:
        """Remove folders a delete left empty, up to (never including) the project root: git has no empty
        folders, so the local backend should not keep any either (e.g. a job's resume/ after it completes)."""
        root = self.root
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()  # only when empty; an editor writing there meanwhile keeps it
            except OSError:
                return
            folder = folder.parent


class LocalSource(ProjectSource):
    """A fixed list of project folders (``--local PATH``, repeatable)."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]]):
        self.stores = [LocalProjectStore(root) for root in roots]

    def poll(self) -> list[ProjectStore]:
        return list(self.stores)
