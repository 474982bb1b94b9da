"""Logging for the worker: text or JSON lines on stderr, per-job log files, and secret redaction.

Lifecycle events carry ``extra={"event": ..., "job_id": ..., "project": ...}``; with ``--log-format json``
each stderr line is one JSON object with ``ts``, ``level``, ``event``, ``message`` and those fields.
A redacting filter sits on every handler we install, so a token that slips into a message (an exception
text from a library, a URL) is replaced before anything is written.
"""

from __future__ import annotations

import json
import logging
import sys
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
