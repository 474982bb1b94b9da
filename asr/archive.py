"""Model archives: ``asr_model.pth.tar`` is a tar.gz of a Hugging Face model folder.

Archives come back from a translation project's repository, so extraction trusts nothing. The archive is
read as one stream, and each member is checked before a byte of it is written: absolute paths, ``..``,
links that leave the folder, device and sparse files are refused, and so are sizes no model has (a
member or a total beyond the caps below, or data that inflates far more than model weights do, as a
"decompression bomb" does). A bomb is thus refused after a few kilobytes, not after minutes of inflating
it; tarfile's ``data`` filter is applied on top. Whatever was written before a refusal is removed.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterable

from git_lfs import is_lfs_pointer

logger = logging.getLogger(__name__)

MODEL_ARCHIVE_NAME = "asr_model.pth.tar"
# A model folder's weights: one file, or an index naming its shards. Any one of them makes a folder whole.
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX, BIN_FILE, BIN_INDEX)
GiB = 1024**3
# Wav2Vec2-BERT 2.0 in float32 is a 2.3 GB weights file; the caps leave room for larger encoders.
MAX_MEMBER_BYTES = 8 * GiB
MAX_TOTAL_BYTES = 16 * GiB
MAX_MEMBERS = 10_000
# Weights hardly compress (about 1.1:1), JSON and text about 10:1; only runs of zeros inflate 1000-fold.
MAX_INFLATION = 100
INFLATION_ALLOWANCE = 64 * 1024**2  # small archives of text files may inflate more: ratio checked past this
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(ValueError):
    """A model archive that cannot be used; the message is one line naming the archive."""


class UnsafeArchiveError(ArchiveError):
    """A member of an archive would land outside its folder, is not a plain file/folder/link, or the
    archive's sizes are those of a decompression bomb."""


def write_model_archive(model_dir: Path, archive_path: Path, *, exclude: Iterable[str] = ()) -> Path:
    """Pack the files of ``model_dir`` (at the archive's top level) into a tar.gz at ``archive_path``.

    ``exclude``: file names (at any depth) left out, e.g. bookkeeping that only matters during training.
    """
    model_dir = Path(model_dir)
    archive_path = Path(archive_path)
    archive_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = archive_path.with_name(archive_path.name + ".part")
    skip = set(exclude)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.is_symlink() and p.name not in skip)
    # Level 1: float weights barely compress (92 % at level 1 or 9), and level 1 is ~20 % faster.
    with tarfile.open(tmp_path, "w:gz", compresslevel=1) as tar:
        for path in files:
            tar.add(str(path), arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    os.replace(tmp_path, archive_path)  # never leave a half-written archive under the final name
    logger.info("Wrote %s (%d files, %.1f MB)", archive_path.name, len(files), archive_path.stat().st_size / 1e6)
    return archive_path


def _check_member(member: tarfile.TarInfo, archive: str) -> None:
    name = member.name
    where = f"model archive {archive}: member {name!r}"
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        raise UnsafeArchiveError(f"Refusing {where}: absolute path")
    parts = re.split(r"[\\/]+", name)
    if ".." in parts:
        raise UnsafeArchiveError(f"Refusing {where}: path leaves the folder ('..')")
    if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"Refusing {where}: device or special file")
    if member.issparse():  # its real size is not its stored size; no model writer makes them
        raise UnsafeArchiveError(f"Refusing {where}: sparse file")
    if member.size > MAX_MEMBER_BYTES:
        raise UnsafeArchiveError(
            f"Refusing {where}: it declares {_gib(member.size)}, more than the {_gib(MAX_MEMBER_BYTES)} "
            "a model file may have")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(target):
            raise UnsafeArchiveError(f"Refusing {where}: link to absolute path {target!r}")
        # symlinks resolve relative to the member's folder, hard links relative to the archive root
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveError(f"Refusing {where}: link points outside the folder ({target!r})")


def _gib(size: int) -> str:
    return f"{size / GiB:.1f} GiB" if size >= GiB else f"{size / 1024**2:.0f} MiB"


