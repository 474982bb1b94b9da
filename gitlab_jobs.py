"""GitLab as a ``ProjectStore`` (one project) and a ``ProjectSource`` (every project a token can see).

Everything goes through python-gitlab and GitLab's REST API v4, plus the Git LFS batch API for large files.
What GitLab really does, and what this module relies on (see docs/gitlab.md):

* A file's *version* is its ``last_commit_id``. GitLab checks an update's ``last_commit_id`` by comparing
  the path's last commit on the branch with its last commit as of that id, so any version we read works.
* A commit is all-or-nothing on one parent. Its 400 answers are our precondition errors; "Could not update
  refs/heads/…" only means someone else committed first, and is retried (each action keeps its own
  precondition, so a retry cannot overwrite anything the original would not have).
* A commit POST is not idempotent. When its answer is lost (reset, timeout, 5xx), we look for the commit's
  ``Worker-Commit-Id`` trailer on the branch before deciding to send it again.
* GitLab turns only ``create`` actions on LFS-tracked paths into LFS objects, and it does so with whatever
  content it gets — a pointer text would become an LFS object holding a pointer (Lfs::FileTransformer,
  Files::MultiService). ``update`` content is committed as sent. So: updates of LFS paths, and creates from
  a ``source`` file, upload the bytes through the LFS batch API and commit the pointer with an ``update``
  (a create is sent as ``create ""`` + ``update <pointer>`` in the same atomic commit).
* Large results (models) go to LFS even where ``.gitattributes`` does not say so: a commit request cannot
  carry a 2 GB model, and git history should not. The same commit adds a ``.gitattributes`` line for that
  kind of job file (``gpu_jobs/**/*.tar filter=lfs ...``), so checkouts by the editor and git-lfs agree.
* Reads are retried with capped exponential back-off; 429 answers are obeyed (python-gitlab honours
  ``Retry-After``).

The token is never logged, never put in a message, a repr or a spec: ``from_spec`` reads ``GITLAB_TOKEN``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import posixpath
import random
import re
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import gitlab
import gitlab.exceptions
import requests

from git_lfs import (GITATTRIBUTES, LFS_MIN_BYTES, POINTER_MAX_BYTES, LfsRules, large_result, parse_lfs_pointer,
                     pointer_text, tracking_actions)
from jobs import MANIFEST_PATH  # the source serves the projects that hold the protocol's manifest
from storage import (
    AccessDenied,
    CommitTooLarge,
    FileAction,
    FileAlreadyExists,
    FileMissing,
    FileVersion,
    ProjectSource,
    ProjectStore,
    StorageError,
    StorageUnavailable,
    StoreSpec,
    VersionConflict,
    confine_path,
)
from worker_logging import REDACTOR

logger = logging.getLogger(__name__)

TOKEN_ENV = "GITLAB_TOKEN"
COMMIT_TRAILER = "Worker-Commit-Id"
# GitLab 18.7+ refuses commit request bodies over 300 MB with 413.
GITLAB_MAX_BODY_BYTES = 300 * 1000 * 1000
_ATTRIBUTE_ATTEMPTS = 3  # a translator's concurrent .gitattributes change costs a re-read, this many times
LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
ARCHIVE_MAX_BYTES = 2 * 1024**3  # folder archives above this are abandoned for per-file downloads
_CHUNK = 1024 * 1024
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_HOP_BY_HOP = frozenset({"transfer-encoding", "content-length", "connection", "host"})
_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
# Our clock and GitLab's may disagree; time filters we send are widened by this much.
_CLOCK_SKEW = timedelta(minutes=10)

T = TypeVar("T")


# -- errors ----------------------------------------------------------------------------------------------
class GitLabError(StorageError):
    """A GitLab request failed for a reason other than a commit precondition. Messages never hold the token."""


class GitLabAuthError(GitLabError, AccessDenied):
    """No token, or GitLab refused it (401/403)."""


class GitLabUnavailable(GitLabError, StorageUnavailable):
    """Server errors, rate limits, timeouts or dropped connections outlasted the retries."""


class CommitOutcomeUnknown(GitLabUnavailable):
    """A commit's answer was lost and GitLab could not be asked whether it landed. Do not assume either."""


class _NotFound(Exception):
    """Internal: a 404 for a file, folder or object — callers turn it into None, [] or FileNotFoundError."""


class _ArchiveTooLarge(Exception):
    """Internal: a folder archive grew past ``archive_max_bytes``; its files are fetched one by one instead."""


class _BranchMoved(Exception):
    """Internal: "Could not update refs/heads/…" — another commit landed between GitLab's read and write."""


