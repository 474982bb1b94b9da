"""The storage interface the job protocol runs over.

A ``ProjectStore`` is one Codex project as the worker sees it: files it can read (each with an opaque
*version*), folders it can list, and atomic multi-file commits with two preconditions git servers give us:
"create only if absent" and "update only if unchanged since version V". The job protocol (``jobs.py``) is
written once against this interface; ``local_store.py`` (a folder on disk) and ``gitlab_jobs.py`` (a GitLab
project) only implement storage. They import this module; in the program only ``stores.py`` imports them,
so the imports form no circle.

Paths are always project-relative POSIX paths. Anything that comes from a manifest goes through
``confine_path`` first, so ``../`` and absolute paths can never leave the project.
"""

from __future__ import annotations

import posixpath
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence


class StorageError(Exception):
    """Base class of storage failures the protocol reacts to. ``path`` names the file when known.

    Subclasses keep the ``(message, *, path=None)`` constructor; any further fields they set are
    attributes, which travel with the error when it is sent to a job's process (pickled).
    """

    def __init__(self, message: str = "", *, path: str | None = None):
        super().__init__(message)
        self.path = path

    def __reduce__(self):  # keep ``path`` and the other fields when sent between processes
        return (_rebuild_storage_error, (type(self), str(self), self.path), dict(self.__dict__))


def _rebuild_storage_error(cls: type, message: str, path: str | None) -> "StorageError":
    return cls(message, path=path)


class FileAlreadyExists(StorageError):
    """A ``create`` hit an existing path (GitLab: 400 "A file with this name already exists")."""


class VersionConflict(StorageError):
    """An ``update``/``delete`` found a newer version than the one it was based on
    (GitLab: 400 "The file has changed since you started editing it")."""


class AccessDenied(StorageError):
    """The backend refused our credentials: retrying will not help."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached right now (network, 5xx after retries): try again later."""


class FileMissing(StorageError):
    """An ``update``/``delete`` named a file that does not exist."""


class CommitTooLarge(StorageError):
    """A commit is over what its backend accepts in one request (GitLab's body cap); nothing was changed.
    The caller splits the actions (``ProjectStore.max_commit_bytes``)."""


class UnsafePath(ValueError):
    """A path that would leave the project (absolute, ``..``, NUL, backslash tricks)."""


_DRIVE = re.compile(r"^[A-Za-z]:")


def confine_path(path: str, *, what: str = "path") -> str:
    """Return ``path`` as a normalised project-relative POSIX path, or raise ``UnsafePath``.

    Rejects absolute paths, ``..`` segments, NUL bytes, backslashes and drive letters: a manifest is
    written by a plugin on a translator's machine, and nothing in it may point outside the project.
    """
    if not isinstance(path, str) or not path.strip():
        raise UnsafePath(f"{what} is empty")
    if "\x00" in path or "\\" in path or _DRIVE.match(path):
        raise UnsafePath(f"{what} {path!r} is not a plain project path")
    if path.startswith("/"):
        raise UnsafePath(f"{what} {path!r} is absolute; it must be relative to the project")
    parts = path.split("/")
    if any(part == ".." for part in parts):
        raise UnsafePath(f"{what} {path!r} leaves the project")
    normalised = posixpath.normpath(path)
    if normalised in (".", "") or normalised.startswith("../"):
        raise UnsafePath(f"{what} {path!r} does not name a file in the project")
    return normalised


@dataclass(frozen=True)
class FileVersion:
    """A file's bytes as read, with the opaque version a later update must be based on."""

    path: str
    content: bytes
    version: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")


@dataclass(frozen=True)
class FileAction:
    """One change inside an atomic commit.

    ``content`` carries small payloads; ``source`` names a local file for large ones (models, audio), so
    they are streamed rather than held in memory. ``expected_version`` makes an update/delete conditional.
    """

    action: Literal["create", "update", "delete"]
    path: str
    content: bytes | None = None
    source: Path | None = None
    expected_version: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ("create", "update", "delete"):
            raise ValueError(f"unknown file action {self.action!r}")
        if self.action != "delete" and (self.content is None) == (self.source is None):
            raise ValueError(f"{self.action} of {self.path} needs exactly one of content or source")
        object.__setattr__(self, "path", confine_path(self.path))

    @classmethod
    def create(cls, path: str, content: bytes | str | None = None, *, source: Path | None = None) -> "FileAction":
        return cls("create", path, _as_bytes(content), source)

    @classmethod
    def update(
        cls, path: str, content: bytes | str | None = None, *, source: Path | None = None,
        expected_version: str | None = None,
    ) -> "FileAction":
        return cls("update", path, _as_bytes(content), source, expected_version)

    @classmethod
    def delete(cls, path: str, *, expected_version: str | None = None) -> "FileAction":
        return cls("delete", path, None, None, expected_version)

    def size(self) -> int:
        """Bytes this action carries (for splitting results into commits under a body cap)."""
        if self.content is not None:
            return len(self.content)
        if self.source is not None:
            return self.source.stat().st_size
        return 0

    def payload(self) -> bytes:
        if self.content is not None:
            return self.content
        if self.source is not None:
            return self.source.read_bytes()
        return b""


