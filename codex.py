"""Codex Editor projects: notebooks, cells, audio takes, and write-back that never loses a translator's edit.

The facts this module follows are in ``shared/docs/codex_project.md``. In short:

* ``.codex`` (target) and ``.source`` notebooks are JSON ``{"cells": [...], "metadata": {...}}`` written by the
  editor as ``JSON.stringify(data, null, 2)``. We parse strictly (duplicate keys, NaN: refused) and write back
  with the same indentation, line endings and trailing newline, changing only the cells we own.
* A cell is addressed by ``metadata.id`` (old ``"GEN 1:1"`` style, a hash UUID with the reference kept in
  ``data.globalReferences``, or a random UUID). Job verse filters name a reference or an id.
* "The" audio of a cell is the selected take when usable, else the newest usable take (the editor's rule).
* Write-back is a list of per-cell ``CellChange``s re-applied to the NEWEST file (``apply_changes``) and committed
  with optimistic concurrency (``commit_cell_changes``), so a translator's concurrent edit always survives.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import posixpath
import random
import re
import string
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

from storage import FileAction, FileMissing, FileVersion, ProjectStore, UnsafePath, VersionConflict, confine_path

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Project layout

TARGET_DIR = "files/target"
SOURCE_DIR = ".project/sourceTexts"
ATTACHMENTS_DIR = ".project/attachments"
FILES_DIR = f"{ATTACHMENTS_DIR}/files"
POINTERS_DIR = f"{ATTACHMENTS_DIR}/pointers"
#: Extensions the editor accepts for audio (plus flac, which this worker can produce and read).
AUDIO_EXTENSIONS = ("webm", "wav", "mp3", "m4a", "ogg", "flac")
CELL_TYPES = ("text", "paratext", "style", "milestone")


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


def list_notebook_paths(store: ProjectStore, kind: str = "target") -> list[str]:
    """Paths of the project's target (``.codex`` under files/) or source (``.source``) notebooks, sorted."""
    if kind == "target":
        return [p for p in store.list_files("files") if p.endswith(".codex")]
    if kind == "source":
        return [p for p in store.list_files(SOURCE_DIR) if p.endswith(".source")]
    raise ValueError(f"unknown notebook kind {kind!r} (target or source)")


# ---------------------------------------------------------------------------------------------------------------
# Git LFS pointers

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


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing notebooks


class NotebookError(ValueError):
    """A notebook that cannot be fully parsed; it is never written back."""


@dataclass(frozen=True)
class _Style:
    """How the file was laid out, so a rewrite changes only what we changed."""

    indent: str | None = "  "       # None: compact, as JSON.stringify(data) writes
    newline: str = "\n"
    trailing: str = ""              # whatever followed the closing brace
    bom: bool = False


@dataclass
class Notebook:
    """A parsed notebook. ``data`` is the JSON with key order kept; edit it in place, then ``to_text()``."""

    path: str
    data: dict
    original_text: str
    version: str | None = None
    style: _Style = field(default_factory=_Style)

    @property
    def cells(self) -> list[dict]:
        return self.data["cells"]

    def cells_by_id(self) -> dict[str, list[dict]]:
        """Cell id -> cells with that id (a list: broken files can repeat an id)."""
        index: dict[str, list[dict]] = {}
        for cell in self.cells:
            cid = cell_id(cell)
            if cid:
                index.setdefault(cid, []).append(cell)
        return index

    def to_text(self) -> str:
        """Serialise in the file's own layout (``JSON.stringify(data, null, 2)`` for the editor's files)."""
        body = _encode_json(self.data, self.style.indent, 0)
        if self.style.newline != "\n":
            body = body.replace("\n", self.style.newline)
        return ("\ufeff" if self.style.bom else "") + body + self.style.trailing


