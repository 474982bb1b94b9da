"""The endpoints of the fake GitLab: one function per endpoint, each turning a Request into a Response.

Routing, authentication, faults and the socket are ``handler.py``'s business; this module only knows GitLab.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, Callable

from .commits import CommitRejected
from .lfs import parse_pointer
from .responses import (
    LFS_JSON,
    NOT_FOUND,
    Response,
    commit_json,
    error,
    json_response,
    paginate,
    paginate_keyset,
    project_json,
)

if TYPE_CHECKING:
    from .projects import Project
    from .server import GitLabApp

TRUE_VALUES = {"1", "true", "t", "yes", "y", "on"}
LFS_MISSING = "Object does not exist on the server or you don't have permissions to access it"


@dataclass
class Request:
    method: str
    params: dict[str, str]  # path parameters, already unquoted
    query: dict[str, str]
    body: bytes
    reader: BinaryIO | None  # for streamed uploads (LFS PUT), whose body is not read in advance
    length: int | None  # None for a chunked body
    authorization: str  # echoed into LFS actions, as GitLab does
    url: str  # the request URL without its query, for Link headers


def truthy(value: str | None) -> bool:
    return (value or "").lower() in TRUE_VALUES


def _time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.strip().replace(" ", "+"))
    if moment.tzinfo is None:
        raise ValueError(value)
    return moment


# -- projects ------------------------------------------------------------------------------------------
def list_projects(app: "GitLabApp", req: Request) -> Response:
    projects = [p for p in app.registry.all() if p.visible]  # private projects: only the user's own
    for key, keep in (("last_activity_after", lambda p, t: p.last_activity_at > t),
                      ("last_activity_before", lambda p, t: p.last_activity_at < t)):
        if req.query.get(key):
            try:
                moment = _time(req.query[key])
            except ValueError:
                return error(400, f"{key} is invalid", key="error")
            projects = [p for p in projects if keep(p, moment)]
    order_by = req.query.get("order_by", "created_at")
    keys: dict[str, Callable[[Project], object]] = {
        "id": lambda p: p.id, "created_at": lambda p: (p.created_at, p.id), "name": lambda p: p.name,
        "path": lambda p: p.path_with_namespace, "last_activity_at": lambda p: (p.last_activity_at, p.id),
        "updated_at": lambda p: (p.last_activity_at, p.id),
    }
    if order_by not in keys:
        return error(400, "order_by does not have a valid value", key="error")
    projects.sort(key=keys[order_by], reverse=req.query.get("sort", "desc") != "asc")
    simple = truthy(req.query.get("simple"))
    items = [project_json(p, app.url, simple=simple) for p in projects]
    chunk, headers = paginate(items, req.query, req.url)
    return json_response(200, chunk, headers)


def get_project(app: "GitLabApp", req: Request, project: "Project") -> Response:
    return json_response(200, project_json(project, app.url, simple=False))


# -- the token and its user ----------------------------------------------------------------------------
def current_user(app: "GitLabApp", req: Request) -> Response:
    """``GET /user``: the token's user (API::Entities::UserPublic, the fields a client looks at)."""
    owner = app.owner
    return json_response(200, {
        "id": owner.id, "username": owner.username, "name": owner.name, "state": "active", "locked": False,
        "avatar_url": None, "web_url": f"{app.url}/{owner.username}", "created_at": "2024-01-02T03:04:05.000Z",
        "bio": "", "public_email": None, "bot": False, "email": f"{owner.username}@example.org",
        "can_create_group": True, "can_create_project": True, "two_factor_enabled": False, "external": False,
    })


def token_self(app: "GitLabApp", req: Request) -> Response:
    """``GET /personal_access_tokens/self`` (GitLab 15.5+), answered for any scope: a token may always
    look at itself. Older GitLab has no such route: the generic 404 of an unknown path."""
    owner = app.owner
    if not owner.self_endpoint:
        return error(404, NOT_FOUND, key="error")
    return json_response(200, {
        "id": 7, "name": "codex worker", "revoked": False, "created_at": "2024-01-02T03:04:05.000Z",
        "description": None, "scopes": list(owner.scopes), "user_id": owner.id, "last_used_at": None,
        "active": True, "expires_at": owner.expires_at.isoformat() if owner.expires_at else None,
    })