def _as_bytes(content: bytes | str | None) -> bytes | None:
    return content.encode("utf-8") if isinstance(content, str) else content


@dataclass(frozen=True)
class StoreSpec:
    """Everything needed to reopen a store in another process (a job's child process).

    ``kind`` selects the backend; ``options`` are plain values. Secrets are not kept here: a GitLab store
    takes its token from the environment of the process that reopens it.
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)


class ProjectStore(ABC):
    """One Codex project: read, list, download and commit atomically."""

    #: Largest total payload one commit may carry; larger result sets are split by the caller.
    max_commit_bytes: int = 200 * 1024 * 1024

    @property
    @abstractmethod
    def name(self) -> str:
        """Human-readable project name (``namespace/project`` or a folder path)."""

    @abstractmethod
    def spec(self) -> StoreSpec:
        """A picklable description from which ``stores.open_store`` rebuilds this store elsewhere."""

    @abstractmethod
    def read(self, path: str) -> FileVersion | None:
        """The file's content and version, or None when it does not exist.

        LFS pointers are returned as pointer text; use ``download`` for the real bytes of media files.
        """

    @abstractmethod
    def version(self, path: str) -> str | None:
        """The file's current version without its content (None when absent)."""

    @abstractmethod
    def list_files(self, prefix: str = "") -> list[str]:
        """All file paths under the folder ``prefix`` (recursive, sorted); [] when the folder is absent."""

    @abstractmethod
    def download(self, path: str, dest: Path) -> Path:
        """Write the real bytes of ``path`` (LFS resolved) to ``dest``, streamed. Raises FileNotFoundError."""

    def download_many(self, paths: Sequence[str], dest_dir: Path, *, missing_ok: bool = False) -> dict[str, Path]:
        """Fetch several files below ``dest_dir`` (keeping their project paths); backends that can
        fetch many files in few requests override this. A missing file raises ``FileNotFoundError``
        unless ``missing_ok``, when it is left out of the result."""
        found: dict[str, Path] = {}
        for path in paths:
            try:
                found[path] = self.download(path, Path(dest_dir) / path)
            except FileNotFoundError:
                if not missing_ok:
                    raise
        return found

    @abstractmethod
    def commit(self, actions: Sequence[FileAction], message: str) -> str:
        """Apply all actions atomically or none; return an id for the new state.

        Raises ``FileAlreadyExists``, ``VersionConflict`` or ``FileMissing`` when a precondition fails, and
        ``CommitTooLarge`` when the backend cannot take it in one request; in each case nothing was changed.
        """

    def exists(self, path: str) -> bool:
        return self.version(path) is not None

    def written_paths(self, path: str) -> list[str]:
        """Every path a create or update of ``path`` writes: ``path``, and any copy the backend keeps beside
        it (the local store's ``files/`` twin of an attachment). A caller that must never overwrite a file
        looks at all of them; a create refuses when any of them exists."""
        return [confine_path(path)]

    def commit_bytes(self, actions: Sequence[FileAction]) -> int:
        """What committing ``actions`` writes, copies included: the measure ``max_commit_bytes`` caps."""
        return sum(action.size() * len(self.written_paths(action.path)) for action in actions)

    def close(self) -> None:
        """Release network sessions and the like."""


class ProjectSource(ABC):
    """Where projects come from: a list of local folders, or every GitLab project a token can see.

    The worker asks for the stores worth scanning at each poll and reports back which of them still hold
    unfinished jobs, so a source can skip idle projects cheaply yet keep revisiting busy ones (an expired
    lease must be noticed even when nothing else changes in the project).
    """

    @abstractmethod
    def poll(self) -> list[ProjectStore]:
        """Stores whose manifests should be read now."""

    def note_scanned(self, store: ProjectStore, *, has_open_jobs: bool) -> None:
        """Called after each store was scanned; ``has_open_jobs`` is true while any job is not finished."""

    def close(self) -> None:
        """Release every store."""
