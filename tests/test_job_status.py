"""A completed job's status line: the handler's one-line ``summary``, which the plugin shows beside the state."""

import pytest
import yaml

import jobs
from local_store import LocalProjectStore

MANIFEST = {"version": 1, "jobs": [{"job_id": "j1", "job_type": "asr", "mode": "inference",
                                    "model": {"type": "W2V2BERT"}, "created_at": "2026-12-01T10:00:00Z"}]}


def finished(tmp_path, state, **outcome) -> dict:
    project = tmp_path / "project"
    (project / "gpu_jobs").mkdir(parents=True)
    (project / jobs.MANIFEST_PATH).write_text(yaml.safe_dump(MANIFEST), encoding="utf-8")
    store = LocalProjectStore(project)
    (job,) = jobs.read_manifest(store).jobs
    lease = jobs.claim_job(store, job, worker_id="w1", lease_seconds=600)
    jobs.finish_job(lease, state, **outcome)
    return yaml.safe_load((project / jobs.job_paths("j1").response).read_text(encoding="utf-8"))


@pytest.mark.parametrize("summary, shown", [
    ("6 verses transcribed; 0 of 28 recordings differ from their text by more than 50 %",
     "6 verses transcribed; 0 of 28 recordings differ from their text by more than 50 %"),
    ("two\nlines  and   spaces", "two lines and spaces"),             # one line, as the job list shows it
    ("x" * 1000, "x" * jobs.MAX_SUMMARY_CHARS),
    ("", "completed"), (None, "completed"), (["not", "text"], "completed"),
])
def test_a_completed_job_shows_its_summary(tmp_path, summary, shown):
    result = {"cells_transcribed": 6} | ({} if summary is None else {jobs.RESULT_SUMMARY: summary})
    response = finished(tmp_path, jobs.JobState.COMPLETED, result=result)
    assert response["state"] == "completed" and response["status_message"] == shown
    assert response["result"]["cells_transcribed"] == 6


def test_a_failed_job_keeps_saying_failed(tmp_path):
    response = finished(tmp_path, jobs.JobState.FAILED, error_message="no model",
                        result={jobs.RESULT_SUMMARY: "should not show"})
    assert (response["status_message"], response["error_message"]) == ("failed", "no model")
