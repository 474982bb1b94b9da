"""Answers of the fake GitLab: the Response type, GitLab's JSON shapes, and its pagination headers."""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO, Callable
from urllib.parse import urlencode

from .projects import Project, iso

JSON = "application/json"
LFS_JSON = "application/vnd.git-lfs+json"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # A large body is sent from a file instead of ``body``: (open, length).
    stream: tuple[Callable[[], BinaryIO], int] | None = None

    @property
    def length(self) -> int:
        return self.stream[1] if self.stream else len(self.body)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None,
                  content_type: str = JSON) -> Response:
    return Response(status, json.dumps(payload).encode(), {"Content-Type": content_type, **(headers or {})})


def error(status: int, message: str, key: str = "message") -> Response:
    return json_response(status, {key: message})


NOT_FOUND = "404 Not Found"


def project_json(project: Project, base_url: str, *, simple: bool) -> dict:
    namespace = project.namespace
    web_url = f"{base_url}/{project.path_with_namespace}"
    data = {
        "id": project.id,
        "description": None,
        "name": project.name,
        "name_with_namespace": f"{namespace} / {project.name}",
        "path": project.name,
        "path_with_namespace": project.path_with_namespace,
        "created_at": iso(project.created_at),
        "default_branch": project.default_branch,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": f"git@127.0.0.1:{project.path_with_namespace}.git",
        "http_url_to_repo": f"{web_url}.git",
        "web_url": web_url,
        "readme_url": None,
        "forks_count": 0,
        "avatar_url": None,
        "star_count": 0,
        "last_activity_at": iso(project.last_activity_at),
        "namespace": {"id": zlib.crc32(namespace.encode()) % 10**6, "name": namespace, "path": namespace.rsplit("/", 1)[-1],
                      "kind": "group", "full_path": namespace, "parent_id": None, "avatar_url": None,
                      "web_url": f"{base_url}/groups/{namespace}"},
    }
    if not simple:
        data.update({"visibility": "private", "archived": False, "empty_repo": project.repo.head(
            project.default_branch) is None, "lfs_enabled": True, "open_issues_count": 0})
    return data


def _commit_date(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


_TRAILER = re.compile(r"^([A-Za-z0-9-]+): (.+)$")


def _trailers(message: str) -> dict[str, str]:
    last = message.strip().split("\n\n")[-1].splitlines()
    found = [_TRAILER.match(line) for line in last]
    if not found or not all(found):
        return {}
    return {m.group(1): m.group(2) for m in found if m}


def commit_json(project: Project, sha: str, base_url: str) -> dict:
    commit = project.repo.commit(sha)
    message = commit.message.decode("utf-8", "replace")
    author_name, _, author_email = commit.author.decode().partition(" <")
    committer_name, _, committer_email = commit.committer.decode().partition(" <")
    return {
        "id": sha,
        "short_id": sha[:8],
        "created_at": _commit_date(commit.commit_time),
        "parent_ids": [p.decode() for p in commit.parents],
        "title": message.split("\n", 1)[0],
        "message": message,
        "author_name": author_name,
        "author_email": author_email.rstrip(">"),
        "authored_date": _commit_date(commit.author_time),
        "committer_name": committer_name,
        "committer_email": committer_email.rstrip(">"),
        "committed_date": _commit_date(commit.commit_time),
        "trailers": _trailers(message),
        "extended_trailers": {k: [v] for k, v in _trailers(message).items()},
        "web_url": f"{base_url}/{project.path_with_namespace}/-/commit/{sha}",
    }


def paginate(items: list, query: dict[str, str], url: str) -> tuple[list, dict[str, str]]:
    """GitLab's offset pagination: ``page``/``per_page`` in, ``X-*`` and ``Link`` headers out."""
    per_page = _int(query.get("per_page"), DEFAULT_PER_PAGE)
    per_page = min(max(per_page, 1), MAX_PER_PAGE)
    page = max(_int(query.get("page"), 1), 1)
    total = len(items)
    pages = max(1, math.ceil(total / per_page))
    chunk = items[(page - 1) * per_page: page * per_page]

    def link(number: int) -> str:
        return f"{url}?{urlencode({**query, 'page': number, 'per_page': per_page})}"

    links = []
    if page > 1:
        links.append(f'<{link(page - 1)}>; rel="prev"')
    if page < pages:
        links.append(f'<{link(page + 1)}>; rel="next"')
    links += [f'<{link(1)}>; rel="first"', f'<{link(pages)}>; rel="last"']
    headers = {
        "X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(total), "X-Total-Pages": str(pages),
        "X-Next-Page": str(page + 1) if page < pages else "", "X-Prev-Page": str(page - 1) if page > 1 else "",
        "Link": ", ".join(links),
    }
    return chunk, headers


def keyset_token(item: dict) -> str:
    """An opaque page token: the hash of the entry's path (unique, unlike blob ids)."""
    return hashlib.sha1(item["path"].encode()).hexdigest()


def paginate_keyset(items: list[dict], query: dict[str, str], url: str) -> tuple[list, dict[str, str]] | None:
    """GitLab's keyset pagination for trees: ``page_token`` in, only a ``Link: rel="next"`` out.
    None when the token names no entry."""
    per_page = min(max(_int(query.get("per_page"), DEFAULT_PER_PAGE), 1), MAX_PER_PAGE)
    start = 0
    token = query.get("page_token")
    if token:
        positions = [i for i, item in enumerate(items) if keyset_token(item) == token]
        if not positions:
            return None
        start = positions[0] + 1
    chunk = items[start: start + per_page]
    headers = {"X-Per-Page": str(per_page)}
    if start + per_page < len(items):
        nxt = {k: v for k, v in query.items() if k != "page_token"}
        nxt["page_token"] = keyset_token(chunk[-1])
        headers["Link"] = f'<{url}?{urlencode(nxt)}>; rel="next"'
    return chunk, headers


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default
