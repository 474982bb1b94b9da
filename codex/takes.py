"""Audio takes on a cell: reading them, the editor's choice of "the" take, and finding and fetching a take's
bytes in a project (``files/``, ``pointers/``, old layouts, LFS pointers skipped)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from git_lfs import fetch_real
from storage import ProjectStore, UnsafePath, confine_path

from .layout import (ATTACHMENTS_DIR, AUDIO_EXTENSIONS, attachment_paths, attachment_project_path,
                     notebook_segment)


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


@dataclass(frozen=True)
class PlayingTake:
    """The take the editor plays for a cell."""

    audio_id: str
    human: bool             # not generated (and, in doubt, human)
    selected: bool          # named by selectedAudioId; False: the editor's newest-take fallback


def playing_take(cell: Mapping) -> PlayingTake | None:
    """What the editor plays: the selected take when it is not deleted, else (its fallback) the newest
    non-deleted take by ``createdAt``; None when nothing plays.

    Doubt counts as human, so a generated take never displaces a recording: a selection naming a take this
    file does not hold (it may still be syncing), or an entry we cannot read.
    """
    meta = cell.get("metadata", {})
    attachments = meta.get("attachments")
    attachments = attachments if isinstance(attachments, dict) else {}
    selected = meta.get("selectedAudioId")
    if selected:
        att = attachments.get(selected) if isinstance(selected, str) else None
        if not isinstance(att, dict):
            return PlayingTake(str(selected), human=True, selected=True)
        if not att.get("isDeleted"):
            return PlayingTake(selected, human=not att.get("isGenerated"), selected=True)
    live = [t for t in audio_takes(cell) if not t.is_deleted]
    newest = max(live, key=lambda t: (t.created_at, t.updated_at), default=None)
    return PlayingTake(newest.audio_id, not newest.is_generated, selected=False) if newest else None


def plays_human_take(cell: Mapping) -> bool:
    """The editor plays a translator's take here (selected, or by its fallback; see ``playing_take``)."""
    playing = playing_take(cell)
    return playing is not None and playing.human


def take_candidate_paths(notebook_path: str, take: AudioTake) -> list[str]:
    """Project paths that may hold the take's bytes, best first: ``files/`` (a local checkout), ``pointers/``
    (git, LFS), the url as written, and the old ``.project/attachments/<BOOK>/`` layout."""
    url = take.url.strip()
    while url.startswith("./"):
        url = url[2:]
    try:  # some editor versions wrote absolute file-system paths
        url = attachment_project_path(url) or url
    except UnsafePath:
        pass  # the url as written is refused below; the notebook's own folder may still hold the take
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
    whose url is wrong is still found by its id. None when no real bytes exist anywhere (a candidate that
    is a link leading outside the project is passed over).
    """
    candidates = take_sources(notebook_path, take, index) if index is not None else \
        take_candidate_paths(notebook_path, take)
    dest_dir.mkdir(parents=True, exist_ok=True)
    fetched = fetch_real(store.download, candidates,
                         lambda path: dest_dir / f"{take.audio_id}{posixpath.splitext(path)[1]}", skip_unsafe=True)
    return FetchedAudio(fetched.path, fetched.local) if fetched.local is not None else None


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