def delete_member(app: "GitLabApp", req: Request, project: "Project") -> Response:
    """``DELETE /projects/:id/members/:user_id``: 204; 404 for a user who is no direct member (e.g. one
    through the project's group); 403 where GitLab does not allow it (the owner of the personal namespace)."""
    if req.params["user_id"] != str(app.owner.id) or project.membership == "inherited":
        return error(404, "404 Not found")
    if project.membership == "owner":
        return error(403, "403 Forbidden")
    project.membership = "none"
    return Response(204)


# -- repository reads ----------------------------------------------------------------------------------
def tree(app: "GitLabApp", req: Request, project: "Project") -> Response:
    sha = project.repo.resolve(req.query.get("ref"), project.default_branch)
    folder = req.query.get("path", "").strip("/")
    items = project.repo.tree_items(sha, folder, truthy(req.query.get("recursive"))) if sha else None
    if items is None:
        return error(404, "404 Tree Not Found")
    if req.query.get("pagination") == "keyset":
        paged = paginate_keyset(items, req.query, req.url)
        if paged is None:
            return error(400, "page_token is invalid", key="error")
        chunk, headers = paged
    else:
        chunk, headers = paginate(items, req.query, req.url)
    return json_response(200, chunk, headers)


def _file(project: "Project", req: Request, *, ref_required: bool = True) -> tuple[str, str, bytes] | Response:
    """(commit id, blob id, blob bytes) of the requested file, or the error GitLab gives."""
    if ref_required and not req.query.get("ref"):
        return error(400, "ref is missing", key="error")  # only the raw endpoint defaults to the default branch
    sha = project.repo.resolve(req.query.get("ref"), project.default_branch)
    if sha is None:
        return error(404, "404 Commit Not Found")
    entry = project.repo.entry(sha, req.params["file_path"])
    if entry is None:
        return error(404, "404 File Not Found")
    return sha, entry.sha, project.repo.blob(entry.sha)


def _file_headers(project: "Project", req: Request, sha: str, blob_id: str, data: bytes) -> dict[str, str]:
    path = req.params["file_path"]
    entry = project.repo.entry(sha, path)
    return {
        "X-Gitlab-Blob-Id": blob_id,
        "X-Gitlab-Commit-Id": sha,
        "X-Gitlab-Content-Sha256": hashlib.sha256(data).hexdigest(),
        "X-Gitlab-Encoding": "base64",
        "X-Gitlab-Execute-Filemode": "true" if entry and entry.mode == 0o100755 else "false",
        "X-Gitlab-File-Name": path.rsplit("/", 1)[-1],
        "X-Gitlab-File-Path": path,
        "X-Gitlab-Last-Commit-Id": project.repo.last_commit_for(sha, path) or sha,
        "X-Gitlab-Ref": req.query.get("ref") or project.default_branch,
        "X-Gitlab-Size": str(len(data)),
    }


def get_file(app: "GitLabApp", req: Request, project: "Project") -> Response:
    found = _file(project, req)
    if isinstance(found, Response):
        return found
    sha, blob_id, data = found
    path = req.params["file_path"]
    return json_response(200, {
        "file_name": path.rsplit("/", 1)[-1],
        "file_path": path,
        "size": len(data),
        "encoding": "base64",
        "content_sha256": hashlib.sha256(data).hexdigest(),
        "ref": req.query.get("ref") or project.default_branch,
        "blob_id": blob_id,
        "commit_id": sha,
        "last_commit_id": project.repo.last_commit_for(sha, path) or sha,
        "execute_filemode": project.repo.entry(sha, path).mode == 0o100755,
        "content": base64.b64encode(data).decode(),
    })


