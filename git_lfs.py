"""Git LFS as the worker meets it: pointer files (recognising them, so a pointer is never taken for audio,
and writing them), fetching the real bytes behind one of several paths, which project files LFS keeps as the
root ``.gitattributes`` says, and the line a worker adds for large results it writes where no line covers them
yet (models: Codex tracks audio only).

GitLab reads only the root ``.gitattributes`` (nested ones are ignored), and so does this module. Both
backends use it: GitLab sends such files through the LFS batch API (gitlab_jobs.py); the local backend writes
plain files but adds the same line, so the editor's next sync puts them on LFS rather than into history.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from storage import FileAction, FileVersion

logger = logging.getLogger(__name__)

GITATTRIBUTES = ".gitattributes"
LFS_ATTRIBUTES = "filter=lfs diff=lfs merge=lfs -text"
LFS_MIN_BYTES = 10 * 1024 * 1024  # results this large go to LFS where .gitattributes does not put them yet
WORKER_RESULTS = "gpu_jobs/"  # the size rule applies only here: translators' files keep the form they have
LFS_SPEC = "https://git-lfs.github.com/spec/v1"
_LFS_VERSIONS = (LFS_SPEC, "https://hawser.github.com/spec/v1")  # git-lfs still reads its old name
POINTER_MAX_BYTES = 1024  # git-lfs takes no larger file for a pointer (docs/gitlab.md)
EMPTY = "empty"
POINTER_ONLY = "only a Git LFS pointer (its content was never uploaded)"


# -- pointer files -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LfsPointer:
    oid: str    # sha256 hex
    size: int


def parse_lfs_pointer(data: bytes) -> LfsPointer | None:
    """The pointer described by ``data``, or None when ``data`` is not a Git LFS pointer file."""
    if len(data) > POINTER_MAX_BYTES or not data.startswith(b"version "):
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


def real_content_problem(local_path: str | Path) -> str | None:
    """Why the file at ``local_path`` holds no real content -- ``EMPTY`` or ``POINTER_ONLY``, worded to
    follow "<file> is" -- or None when it does."""
    with open(local_path, "rb") as fh:
        head = fh.read(POINTER_MAX_BYTES + 1)  # one byte more than a pointer can have: a longer file is content
    if not head:
        return EMPTY
    return POINTER_ONLY if is_lfs_pointer(head) else None


@dataclass(frozen=True)
class FetchResult:
    """The first candidate that held real bytes (``path`` and ``local`` None when none did), and why each
    candidate before it was passed over ("<path> does not exist", "<path> is empty", ...)."""

    path: str | None
    local: Path | None
    problems: tuple[str, ...]


def fetch_real(download: Callable[[str, Path], Path], candidates: Iterable[str],
               dest: Path | Callable[[str], Path], *, skip_unsafe: bool = False) -> FetchResult:
    """Download ``candidates`` in order with ``download`` (a store's ``download``) until one holds real
    bytes; an empty file or a bare pointer is removed and the next candidate tried. ``dest`` is the local
    file, or gives it for a candidate. With ``skip_unsafe`` a candidate the store refuses to read (a local
    link leading outside the project) is passed over too; otherwise its ``UnsafePath`` is raised."""
    from storage import UnsafePath  # here, not at the top: model code reads pointers without the stores

    problems: list[str] = []
    for path in candidates:
        local = dest(path) if callable(dest) else Path(dest)
        try:
            download(path, local)
        except FileNotFoundError:
            problems.append(f"{path} does not exist")
            continue
        except UnsafePath as exc:
            if not skip_unsafe:
                raise
            logger.warning("Not reading %s: %s", path, exc)
            problems.append(f"{path} is not read: {exc}")
            continue
        problem = real_content_problem(local)
        if problem is None:
            return FetchResult(path, local, tuple(problems))
        logger.debug("%s is %s", path, problem)
        problems.append(f"{path} is {problem}")
        local.unlink(missing_ok=True)
    return FetchResult(None, None, tuple(problems))


def pointer_text(oid: str, size: int) -> str:
    """The pointer text git commits in place of the object ``oid`` (sha256 hex) of ``size`` bytes."""
    return f"version {LFS_SPEC}\noid sha256:{oid}\nsize {size}\n"


def lfs_pointer_for(content: bytes) -> bytes:
    """The pointer text git commits in place of ``content``."""
    return pointer_text(hashlib.sha256(content).hexdigest(), len(content)).encode("ascii")


# -- which files LFS keeps ---------------------------------------------------------------------------
def large_result(path: str, size: int, min_bytes: int) -> bool:
    """True for a file the worker writes under ``gpu_jobs/`` (a model, resume state) of ``min_bytes`` or more:
    such a file goes to LFS whatever ``.gitattributes`` says. A notebook or anything else translators own is
    never moved to LFS by its size: the editor reads ``files/target/*.codex`` as JSON, not as a pointer."""
    return path.startswith(WORKER_RESULTS) and size >= min_bytes


class LfsRules:
    """Which paths the root ``.gitattributes`` puts on LFS (``filter=lfs``; the last matching line wins).
    GitLab itself reads only the root file, so nested ones are ignored here too."""

    def __init__(self, gitattributes: str | None):
        self._rules: list[tuple[re.Pattern[str], bool, bool]] = []  # (regex, basename only, tracked)
        for line in (gitattributes or "").splitlines():
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            pattern, attributes = fields[0], fields[1:]
            tracked = None
            for attribute in attributes:
                if attribute == "filter=lfs":
                    tracked = True
                elif attribute in ("-filter", "!filter") or attribute.startswith("filter="):
                    tracked = False
            if tracked is not None:
                basename_only = "/" not in pattern
                self._rules.append((re.compile(_glob_to_regex(pattern.lstrip("/"))), basename_only, tracked))

    def tracks(self, path: str) -> bool:
        result = False
        for regex, basename_only, tracked in self._rules:
            if regex.match(posixpath.basename(path) if basename_only else path):
                result = tracked
        return result


def lfs_pattern(path: str) -> str | None:
    """The ``.gitattributes`` pattern that puts a result at ``path`` on LFS: its kind of file in every job
    folder (``gpu_jobs/**/*.pt``), else the path itself; None when a pattern could not say it (whitespace,
    quotes, glob characters): such a file still goes to LFS, only without the line."""
    suffix = posixpath.splitext(path)[1]
    literal = suffix or path
    if any(c.isspace() or c in '"\\*?[]!#' for c in literal):
        return None
    return f"gpu_jobs/**/*{suffix}" if suffix else f"/{path}"


def _glob_to_regex(pattern: str) -> str:
    """git's wildmatch, enough of it: ``*`` and ``?`` stay within a folder, ``**/`` spans folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body[:1] in "!^" else body) + "]")
            i = end + 1
        else:
            if pattern[i] == "\\" and i + 1 < len(pattern):
                i += 1
            out.append(re.escape(pattern[i]))
            i += 1
    return r"\A" + "".join(out) + r"\Z"


