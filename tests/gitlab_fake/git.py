"""A bare git repository (dulwich) with the few queries the fake GitLab answers from.

Commits are real git commits in a real bare repository on disk (inspect one with
``git --git-dir=<root>/<id>.git log``). Objects are immutable, so everything derived from a commit id is
cached; only branch refs move, and only through ``compare_and_swap``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dulwich.object_store import commit_tree_changes, iter_tree_contents
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

FILE_MODE = 0o100644
EXEC_MODE = 0o100755
TREE_MODE = 0o040000


@dataclass(frozen=True)
class Entry:
    """One file in a commit's tree."""

    mode: int
    sha: str  # blob id, hex


class GitRepo:
    """A bare repository; paths are ``str``, object ids are hex ``str``."""

    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._repo = Repo.init_bare(str(path))
        self._store = self._repo.object_store
        self._refs_lock = threading.Lock()
        self._files_cache: dict[str, dict[str, Entry]] = {}
        self._last_commit_cache: dict[tuple[str, str], str | None] = {}

    # -- refs ----------------------------------------------------------------------------------------
    def head(self, branch: str) -> str | None:
        sha = self._repo.refs.as_dict().get(f"refs/heads/{branch}".encode())
        return sha.decode() if sha else None

    def branches(self) -> dict[str, str]:
        return {name.decode(): sha.decode() for name, sha in self._repo.refs.as_dict(b"refs/heads").items()}

    def set_default_branch(self, branch: str) -> None:
        self._repo.refs.set_symbolic_ref(b"HEAD", f"refs/heads/{branch}".encode())

    def compare_and_swap(self, branch: str, old: str | None, new: str) -> bool:
        """Move ``branch`` to ``new`` only if it still points at ``old`` — the atomic step of a commit."""
        with self._refs_lock:
            if self.head(branch) != old:
                return False
            self._repo.refs[f"refs/heads/{branch}".encode()] = new.encode()
            return True

    def resolve(self, ref: str | None, default_branch: str) -> str | None:
        """A branch name or full commit id → commit id, or None."""
        ref = ref or default_branch
        sha = self.head(ref)
        if sha is not None:
            return sha
        if len(ref) == 40 and all(c in "0123456789abcdef" for c in ref):
            try:
                if isinstance(self._store[ref.encode()], Commit):
                    return ref
            except KeyError:
                return None
        return None

    # -- objects -------------------------------------------------------------------------------------
    def commit(self, sha: str) -> Commit:
        return self._store[sha.encode()]

    def blob(self, sha: str) -> bytes:
        return self._store[sha.encode()].as_raw_string()

    def add_blob(self, data: bytes) -> str:
        blob = Blob.from_string(data)
        self._store.add_object(blob)
        return blob.id.decode()

    def files(self, commit_sha: str | None) -> dict[str, Entry]:
        """Every file of a commit (a fresh dict the caller may change)."""
        if commit_sha is None:
            return {}
        cached = self._files_cache.get(commit_sha)
        if cached is None:
            tree = self.commit(commit_sha).tree
            cached = {
                e.path.decode(): Entry(e.mode, e.sha.decode())
                for e in iter_tree_contents(self._store, tree)
            }
            self._files_cache[commit_sha] = cached
        return dict(cached)

    def entry(self, commit_sha: str | None, path: str) -> Entry | None:
        return self.files(commit_sha).get(path) if commit_sha else None

    def tree_items(self, commit_sha: str, folder: str, recursive: bool) -> list[dict] | None:
        """GitLab's tree entries under ``folder`` (None when it is not a folder of that commit)."""
        root = self.commit(commit_sha).tree
        if folder:
            try:
                mode, root = self._store[root].lookup_path(self._store.__getitem__, folder.encode())
            except KeyError:
                return None
            if mode != TREE_MODE:
                return None
        items = []
        prefix = f"{folder}/" if folder else ""
        if recursive:
            entries = iter_tree_contents(self._store, root, include_trees=True)
        else:
            entries = (e for e in self._store[root].iteritems())
        for e in entries:
            if not e.path:  # the folder itself
                continue
            path = prefix + e.path.decode()
            items.append({
                "id": e.sha.decode(),
                "name": path.rsplit("/", 1)[-1],
                "type": "tree" if e.mode == TREE_MODE else "blob",
                "path": path,
                "mode": f"{e.mode:06o}",
            })
        if not recursive:  # GitLab lists folders first, then files
            items.sort(key=lambda item: (item["type"] != "tree", item["name"]))
        return items

    def history(self, commit_sha: str | None) -> Iterator[str]:
        """First-parent history, newest first (our repositories are linear)."""
        while commit_sha:
            yield commit_sha
            parents = self.commit(commit_sha).parents
            commit_sha = parents[0].decode() if parents else None

    def last_commit_for(self, commit_sha: str | None, path: str) -> str | None:
        """The newest commit at or before ``commit_sha`` that changed ``path`` (``git log -1 -- path``)."""
        walked = []
        result = None
        for sha in self.history(commit_sha):
            key = (sha, path)
            if key in self._last_commit_cache:
                result = self._last_commit_cache[key]
                break
            walked.append(sha)
            parents = self.commit(sha).parents
            parent = parents[0].decode() if parents else None
            if self.entry(sha, path) != self.entry(parent, path):
                result = sha
                break
        for sha in walked:
            self._last_commit_cache[(sha, path)] = result
        return result

    def write_commit(
        self, parent: str | None, before: dict[str, Entry], after: dict[str, Entry], message: str,
        author: str, when: float | None = None,
    ) -> str:
        """Store a commit whose tree is ``after`` (``before`` is the parent's file map); the branch
        does not move — see ``compare_and_swap``."""
        changes = [(p.encode(), e.mode, e.sha.encode()) for p, e in after.items() if before.get(p) != e]
        changes += [(p.encode(), None, None) for p in before if p not in after]
        if parent is None:
            empty = Tree()
            self._store.add_object(empty)
            base = empty.id
        else:
            base = self.commit(parent).tree
        commit = Commit()
        commit.tree = commit_tree_changes(self._store, base, changes) if changes else base
        commit.parents = [parent.encode()] if parent else []
        commit.author = commit.committer = author.encode()
        commit.author_time = commit.commit_time = int(when if when is not None else time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = message.encode("utf-8")
        self._store.add_object(commit)
        return commit.id.decode()