class _CountingReader(io.RawIOBase):
    """The archive's bytes as read from disk (or a download), counted."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


class _InflationGuard(io.RawIOBase):
    """The decompressed tar stream; refuses to produce more than the caps allow for the bytes read."""

    def __init__(self, inflated: BinaryIO, compressed: _CountingReader, archive: str):
        self.inflated = inflated
        self.compressed = compressed
        self.archive = archive
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inflated.read(len(buffer))
        self.count += len(data)
        if self.count > MAX_TOTAL_BYTES + 2 * 1024**2:  # headers and padding above the members' own bytes
            raise UnsafeArchiveError(
                f"Refusing model archive {self.archive}: it holds more than {_gib(MAX_TOTAL_BYTES)}")
        if self.count > INFLATION_ALLOWANCE + MAX_INFLATION * self.compressed.count:
            raise UnsafeArchiveError(
                f"Refusing model archive {self.archive}: it inflates more than {MAX_INFLATION}-fold, which no "
                "model does (a decompression bomb)")
        buffer[: len(data)] = data
        return len(data)


def _tar_stream(source: BinaryIO, archive: str) -> tuple[_InflationGuard, _CountingReader]:
    """The uncompressed tar bytes of ``source`` (gzip, bzip2, xz or plain), guarded."""
    counted = _CountingReader(source)
    buffered = io.BufferedReader(counted, buffer_size=64 * 1024)
    head = buffered.peek(512)[:512]
    if head[:2] == b"\x1f\x8b":
        inflated: BinaryIO = gzip.GzipFile(fileobj=buffered, mode="rb")
    elif head[:3] == b"BZh":
        inflated = bz2.BZ2File(buffered, mode="rb")
    elif head[:6] == b"\xfd7zXZ\x00":
        inflated = lzma.LZMAFile(buffered, mode="rb")
    elif _is_tar_header(head):
        inflated = buffered
    else:
        raise ArchiveError(f"{archive} is not a model archive: {_what_it_is(head)}")
    return _InflationGuard(inflated, counted, archive), counted


def _is_tar_header(block: bytes) -> bool:
    """An uncompressed tar archive's first header (tarfile's own checksum test)."""
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _what_it_is(head: bytes) -> str:
    """What a file that is no tar archive looks like, for the translator."""
    if is_lfs_pointer(head):
        return "it is a Git LFS pointer, the file itself was not downloaded"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip file (a torch .pt checkpoint is one), not a tar.gz of a model folder"
    if not head:
        return "the file is empty"
    return "it is not a tar archive (tar, tar.gz, tar.bz2 or tar.xz)"


def extract_model_archive(archive_path: Path, dest_dir: Path) -> Path:
    """Safely extract ``archive_path`` into ``dest_dir`` and return the folder holding ``config.json``.

    Raises ``UnsafeArchiveError`` for a hostile archive, ``ArchiveError`` for one that cannot be read,
    and ``FileNotFoundError`` when it holds no model. Messages name the archive by its file name only.
    """
    archive_path = Path(archive_path)
    with open(archive_path, "rb") as source:
        extract_model_stream(source, dest_dir, archive_path.name)
    return find_model_folder(Path(dest_dir), archive_path.name)


def extract_model_stream(source: BinaryIO, dest_dir: Path, name: str = MODEL_ARCHIVE_NAME) -> None:
    """Extract the model archive read from ``source`` (any readable binary stream, read once, in order)
    into ``dest_dir``. ``name`` names the archive in messages. On any error nothing extracted is left."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest_dir))
    try:
        _extract(source, dest_dir, name)
    except BaseException:
        for entry in set(os.listdir(dest_dir)) - before:
            path = dest_dir / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _extract(source: BinaryIO, dest_dir: Path, name: str) -> None:
    stream, counted = _tar_stream(source, name)
    total = members = 0
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream, buffer_size=64 * 1024), mode="r|") as tar:
            for member in tar:
                _check_member(member, name)
                members += 1
                total += member.size
                if members > MAX_MEMBERS:
                    raise UnsafeArchiveError(f"Refusing model archive {name}: more than {MAX_MEMBERS} members")
                if total > MAX_TOTAL_BYTES:
                    raise UnsafeArchiveError(
                        f"Refusing model archive {name}: its members declare more than {_gib(MAX_TOTAL_BYTES)}")
                try:
                    tar.extract(member, dest_dir, filter="data")
                except tarfile.FilterError as exc:  # the stdlib's own checks, as a second line of defence
                    raise UnsafeArchiveError(f"Refusing model archive {name}: {one_line_message(exc)}") from exc
    except ArchiveError:
        raise
    # Truncated downloads, corrupt compression, a non-tar inside the gzip. Corrupt gzip and bz2 data raise
    # OSErrors without an errno; one with an errno is the disk's (no space left), not the archive's.
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise ArchiveError(f"{name} is not a readable model archive: {one_line_message(exc)}") from exc
    logger.info("Extracted %s: %d members, %.1f MB from %.1f MB", name, members, stream.count / 1e6,
                counted.count / 1e6)


def one_line_message(exc: BaseException) -> str:
    """An error's first line for translators: no terminal colour codes, no absolute paths of this machine."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    line = lines[0].strip() if lines else type(exc).__name__
    return re.sub(r"(?<![\w.])/[^\s'\"]+", "…", line)


def find_model_folder(root: Path, source: str | None = None) -> Path:
    """``root`` itself or its single sub-folder holding ``config.json`` (archives exist in both layouts).

    ``source`` names what was searched in messages (default: the folder's name, never its full path)."""
    root = Path(root)
    what = source or root.name
    if (root / "config.json").is_file():
        return root
    candidates = sorted(p.parent for p in root.glob("*/config.json"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"No config.json in {what}: not a Hugging Face model folder")
    raise ValueError(f"Several model folders in {what}: {', '.join(c.name for c in candidates)}")