def parse_notebook(content: str | bytes, path: str = "", *, version: str | None = None) -> Notebook:
    """Parse a ``.codex``/``.source`` file strictly. Raises ``NotebookError`` for anything we could not rewrite."""
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
    except UnicodeDecodeError as exc:
        raise NotebookError(f"{path or 'notebook'} is not UTF-8: {exc}") from exc
    bom = text.startswith("\ufeff")
    body = text[1:] if bom else text
    try:
        data = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_reject_constant,
                          parse_float=_SpelledFloat)
    except (json.JSONDecodeError, NotebookError) as exc:
        raise NotebookError(f"{path or 'notebook'} is not valid notebook JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookError(f"{path or 'notebook'} has no 'cells' list")
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or not isinstance(cell.get("metadata", {}), dict):
            raise NotebookError(f"{path or 'notebook'}: cell {i} is not an object with object metadata")
    return Notebook(path=path, data=data, original_text=text, version=version, style=_detect_style(body, bom))


def load_notebook(store: ProjectStore, path: str) -> Notebook | None:
    """Read and parse a notebook from a store (None when absent; ``NotebookError`` when unparsable)."""
    found = store.read(path)
    if found is None:
        return None
    return parse_notebook(found.content, path, version=found.version)


class _SpelledFloat(float):
    """A float that remembers how the file spelled it ("3.0" from Python tools, "3" or "1e-7" from the
    editor), so numbers we did not touch are written back exactly as they were."""

    def __new__(cls, text: str) -> "_SpelledFloat":
        value = super().__new__(cls, text)
        value.text = text
        return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            # json.loads would keep the last one silently; a rewrite would then drop data.
            raise NotebookError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise NotebookError(f"{name} is not JSON")


def _detect_style(body: str, bom: bool) -> _Style:
    stripped = body.rstrip()
    trailing = body[len(stripped):]
    match = re.match(r"\{\r?\n([ \t]+)\S", stripped)
    newline = "\r\n" if "\r\n" in stripped else "\n"
    if match:
        return _Style(match.group(1), newline, trailing, bom)
    return _Style(None if "\n" not in stripped else "  ", newline, trailing, bom)


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _encode_json(value: Any, indent: str | None, depth: int) -> str:
    """JSON.stringify's output. Numbers we add are spelled as JavaScript does (3, 1e-7), not as Python
    (3.0, 1e-07); numbers read from the file keep their own spelling."""
    if isinstance(value, str):
        # JSON.stringify escapes lone surrogates (which json.loads can produce) instead of emitting them raw.
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, _SpelledFloat):
        return value.text
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, dict):
        items = [f"{_encode_json(k, indent, depth)}:{' ' if indent is not None else ''}"
                 f"{_encode_json(v, indent, depth + 1)}" for k, v in value.items()]
        return _join(items, "{", "}", indent, depth)
    if isinstance(value, list):
        return _join([_encode_json(v, indent, depth + 1) for v in value], "[", "]", indent, depth)
    raise TypeError(f"cannot write {type(value).__name__} into a notebook")


def _join(items: list[str], open_: str, close: str, indent: str | None, depth: int) -> str:
    if not items:
        return open_ + close
    if indent is None:
        return open_ + ",".join(items) + close
    inner = "\n" + indent * (depth + 1)
    return open_ + inner + ("," + inner).join(items) + "\n" + indent * depth + close


def _js_number(x: float) -> str:
    """ECMAScript Number::toString for a finite double (shortest round-trip digits, JS exponent rules)."""
    if x != x or x in (float("inf"), float("-inf")):
        raise TypeError("NaN and Infinity cannot be written to JSON")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    point = mantissa.index(".") if "." in mantissa else len(mantissa)
    digits = mantissa.replace(".", "")
    zeros = len(digits) - len(digits.lstrip("0"))
    digits = digits.strip("0")
    n = point - zeros + int(exp or 0)          # value = 0.DIGITS x 10^n
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + digits
    else:
        e = n - 1
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + out


# ---------------------------------------------------------------------------------------------------------------
# Cells: ids, references, types, text


def cell_id(cell: Mapping) -> str:
    """The cell's ``metadata.id`` ('' when missing)."""
    value = cell.get("metadata", {}).get("id")
    return value.strip() if isinstance(value, str) else ""


def cell_type(cell: Mapping) -> str:
    """``metadata.type``; cells of old projects without one are verse text."""
    value = cell.get("metadata", {}).get("type")
    return value if isinstance(value, str) and value else "text"


_REFERENCE = re.compile(r"^\S+ \d+:\S+$")


def cell_reference(cell: Mapping) -> str | None:
    """The verse reference: ``data.globalReferences[0]``, else an old-style id such as ``"GEN 1:1"``."""
    meta = cell.get("metadata", {})
    data = meta.get("data")
    refs = data.get("globalReferences") if isinstance(data, dict) else None
    if isinstance(refs, list) and refs and isinstance(refs[0], str) and refs[0].strip():
        return " ".join(refs[0].split())
    cid = cell_id(cell)
    return " ".join(cid.split()) if ":" in cid else None


def is_deleted_cell(cell: Mapping) -> bool:
    data = cell.get("metadata", {}).get("data")
    return isinstance(data, dict) and bool(data.get("deleted"))


def hash_cell_id(reference: str) -> str:
    """The UUID the editor's migration gives an old-style id: SHA-256 of it, first 32 hex chars as 8-4-4-4-12."""
    h = hashlib.sha256(reference.encode("utf-8")).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _norm_reference(ref: str) -> str:
    """The form references are compared in: single spaces, upper case."""
    return " ".join(ref.split()).upper()


_BLOCK_TAGS = frozenset("""address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5
    h6 header hr li main nav ol p pre section table tbody td tfoot th thead tr ul""".split())
_DROP_CONTENT_TAGS = frozenset({"script", "style", "template", "head", "title"})


