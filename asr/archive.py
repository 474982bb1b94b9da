"""Model archives: ``asr_model.pth.tar`` is a tar.gz of a Hugging Face model folder.

Archives come back from a translation project's repository, so extraction trusts nothing: absolute
paths, ``..``, links that leave the folder and device files are refused before a single byte is
written, and tarfile's ``data`` filter is applied on top.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tarfile
from pathlib import Path
from typing import Iterable

logger = logging.getLogger(__name__)

MODEL_ARCHIVE_NAME = "asr_model.pth.tar"
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeArchiveError(ValueError):
    """A member of an archive would land outside its folder, or is not a plain file/folder/link."""


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
    with tarfile.open(tmp_path, "w:gz") as tar:
        for path in files:
            tar.add(str(path), arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    os.replace(tmp_path, archive_path)  # never leave a half-written archive under the final name
    logger.info("Wrote %s (%d files, %.1f MB)", archive_path, len(files), archive_path.stat().st_size / 1e6)
    return archive_path


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    where = f"model archive {archive.name}: member {name!r}"
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        raise UnsafeArchiveError(f"Refusing {where}: absolute path")
    parts = re.split(r"[\\/]+", name)
    if ".." in parts:
        raise UnsafeArchiveError(f"Refusing {where}: path leaves the folder ('..')")
    if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"Refusing {where}: device or special file")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(target):
            raise UnsafeArchiveError(f"Refusing {where}: link to absolute path {target!r}")
        # symlinks resolve relative to the member's folder, hard links relative to the archive root
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveError(f"Refusing {where}: link points outside the folder ({target!r})")


def extract_model_archive(archive_path: Path, dest_dir: Path) -> Path:
    """Safely extract ``archive_path`` into ``dest_dir`` and return the folder holding ``config.json``.

    Raises ``UnsafeArchiveError`` for a hostile archive and ``FileNotFoundError`` when it holds no model.
    """
    archive_path = Path(archive_path)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive_path, "r:*")
    except tarfile.TarError as exc:
        raise ValueError(f"{archive_path.name} is not a readable tar archive: {exc}") from exc
    with tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive_path)
        try:
            tar.extractall(dest_dir, members=members, filter="data")
        except tarfile.FilterError as exc:  # the stdlib's own checks, as a second line of defence
            raise UnsafeArchiveError(f"Refusing model archive {archive_path.name}: {exc}") from exc
    return find_model_folder(dest_dir)


def find_model_folder(root: Path) -> Path:
    """``root`` itself or its single sub-folder holding ``config.json`` (archives exist in both layouts)."""
    root = Path(root)
    if (root / "config.json").is_file():
        return root
    candidates = sorted(p.parent for p in root.glob("*/config.json"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"No config.json in {root}: not a Hugging Face model folder")
    raise ValueError(f"Several model folders in {root}: {[str(c) for c in candidates]}")
