"""Git LFS for the fake GitLab: pointer texts, the object store, and which paths are LFS-tracked.

Written independently of the worker's own LFS code (``gitlab_jobs.py``) so that a mistake in one does not
hide the same mistake in the other; the ``.gitattributes`` matching uses dulwich's implementation of git's
rules for the same reason.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterable

from dulwich.attrs import GitAttributes, compile_gitattributes_patterns, parse_git_attributes

POINTER_VERSION = b"version https://git-lfs.github.com/spec/v1"
# GitLab (gitaly) only treats small blobs as pointer candidates.
MAX_POINTER_SIZE = 1024
_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$")
_SIZE = re.compile(rb"^size (0|[1-9][0-9]*)$")
_CHUNK = 1024 * 1024


def parse_pointer(data: bytes) -> tuple[str, int] | None:
    """``(oid, size)`` when ``data`` is a well-formed LFS pointer text, else None."""
    if len(data) > MAX_POINTER_SIZE or not data.startswith(POINTER_VERSION + b"\n") or not data.endswith(b"\n"):
        return None
    oid = size = None
    for line in data[:-1].split(b"\n")[1:]:
        if match := _OID.match(line):
            oid = match.group(1).decode()
        elif match := _SIZE.match(line):
            size = int(match.group(1))
        elif not re.match(rb"^[a-z0-9.-]+ \S", line):  # the spec allows other "key value" lines
            return None
    if oid is None or size is None:
        return None
    return oid, size


def pointer_text(oid: str, size: int) -> bytes:
    """The pointer blob git-lfs (and GitLab) commit for an object."""
    return POINTER_VERSION + f"\noid sha256:{oid}\nsize {size}\n".encode()


class LfsObjectStore:
    """Content-addressed LFS objects on disk, shared by all projects of one server (like GitLab's)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self._lock = threading.Lock()

    def path(self, oid: str) -> Path:
        return self.root / oid[:2] / oid[2:4] / oid

    def has(self, oid: str, size: int | None = None) -> bool:
        target = self.path(oid)
        return target.is_file() and (size is None or target.stat().st_size == size)

    def open(self, oid: str) -> BinaryIO:
        return self.path(oid).open("rb")

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put_stream(io.BytesIO(data), len(data))

    def put_stream(self, reader: BinaryIO, length: int, expected_oid: str | None = None) -> tuple[str, int]:
        """Store ``length`` bytes from ``reader``; raises ValueError when they do not hash to
        ``expected_oid`` (a client uploading the wrong bytes) or end early."""
        digest = hashlib.sha256()
        remaining = length
        with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as handle:
            try:
                while remaining:
                    chunk = reader.read(min(_CHUNK, remaining))
                    if not chunk:
                        raise ValueError("upload ended early")
                    digest.update(chunk)
                    handle.write(chunk)
                    remaining -= len(chunk)
                oid = digest.hexdigest()
                if expected_oid is not None and oid != expected_oid:
                    raise ValueError(f"content hashes to {oid}, not {expected_oid}")
            except BaseException:
                os.unlink(handle.name)
                raise
        target = self.path(oid)
        with self._lock:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(handle.name, target)
        return oid, length


class LfsRules:
    """Which paths the root ``.gitattributes`` puts on LFS (GitLab reads only the root file too)."""

    def __init__(self, gitattributes: bytes | None):
        entries = parse_git_attributes(io.BytesIO(gitattributes or b""))
        self._attributes = GitAttributes(compile_gitattributes_patterns(entries))

    def tracks(self, path: str) -> bool:
        return self._attributes.match_path(path.encode("utf-8")).get(b"filter") == b"lfs"

    def tracked(self, paths: Iterable[str]) -> list[str]:
        return [p for p in paths if self.tracks(p)]
