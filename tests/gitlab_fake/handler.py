"""The HTTP side of the fake GitLab: routes, authentication, injected faults, accounting, and the socket."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, BinaryIO, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from . import api
from .responses import NOT_FOUND, Response, error, json_response

if TYPE_CHECKING:
    from .server import GitLabApp

logger = logging.getLogger(__name__)

_PROJECT = r"/api/v4/projects/(?P<project>[^/]+)"
_REPO = r"/(?P<repo>[^?]+?)\.git"
_CHUNK = 256 * 1024


class Route:
    def __init__(self, method: str, pattern: str, template: str, endpoint: Callable, *, lfs: bool = False,
                 streamed_upload: bool = False, project: bool = True, scopes: frozenset[str] | None = None):
        self.method = method
        self.regex = re.compile(f"^{pattern}$")
        self.template = template  # what /__stats counts under, e.g. "GET /projects/:id/repository/tree"
        self.endpoint = endpoint
        self.lfs = lfs  # git-over-HTTP auth rules (Basic) and project lookup by repository path
        self.streamed_upload = streamed_upload
        self.project = project  # the endpoint takes the project the path names
        self.scopes = scopes if scopes is not None else _default_scopes(method, lfs)  # any one of them will do

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"


# Token scopes as GitLab checks them: the REST API writes only with ``api`` (``write_repository`` is for
# git over HTTP, "not using the API"), reads with ``api`` or ``read_api``; git (LFS) with the repository scopes.
_READ_API = frozenset({"api", "read_api"})
_GIT_READ = frozenset({"api", "read_repository", "write_repository"})
_GIT_WRITE = frozenset({"api", "write_repository"})
ANY_SCOPE = frozenset({"*"})
INSUFFICIENT_SCOPE = "The request requires higher privileges than provided by the access token."


def _default_scopes(method: str, lfs: bool) -> frozenset[str]:
    if lfs:
        return _GIT_WRITE if method == "PUT" else _GIT_READ
    return _READ_API if method in ("GET", "HEAD") else frozenset({"api"})


ROUTES = [
    Route("GET", r"/api/v4/projects", "/projects", api.list_projects, project=False),
    Route("GET", r"/api/v4/user", "/user", api.current_user, project=False,
          scopes=frozenset({"api", "read_api", "read_user"})),
    Route("GET", r"/api/v4/personal_access_tokens/self", "/personal_access_tokens/self", api.token_self,
          project=False, scopes=ANY_SCOPE),
    Route("DELETE", _PROJECT + r"/members/(?P<user_id>[^/]+)", "/projects/:id/members/:user_id",
          api.delete_member),
    Route("GET", _PROJECT, "/projects/:id", api.get_project),
    Route("GET", _PROJECT + r"/repository/tree", "/projects/:id/repository/tree", api.tree),
    Route("GET", _PROJECT + r"/repository/files/(?P<file_path>[^/]+)", "/projects/:id/repository/files/:path",
          api.get_file),
    Route("HEAD", _PROJECT + r"/repository/files/(?P<file_path>[^/]+)", "/projects/:id/repository/files/:path",
          api.head_file),
    Route("GET", _PROJECT + r"/repository/files/(?P<file_path>[^/]+)/raw",
          "/projects/:id/repository/files/:path/raw", api.raw_file),
    Route("GET", _PROJECT + r"/repository/archive(?:\.(?P<format>[a-z.0-9]+))?", "/projects/:id/repository/archive",
          api.archive),
    Route("GET", _PROJECT + r"/repository/commits", "/projects/:id/repository/commits", api.list_commits),
    Route("POST", _PROJECT + r"/repository/commits", "/projects/:id/repository/commits", api.create_commit),
    Route("GET", _PROJECT + r"/repository/commits/(?P<sha>[^/]+)", "/projects/:id/repository/commits/:sha",
          api.get_commit),
    Route("GET", _PROJECT + r"/repository/branches/(?P<branch>[^/]+)", "/projects/:id/repository/branches/:name",
          api.get_branch),
    Route("POST", _REPO + r"/info/lfs/objects/batch", "/:repo.git/info/lfs/objects/batch", api.lfs_batch, lfs=True),
    Route("PUT", _REPO + r"/gitlab-lfs/objects/(?P<oid>[0-9a-f]{64})/(?P<size>[0-9]+)",
          "/:repo.git/gitlab-lfs/objects/:oid/:size", api.lfs_put, lfs=True, streamed_upload=True),
    Route("GET", _REPO + r"/gitlab-lfs/objects/(?P<oid>[0-9a-f]{64})", "/:repo.git/gitlab-lfs/objects/:oid",
          api.lfs_get, lfs=True),
]
COMMIT_ROUTE = "POST /projects/:id/repository/commits"


def find_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        if route.method == method and (match := route.regex.match(path)):
            return route, {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
    return None


class _LimitedReader:
    """The request body of known length: reads stop at its end instead of blocking on the socket."""

    def __init__(self, raw: BinaryIO, length: int):
        self._raw, self._left = raw, length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._raw.read(size) if size else b""
        self._left -= len(data)
        return data


class _ChunkedReader:
    """A ``Transfer-Encoding: chunked`` request body, decoded (http.server leaves that to us)."""

    def __init__(self, raw: BinaryIO):
        self._raw, self._left, self._done = raw, 0, False

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while not self._done and (size < 0 or len(out) < size):
            if self._left == 0:
                line = self._raw.readline(1024)
                try:
                    self._left = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ValueError("malformed chunked body") from None
                if self._left == 0:
                    while self._raw.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._done = True
                    break
            want = self._left if size < 0 else min(self._left, size - len(out))
            data = self._raw.read(want)
            if not data:
                raise ValueError("chunked body ended early")
            out += data
            self._left -= len(data)
            if self._left == 0:
                self._raw.readline(1024)  # the CRLF after each chunk
        return bytes(out)


class GitLabHandler(BaseHTTPRequestHandler):
    """One connection; keep-alive like GitLab's, so a dropped connection is something a client must handle."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeGitLab/1.0"
    timeout = 60  # idle keep-alive connections end on their own

    @property
    def app(self) -> "GitLabApp":
        return self.server.app  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        logger.debug("%s " + format, self.address_string(), *args)

    # -- the request pipeline ------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = int(self.headers.get("Content-Length") or 0)
        if split.path.startswith("/__stats"):
            self._stats(method, split.path, length)
            return
        found = find_route(method, split.path)
        key = found[0].key if found else f"{method} (unknown)"
        streamed = found is not None and found[0].streamed_upload
        if found and found[0].key == COMMIT_ROUTE and self.app.max_commit_bytes is not None \
                and length > self.app.max_commit_bytes:
            self._discard(length)
            self.app.stats.record(key, bytes_in=length)
            self._send(error(413, "413 Request Entity Too Large"), key, close=True)
            return
        if chunked and not streamed:
            self._send(error(411, "411 Length Required"), key, close=True)
            return
        body = b"" if streamed else self.rfile.read(length)
        self.app.stats.record(key, bytes_in=length)
        fault = self.app.faults.draw(key, is_write=method in ("POST", "PUT", "DELETE"))
        if fault and not fault.after_apply:
            if fault.kind == "429":
                self._send(json_response(429, {"message": "Retry later"}, {"Retry-After": "1"}), key,
                           close=streamed)
                return
            if fault.kind == "5xx":
                self._send(error(fault.status, f"{fault.status} Server Error"), key, close=streamed)
                return
            if fault.kind == "slow":
                time.sleep(fault.delay)
            if fault.kind == "reset" and method != "GET":
                self._drop()  # nothing applied, nothing answered
                return
        response = self._route(found, method, split, body, length)
        if fault and fault.after_apply:
            if fault.kind == "5xx":  # e.g. a proxy timing out while GitLab finished the work
                self._send(error(fault.status, f"{fault.status} Server Error"), key)
            else:
                self._drop()
            return
        # A streamed upload the endpoint refused was not read to its end: that connection cannot be reused.
        self._send(response, key, close=streamed, cut_short=fault is not None and fault.kind == "reset")

    def _route(self, found, method: str, split, body: bytes, length: int) -> Response:
        if found is None:
            return error(404, NOT_FOUND, key="error")
        route, params = found
        if not self._authenticated(route.lfs):
            return json_response(401, {"message": "401 Unauthorized"},
                                 {"WWW-Authenticate": 'Basic realm="GitLab"'} if route.lfs else None)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()  # it wins over Content-Length
        reader = (_ChunkedReader(self.rfile) if chunked else _LimitedReader(self.rfile, length)) \
            if route.streamed_upload else None
        if route.scopes != ANY_SCOPE and not route.scopes & set(self.app.owner.scopes):
            return self._insufficient_scope(route)
        request = api.Request(
            method=method, params=params, query=dict(parse_qsl(split.query, keep_blank_values=True)), body=body,
            reader=reader, length=None if chunked else length,
            authorization=self.headers.get("Authorization", ""), url=f"{self.app.url}{split.path}",
        )
        if not route.project:
            return route.endpoint(self.app, request)
        project = self.app.registry.find(params.get("project") or params.get("repo", ""))
        if project is None or not project.visible:  # a private project of others does not exist for this user
            return error(404, "404 Project Not Found")
        return route.endpoint(self.app, request, project)

    @staticmethod
    def _insufficient_scope(route: Route) -> Response:
        """GitLab's 403 for a token without the scope an endpoint needs (Gitlab::Auth::InsufficientScopeError)."""
        needed = " ".join(sorted(route.scopes))
        if route.lfs:
            return json_response(403, {"message": "Access forbidden. Check your access level."})
        return json_response(403, {"error": "insufficient_scope", "error_description": INSUFFICIENT_SCOPE,
                                   "scope": needed},
                             {"WWW-Authenticate": f'Bearer realm="Protected by OAuth 2.0", error="insufficient_scope", '
                                                  f'error_description="{INSUFFICIENT_SCOPE}", scope="{needed}"'})

    def _authenticated(self, lfs: bool) -> bool:
        token = self.app.token.encode()
        offered = []
        if private := self.headers.get("PRIVATE-TOKEN"):
            offered.append(private)
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials)
        elif scheme.lower() == "basic" and lfs:  # git over HTTP: any user name, the token as password
            try:
                offered.append(base64.b64decode(credentials, validate=True).decode().partition(":")[2])
            except (binascii.Error, UnicodeDecodeError):
                pass
        return any(hmac.compare_digest(o.encode(), token) for o in offered)

    def _stats(self, method: str, path: str, length: int) -> None:
        self.rfile.read(length)
        if method == "GET" and path == "/__stats":
            response = json_response(200, self.app.stats.snapshot(self.app.faults))
        elif method == "POST" and path == "/__stats/reset":
            self.app.reset_stats()
            response = json_response(200, {"reset": True})
        else:
            response = error(404, NOT_FOUND, key="error")
        self._send(response, None)

    # -- the socket ----------------------------------------------------------------------------------
    def _send(self, response: Response, key: str | None, *, close: bool = False, cut_short: bool = False) -> None:
        """Write ``response``; with ``cut_short`` send the headers and half the body, then drop the connection."""
        limit = 0 if self.command == "HEAD" else response.length // 2 if cut_short else response.length
        if key is not None:
            # Counted before anything goes out: once a client has its answer, /__stats already shows it.
            self.app.stats.record(key, bytes_out=limit, new_request=False)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(response.length))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        if response.stream is not None:
            opener, _ = response.stream
            with opener() as handle:
                while sent < limit:
                    chunk = handle.read(min(_CHUNK, limit - sent))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
        else:
            self.wfile.write(response.body[:limit])
        if cut_short:
            self._drop()

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(_CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)

    def _drop(self) -> None:
        """Reset the connection (RST, not a polite FIN), as a crashed proxy or a network fault does."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
