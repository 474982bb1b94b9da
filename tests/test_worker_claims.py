"""claim_records: telling this worker's predecessor (resume its claim at once) from a live namesake (leave it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

from claim_records import RECORDS_FOLDER, ClaimRecords
from conftest import ROOT
from jobs import utc_now

HEARTBEAT = 10.0


def verdict(records: ClaimRecords, claim_id: str, *, silent_seconds: float = 0.0):
    now = utc_now()
    return records.verdict(claim_id, last_write=now - timedelta(seconds=silent_seconds), now=now,
                           heartbeat_seconds=HEARTBEAT)


def test_a_claim_left_by_a_process_that_died_is_resumed(tmp_path):
    """The predecessor records a claim and dies without cleaning up (as kill -9 leaves it)."""
    script = ("import os, sys; sys.path.insert(0, sys.argv[2]); from claim_records import ClaimRecords; "
              "r = ClaimRecords('gpu-1', [sys.argv[1]]); r.record('aa11bb22cc33dd44', 'team/bible', 'job1'); "
              "os._exit(0)")
    subprocess.run([sys.executable, "-c", script, str(tmp_path), str(ROOT)], check=True, timeout=60)
    successor = ClaimRecords("gpu-1", [tmp_path])
    found = verdict(successor, "aa11bb22cc33dd44")
    assert found.own, found.reason
    assert "is gone" in found.reason


def test_a_claim_of_a_live_process_under_the_same_name_is_not_ours(tmp_path):
    live = ClaimRecords("gpu-1", [tmp_path])
    live.record("aa11bb22cc33dd44", "team/bible", "job1")
    namesake = ClaimRecords("gpu-1", [tmp_path])
    found = verdict(namesake, "aa11bb22cc33dd44", silent_seconds=3600)
    assert not found.own and "live process" in found.reason
    assert verdict(live, "aa11bb22cc33dd44").own  # the process that made it knows it
    live.close()
    assert verdict(ClaimRecords("gpu-1", [tmp_path]), "aa11bb22cc33dd44").own  # gone now: a predecessor


def test_no_record_or_another_name_is_not_ours(tmp_path):
    records = ClaimRecords("gpu-1", [tmp_path])
    assert not verdict(records, "aa11bb22cc33dd44").own
    assert not verdict(records, None).own
    assert not verdict(records, "../../etc/passwd").own
    other = ClaimRecords("gpu-2", [tmp_path])
    other.record("ee55ff66aa77bb88", "team/bible", "job1")
    other.close()
    assert not verdict(records, "ee55ff66aa77bb88").own


def _remote_record(root, *, started_ago: float, claim_id: str = "1234567890abcdef") -> str:
    folder = root / RECORDS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{claim_id}.json").write_text(json.dumps({
        "worker_id": "gpu-1", "claim_id": claim_id, "project": "team/bible", "job_id": "job1",
        "instance": "fedcba9876543210", "host": "another-machine", "pid": 4242,
        "started_at": time.time() - started_ago, "claimed_at": time.time() - started_ago}))
    return claim_id


def test_a_claim_recorded_on_another_machine_counts_only_once_it_has_gone_silent(tmp_path):
    """A recovered spot machine finds its predecessor's record in the shared checkpoint dir; it cannot probe
    the other machine's lock, so it waits until the claim has missed a heartbeat."""
    claim = _remote_record(tmp_path, started_ago=600)
    records = ClaimRecords("gpu-1", [tmp_path])
    assert not verdict(records, claim, silent_seconds=HEARTBEAT * 0.5).own
    found = verdict(records, claim, silent_seconds=HEARTBEAT * 2)
    assert found.own and "another-machine" in found.reason


def test_a_process_on_another_machine_that_started_after_us_is_never_our_predecessor(tmp_path):
    records = ClaimRecords("gpu-1", [tmp_path])
    claim = _remote_record(tmp_path, started_ago=-60)
    assert not verdict(records, claim, silent_seconds=HEARTBEAT * 100).own


def test_records_live_in_every_root_and_go_when_the_claim_ends(tmp_path):
    work, bucket = tmp_path / "work", tmp_path / "bucket"
    records = ClaimRecords("gpu-1", [work, bucket])
    records.record("aa11bb22cc33dd44", "team/bible", "job1")
    assert (work / RECORDS_FOLDER / "aa11bb22cc33dd44.json").is_file()
    assert (bucket / RECORDS_FOLDER / "aa11bb22cc33dd44.json").is_file()
    # A successor on a fresh disk with the same bucket still finds it.
    assert verdict(ClaimRecords("gpu-1", [tmp_path / "fresh", bucket]), "aa11bb22cc33dd44").reason.startswith(
        "a live process")
    records.forget("aa11bb22cc33dd44")
    records.close()
    assert not list(work.joinpath(RECORDS_FOLDER).iterdir()) and not list(bucket.joinpath(RECORDS_FOLDER).iterdir())


def test_lock_files_of_dead_processes_are_swept(tmp_path):
    folder = tmp_path / RECORDS_FOLDER
    folder.mkdir()
    (folder / "0123456789abcdef.lock").write_text("")  # a dead instance with no claim left
    records = ClaimRecords("gpu-1", [tmp_path])
    records.record("aa11bb22cc33dd44", "team/bible", "job1")
    assert not (folder / "0123456789abcdef.lock").exists()
    assert (folder / f"{records.instance}.lock").exists()
