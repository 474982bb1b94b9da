"""``POST /projects/:id/repository/commits`` with GitLab's semantics, step by step.

Read from GitLab's own code (Files::MultiService, Files::BaseService#file_has_changed?, Lfs::FileTransformer)
and gitaly's UserCommitFiles:

1. ``last_commit_id`` of every update/move/delete/chmod is checked first, GitLab's way: the path's last
   commit on the branch is compared with the path's last commit *as of* ``last_commit_id``; a missing file
   or an unknown commit id passes (and is then a blind write).
2. Only ``create`` actions on LFS-tracked paths are turned into LFS objects + pointers — whatever their
   content, even a pointer text (GitLab then stores the pointer text as the object). ``update`` content is
   committed as sent, so an update of an LFS path must carry a pointer text of an uploaded object.
3. The actions are applied in order to the parent's tree ("A file with this name already exists" /
   "doesn't exist" name the first failing action only by its kind, not its path).
4. The branch moves only if it still points at the parent; otherwise "Could not update refs/heads/...".

Steps 1–3 run without a lock, like GitLab, so two concurrent commits can race; step 4 decides.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Callable

from .git import EXEC_MODE, FILE_MODE, Entry
from .lfs import pointer_text
from .projects import Project, Registry

API_AUTHOR = "Worker Bot <worker-bot@example.org>"
MSG_EXISTS = "A file with this name already exists"
MSG_MISSING = "A file with this name doesn't exist"
MSG_CHANGED = "The file has changed since you started editing it: {path}"
MSG_MOVED = "Could not update refs/heads/{branch}. Please refresh and try again."
ACTIONS = ("create", "update", "delete", "move", "chmod")


class CommitRejected(Exception):
    """The commit was not applied; ``status`` and ``body`` are GitLab's answer."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body)
        self.status = status
        self.body = body


def _message(text: str) -> CommitRejected:
    return CommitRejected(400, {"message": text})


def _param_error(text: str) -> CommitRejected:
    # Grape's parameter validation answers with "error", not "message".
    return CommitRejected(400, {"error": text})


@dataclass
class CommitEngine:
    registry: Registry
    # Called after the new commit is written and before the branch moves: tests use it to push a
    # translator's commit in between (the "branch moved" race, made deterministic).
    before_ref_update: Callable[[Project], None] | None = None

    def commit(self, project: Project, body: Any) -> str:
        branch, message, actions, author = _validate(body)
        branch_head = project.repo.head(branch)
        parent = branch_head
        if parent is None:
            start = body.get("start_branch")
            parent = project.repo.head(start) if isinstance(start, str) else None
            if parent is None:
                raise _message("You can only create or edit files when you are on a branch")
        for action in actions:
            self._check_unchanged(project, parent, action)
        before = project.repo.files(parent)
        after = dict(before)
        rules = project.lfs_rules(parent)
        for action in actions:
            self._apply(project, rules, after, action)
        sha = project.repo.write_commit(parent, before, after, message, author)
        if self.before_ref_update is not None:
            self.before_ref_update(project)
        with project.lock:
            if not project.repo.compare_and_swap(branch, branch_head, sha):
                raise _message(MSG_MOVED.format(branch=branch))
            self.registry.touch(project)
        return sha

    def _check_unchanged(self, project: Project, branch_head: str, action: dict) -> None:
        last_known = action.get("last_commit_id")
        if action["action"] == "create" or not last_known:
            return
        path = action.get("previous_path") or action["file_path"]
        repo = project.repo
        on_branch = repo.last_commit_for(branch_head, path)
        if on_branch is None:
            return
        base = repo.resolve(str(last_known), project.default_branch)
        as_of_base = repo.last_commit_for(base, path) if base else None
        if as_of_base is not None and as_of_base != on_branch:
            raise _message(MSG_CHANGED.format(path=path))

    def _apply(self, project: Project, rules, files: dict[str, Entry], action: dict) -> None:
        kind, path = action["action"], action["file_path"]
        if kind == "create":
            if _occupied(files, path):
                raise _message(MSG_EXISTS)
            data = _content(action)
            if rules.tracks(path):
                oid, size = self.registry.lfs.put_bytes(data)
                project.lfs_oids.add(oid)
                data = pointer_text(oid, size)
            mode = EXEC_MODE if action.get("execute_filemode") else FILE_MODE
            files[path] = Entry(mode, project.repo.add_blob(data))
        elif kind == "update":
            if path not in files:
                raise _message(MSG_MISSING)
            files[path] = Entry(files[path].mode, project.repo.add_blob(_content(action)))
        elif kind == "delete":
            if path not in files:
                raise _message(MSG_MISSING)
            del files[path]
        elif kind == "move":
            previous = action.get("previous_path")
            if not previous or previous not in files:
                raise _message(MSG_MISSING)
            if _occupied(files, path):
                raise _message(MSG_EXISTS)
            entry = files.pop(previous)
            if action.get("content") is not None:
                entry = Entry(entry.mode, project.repo.add_blob(_content(action)))
            files[path] = entry
        elif kind == "chmod":
            if path not in files:
                raise _message(MSG_MISSING)
            mode = EXEC_MODE if action.get("execute_filemode") else FILE_MODE
            files[path] = Entry(mode, files[path].sha)


def _validate(body: Any) -> tuple[str, str, list[dict], str]:
    if not isinstance(body, dict):
        raise _param_error("branch is missing, commit_message is missing, actions is missing")
    for key in ("branch", "commit_message", "actions"):
        if not body.get(key):
            raise _param_error(f"{key} is missing")
    actions = body["actions"]
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise _param_error("actions is invalid")
    for index, action in enumerate(actions):
        if action.get("action") not in ACTIONS:
            raise _param_error(f"actions[{index}][action] does not have a valid value")
        if not isinstance(action.get("file_path"), str) or not action["file_path"]:
            raise _param_error(f"actions[{index}][file_path] is missing")
        if action.get("encoding", "text") not in ("text", "base64"):
            raise _param_error(f"actions[{index}][encoding] does not have a valid value")
        if ".." in action["file_path"].split("/") or action["file_path"].startswith("/"):
            raise _message("Your changes could not be committed, because the file path contains a directory "
                           "traversal")
    author = API_AUTHOR
    if body.get("author_name") and body.get("author_email"):
        author = f"{body['author_name']} <{body['author_email']}>"
    return str(body["branch"]), str(body["commit_message"]), actions, author


def _content(action: dict) -> bytes:
    content = action.get("content")
    if content is None:
        return b""
    if action.get("encoding") == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise _param_error("content is not valid base64") from None
    return str(content).encode("utf-8")


def _occupied(files: dict[str, Entry], path: str) -> bool:
    """A file at ``path``, a folder there, or a file where a parent folder of ``path`` would go."""
    if path in files:
        return True
    folder = path + "/"
    if any(p.startswith(folder) for p in files):
        return True
    parts = path.split("/")
    return any("/".join(parts[:i]) in files for i in range(1, len(parts)))