def tracking_actions(actions: Sequence[FileAction], read_attributes: Callable[[], FileVersion | None],
                     min_bytes: int, project: str) -> list[FileAction]:
    """The ``.gitattributes`` create or update (conditional on the version read) that adds a line for each kind
    of result this commit writes under ``gpu_jobs/`` at ``min_bytes`` or more that no line tracks yet; [] when none is needed or can
    be written, or when the commit writes ``.gitattributes`` itself. ``read_attributes`` is called only when
    some file is that large."""
    if any(action.path == GITATTRIBUTES for action in actions):
        return []
    large = [action.path for action in actions
             if action.action != "delete" and large_result(action.path, action.size(), min_bytes)]
    if not large:
        return []
    attributes = read_attributes()
    rules = LfsRules(attributes.text if attributes else None)
    patterns = dict.fromkeys(pattern for path in large if not rules.tracks(path)
                             if (pattern := lfs_pattern(path)) is not None)
    if not patterns:
        return []
    text = attributes.text if attributes else ""
    lines = "".join(f"{pattern} {LFS_ATTRIBUTES}\n" for pattern in patterns)
    content = (text if not text or text.endswith("\n") else text + "\n") + lines
    logger.info("Tracking %s with Git LFS in %s of %s", ", ".join(patterns), GITATTRIBUTES, project)
    from storage import FileAction  # here, not at the top: model code reads pointers without the stores

    if attributes is None:
        return [FileAction.create(GITATTRIBUTES, content)]
    return [FileAction.update(GITATTRIBUTES, content, expected_version=attributes.version)]
