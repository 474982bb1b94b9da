"""What crosses between the worker and a job's process keeps its type and fields (both ways pickle)."""

from __future__ import annotations

import multiprocessing
import pickle
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

import codex.changes
import gitlab_jobs
import jobs
import local_store  # noqa: F401  (its errors, if any, join the StorageError family below)
from conftest import LocalEnv, fast_config, make_job, run_worker_in_thread
from handler_api import (CommitDone, CommitFailed, CommitRequest, HandlerResult, HandlerStopped, JobInterrupted,
                         ProgressReport, StopKind, StopRequest, portable_error)
from storage import FileAction, StorageError
from worker_logging import REDACTED, REDACTOR


def through_a_pipe(obj):
    """Send ``obj`` the way the worker and its job talk (a multiprocessing connection) and return it."""
    reading, writing = multiprocessing.Pipe(duplex=False)
    try:
        writing.send(obj)  # these are small: the pipe's buffer holds them
        return reading.recv()
    finally:
        reading.close()
        writing.close()


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


@pytest.mark.parametrize("kind", list(StopKind))
def test_job_interrupted_survives_the_pipe_with_kind_and_reason(kind):
    copy = through_a_pipe(JobInterrupted(kind, "now held by worker-b"))
    assert type(copy) is JobInterrupted
    assert copy.kind == kind and copy.kind == kind.value and copy.reason == "now held by worker-b"
    assert not isinstance(copy, Exception)  # a handler's `except Exception` must not swallow it


def test_every_storage_error_keeps_type_message_path_and_fields():
    families = [StorageError, *_all_subclasses(StorageError)]
    names = {cls.__name__ for cls in families}
    assert {"VersionConflict", "FileAlreadyExists", "AccessDenied", "GitLabUnavailable", "CommitOutcomeUnknown",
            "CommitFailed"} <= names
    for cls in families:
        error = cls("gpu_jobs/job_1/model.bin has changed", path="gpu_jobs/job_1/model.bin")
        error.attempts = 3  # a field a subclass might add
        copy = through_a_pipe(error)
        assert type(copy) is cls, cls
        assert str(copy) == str(error) and copy.path == error.path and copy.attempts == 3, cls


@pytest.mark.parametrize("error", [
    codex.changes.CommitTooLarge("2 file(s) over 100 bytes"),
    gitlab_jobs.CommitTooLarge("commit of 3 action(s) needs a 400-byte body"),
    jobs.LeaseLost("job j1: now held by worker-b"),
    jobs.ClaimLost("job j1: claimed by worker-b first"),
    CommitFailed("ConnectionError: reset by peer", path="gpu_jobs/job_1/a.txt", error_type="ConnectionError"),
], ids=lambda error: type(error).__module__ + "." + type(error).__name__)
def test_other_errors_of_the_commit_path_keep_their_type(error):
    copy = through_a_pipe(error)
    assert type(copy) is type(error) and str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
    assert portable_error(error) is error  # nothing to map: it travels as it is


def test_an_error_that_cannot_travel_becomes_commit_failed_naming_it():
    class Stubborn(Exception):
        def __init__(self, url, status):
            super().__init__(f"{url} answered {status}")
            self.status = status

    token = "glpat-boundary-secret-0001"
    REDACTOR.add(token)
    portable = portable_error(Stubborn(f"https://git.example/api?private_token={token}", 502))
    copy = through_a_pipe(portable)
    assert type(copy) is CommitFailed and copy.error_type == "Stubborn"
    assert str(copy) == f"Stubborn: https://git.example/api?private_token={REDACTED} answered 502"


def test_every_message_type_survives_the_pipe():
    action = FileAction.create("gpu_jobs/job_1/a.txt", b"data")
    messages = [
        ProgressReport(3, "epoch 3/10", "training", {"gpu_jobs/job_1/checkpoint/training_metrics.csv": b"epoch\n1\n"}),
        ProgressReport(),
        CommitRequest(7, [action, FileAction.delete("gpu_jobs/job_1/old.txt")], "results"),
        HandlerResult({"success": True, "checkpoint_path": "gpu_jobs/job_1/model.pt", "counts": [1, 2]}),
        HandlerStopped("lease_lost", "now held by worker-b"),
        StopRequest("canceled", "canceled by the user"),
        CommitDone(7),
    ]
    for message in messages:
        copy = through_a_pipe(message)
        assert type(copy) is type(message) and copy == message
    done = through_a_pipe(CommitDone(8, JobInterrupted(StopKind.LEASE_LOST, "gone")))
    assert done.request_id == 8 and type(done.error) is JobInterrupted and done.error.kind == "lease_lost"


# -- a commit meets a lost lease, in a real job process -----------------------------------------------
BOUNDARY_HANDLER = '''
import time
from pathlib import Path

from handlers.base import JobInterrupted
from storage import FileAction


def run(job_context, callbacks):
    signals = Path(job_context["signals"])
    folder = f"gpu_jobs/job_{job_context['job_id']}"
    callbacks.scanner.commit([FileAction.create(f"{folder}/first.txt", b"1")], "first result")
    (signals / "first-committed").write_text("")
    while not (signals / "taken-over").exists():  # no heartbeat: the commit is what meets the loss
        time.sleep(0.05)
    try:
        callbacks.scanner.commit([FileAction.create(f"{folder}/second.txt", b"2")], "second result")
    except JobInterrupted as stop:
        (signals / "seen").write_text(f"JobInterrupted {stop.kind.value} {stop.reason}")
        raise
    except BaseException as other:
        (signals / "seen").write_text(f"{type(other).__name__} {other}")
        raise
    (signals / "seen").write_text("no error")
    return {"success": True}
'''


def _job_folder(env: LocalEnv, job_id: str) -> dict[str, bytes]:
    folder = env.root / "gpu_jobs" / f"job_{job_id}"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lease_lost_between_two_commits_stops_the_handler_and_nothing_more_is_written(tmp_path):
    handlers = tmp_path / "handlers"
    (handlers / "test" / "boundary").mkdir(parents=True)
    (handlers / "test" / "boundary" / "training.py").write_text(BOUNDARY_HANDLER)
    signals = tmp_path / "signals"
    signals.mkdir()
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("b1", model={"type": "Boundary"}, signals=str(signals))])
    # The keeper checks only once, at the start: the second commit is what finds the lease gone.
    config = fast_config(tmp_path, check_seconds=60, lease_seconds=30, handler_paths=(handlers,))
    worker, thread = run_worker_in_thread(env.source(), config)
    env.wait_for(lambda: (signals / "first-committed").exists(), 60)
    assert env.read_file("gpu_jobs/job_b1/first.txt") == b"1"
    theirs = yaml.safe_dump({"worker_id": "worker-b", "state": "running", "timestamp": jobs.format_time(jobs.utc_now()),
                             "lease_expires_at": jobs.format_time(jobs.utc_now() + timedelta(hours=1)),
                             "claim_id": "b", "retry_count": 1, "epochs_completed": 0,
                             "status_message": "taken over"}, sort_keys=False)
    env.write_file("gpu_jobs/job_b1/response.yaml", theirs)
    before = _job_folder(env, "b1")
    (signals / "taken-over").write_text("")
    thread.join(60)
    assert not thread.is_alive()
    seen = (signals / "seen").read_text()
    assert seen.startswith("JobInterrupted lease_lost "), seen
    assert "worker-b" in seen
    assert _job_folder(env, "b1") == before  # no second result, no logs, no final state: theirs now
    assert env.read_file("gpu_jobs/job_b1/response.yaml").decode() == theirs
    assert not Path(env.root / "gpu_jobs/job_b1/second.txt").exists()