def head_file(app: "GitLabApp", req: Request, project: "Project") -> Response:
    found = _file(project, req)
    if isinstance(found, Response):
        return Response(found.status)  # a HEAD answer carries no body
    sha, blob_id, data = found
    return Response(200, headers={"Content-Type": "application/json",
                                  **_file_headers(project, req, sha, blob_id, data)})


def raw_file(app: "GitLabApp", req: Request, project: "Project") -> Response:
    found = _file(project, req, ref_required=False)
    if isinstance(found, Response):
        return found
    sha, blob_id, data = found
    headers = {"Content-Type": "text/plain; charset=utf-8", **_file_headers(project, req, sha, blob_id, data)}
    pointer = parse_pointer(data) if truthy(req.query.get("lfs")) else None
    if pointer is None:
        return Response(200, data, headers)
    oid, size = pointer
    if oid not in project.lfs_oids or not app.registry.lfs.has(oid, size):
        return error(404, "404 Not found")
    headers["Content-Type"] = "application/octet-stream"
    return Response(200, headers=headers, stream=(lambda: app.registry.lfs.open(oid), size))


def archive(app: "GitLabApp", req: Request, project: "Project") -> Response:
    if req.params.get("format", "tar.gz") not in ("tar.gz", "tgz"):
        return error(400, "Only tar.gz archives are served by this test server")
    sha = project.repo.resolve(req.query.get("sha"), project.default_branch)
    if sha is None:
        return error(404, NOT_FOUND)
    folder = req.query.get("path", "").strip("/")
    with_lfs = req.query.get("include_lfs_blobs", "true").lower() in TRUE_VALUES
    prefix = f"{project.name}-{sha}" + (f"-{folder.replace('/', '-')}" if folder else "")
    spool = tempfile.TemporaryFile()
    with tarfile.open(fileobj=spool, mode="w:gz", compresslevel=1) as tar:
        for path, entry in sorted(project.repo.files(sha).items()):
            if folder and not path.startswith(folder + "/"):
                continue
            data = project.repo.blob(entry.sha)
            pointer = parse_pointer(data) if with_lfs else None
            info = tarfile.TarInfo(f"{prefix}/{path}")
            info.mode = 0o755 if entry.mode == 0o100755 else 0o644
            info.mtime = project.repo.commit(sha).commit_time
            if pointer and pointer[0] in project.lfs_oids and app.registry.lfs.has(*pointer):
                info.size = pointer[1]
                with app.registry.lfs.open(pointer[0]) as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    size = spool.tell()
    spool.seek(0)
    headers = {"Content-Type": "application/octet-stream",
               "Content-Disposition": f'attachment; filename="{prefix}.tar.gz"'}
    return Response(200, headers=headers, stream=(lambda: spool, size))


# -- commits -------------------------------------------------------------------------------------------
def list_commits(app: "GitLabApp", req: Request, project: "Project") -> Response:
    sha = project.repo.resolve(req.query.get("ref_name"), project.default_branch)
    if sha is None:
        return error(404, "404 Commit Not Found")
    try:
        since = _time(req.query["since"]).timestamp() if req.query.get("since") else None
        until = _time(req.query["until"]).timestamp() if req.query.get("until") else None
    except ValueError:
        return error(400, "since/until is invalid", key="error")
    path = req.query.get("path")
    shas = []
    for commit_sha in project.repo.history(sha):
        when = project.repo.commit(commit_sha).commit_time
        if (since is not None and when < since) or (until is not None and when > until):
            continue
        if path and project.repo.last_commit_for(commit_sha, path) != commit_sha:
            continue
        shas.append(commit_sha)
    chunk, headers = paginate(shas, req.query, req.url)
    return json_response(200, [commit_json(project, s, app.url) for s in chunk], headers)


def get_commit(app: "GitLabApp", req: Request, project: "Project") -> Response:
    sha = project.repo.resolve(req.params["sha"], project.default_branch)
    if sha is None:
        return error(404, "404 Commit Not Found")
    return json_response(200, commit_json(project, sha, app.url))