class _TextExtractor(HTMLParser):
    """Collects the text a reader sees. Footnote markers (``<sup class="footnote-marker">1</sup>``) are not
    part of the spoken verse, so their content is dropped like scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._dropping: list[str] = []      # stack of tags whose content is being dropped

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._dropping:
            if tag == self._dropping[0]:
                self._dropping.append(tag)
            return
        classes = " ".join(v or "" for k, v in attrs if k == "class").split()
        if tag in _DROP_CONTENT_TAGS or "footnote-marker" in classes:
            self._dropping.append(tag)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._dropping and tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self._dropping:
            if tag == self._dropping[0]:
                self._dropping.pop()
            return
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._dropping:
            self.parts.append(data)


def html_to_text(value: str | None) -> str:
    """Plain text of a cell value: tags stripped, entities decoded, whitespace collapsed, Unicode NFC.

    The script is kept as written (no transliteration; combining marks and right-to-left text untouched).
    """
    if not value or not isinstance(value, str):
        return ""
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    # convert_charrefs=True decodes every named and numeric entity (html.unescape) inside the parser.
    return unicodedata.normalize("NFC", " ".join("".join(parser.parts).split()))


def cell_text(cell: Mapping) -> str:
    """The clean text of a cell's ``value``."""
    return html_to_text(cell.get("value"))


# ---------------------------------------------------------------------------------------------------------------
# Verse filters