# -- small pieces ----------------------------------------------------------------------------------------
class _Secret:
    """Holds the token; its repr and str never show it. The token and its Basic-auth forms are registered
    with the program's one redactor (``worker_logging.REDACTOR``), which ``redact`` applies."""

    def __init__(self, value: str):
        if not value:
            raise GitLabAuthError(f"no GitLab token: set {TOKEN_ENV}")
        self._value = value
        basic = base64.b64encode(f"oauth2:{value}".encode()).decode()
        self._needles = [value, basic, basic.rstrip("=")]
        for needle in self._needles:
            REDACTOR.add(needle)

    def reveal(self) -> str:
        return self._value

    def basic_auth(self) -> str:
        return "Basic " + self._needles[1]

    def redact(self, text: object) -> str:
        return REDACTOR.redact(str(text))

    def __repr__(self) -> str:
        return "<GitLab token hidden>"

    __str__ = __repr__


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up; delays grow exponentially up to ``max_delay`` (with jitter)."""

    attempts: int = 6  # tries of one read, the first included
    base_delay: float = 0.25  # seconds before the first retry
    max_delay: float = 8.0
    branch_moved_retries: int = 6  # commits re-sent after "Could not update refs/heads/…"
    commit_resends: int = 4  # commits re-sent after a lost answer that provably did not land

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** max(attempt - 1, 0)) * random.uniform(0.5, 1.0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _status(error: gitlab.exceptions.GitlabError) -> int | None:
    return error.response_code


def _retrying(what: str, call: Callable[[], T], policy: RetryPolicy, secret: _Secret) -> T:
    """Run a read; retry server errors, 429s python-gitlab gave up on, timeouts and resets."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except gitlab.exceptions.GitlabError as error:
            status = _status(error)
            if status == 404:
                raise _NotFound(secret.redact(error.error_message)) from None
            if status in (401, 403):
                raise GitLabAuthError(f"GitLab refused the token for {what} (HTTP {status})") from None
            if status not in _TRANSIENT_STATUS:
                raise GitLabError(f"{what} failed: HTTP {status}: {secret.redact(error.error_message)}") from None
            reason = f"HTTP {status}"
        except _NETWORK_ERRORS as error:
            reason = type(error).__name__
        if attempt == policy.attempts:
            raise GitLabUnavailable(f"{what} failed {attempt} times, last: {reason}")
        pause = policy.delay(attempt)
        logger.info("GitLab %s: %s; retry %d/%d in %.1fs", what, reason, attempt, policy.attempts - 1, pause)
        time.sleep(pause)
    raise AssertionError("unreachable")


def _make_client(url: str, secret: _Secret, timeout: float) -> gitlab.Gitlab:
    # Our own retry loops decide what is safe to repeat; python-gitlab only handles 429 (Retry-After).
    return gitlab.Gitlab(url, private_token=secret.reveal(), timeout=timeout, retry_transient_errors=False,
                         keep_base_url=True)


@dataclass(frozen=True)
class _LfsUpload:
    path: str
    oid: str
    size: int
    source: Path | None
    content: bytes | None

    @classmethod
    def of(cls, action: FileAction) -> "_LfsUpload":
        digest = hashlib.sha256()
        if action.source is not None:
            with action.source.open("rb") as handle:
                for block in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(block)
            return cls(action.path, digest.hexdigest(), action.source.stat().st_size, action.source, None)
        content = action.content or b""
        return cls(action.path, hashlib.sha256(content).hexdigest(), len(content), None, content)

    def body(self):
        return self.source.open("rb") if self.source is not None else self.content


