"""Whether a running claim under this worker's name is its own, left by a predecessor that is gone.

A worker restarted under its old ``--worker-id`` (SkyPilot recovers a preempted job under the same task id)
should resume its claims at once rather than wait out their leases; but two live processes started with
one name by mistake must not take jobs from each other, and the name alone cannot tell them apart. So:

* every claim is recorded (``<claim_id>.json``) where a successor looks for it: the work dir, and the
  checkpoint dir, which a recovered spot machine shares with the machine it replaces;
* each worker process (an *instance*) holds an exclusive lock on its own lock file for as long as it
  lives. The kernel drops the lock when the process dies, kill -9 included, so a record whose instance's
  lock can be taken on this machine was left by a dead process;
* a record written on another machine cannot be probed so; it counts only when its instance started
  before this one (as a predecessor did) and its lease has missed a heartbeat since.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

RECORDS_FOLDER = ".worker-claims"
MISSED_HEARTBEATS = 1.5        # silence, in heartbeat periods, before another machine's claim counts as left
STALE_RECORD_SECONDS = 7 * 24 * 3600  # records of processes that are gone are swept after this long
_TOKEN = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class Verdict:
    own: bool      # True: a predecessor's claim (or this process's own): resume it at once
    reason: str


class ClaimRecords:
    """The claims this worker id made and has not finished, kept in ``roots`` (folders that exist or can
    be made; one that cannot is skipped with a warning)."""

    def __init__(self, worker_id: str, roots: Sequence[Path]):
        self.worker_id = worker_id
        self.instance = secrets.token_hex(8)
        self.host = socket.gethostname()
        self.started_at = time.time()
        self._folders = list(dict.fromkeys(Path(root) / RECORDS_FOLDER for root in roots))
        self._locks: dict[Path, int] = {}  # folder -> fd holding our instance lock there
        self._opened = False

    # -- this process's own claims -------------------------------------------------------------------
    def record(self, claim_id: str, project: str, job_id: str) -> None:
        """Note a claim this process just made."""
        self._open()
        data = {"worker_id": self.worker_id, "claim_id": claim_id, "project": project, "job_id": job_id,
                "instance": self.instance, "host": self.host, "pid": os.getpid(),
                "started_at": self.started_at, "claimed_at": time.time()}
        for folder in self._locks:
            try:
                tmp = folder / f".{claim_id}.{self.instance}.tmp"
                tmp.write_text(json.dumps(data), encoding="utf-8")
                os.replace(tmp, folder / f"{claim_id}.json")
            except OSError as exc:
                logger.warning("cannot record claim %s in %s: %s", claim_id, folder, exc)

    def forget(self, claim_id: str | None) -> None:
        """The claim ended (finished, released, lost, or resumed under a new claim id)."""
        if not claim_id or not _TOKEN.match(claim_id):
            return
        for folder in self._folders:
            try:
                (folder / f"{claim_id}.json").unlink(missing_ok=True)
            except OSError:
                pass

    def close(self) -> None:
        """Drop our locks (and lock files); records of claims still unfinished stay for a successor."""
        for folder, fd in self._locks.items():
            if not any(r.get("instance") == self.instance for r in _records(folder).values()):
                (folder / f"{self.instance}.lock").unlink(missing_ok=True)
            os.close(fd)
        self._locks.clear()
        self._opened = False

    # -- someone's claim under our name ---------------------------------------------------------------
    def verdict(self, claim_id: str | None, *, last_write: datetime, now: datetime,
                heartbeat_seconds: float) -> Verdict:
        """Whether the running claim ``claim_id`` under this worker's name is this worker's own to resume."""
        found = self._find(claim_id)
        if found is None:
            return Verdict(False, "this worker has no record of that claim in its work or checkpoint dir")
        folder, record = found
        where = f"{record.get('host')} pid {record.get('pid')}"
        instance = record.get("instance")
        if instance == self.instance:
            return Verdict(True, "this process claimed it")
        alive = _lock_held(folder, instance)
        if alive:
            return Verdict(False, f"a live process under this name holds it ({where})")
        if alive is False and record.get("host") == self.host:
            return Verdict(True, f"the process that claimed it ({where}) is gone")
        silent = (now - last_write).total_seconds()
        started = record.get("started_at")
        if (isinstance(started, (int, float)) and started < self.started_at
                and silent > MISSED_HEARTBEATS * heartbeat_seconds):
            return Verdict(True, f"claimed by a process on {where} that started before this one and has "
                                 f"been silent for {silent:.0f} s")
        return Verdict(False, f"claimed by a process on {where} that may still be running")

    # -- internals ------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._opened:
            return
        self._opened = True
        for folder in self._folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(folder / f"{self.instance}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                logger.warning("cannot keep claim records in %s: %s", folder, exc)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:  # e.g. a file system without locks: claims there are judged as remote ones
                logger.warning("cannot lock %s (%s): a restart on this machine will wait for its leases",
                               folder, exc)
            self._locks[folder] = fd
            self._sweep(folder)

    def _find(self, claim_id: str | None) -> tuple[Path, dict] | None:
        if not claim_id or not _TOKEN.match(claim_id):
            return None
        for folder in self._folders:
            record = _read(folder / f"{claim_id}.json")
            if record is not None and record.get("worker_id") == self.worker_id:
                return folder, record
        return None

    def _sweep(self, folder: Path) -> None:
        """Remove what dead processes left long ago: old records, and lock files no record names."""
        records = _records(folder)
        cutoff = time.time() - STALE_RECORD_SECONDS
        for path, record in records.items():
            claimed = record.get("claimed_at")
            old = isinstance(claimed, (int, float)) and claimed < cutoff
            if old and not _lock_held(folder, record.get("instance")):
                path.unlink(missing_ok=True)
        named = {r.get("instance") for p, r in records.items() if p.exists()}
        for lock in folder.glob("*.lock"):
            if lock.stem != self.instance and lock.stem not in named and _lock_held(folder, lock.stem) is False:
                lock.unlink(missing_ok=True)


def _lock_held(folder: Path, instance: object) -> bool | None:
    """True: the instance's process is alive (on this machine); False: it is not; None: cannot tell."""
    if not isinstance(instance, str) or not _TOKEN.match(instance):
        return None
    try:
        fd = os.open(folder / f"{instance}.lock", os.O_RDWR)
    except FileNotFoundError:
        return False  # removed by its process on a clean exit
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the probe's lock, if it took one
    return False


def _records(folder: Path) -> dict[Path, dict]:
    found = {}
    for path in folder.glob("*.json"):
        record = _read(path)
        if record is not None:
            found[path] = record
    return found


def _read(path: Path) -> dict | None:
    try:
        if path.stat().st_size > 64 * 1024:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
