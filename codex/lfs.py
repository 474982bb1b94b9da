"""Git LFS pointer files: recognising them (so a pointer is never taken for audio) and writing them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_LFS_VERSIONS = ("https://git-lfs.github.com/spec/v1", "https://hawser.github.com/spec/v1")


@dataclass(frozen=True)
class LfsPointer:
    oid: str    # sha256 hex
    size: int


def parse_lfs_pointer(data: bytes) -> LfsPointer | None:
    """The pointer described by ``data``, or None when ``data`` is not a Git LFS pointer file."""
    if len(data) > 1024 or not data.startswith(b"version "):
        return None
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    if lines[0][len("version "):].strip() not in _LFS_VERSIONS:
        return None
    fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
    oid = re.fullmatch(r"sha256:([0-9a-f]{64})", fields.get("oid", "").strip())
    size = fields.get("size", "").strip()
    if not oid or not size.isdigit():
        return None
    return LfsPointer(oid.group(1), int(size))


def is_lfs_pointer(data: bytes) -> bool:
    """True when ``data`` (a file's bytes, or its first KiB) is a Git LFS pointer rather than content."""
    return parse_lfs_pointer(data) is not None


def lfs_pointer_for(content: bytes) -> bytes:
    """The pointer text git commits in place of ``content``."""
    oid = hashlib.sha256(content).hexdigest()
    return f"version {_LFS_VERSIONS[0]}\noid sha256:{oid}\nsize {len(content)}\n".encode("ascii")