# -- the store -------------------------------------------------------------------------------------------
class GitLabProjectStore(ProjectStore):
    """One GitLab project (one branch) as a ``ProjectStore``."""

    def __init__(
        self, url: str, project: int | str, *, token: str | _Secret | None = None, branch: str | None = None,
        gl: gitlab.Gitlab | None = None, project_info: dict[str, Any] | None = None, timeout: float = 60.0,
        retry: RetryPolicy = RetryPolicy(), max_body_bytes: int = GITLAB_MAX_BODY_BYTES,
        download_workers: int = 4, archive_min_files: int = 16, commit_timeout: float = 600.0,
        name: str | None = None, lfs_min_bytes: int = LFS_MIN_BYTES, archive_max_bytes: int = ARCHIVE_MAX_BYTES,
    ):
        """``project`` is a numeric id or ``namespace/name``; ``token`` defaults to ``$GITLAB_TOKEN``.
        ``project_info`` (a projects-list entry) saves the request that would otherwise fetch it;
        ``name`` is only for display until it is known."""
        self._url = url.rstrip("/")
        self._secret = token if isinstance(token, _Secret) else _Secret(token or os.environ.get(TOKEN_ENV, ""))
        self._own_client = gl is None
        self._gl = gl or _make_client(self._url, self._secret, timeout)
        self._key = project
        self._display_name = name
        self._info_cache = dict(project_info) if project_info else None
        self._branch = branch
        self._retry = retry
        self._commit_timeout = commit_timeout
        self.max_body_bytes = max_body_bytes
        # Payload bytes per commit for callers that split results: base64 adds a third, JSON a little.
        margin = min(1024 * 1024, max_body_bytes // 8)
        self.max_commit_bytes = (max_body_bytes - margin) * 3 // 4
        self.download_workers = download_workers
        self.archive_min_files = archive_min_files
        self.archive_max_bytes = archive_max_bytes
        self._project = self._gl.projects.get(project_info["id"] if project_info else project, lazy=True)
        self.lfs_min_bytes = lfs_min_bytes
        self._attributes: tuple[float, FileVersion | None] | None = None  # (read at, root .gitattributes)

    # -- identity ------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: StoreSpec) -> "GitLabProjectStore":
        """Reopen a store in another process; the token comes from ``$GITLAB_TOKEN`` there."""
        options = spec.options
        return cls(options["url"], options["project"], branch=options.get("branch"), name=options.get("name"))

    def spec(self) -> StoreSpec:
        return StoreSpec("gitlab", {"url": self._url, "project": self._project_id(), "branch": self.branch,
                                    "name": self.name})

    @property
    def name(self) -> str:
        if self._info_cache and self._info_cache.get("path_with_namespace"):
            return self._info_cache["path_with_namespace"]
        return self._display_name or str(self._key)

    @property
    def branch(self) -> str:
        """The branch given, else the project's default branch (one look-up unless the info came along)."""
        return self._branch or self._info().get("default_branch") or "main"

    def __repr__(self) -> str:
        branch = self._branch or (self._info_cache or {}).get("default_branch")
        return f"GitLabProjectStore({self.name!r} at {self._url!r}, branch={branch!r})"

    def close(self) -> None:
        if self._own_client:
            self._gl.session.close()

    def update_info(self, project_info: dict[str, Any]) -> None:
        """Fresh project data from a projects listing (``GitLabSource`` calls this)."""
        self._info_cache = dict(project_info)

    def _project_id(self) -> int | str:
        return self._info_cache["id"] if self._info_cache and "id" in self._info_cache else self._key

    def _info(self) -> dict[str, Any]:
        if self._info_cache is None or "http_url_to_repo" not in self._info_cache:
            try:
                self._info_cache = self._read("look up the project", lambda: self._gl.http_get(
                    f"/projects/{self._project.encoded_id}"))
            except _NotFound:
                raise GitLabError(f"project {self._key} does not exist or the token cannot see it") from None
        return self._info_cache

    def _read(self, what: str, call: Callable[[], T]) -> T:
        return _retrying(f"{what} ({self.name})", call, self._retry, self._secret)

    def _not_found(self, error: _NotFound, path: str) -> None:
        """A 404 about the project (not the file) is an error, not an absent file."""
        if "Project Not Found" in str(error):
            raise GitLabError(f"project {self.name} does not exist or the token cannot see it") from None

    # -- reads ---------------------------------------------------------------------------------------
    def read(self, path: str) -> FileVersion | None:
        path = confine_path(path)
        try:
            found = self._read(f"read {path}", lambda: self._project.files.get(file_path=path, ref=self.branch))
        except _NotFound as error:
            self._not_found(error, path)
            return None
        return FileVersion(path, base64.b64decode(found.content), found.last_commit_id)

    def _head(self, path: str) -> Mapping[str, str] | None:
        """The file's ``X-Gitlab-*`` headers (a case-insensitive mapping: proxies may lower-case names)."""
        try:
            return self._read(f"check {path}", lambda: self._project.files.head(path, ref=self.branch))
        except _NotFound as error:
            self._not_found(error, path)
            return None

    def version(self, path: str) -> str | None:
        headers = self._head(confine_path(path))
        return headers.get("X-Gitlab-Last-Commit-Id") if headers else None

    def blob_id(self, path: str) -> str | None:
        """The git blob id of ``path`` (changes exactly when its content does); one HEAD request."""
        headers = self._head(confine_path(path))
        return headers.get("X-Gitlab-Blob-Id") if headers else None

    def list_files(self, prefix: str = "") -> list[str]:
        folder = confine_path(prefix.rstrip("/")) if prefix.strip("/") else ""

        def listing() -> list[str]:
            entries = self._project.repository_tree(path=folder, ref=self.branch, recursive=True, iterator=True,
                                                    per_page=100, pagination="keyset")
            return [entry["path"] for entry in entries if entry["type"] == "blob"]

        try:
            return sorted(self._read(f"list {folder or '/'}", listing))
        except _NotFound as error:
            self._not_found(error, folder)
            return []

    def download(self, path: str, dest: Path) -> Path:
        """The real bytes of ``path`` (LFS resolved by GitLab: ``raw?lfs=true``), streamed to ``dest``."""
        path = confine_path(path)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")

        def fetch() -> None:
            with partial.open("wb") as out:  # a retry starts the file afresh
                self._project.files.raw(file_path=path, ref=self.branch, streamed=True, action=out.write,
                                        chunk_size=_CHUNK, lfs="true")

        try:
            self._read(f"download {path}", fetch)
        except _NotFound as error:
            partial.unlink(missing_ok=True)
            self._not_found(error, path)
            raise FileNotFoundError(f"{path} is not in {self.name} (or its LFS object is missing)") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, dest)
        return dest

    def download_many(self, paths: Sequence[str], dest_dir: Path, *, missing_ok: bool = False) -> dict[str, Path]:
        """Fetch many files to ``dest_dir/<path>`` in few requests: one archive (LFS included) per folder
        holding at least ``archive_min_files`` of them, a small pool of parallel raw downloads for the rest.
        Raises FileNotFoundError naming every missing path, unless ``missing_ok``."""
        wanted = sorted({confine_path(p) for p in paths})
        dest_dir = Path(dest_dir)
        folders: dict[str, list[str]] = {}
        for path in wanted:
            folders.setdefault(posixpath.dirname(path), []).append(path)
        done: dict[str, Path] = {}
        for folder, members in folders.items():
            if folder and len(members) >= self.archive_min_files:
                done.update(self._download_archive(folder, set(members), dest_dir))
        rest = [p for p in wanted if p not in done]
        missing: list[str] = []

        def one(path: str) -> None:
            try:
                done[path] = self.download(path, dest_dir / path)
            except FileNotFoundError:
                missing.append(path)

        if rest:
            with ThreadPoolExecutor(max_workers=max(1, self.download_workers), thread_name_prefix="gitlab-dl") as pool:
                list(pool.map(one, rest))
        if missing and not missing_ok:
            raise FileNotFoundError(f"{len(missing)} file(s) missing in {self.name}: {', '.join(sorted(missing)[:10])}")
        return {p: done[p] for p in wanted if p in done}

    def _download_archive(self, folder: str, wanted: set[str], dest_dir: Path) -> dict[str, Path]:
        """Files of ``wanted`` from one ``archive.tar.gz?path=<folder>&include_lfs_blobs=true``. Entries that
        are still pointer texts (objects the archive could not include) are left to the raw fallback."""
        got: dict[str, Path] = {}
        with tempfile.TemporaryFile() as spool:
            def keep(chunk: bytes) -> None:
                # A folder can hold more than the wanted files (a translator's 2 GB video, say): the archive
                # is a shortcut only while it stays small, and the raw downloads fetch exactly what is wanted.
                if spool.tell() + len(chunk) > self.archive_max_bytes:
                    raise _ArchiveTooLarge(f"the archive of {folder} is over {self.archive_max_bytes} bytes")
                spool.write(chunk)

            def fetch() -> None:
                spool.seek(0)
                spool.truncate()
                self._project.repository_archive(sha=self.branch, format="tar.gz", path=folder, streamed=True,
                                                 action=keep, chunk_size=_CHUNK, include_lfs_blobs="true")

            try:
                self._read(f"archive {folder}", fetch)
            except _ArchiveTooLarge as stop:
                logger.info("%s; downloading its %d wanted file(s) one by one", stop, len(wanted))
                return got
            except _NotFound:
                return got
            except GitLabAuthError:
                raise
            except GitLabError as error:
                # Archives can be disabled or rate-limited hard (GitLab.com: 5 a minute); raw downloads still work.
                logger.warning("archive of %s failed, downloading its files one by one: %s", folder, error)
                return got
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r:gz") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    inner = member.name.partition("/")[2]  # drop the "<project>-<sha>-<path>/" prefix
                    path = inner if inner in wanted else posixpath.join(folder, inner)
                    if path not in wanted or path in got:
                        continue
                    source = tar.extractfile(member)
                    if source is None:
                        continue
                    if member.size <= POINTER_MAX_BYTES:
                        head = source.read()
                        if parse_lfs_pointer(head):
                            continue
                        chunks: Iterable[bytes] = [head]
                    else:
                        chunks = iter(lambda: source.read(_CHUNK), b"")
                    target = dest_dir / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_name(target.name + ".part")
                    with partial.open("wb") as out:
                        for chunk in chunks:
                            out.write(chunk)
                    os.replace(partial, target)
                    got[path] = target
        logger.debug("archive of %s gave %d of %d wanted files", folder, len(got), len(wanted))
        return got

    # -- commits -------------------------------------------------------------------------------------
    def commit(self, actions: Sequence[FileAction], message: str) -> str:
        """One atomic commit (see the module docstring); returns the commit id.

        Raises FileAlreadyExists / VersionConflict / FileMissing (nothing changed), CommitTooLarge (nothing
        sent), GitLabUnavailable / CommitOutcomeUnknown / GitLabAuthError / GitLabError."""
        actions = list(actions)
        if not actions:
            raise ValueError("a commit needs at least one action")
        for attempt in range(1, _ATTRIBUTE_ATTEMPTS + 1):
            attributes = self._gitattributes()
            rules = LfsRules(attributes.text if attributes else None)
            uploads = self._lfs_uploads(actions, rules)
            extra = tracking_actions(actions, lambda: attributes, self.lfs_min_bytes, self.name)
            try:
                return self._send_commit(actions + extra, uploads, message)
            except VersionConflict as conflict:
                if not extra or conflict.path != GITATTRIBUTES or attempt == _ATTRIBUTE_ATTEMPTS:
                    raise
                logger.info("%s of %s changed meanwhile; reading it again", GITATTRIBUTES, self.name)
            finally:
                if extra:
                    self._attributes = None  # changed by us (or by someone else): read it afresh next time
        raise AssertionError("unreachable")

    def _send_commit(self, actions: list[FileAction], uploads: dict[str, "_LfsUpload"], message: str) -> str:
        if uploads:
            self._lfs_upload(list(uploads.values()))
        key = uuid.uuid4().hex
        body = {
            "branch": self.branch,
            "commit_message": f"{self._secret.redact(message).rstrip()}\n\n{COMMIT_TRAILER}: {key}\n",
            "actions": [item for action in actions for item in self._action_json(action, uploads.get(action.path))],
        }
        data = json.dumps(body).encode("utf-8")
        if len(data) > self.max_body_bytes:
            raise CommitTooLarge(f"commit of {len(actions)} action(s) to {self.name} needs a {len(data)}-byte "
                                 f"request; the cap is {self.max_body_bytes} (split it: max_commit_bytes)")
        return self._post_commit(data, key, actions)

    def _lfs_uploads(self, actions: list[FileAction], rules: LfsRules) -> dict[str, _LfsUpload]:
        """The actions whose bytes must go through the LFS batch API (see the module docstring): updates and
        file-backed creates of LFS paths, and any create or update of a large result under ``gpu_jobs/``."""
        uploads = {}
        for action in actions:
            if action.action == "delete" or action.path == GITATTRIBUTES:
                continue
            if rules.tracks(action.path):
                if action.action == "update" or action.source is not None:
                    uploads[action.path] = _LfsUpload.of(action)
            elif large_result(action.path, action.size(), self.lfs_min_bytes):
                uploads[action.path] = _LfsUpload.of(action)
        return uploads

    def _gitattributes(self) -> FileVersion | None:
        # .gitattributes rarely changes; one read per few minutes is plenty (and a fresh one after we change it).
        if self._attributes is None or time.monotonic() - self._attributes[0] > 300:
            self._attributes = (time.monotonic(), self.read(GITATTRIBUTES))
        return self._attributes[1]

    @staticmethod
    def _action_json(action: FileAction, upload: _LfsUpload | None) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"action": action.action, "file_path": action.path}
        if action.expected_version:
            item["last_commit_id"] = action.expected_version
        if action.action == "delete":
            return [item]
        if upload is None:
            item.update(content=base64.b64encode(action.payload()).decode("ascii"), encoding="base64")
            return [item]
        pointer = pointer_text(upload.oid, upload.size)
        if action.action == "update":
            item.update(content=pointer, encoding="text")
            return [item]
        # GitLab would wrap a created pointer into a new LFS object: create it empty, then set the pointer.
        return [{**item, "content": "", "encoding": "text"},
                {"action": "update", "file_path": action.path, "content": pointer, "encoding": "text"}]

    def _post_commit(self, data: bytes, key: str, actions: list[FileAction]) -> str:
        started = datetime.now(timezone.utc)
        moved = resent = 0
        maybe_landed = False
        path = f"/projects/{self._project.encoded_id}/repository/commits"
        while True:
            try:
                answer = self._gl.http_post(path, post_data=data, raw=True, retry_transient_errors=False,
                                            extra_headers={"Content-type": "application/json"},
                                            timeout=self._commit_timeout)
                return answer["id"]
            except gitlab.exceptions.GitlabError as error:
                status, text = _status(error), self._secret.redact(error.error_message)
                if status == 400:
                    try:
                        problem = _precondition_error(text, actions)
                    except _BranchMoved:
                        moved += 1
                        if moved > self._retry.branch_moved_retries:
                            raise GitLabUnavailable(f"commit to {self.name}: the branch {self.branch} kept moving "
                                                    f"({moved - 1} retries)") from None
                        pause = self._retry.delay(moved)
                        logger.info("commit to %s raced another commit; retry %d in %.1fs", self.name, moved, pause)
                        time.sleep(pause)
                        continue
                    if problem is None:
                        raise GitLabError(f"GitLab refused the commit to {self.name}: {text}") from None
                    # An earlier try whose answer was lost may have landed: then this failure is its echo.
                    if maybe_landed and (landed := self._find_commit(key, started)):
                        return landed
                    raise problem from None
                if status == 413:
                    raise CommitTooLarge(f"GitLab refused a {len(data)}-byte commit to {self.name} as too "
                                         "large (413)") from None
                if status in (401, 403):
                    raise GitLabAuthError(f"GitLab refused the token for a commit to {self.name} "
                                          f"(HTTP {status})") from None
                if status not in _TRANSIENT_STATUS:
                    raise GitLabError(f"commit to {self.name} failed: HTTP {status}: {text}") from None
                reason = f"HTTP {status}"
            except _NETWORK_ERRORS as error:
                reason = type(error).__name__
            # The answer is lost; GitLab may have applied the commit. Look before re-sending it.
            maybe_landed = True
            landed = self._find_commit(key, started)
            if landed:
                logger.info("commit %s to %s landed although its answer was lost (%s)", landed[:12], self.name,
                            reason)
                return landed
            resent += 1
            if resent > self._retry.commit_resends:
                raise GitLabUnavailable(f"commit to {self.name} failed {resent} times, last: {reason}")
            pause = self._retry.delay(resent)
            logger.info("commit to %s did not land (%s); sending it again in %.1fs", self.name, reason, pause)
            time.sleep(pause)

    def _find_commit(self, key: str, started: datetime) -> str | None:
        """The id of the branch's commit carrying our trailer, if it landed."""
        needle = f"{COMMIT_TRAILER}: {key}"
        path = f"/projects/{self._project.encoded_id}/repository/commits"
        query = {"ref_name": self.branch, "since": _iso(started - _CLOCK_SKEW), "per_page": 100}
        try:
            for page in (1, 2, 3):
                commits = self._read("check the branch for our commit", lambda: self._gl.http_list(
                    path, query_data={**query, "page": page}, get_all=False))
                for commit in commits:
                    if needle in (commit.get("message") or ""):
                        return commit["id"]
                if len(commits) < 100:
                    return None
        except (GitLabUnavailable, _NotFound) as error:
            raise CommitOutcomeUnknown(f"commit to {self.name}: its answer was lost and the branch could not be "
                                       f"checked ({error})") from None
        raise CommitOutcomeUnknown(f"commit to {self.name}: over 300 commits since ours; cannot tell if it landed")

    # -- Git LFS -------------------------------------------------------------------------------------
    def _lfs_upload(self, uploads: list[_LfsUpload]) -> None:
        """Upload objects the server lacks: one batch request per 100 objects, then one PUT each."""
        batch_url = self._info()["http_url_to_repo"].rstrip("/")
        if not batch_url.endswith(".git"):
            batch_url += ".git"
        batch_url += "/info/lfs/objects/batch"
        by_oid = {u.oid: u for u in uploads}
        oids = list(by_oid)
        for start in range(0, len(oids), 100):
            chunk = [by_oid[oid] for oid in oids[start:start + 100]]
            request = {"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
                       "ref": {"name": f"refs/heads/{self.branch}"},
                       "objects": [{"oid": u.oid, "size": u.size} for u in chunk]}
            answer = self._lfs_call("LFS batch", "POST", batch_url, {"Accept": LFS_MEDIA_TYPE,
                                    "Content-Type": LFS_MEDIA_TYPE}, lambda: json.dumps(request).encode()).json()
            unanswered = {u.oid for u in chunk}
            for item in answer.get("objects", []):
                upload = by_oid.get(item.get("oid"))
                if upload is None:
                    continue
                unanswered.discard(upload.oid)
                if "error" in item:
                    raise GitLabError(f"LFS refused {upload.path}: {self._secret.redact(item['error'])}")
                actions = item.get("actions") or {}
                if "upload" not in actions:
                    continue  # GitLab has it already
                href = actions["upload"]["href"]
                headers = dict(actions["upload"].get("header") or {})
                self._lfs_call(f"LFS upload of {upload.path}", "PUT", href, headers, upload.body, timeout=(10, 600))
                if "verify" in actions:
                    verify = actions["verify"]
                    self._lfs_call(f"LFS verify of {upload.path}", "POST", verify["href"],
                                   {"Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE,
                                    **(verify.get("header") or {})},
                                   lambda u=upload: json.dumps({"oid": u.oid, "size": u.size}).encode())
                logger.debug("uploaded LFS object for %s (%d bytes)", upload.path, upload.size)
            if unanswered:  # committing a pointer to an object GitLab never took would lose the file
                raise GitLabError(f"LFS batch answer of {self.name} left out {len(unanswered)} object(s)")

    def _lfs_call(self, what: str, method: str, url: str, headers: dict[str, str], body: Callable[[], Any],
                  *, timeout: tuple[float, float] = (10, 120)) -> requests.Response:
        """An LFS request with retries (uploads are content-addressed, so repeating one is harmless)."""
        # GitLab's upload actions carry "Transfer-Encoding: chunked"; requests sends a file with a
        # Content-Length instead, and both at once would corrupt the upload. Its "Authorization" is an LFS
        # token of its own: keep it, fall back to ours.
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP | {"authorization"}}
        headers["Authorization"] = auth or self._secret.basic_auth()
        for attempt in range(1, self._retry.attempts + 1):
            payload = body()
            try:
                response = self._gl.session.request(method, url, headers=headers, data=payload, timeout=timeout)
            except _NETWORK_ERRORS as error:
                reason = type(error).__name__
            else:
                if response.status_code < 300:
                    return response
                if response.status_code in (401, 403):
                    raise GitLabAuthError(f"GitLab refused the token for {what} (HTTP {response.status_code})")
                if response.status_code not in _TRANSIENT_STATUS:
                    raise GitLabError(f"{what} failed: HTTP {response.status_code}: "
                                      f"{self._secret.redact(response.text[:300])}")
                reason = f"HTTP {response.status_code}"
                if response.status_code == 429 and response.headers.get("Retry-After", "").isdigit():
                    time.sleep(int(response.headers["Retry-After"]))
            finally:
                if hasattr(payload, "close"):
                    payload.close()
            if attempt == self._retry.attempts:
                raise GitLabUnavailable(f"{what} failed {attempt} times, last: {reason}")
            pause = self._retry.delay(attempt)
            logger.info("%s: %s; retry %d in %.1fs", what, reason, attempt, pause)
            time.sleep(pause)
        raise AssertionError("unreachable")

    # -- for operators' tools ------------------------------------------------------------------------
    @property
    def last_activity_at(self) -> datetime | None:
        """GitLab's ``last_activity_at`` of the project (pushes, issues, ...; moved at most hourly)."""
        value = self._info().get("last_activity_at")
        return _parse_time(value) if value else None


