"""Logging for the worker: text or JSON lines on stderr, per-job log files, and secret redaction.

Lifecycle events carry ``extra={"event": ..., "job_id": ..., "project": ...}``; with ``--log-format json``
each stderr line is one JSON object with ``ts``, ``level``, ``event``, ``message`` and those fields.

``REDACTOR`` is the program's one redactor: it sits on every log handler we install, the GitLab store
registers its token (and the token's Basic-auth forms) with it, and every text the worker writes elsewhere
(response.yaml, commit messages, a job process's stdout/stderr) passes through it — so a token that slips
into a message (an exception text from a library, a URL) is replaced before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

REDACTED = "[REDACTED]"
_CONTEXT_FIELDS = ("job_id", "project", "worker_id")


class RedactingFilter(logging.Filter):
    """Replaces each secret in the rendered message (and exception text) with ``[REDACTED]``."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets = sorted([*self.secrets, secret], key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        for secret in self.secrets:
            data = data.replace(secret.encode("utf-8"), REDACTED.encode())
        return data

    def partial_tail(self, data: bytes) -> int:
        """Length of the longest end of ``data`` that could be the start of a secret (hold it back
        until more output arrives: a secret may be split across two reads)."""
        longest = 0
        for secret in self.secrets:
            needle = secret.encode("utf-8")
            for size in range(min(len(needle) - 1, len(data)), longest, -1):
                if data.endswith(needle[:size]):
                    longest = size
                    break
        return longest

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if clean != message:
            record.msg, record.args = clean, None
        return True


#: One filter per process, shared by every handler, so a secret registered once is hidden everywhere.
REDACTOR = RedactingFilter()


def redacted_data(value):
    """``value`` (a result dict, say) with ``REDACTOR`` applied to every string in it, keys included."""
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, dict):
        return {redacted_data(key): redacted_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted_data(item) for item in value] if isinstance(value, list) else tuple(
            redacted_data(item) for item in value)
    return value


class OutputRelay:
    """Copies a job process's stdout and stderr (pipes) to the worker's own, through ``REDACTOR``.

    The job's fd 1 and 2 are the pipes' write ends, so C-level writes (a library, a subprocess it runs)
    are caught as well as ``print``. The thread ends when every writer has closed its end.
    """

    MAX_HELD = 64 * 1024  # bytes of an unfinished line kept back

    def __init__(self, routes: dict[int, int]):
        """``routes``: read end of a pipe → file descriptor to copy it to (e.g. 1 and 2)."""
        self._routes = dict(routes)
        self._held = {fd: b"" for fd in self._routes}
        self._thread = threading.Thread(target=self._run, name="job-output", daemon=True)

    def start(self) -> "OutputRelay":
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        """Wait for the end of the output (a grandchild that keeps a pipe open is not waited for)."""
        self._thread.join(timeout)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for fd in self._routes:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select():
                    fd = key.fd
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        data = b""
                    if data:
                        self._forward(fd, data)
                        continue
                    self._write(self._routes[fd], self._held.pop(fd))  # the end: a partial secret is none
                    selector.unregister(fd)
                    os.close(fd)

    def _forward(self, fd: int, data: bytes) -> None:
        # Whole lines (or \r-ended progress bars) only, so they do not interleave with the worker's own;
        # a line that never ends is cut, keeping back an end that could start a secret.
        clean = REDACTOR.redact_bytes(self._held[fd] + data)
        cut = max(clean.rfind(b"\n"), clean.rfind(b"\r")) + 1
        if len(clean) - cut > self.MAX_HELD:
            cut = len(clean) - REDACTOR.partial_tail(clean)
        self._held[fd] = clean[cut:]
        self._write(self._routes[fd], clean[:cut])

    @staticmethod
    def _write(target: int, data: bytes) -> None:
        while data:
            try:
                written = os.write(target, data)
            except OSError:  # the worker's own output is gone (closed terminal): drop the job's
                return
            data = data[written:]


class JsonFormatter(logging.Formatter):
    def __init__(self, worker_id: str | None = None):
        super().__init__()
        self.worker_id = worker_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
            "logger": record.name,
        }
        for key in _CONTEXT_FIELDS:
            value = getattr(record, key, None) or (self.worker_id if key == "worker_id" else None)
            if value is not None:
                entry[key] = value
        if record.exc_info or record.exc_text:
            entry["traceback"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job = getattr(record, "job_id", None)
        return f"{text} [job {job}]" if job and f"job {job}" not in text else text


def configure_logging(*, log_format: str = "text", verbose: bool = False, worker_id: str | None = None,
                      secrets: Iterable[str] = ()) -> None:
    """Install the stderr handler on the root logger (idempotent)."""
    for secret in secrets:
        REDACTOR.add(secret)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_codex_worker", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker_id) if log_format == "json" else TextFormatter())
    handler.addFilter(REDACTOR)
    handler._codex_worker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("urllib3", "filelock", "numba", "matplotlib", "PIL", "httpx", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class JobLogFile:
    """Collects one job's log lines in ``<work dir>/logs.txt`` (the plugin's "View Logs").

    Parent and child both append to the same file; lines are short writes in append mode, so they
    interleave whole.
    """

    def __init__(self, path: Path, *, job_id: str):
        self.path = Path(path)
        self.job_id = job_id
        self.handler: logging.Handler | None = None

    def attach(self, logger: logging.Logger | None = None, *, only_this_job: bool = False) -> None:
        handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        handler.setFormatter(TextFormatter())
        handler.addFilter(REDACTOR)
        if only_this_job:
            handler.addFilter(lambda record: getattr(record, "job_id", None) == self.job_id)
        (logger or logging.getLogger()).addHandler(handler)
        self.handler = handler

    def detach(self, logger: logging.Logger | None = None) -> None:
        if self.handler is not None:
            (logger or logging.getLogger()).removeHandler(self.handler)
            self.handler.close()
            self.handler = None

    def tail(self, max_bytes: int) -> bytes:
        """The last ``max_bytes`` of the log, cut at a line start, redacted once more."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return b""
        if len(data) > max_bytes:
            data = data[-max_bytes:]
            newline = data.find(b"\n")
            data = b"[... earlier lines cut ...]\n" + (data[newline + 1:] if newline >= 0 else data)
        return REDACTOR.redact(data.decode("utf-8", "replace")).encode("utf-8")