def create_commit(app: "GitLabApp", req: Request, project: "Project") -> Response:
    try:
        body = json.loads(req.body or b"null")
    except ValueError:
        return error(400, "The provided content-type 'application/json' is not supported.", key="error")
    try:
        sha = app.engine.commit(project, body)
    except CommitRejected as rejected:
        return json_response(rejected.status, rejected.body)
    data = commit_json(project, sha, app.url)
    data.update({"stats": {"additions": 0, "deletions": 0, "total": 0}, "status": None,
                 "project_id": project.id, "last_pipeline": None})
    return json_response(201, data)


def get_branch(app: "GitLabApp", req: Request, project: "Project") -> Response:
    sha = project.repo.head(req.params["branch"])
    if sha is None:
        return error(404, "404 Branch Not Found")
    return json_response(200, {"name": req.params["branch"], "commit": commit_json(project, sha, app.url),
                               "default": req.params["branch"] == project.default_branch, "protected": False})


# -- Git LFS -------------------------------------------------------------------------------------------
_OID = re.compile(r"^[0-9a-f]{64}$")


def lfs_batch(app: "GitLabApp", req: Request, project: "Project") -> Response:
    """Repositories::LfsApiController#batch: upload actions only for objects the project lacks (with the
    ``Transfer-Encoding: chunked`` header GitLab adds), download actions or a 404 error per object."""
    try:
        body = json.loads(req.body or b"null")
        operation = body["operation"]
        objects = body.get("objects")
    except (ValueError, KeyError, TypeError, AttributeError):
        return json_response(422, {"message": "Unprocessable entity"}, content_type=LFS_JSON)
    if not objects:
        return json_response(404, {"message": "Not found."}, content_type=LFS_JSON)
    if operation not in ("upload", "download"):
        return json_response(422, {"message": f"Unsupported operation {operation!r}"}, content_type=LFS_JSON)
    repo_url = f"{app.url}/{project.path_with_namespace}.git"
    answers = []
    for item in objects:
        oid, size = str(item.get("oid", "")), item.get("size")
        answer: dict = {"oid": oid, "size": size}
        present = oid in project.lfs_oids and app.registry.lfs.has(oid, size if isinstance(size, int) else None)
        if not _OID.match(oid) or not isinstance(size, int) or size < 0:
            answer["error"] = {"code": 422, "message": "Invalid object"}
        elif operation == "upload" and not present:
            answer["actions"] = {"upload": {"href": f"{repo_url}/gitlab-lfs/objects/{oid}/{size}",
                                            "header": {"Authorization": req.authorization,
                                                       "Content-Type": "application/octet-stream",
                                                       "Transfer-Encoding": "chunked"}}}
        elif operation == "download":
            if present:
                answer["actions"] = {"download": {"href": f"{repo_url}/gitlab-lfs/objects/{oid}",
                                                  "header": {"Authorization": req.authorization}}}
                answer["authenticated"] = True
            else:
                answer["error"] = {"code": 404, "message": LFS_MISSING}
        answers.append(answer)
    return json_response(200, {"objects": answers}, content_type=LFS_JSON)


def lfs_put(app: "GitLabApp", req: Request, project: "Project") -> Response:
    """The upload href: the body (plain or chunked) must be exactly the object named in the URL."""
    oid, size = req.params["oid"], int(req.params["size"])
    if req.length is not None and req.length != size:
        return error(400, "Content-Length does not match the object size")
    try:
        app.registry.lfs.put_stream(req.reader, size, expected_oid=oid)
        if req.reader.read(1):
            raise ValueError("more bytes than the object size")
    except ValueError as problem:
        return error(422, f"Upload rejected: {problem}")
    project.lfs_oids.add(oid)
    return Response(200, b"", {"Content-Type": "text/plain"})


def lfs_get(app: "GitLabApp", req: Request, project: "Project") -> Response:
    oid = req.params["oid"]
    if oid not in project.lfs_oids or not app.registry.lfs.has(oid):
        return error(404, LFS_MISSING)
    size = app.registry.lfs.path(oid).stat().st_size
    return Response(200, headers={"Content-Type": "application/octet-stream"},
                    stream=(lambda: app.registry.lfs.open(oid), size))