def _precondition_error(message: str, actions: list[FileAction]) -> StorageError | None:
    """GitLab's 400 answer → our exception, with the path when it can be told (GitLab names it only for
    "has changed"; otherwise we name it when just one action could have failed that way)."""
    def sole(kinds: tuple[str, ...]) -> str | None:
        paths = [a.path for a in actions if a.action in kinds]
        return paths[0] if len(paths) == 1 else None

    if "Could not update refs/heads/" in message:
        raise _BranchMoved(message)
    if "A file with this name already exists" in message:
        return FileAlreadyExists(message, path=sole(("create",)))
    if "A file with this name doesn't exist" in message:
        return FileMissing(message, path=sole(("update", "delete")))
    if match := re.search(r"The file has changed since you started editing it: (.+)$", message):
        return VersionConflict(message, path=match.group(1).strip())
    return None


# -- the source ------------------------------------------------------------------------------------------
@dataclass
class _Tracked:
    """What the source remembers about one project between polls."""

    info: dict[str, Any]
    store: GitLabProjectStore
    checked_activity: str | None = None  # the project's last_activity_at when its manifest was last checked
    manifest_blob: str | None = None  # None: no manifest on the default branch
    changed: bool = False  # the manifest changed since the worker last scanned it
    open_jobs: bool = False  # the last scan found unfinished jobs (e.g. a lease that may expire)
    handed_out: bool = False  # poll returned it and note_scanned has not come back yet