@dataclass(frozen=True)
class VerseFilter:
    """A job's ``include_verses`` / ``exclude_verses``.

    An item containing ``:`` is a reference (``"JHN 1:1"``): it matches ``globalReferences[0]``, an old-style
    id, or the hash UUID the editor derives from that reference. Anything else is a cell id. An empty or
    absent include list means every cell; exclusion always wins.
    """

    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    @classmethod
    def from_lists(cls, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> "VerseFilter":
        return cls(_filter_keys(include), _filter_keys(exclude))

    @classmethod
    def from_section(cls, section: Mapping | None) -> "VerseFilter":
        """From a manifest section such as ``training: {include_verses: [...]}``."""
        section = section or {}
        return cls.from_lists(section.get("include_verses"), section.get("exclude_verses"))

    def is_listed(self, cell: Mapping) -> bool:
        """Named explicitly in the include list."""
        return bool(self.include) and not _cell_keys(cell).isdisjoint(self.include)

    def is_excluded(self, cell: Mapping) -> bool:
        return bool(self.exclude) and not _cell_keys(cell).isdisjoint(self.exclude)

    def allows(self, cell: Mapping) -> bool:
        return (not self.include or self.is_listed(cell)) and not self.is_excluded(cell)


def _filter_keys(items: Iterable[str] | str | None) -> frozenset[str]:
    if isinstance(items, str):  # `include_verses: "GEN 1:1"` means one verse, not its characters
        items = [items]
    keys: set[str] = set()
    for item in items or ():
        if not isinstance(item, str) or not item.strip():
            logger.warning("Ignoring verse filter item %r: not a reference or cell id", item)
            continue
        if ":" in item:
            ref = _norm_reference(item)
            keys.update({"ref:" + ref, "id:" + hash_cell_id(ref)})
        else:
            keys.add("id:" + item.strip().lower())
    return frozenset(keys)


def _cell_keys(cell: Mapping) -> set[str]:
    keys = set()
    cid = cell_id(cell)
    if cid:
        keys.add("id:" + cid.lower())
        if ":" in cid:
            keys.add("ref:" + _norm_reference(cid))
    ref = cell_reference(cell)
    if ref:
        keys.add("ref:" + _norm_reference(ref))
    return keys


# ---------------------------------------------------------------------------------------------------------------
# Audio takes


@dataclass(frozen=True)
class AudioTake:
    """One audio attachment of a cell."""

    audio_id: str
    url: str
    created_at: int
    updated_at: int
    is_deleted: bool = False
    is_missing: bool = False
    is_generated: bool = False
    created_by: str | None = None
    transcription: str | None = None
    metadata: Mapping = field(default_factory=dict, compare=False, hash=False)

    @property
    def usable(self) -> bool:
        return not self.is_deleted and not self.is_missing


def audio_takes(cell: Mapping) -> list[AudioTake]:
    """Every audio attachment of a cell (deleted and missing ones included), in file order."""
    attachments = cell.get("metadata", {}).get("attachments")
    if not isinstance(attachments, dict):
        return []
    takes = []
    for audio_id, att in attachments.items():
        if not isinstance(att, dict):
            continue
        url = att.get("url") if isinstance(att.get("url"), str) else ""
        kind = att.get("type")
        is_audio = kind == "audio" or (kind is None and (audio_id.startswith("audio-") or
                                                         url.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS))
        if not is_audio:
            continue
        transcription = att.get("transcription")
        content = transcription.get("content") if isinstance(transcription, dict) else None
        takes.append(AudioTake(
            audio_id=audio_id, url=url, created_at=_as_int(att.get("createdAt")),
            updated_at=_as_int(att.get("updatedAt")), is_deleted=bool(att.get("isDeleted")),
            is_missing=bool(att.get("isMissing")), is_generated=bool(att.get("isGenerated")),
            created_by=att.get("createdBy") if isinstance(att.get("createdBy"), str) else None,
            transcription=content if isinstance(content, str) else None,
            metadata=att.get("metadata") if isinstance(att.get("metadata"), dict) else {},
        ))
    return takes


def select_take(cell: Mapping) -> AudioTake | None:
    """The editor's choice: ``selectedAudioId`` when usable, else the newest usable take by ``createdAt``."""
    usable = [t for t in audio_takes(cell) if t.usable]
    selected = cell.get("metadata", {}).get("selectedAudioId")
    for take in usable:
        if take.audio_id == selected:
            return take
    return max(usable, key=lambda t: (t.created_at, t.updated_at), default=None)


def has_human_selection(cell: Mapping) -> bool:
    """A translator chose a take. Unknown selections count as human: when in doubt, never replace them."""
    meta = cell.get("metadata", {})
    selected = meta.get("selectedAudioId")
    if not selected:
        return False
    attachments = meta.get("attachments")
    att = attachments.get(selected) if isinstance(attachments, dict) else None
    if att is None:
        return True
    return not (isinstance(att, dict) and (att.get("isDeleted") or att.get("isGenerated")))


def take_candidate_paths(notebook_path: str, take: AudioTake) -> list[str]:
    """Project paths that may hold the take's bytes, best first: ``files/`` (a local checkout), ``pointers/``
    (git, LFS), the url as written, and the old ``.project/attachments/<BOOK>/`` layout."""
    url = take.url.strip()
    while url.startswith("./"):
        url = url[2:]
    # Some editor versions wrote absolute file-system paths; the project-relative part starts here.
    anchor = url.find(f"/{ATTACHMENTS_DIR}/")
    if anchor >= 0:
        url = url[anchor + 1:]
    filename = posixpath.basename(url) or f"{take.audio_id}.webm"
    segments = []
    match = re.match(rf"^{re.escape(ATTACHMENTS_DIR)}/(?:files|pointers)/(.+)/[^/]+$", url)
    if match:
        segments.append(match.group(1))
    segments.append(notebook_segment(notebook_path))
    candidates = []
    for segment in segments:
        candidates.extend(attachment_paths(segment, filename))
    candidates.append(url)
    candidates.extend(f"{ATTACHMENTS_DIR}/{segment}/{filename}" for segment in segments)
    safe: list[str] = []
    for path in candidates:
        try:
            path = confine_path(path, what="attachment url")
        except UnsafePath:
            continue
        if path not in safe:
            safe.append(path)
    return safe


class AttachmentIndex:
    """The attachment files a store holds, listed once, so lookups cost no request."""

    def __init__(self, paths: Iterable[str]):
        self.paths = frozenset(paths)
        self._by_stem: dict[str, list[str]] = {}
        for path in sorted(self.paths):
            self._by_stem.setdefault(posixpath.splitext(posixpath.basename(path))[0], []).append(path)

    @classmethod
    def of(cls, store: ProjectStore) -> "AttachmentIndex":
        return cls(store.list_files(ATTACHMENTS_DIR))

    def __contains__(self, path: object) -> bool:
        return path in self.paths

    def with_stem(self, audio_id: str) -> list[str]:
        """Files named ``<audio_id>.<any extension>`` anywhere under the attachments folder."""
        return self._by_stem.get(audio_id, [])


@dataclass(frozen=True)
class FetchedAudio:
    project_path: str       # where the bytes were found
    local_path: Path


def take_sources(notebook_path: str, take: AudioTake, index: AttachmentIndex) -> list[str]:
    """The take's files that exist in the project, best first; a take whose url is wrong is still found
    by its id."""
    existing = [p for p in take_candidate_paths(notebook_path, take) if p in index]
    return existing + [p for p in index.with_stem(take.audio_id) if p not in existing]


def fetch_take(
    store: ProjectStore, notebook_path: str, take: AudioTake, dest_dir: Path,
    *, index: AttachmentIndex | None = None,
) -> FetchedAudio | None:
    """Download the first candidate that holds real audio (not an LFS pointer, not empty) into ``dest_dir``.

    With an ``index`` (``AttachmentIndex.of(store)``) paths that do not exist cost no request, and a take
    whose url is wrong is still found by its id. None when no real bytes exist anywhere.
    """
    candidates = take_sources(notebook_path, take, index) if index is not None else \
        take_candidate_paths(notebook_path, take)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for path in candidates:
        dest = dest_dir / f"{take.audio_id}{posixpath.splitext(path)[1]}"
        try:
            store.download(path, dest)
        except FileNotFoundError:
            continue
        with dest.open("rb") as fh:
            head = fh.read(1025)
        if not head or is_lfs_pointer(head):
            logger.debug("%s holds %s, not audio", path, "nothing" if not head else "an LFS pointer")
            dest.unlink(missing_ok=True)
            continue
        return FetchedAudio(path, dest)
    return None


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------------------------
# Selections


@dataclass(frozen=True)
class CellRef:
    """A cell a job works on, with what the job saw when it read it."""

    notebook_path: str
    cell_id: str
    reference: str | None
    text: str                       # clean text (see html_to_text)
    audio_take: AudioTake | None    # "the" audio of the cell, if any
    cell_type: str = "text"
    value: str = ""                 # the raw value as read: the base a transcription is checked against


@dataclass(frozen=True)
class SkippedCell:
    notebook_path: str
    cell_id: str
    reference: str | None
    reason: str


@dataclass
class Selection:
    """Cells picked for a job, and those that were candidates but could not be used (with why)."""

    cells: list[CellRef] = field(default_factory=list)
    skipped: list[SkippedCell] = field(default_factory=list)

    def skip_summary(self) -> str:
        counts = Counter(s.reason for s in self.skipped)
        return ", ".join(f"{n} {reason}" for reason, n in counts.most_common()) or "none"


TEXT_SOURCES = ("value", "transcription", "edit_history")


def select_cells_needing_audio(notebooks: Iterable[Notebook], verse_filter: VerseFilter = VerseFilter()) -> Selection:
    """Verse cells with text and no usable take, plus every cell the include list names (if it has text)."""
    selection = Selection()
    for nb, cell, ref, listed in _candidates(notebooks, verse_filter):
        if listed:
            if ref.text:
                selection.cells.append(ref)
            else:
                selection.skipped.append(_skipped(ref, "no text to speak"))
        elif ref.cell_type == "text" and ref.text and ref.audio_take is None:
            selection.cells.append(ref)
    _log_selection("needing audio", selection)
    return selection


def select_cells_needing_text(notebooks: Iterable[Notebook], verse_filter: VerseFilter = VerseFilter()) -> Selection:
    """Verse cells with a usable take and no text, plus every cell the include list names (if it has a take)."""
    selection = Selection()
    for nb, cell, ref, listed in _candidates(notebooks, verse_filter):
        if listed:
            if ref.audio_take is not None:
                selection.cells.append(ref)
            else:
                selection.skipped.append(_skipped(ref, "no audio to transcribe"))
        elif ref.cell_type == "text" and not ref.text and ref.audio_take is not None:
            selection.cells.append(ref)
    _log_selection("needing text", selection)
    return selection


def select_training_pairs(
    notebooks: Iterable[Notebook], verse_filter: VerseFilter = VerseFilter(), *,
    text_source: str = "value", edit_history_selection: str = "initial_import",
) -> Selection:
    """Verse cells (and listed cells) with both text and a usable take.

    ``text_source``: ``value`` (the cell text), ``transcription`` (the take's transcription) or ``edit_history``
    (``edit_history_selection``: initial_import, first or last value edit).
    """
    if text_source not in TEXT_SOURCES:
        raise ValueError(f"text_source must be one of {TEXT_SOURCES}, not {text_source!r}")
    selection = Selection()
    for nb, cell, ref, listed in _candidates(notebooks, verse_filter):
        if not listed and ref.cell_type != "text":
            continue
        if text_source != "value":
            ref = _with_text(ref, _text_from(cell, ref.audio_take, text_source, edit_history_selection))
        if ref.audio_take is None:
            if listed:
                selection.skipped.append(_skipped(ref, "no usable audio take"))
        elif not ref.text:
            selection.skipped.append(_skipped(ref, "no text"))
        elif ref.audio_take.is_generated:  # never learn from our own synthesis
            selection.skipped.append(_skipped(ref, "only a machine-generated take"))
        elif text_source == "value" and _machine_written(cell):  # nor from our own transcriptions
            selection.skipped.append(_skipped(ref, "machine-generated text"))
        else:
            selection.cells.append(ref)
    _log_selection("for training", selection)
    return selection


def _candidates(notebooks: Iterable[Notebook], verse_filter: VerseFilter) -> Iterator[tuple[Notebook, dict, CellRef, bool]]:
    for nb in notebooks:
        missing_ids = 0
        for cell in nb.cells:
            if is_deleted_cell(cell) or not verse_filter.allows(cell):
                continue
            cid = cell_id(cell)
            if not cid:
                missing_ids += 1
                continue
            yield nb, cell, make_cell_ref(nb.path, cell), verse_filter.is_listed(cell)
        if missing_ids:
            logger.warning("%s: skipped %d cell(s) without an id (nothing could be written back)",
                           nb.path, missing_ids)


def make_cell_ref(notebook_path: str, cell: Mapping) -> CellRef:
    value = cell.get("value")
    return CellRef(notebook_path=notebook_path, cell_id=cell_id(cell), reference=cell_reference(cell),
                   text=cell_text(cell), audio_take=select_take(cell), cell_type=cell_type(cell),
                   value=value if isinstance(value, str) else "")


def _with_text(ref: CellRef, text: str) -> CellRef:
    return CellRef(ref.notebook_path, ref.cell_id, ref.reference, text, ref.audio_take, ref.cell_type, ref.value)


def _text_from(cell: Mapping, take: AudioTake | None, source: str, history_selection: str) -> str:
    if source == "transcription":
        return html_to_text(take.transcription) if take else ""
    values = [e.get("value", e.get("cellValue")) for e in _value_edits(cell)]
    values = [html_to_text(v) for v in values if isinstance(v, str)]
    values = [v for v in values if v]
    if history_selection == "initial_import":
        imports = [html_to_text(e.get("value")) for e in _value_edits(cell) if e.get("type") == "initial-import"]
        values = [v for v in imports if v] + values
    elif history_selection == "last":
        values.reverse()
    elif history_selection != "first":
        raise ValueError(f"edit_history_selection must be initial_import, first or last, not {history_selection!r}")
    return values[0] if values else ""


def _value_edits(cell: Mapping) -> list[dict]:
    """Edits that set the value: ``editMap == ["value"]``, or the legacy form with ``cellValue``."""
    edits = cell.get("metadata", {}).get("edits")
    if not isinstance(edits, list):
        return []
    return [e for e in edits if isinstance(e, dict) and (e.get("editMap") == ["value"] or
                                                         ("editMap" not in e and "cellValue" in e))]


def _machine_written(cell: Mapping) -> bool:
    """The cell's text is as a model wrote it: its last value edit is an ``llm-generation`` nobody validated."""
    edits = _value_edits(cell)
    return bool(edits) and edits[-1].get("type") == "llm-generation" and not edits[-1].get("validatedBy")


def _skipped(ref: CellRef, reason: str) -> SkippedCell:
    return SkippedCell(ref.notebook_path, ref.cell_id, ref.reference, reason)


def _log_selection(what: str, selection: Selection) -> None:
    logger.info("Selected %d cell(s) %s; skipped %d (%s)", len(selection.cells), what,
                len(selection.skipped), selection.skip_summary())
    for s in selection.skipped:
        logger.debug("Skipped %s %s (%s): %s", s.notebook_path, s.cell_id, s.reference, s.reason)


def pair_source_cells(target: Notebook, source: Notebook) -> dict[str, dict]:
    """Target cell id -> the source cell with the same id (source and target share ids and base names)."""
    source_cells = {cid: cells[0] for cid, cells in source.cells_by_id().items()}
    return {cid: source_cells[cid] for cid in target.cells_by_id() if cid in source_cells}


# ---------------------------------------------------------------------------------------------------------------
# Changes and write-back


class ChangeOp(str, Enum):
    ADD_AUDIO = "add_audio"
    SET_TRANSCRIPTION = "set_transcription"


@dataclass(frozen=True)
class NewAudioTake:
    """A generated take to attach (its bytes are committed separately, at ``pointers/``)."""

    audio_id: str
    url: str                        # the files/ path, as the editor writes it
    metadata: Mapping = field(hash=False)   # mimeType, sizeBytes, sampleRate, channels, durationSec, bitrateKbps
    created_by: str
    created_at: int


@dataclass(frozen=True)
class Transcription:
    text: str                       # plain text from the recogniser
    author: str                     # "ASR <model>"
    audio_id: str | None = None     # the take it came from
    language: str | None = None


@dataclass(frozen=True)
class CellChange:
    """One change to one cell, re-appliable to a newer version of the notebook.

    ``base_value`` is the cell ``value`` the job read; a transcription is only written while the cell still
    holds it (otherwise a translator typed in the meantime, and their text wins).
    """

    notebook_path: str
    cell_id: str
    operation: ChangeOp
    payload: NewAudioTake | Transcription
    base_value: str | None = None

    def __post_init__(self) -> None:
        expected = NewAudioTake if self.operation is ChangeOp.ADD_AUDIO else Transcription
        if not isinstance(self.payload, expected):
            raise TypeError(f"{self.operation.value} needs a {expected.__name__} payload")
        if self.operation is ChangeOp.SET_TRANSCRIPTION and self.base_value is None:
            raise ValueError("a transcription change needs the base_value the job read")


def new_audio_id(now_ms: int | None = None) -> str:
    """A fresh attachment id, ``audio-<ms>-<9 random base-36 chars>``."""
    alphabet = string.digits + string.ascii_lowercase
    suffix = "".join(random.SystemRandom().choice(alphabet) for _ in range(9))
    return f"audio-{now_ms if now_ms is not None else _now_ms()}-{suffix}"


def audio_take_change(ref: CellRef, *, audio_id: str, extension: str, metadata: Mapping, created_by: str,
                      now_ms: int | None = None) -> CellChange:
    """Attach a generated take ``<audio_id>.<extension>`` (``metadata`` as from ``AudioInfo.attachment_metadata``)."""
    url = attachment_paths(notebook_segment(ref.notebook_path), f"{audio_id}.{extension.lstrip('.')}")[0]
    take = NewAudioTake(audio_id=audio_id, url=url, metadata=dict(metadata), created_by=created_by,
                        created_at=now_ms if now_ms is not None else _now_ms())
    return CellChange(ref.notebook_path, ref.cell_id, ChangeOp.ADD_AUDIO, take, base_value=ref.value)


def transcription_change(ref: CellRef, text: str, *, model_name: str, language: str | None = None) -> CellChange:
    """Write ``text`` into the cell (and into the transcribed take), authored ``ASR <model_name>``."""
    audio_id = ref.audio_take.audio_id if ref.audio_take else None
    payload = Transcription(text=text, author=f"ASR {model_name}", audio_id=audio_id, language=language)
    return CellChange(ref.notebook_path, ref.cell_id, ChangeOp.SET_TRANSCRIPTION, payload, base_value=ref.value)


@dataclass
class ApplyReport:
    applied: list[CellChange] = field(default_factory=list)
    skipped: list[tuple[CellChange, str]] = field(default_factory=list)
    #: Generated takes added without selecting them, because a translator had selected a take.
    kept_selection: list[CellChange] = field(default_factory=list)

    def extend(self, other: "ApplyReport") -> None:
        self.applied += other.applied
        self.skipped += other.skipped
        self.kept_selection += other.kept_selection


def apply_changes(notebook_json_text: str, changes: Sequence[CellChange], *,
                  now_ms: int | None = None) -> tuple[str, ApplyReport]:
    """Apply ``changes`` to the newest text of a notebook. Returns the new text and what was applied/skipped.

    When nothing applies, the input text is returned unchanged (byte for byte). Raises ``NotebookError`` when
    the text cannot be fully parsed -- such a file is never rewritten.
    """
    nb = parse_notebook(notebook_json_text)
    now = now_ms if now_ms is not None else _now_ms()
    index = nb.cells_by_id()
    report = ApplyReport()
    for change in changes:
        cells = index.get(change.cell_id, [])
        if len(cells) != 1 or is_deleted_cell(cells[0]):
            reason = ("several cells share this id" if len(cells) > 1 else "the cell no longer exists")
            report.skipped.append((change, reason))
        elif change.operation is ChangeOp.ADD_AUDIO:
            _add_take(cells[0], change, now, report)
        else:
            _set_transcription(cells[0], change, now, report)
    for change, reason in report.skipped:
        logger.info("Not applied to %s %s (%s): %s", change.notebook_path, change.cell_id,
                    change.operation.value, reason)
    if not report.applied:
        return notebook_json_text, report
    return nb.to_text(), report


def _add_take(cell: dict, change: CellChange, now: int, report: ApplyReport) -> None:
    take: NewAudioTake = change.payload  # type: ignore[assignment]
    meta = cell.setdefault("metadata", {})
    attachments = meta.setdefault("attachments", {})
    if not isinstance(attachments, dict):
        report.skipped.append((change, "the cell's attachments are not an object"))
        return
    if take.audio_id in attachments:
        report.skipped.append((change, "a take with this id is already attached"))
        return
    attachments[take.audio_id] = {
        "url": take.url, "type": "audio", "createdAt": take.created_at, "updatedAt": take.created_at,
        "isDeleted": False, "isGenerated": True, "createdBy": take.created_by, "metadata": dict(take.metadata),
    }
    if has_human_selection(cell):
        report.kept_selection.append(change)
    else:
        # The editor keeps the selection with the newer timestamp when it merges; ours must be newer.
        meta["selectedAudioId"] = take.audio_id
        meta["selectionTimestamp"] = max(now, _as_int(meta.get("selectionTimestamp")) + 1)
    report.applied.append(change)


def _set_transcription(cell: dict, change: CellChange, now: int, report: ApplyReport) -> None:
    tr: Transcription = change.payload  # type: ignore[assignment]
    meta = cell.setdefault("metadata", {})
    current = cell.get("value") if isinstance(cell.get("value"), str) else ""
    new_value = html.escape(tr.text, quote=False)
    edits = meta.get("edits", [])
    if current != change.base_value:
        report.skipped.append((change, "a translator changed the text since the job read it"))
    elif _is_validated(cell, current):
        report.skipped.append((change, "the current text is validated"))
    elif current == new_value:
        report.skipped.append((change, "the cell already holds this text"))
    elif not isinstance(edits, list):
        report.skipped.append((change, "the cell's edit history is not a list"))
    else:
        last = max((_as_int(e.get("timestamp")) for e in edits if isinstance(e, dict)), default=0)
        stamp = max(now, last + 1)
        meta["edits"] = edits       # (re)inserted only now: a skipped cell must stay exactly as it was
        if not edits and current.strip():
            # Without a history entry the editor's merge may restore or drop the old text; record it first,
            # as the editor itself does before a first edit.
            edits.append(_edit(current, stamp - 1000, "initial-import", tr.author))
        cell["value"] = new_value
        edits.append(_edit(new_value, stamp, "llm-generation", tr.author))
        _record_on_take(meta, tr, now)
        report.applied.append(change)


def _edit(value: str, timestamp: int, kind: str, author: str) -> dict:
    return {"editMap": ["value"], "value": value, "timestamp": timestamp, "type": kind, "author": author,
            "validatedBy": []}


def _is_validated(cell: Mapping, current: str) -> bool:
    """True when the latest edit that set the current value carries an active validation."""
    for edit in reversed(_value_edits(cell)):
        if edit.get("value", edit.get("cellValue")) != current:
            continue
        validations = edit.get("validatedBy")
        return isinstance(validations, list) and any(
            not (isinstance(v, dict) and v.get("isDeleted")) for v in validations)
    return False


def _record_on_take(meta: dict, tr: Transcription, now: int) -> None:
    attachments = meta.get("attachments")
    att = attachments.get(tr.audio_id) if tr.audio_id and isinstance(attachments, dict) else None
    if isinstance(att, dict) and not att.get("isDeleted"):
        # updatedAt is left alone on purpose: the editor merges attachments by newest updatedAt, and a bump
        # here could undo a translator's not-yet-synced deletion of this take.
        att["transcription"] = {"content": tr.text, "language": tr.language, "timestamp": now}


def group_changes(changes: Iterable[CellChange]) -> dict[str, list[CellChange]]:
    """Changes by notebook path, in order."""
    grouped: dict[str, list[CellChange]] = {}
    for change in changes:
        grouped.setdefault(change.notebook_path, []).append(change)
    return grouped


@dataclass
class CommitReport(ApplyReport):
    commit_id: str | None = None
    attempts: int = 0
    notebooks: list[str] = field(default_factory=list)   # notebooks the commit rewrote


class CommitTooLarge(ValueError):
    """The commit, once applied to the newest notebooks, is over the caller's byte limit (split it)."""


ExtraActions = Union[Sequence[FileAction], Callable[[list[CellChange]], Sequence[FileAction]]]


def commit_cell_changes(
    store: ProjectStore, changes_by_notebook: Mapping[str, Sequence[CellChange]], message: str, *,
    extra_actions: ExtraActions = (), max_attempts: int = 5, retry_delay: float = 0.5,
    now_ms: int | None = None, max_bytes: int | None = None,
    first_reads: dict[str, FileVersion | None] | None = None,
) -> CommitReport:
    """Re-apply the changes to the newest version of each notebook and commit them in one atomic commit.

    Every update carries the version it was based on; on ``VersionConflict`` everything is re-read and
    re-applied (up to ``max_attempts``), so an edit a translator committed meanwhile is kept. Notebooks that
    vanished or no longer parse are left alone and their changes reported as skipped.

    ``extra_actions`` (e.g. the audio files) go first into the same commit; given as a function of the
    changes that applied in this attempt, a file is only committed for a change that really landed.
    ``first_reads`` may hold notebooks the caller already read: each serves one attempt and is removed.
    Raises ``VersionConflict`` when attempts run out, ``CommitTooLarge`` when the applied commit would
    exceed ``max_bytes``, and ``FileAlreadyExists`` from the extra actions for the caller to resolve.
    """
    cached = first_reads if first_reads is not None else {}
    for attempt in range(1, max_attempts + 1):
        report = CommitReport(attempts=attempt)
        updates: list[FileAction] = []
        for path, changes in changes_by_notebook.items():
            current = cached.pop(path) if path in cached else store.read(path)
            if current is None:
                report.skipped += [(c, "the notebook no longer exists") for c in changes]
                continue
            try:
                new_text, applied = apply_changes(current.content.decode("utf-8"), changes, now_ms=now_ms)
            except (NotebookError, UnicodeDecodeError) as exc:
                logger.error("Leaving %s untouched: %s", path, exc)
                report.skipped += [(c, "the notebook could not be parsed") for c in changes]
                continue
            report.extend(applied)
            if applied.applied:
                updates.append(FileAction.update(path, new_text, expected_version=current.version))
        extra = list(extra_actions(report.applied) if callable(extra_actions) else extra_actions)
        actions = extra + updates  # files first: a notebook never points at something not yet there
        if not actions:
            return report
        if max_bytes is not None and sum(a.size() for a in actions) > max_bytes:
            raise CommitTooLarge(f"{len(actions)} file(s) over {max_bytes} bytes")
        try:
            report.commit_id = store.commit(actions, message)
        except (VersionConflict, FileMissing) as exc:
            if attempt == max_attempts:
                raise VersionConflict(f"gave up after {attempt} attempts: {exc}") from exc
            logger.info("Notebook changed while writing back (%s); re-reading (attempt %d of %d)",
                        exc, attempt + 1, max_attempts)
            time.sleep(retry_delay * attempt)
            continue
        report.notebooks = [a.path for a in updates]
        logger.info("Committed %d cell change(s) in %d notebook(s); %d skipped", len(report.applied),
                    len(updates), len(report.skipped))
        return report
    raise AssertionError("unreachable")


def _now_ms() -> int:
    return int(time.time() * 1000)
