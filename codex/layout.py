"""Where things are in a Codex project: notebook folders, attachment paths, and the pairing of
target and source notebooks."""

from __future__ import annotations

import posixpath

from storage import ProjectStore, confine_path

TARGET_DIR = "files/target"
SOURCE_DIR = ".project/sourceTexts"
ATTACHMENTS_DIR = ".project/attachments"
FILES_DIR = f"{ATTACHMENTS_DIR}/files"
POINTERS_DIR = f"{ATTACHMENTS_DIR}/pointers"
#: Extensions the editor accepts for audio (plus flac, which this worker can produce and read).
AUDIO_EXTENSIONS = ("webm", "wav", "mp3", "m4a", "ogg", "flac")


def notebook_segment(notebook_path: str) -> str:
    """The attachment folder name of a notebook: its base name (``files/target/MAT.codex`` -> ``MAT``)."""
    return posixpath.splitext(posixpath.basename(notebook_path))[0]


def source_path_for(target_path: str) -> str:
    """The source notebook paired with a target notebook (same base name)."""
    return f"{SOURCE_DIR}/{notebook_segment(target_path)}.source"


def target_path_for(source_path: str) -> str:
    """The target notebook paired with a source notebook (same base name)."""
    return f"{TARGET_DIR}/{notebook_segment(source_path)}.codex"


def attachment_paths(segment: str, filename: str) -> tuple[str, str]:
    """``(files_path, pointers_path)`` of an attachment: ``url`` names the first; git holds the second."""
    return f"{FILES_DIR}/{segment}/{filename}", f"{POINTERS_DIR}/{segment}/{filename}"


def attachment_project_path(path: str) -> str | None:
    """The project path of an attachment named relative or absolute on the translator's machine (either
    slash): ``C:\\Users\\ana\\proj\\.project\\attachments\\JHN\\a.webm`` -> ``.project/attachments/JHN/a.webm``.
    The cut is at the innermost ``.project/attachments/``: a project kept inside another one's attachments
    folder has its own ``.project`` deepest (docs/job_protocol.md). None when the path holds no
    ``.project/attachments/``; ``UnsafePath`` when the rest of it leaves the project."""
    unified = path.replace("\\", "/")
    at = unified.rfind(f"/{ATTACHMENTS_DIR}/")
    if at >= 0:
        unified = unified[at + 1:]
    elif not unified.startswith(f"{ATTACHMENTS_DIR}/"):
        return None
    return confine_path(unified, what="path")


def attachment_twin(path: str) -> str | None:
    """The other half of a ``files/`` <-> ``pointers/`` attachment pair (a checkout keeps the bytes in the
    first, git the second); None for any other path."""
    for here, there in ((POINTERS_DIR, FILES_DIR), (FILES_DIR, POINTERS_DIR)):
        if path.startswith(here + "/"):
            return there + path[len(here):]
    return None


def list_notebook_paths(store: ProjectStore, kind: str = "target") -> list[str]:
    """Paths of the project's target (``.codex`` under files/) or source (``.source``) notebooks, sorted."""
    if kind == "target":
        return [p for p in store.list_files("files") if p.endswith(".codex")]
    if kind == "source":
        return [p for p in store.list_files(SOURCE_DIR) if p.endswith(".source")]
    raise ValueError(f"unknown notebook kind {kind!r} (target or source)")