class GitLabSource(ProjectSource):
    """Every project the token is a member of that has ``gpu_jobs/manifest.yaml`` on its default branch.

    A poll costs one projects-list request (``last_activity_after``) plus one HEAD per project that was
    active recently; idle projects cost nothing. Projects with open jobs are handed out at every poll
    without asking GitLab anything. Every ``relist_seconds`` a full listing catches newly shared projects.

    ``activity_granularity``: GitLab moves ``last_activity_at`` at most once an hour
    (Event::RESET_PROJECT_ACTIVITY_INTERVAL), so a project whose activity time is that recent may have
    newer pushes than its timestamp shows; those projects get their manifest checked at every poll.
    """

    def __init__(
        self, url: str, token: str | None = None, *, manifest_path: str = MANIFEST_PATH,
        relist_seconds: float = 600.0, activity_granularity: float = 3600.0, timeout: float = 60.0,
        retry: RetryPolicy = RetryPolicy(), clock: Callable[[], float] = time.time,
        store_options: dict[str, Any] | None = None,
    ):
        self._url = url.rstrip("/")
        self._secret = _Secret(token or os.environ.get(TOKEN_ENV, ""))
        self._gl = _make_client(self._url, self._secret, timeout)
        self._manifest_path = manifest_path
        self._relist_seconds = relist_seconds
        self._granularity = timedelta(seconds=activity_granularity)
        self._retry = retry
        self._clock = clock
        self._store_options = store_options or {}
        self._tracked: dict[int, _Tracked] = {}
        self._last_poll: float | None = None
        self._last_full: float | None = None

    def __repr__(self) -> str:
        return f"GitLabSource({self._url!r}, {len(self._tracked)} project(s) known)"

    def poll(self) -> list[ProjectStore]:
        now = self._clock()
        full = self._last_full is None or now - self._last_full >= self._relist_seconds
        try:
            if full:
                listed = self._list_projects(None)
                self._forget_missing({p["id"] for p in listed})
                self._last_full = now
            else:
                since = datetime.fromtimestamp(self._last_poll, timezone.utc) - self._granularity - _CLOCK_SKEW
                listed = self._list_projects(since)
        except GitLabUnavailable as error:
            # Keep serving the projects we know are busy; the next poll's listing covers this one's gap.
            logger.warning("could not list GitLab projects: %s", error)
            listed = []
        else:
            self._last_poll = now
        recent = datetime.fromtimestamp(now, timezone.utc) - self._granularity - _CLOCK_SKEW
        for info in listed:
            tracked = self._track(info)
            activity = info.get("last_activity_at")
            if (tracked.checked_activity != activity or activity is None
                    or (self._granularity and _parse_time(activity) > recent)):
                self._check_manifest(tracked, activity)
        ready = [t for t in self._tracked.values()
                 if t.manifest_blob and (t.changed or t.open_jobs or t.handed_out)]
        for tracked in ready:
            tracked.changed = False
            tracked.handed_out = True
        logger.debug("poll: %d project(s) listed (%s), %d to scan", len(listed), "full" if full else "recent",
                     len(ready))
        return [t.store for t in ready]

    def note_scanned(self, store: ProjectStore, *, has_open_jobs: bool) -> None:
        for tracked in self._tracked.values():
            if tracked.store is store:
                tracked.handed_out = False
                tracked.open_jobs = has_open_jobs

    def close(self) -> None:
        self._tracked.clear()
        self._gl.session.close()

    def _list_projects(self, active_since: datetime | None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"membership": True, "simple": True, "per_page": 100, "order_by": "id", "sort": "asc"}
        if active_since is not None:
            query["last_activity_after"] = _iso(active_since)
        try:
            return _retrying("list projects", lambda: list(self._gl.http_list("/projects", query_data=query,
                                                                              iterator=True)),
                             self._retry, self._secret)
        except _NotFound as error:
            raise GitLabError(f"listing projects failed: {error}") from None

    def _track(self, info: dict[str, Any]) -> _Tracked:
        tracked = self._tracked.get(info["id"])
        if tracked is None:
            store = GitLabProjectStore(self._url, info["id"], token=self._secret, gl=self._gl, project_info=info,
                                       retry=self._retry, **self._store_options)
            tracked = self._tracked[info["id"]] = _Tracked(info, store)
        else:
            tracked.info = info
            tracked.store.update_info(info)
        return tracked

    def _check_manifest(self, tracked: _Tracked, activity: str | None) -> None:
        if not tracked.info.get("default_branch"):  # an empty repository
            tracked.checked_activity = activity
            return
        try:
            blob = tracked.store.blob_id(self._manifest_path)
        except GitLabError as error:
            # Check again next poll; one unreachable project must not stop the others.
            logger.warning("could not check %s for a manifest: %s", tracked.store.name, error)
            return
        if blob != tracked.manifest_blob:
            tracked.changed = blob is not None
            tracked.manifest_blob = blob
        tracked.checked_activity = activity

    def _forget_missing(self, visible: set[int]) -> None:
        for project_id in [i for i in self._tracked if i not in visible]:
            logger.info("project %s is no longer visible to the token", self._tracked[project_id].store.name)
            del self._tracked[project_id]

    # -- for operators' tools (preflight, one job by name, leaving idle projects) ---------------------
    def visible_stores(self) -> list[GitLabProjectStore]:
        """Every project the token is a member of, with a manifest or not (one full listing)."""
        return [self._track(info).store for info in self._list_projects(None)]

    def open_project(self, path_with_namespace: str) -> GitLabProjectStore:
        """The store of one project named by its path; raises ``GitLabError`` when the token cannot see it."""
        store = GitLabProjectStore(self._url, path_with_namespace, token=self._secret, gl=self._gl,
                                   retry=self._retry, **self._store_options)
        store._info()  # one look-up: an unknown project fails here, not at the first read
        return store

    def current_user(self) -> dict[str, Any]:
        """The token's user (``GET /user``): ``id``, ``username``, ..."""
        try:
            return _retrying("look up the token's user", lambda: self._gl.http_get("/user"), self._retry,
                             self._secret)
        except _NotFound as error:
            raise GitLabError(f"looking up the token's user failed: {error}") from None

    def token_info(self) -> dict[str, Any] | None:
        """What GitLab says about the token (``GET /personal_access_tokens/self``: ``scopes``, ``active``,
        ``expires_at``), or None where it cannot say: GitLab before 15.5, or not an access token."""
        try:
            return _retrying("look up the token", lambda: self._gl.http_get("/personal_access_tokens/self"),
                             self._retry, self._secret)
        except _NotFound:
            return None

    def leave_project(self, store: GitLabProjectStore, user_id: int) -> bool:
        """Remove ``user_id``'s own direct membership of the store's project (``DELETE
        /projects/:id/members/:user_id``). True when removed, False when it is no direct member there (404:
        e.g. a member through the project's group). Raises ``GitLabError`` when GitLab does not allow it
        (403: e.g. the user owns the project's namespace), ``GitLabAuthError`` when the token lacks ``api``."""
        path = f"/projects/{store._project.encoded_id}/members/{int(user_id)}"

        def delete() -> None:
            try:
                self._gl.http_delete(path)
            except gitlab.exceptions.GitlabError as error:
                if _status(error) != 403:
                    raise
                if "insufficient_scope" in str(error.error_message):
                    raise GitLabAuthError(f"the token may not leave {store.name}: it lacks the api scope") from None
                raise GitLabError(f"GitLab does not let the worker user leave {store.name} (HTTP 403; "
                                  "e.g. it owns the project's namespace)") from None

        try:
            _retrying(f"leave {store.name}", delete, self._retry, self._secret)
        except _NotFound:
            return False
        return True
