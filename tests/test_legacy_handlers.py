"""Handlers written for the earlier worker's interface run unchanged (its README's Callbacks API)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import LocalEnv, fast_config, make_job, run_worker
from handlers.base import JobStorage

# Written the way the earlier worker's handlers are: Path arithmetic on get_work_dir(), stage tags on every
# heartbeat, the scanner's server_url, print() for progress, lines appended to callbacks.log_path.
LEGACY_HANDLER = '''
import json


def run(job_context, callbacks):
    work_dir = callbacks.get_work_dir()
    print("=" * 20)
    print("Legacy Training Handler")
    callbacks.heartbeat(message="Downloading training data", stage="download")
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "metadata.csv").write_text("file_name,transcription\\n")
    model_config = job_context.get("model", {})
    epochs = job_context.get("epochs", 2)
    scanner = callbacks.scanner
    seen = {"work_dir_type": type(work_dir).__name__, "server_url": scanner.server_url,
            "model_type": model_config.get("type"), "job_id": callbacks.job_id,
            "project_id": callbacks.project_id, "worker_id": callbacks.worker_id}
    try:
        seen["access_token"] = scanner.access_token
    except AttributeError as refused:
        seen["access_token_refused"] = str(refused)
    callbacks.heartbeat(epochs_completed=0, message="Starting training", stage="training")
    for epoch in range(1, epochs + 1):
        callbacks.heartbeat(epochs_completed=epoch, message=f"Training epoch {epoch}", stage="training")
        callbacks.check_heartbeat_needed()
    with open(str(callbacks.log_path), "a", encoding="utf-8") as log:
        log.write("legacy training log line\\n")
    callbacks.heartbeat(message="Uploading checkpoint and artifacts", stage="upload")
    (work_dir / "seen.json").write_text(json.dumps(seen))
    return {"success": True, "checkpoint_path": f"gpu_jobs/job_{job_context['job_id']}/checkpoint/best_model.pt",
            "epochs_completed": epochs}
'''


@pytest.fixture
def legacy_handlers(tmp_path) -> Path:
    root = tmp_path / "legacy_handlers"
    (root / "tts" / "legacytts").mkdir(parents=True)
    (root / "tts" / "legacytts" / "training.py").write_text(LEGACY_HANDLER)
    return root


def test_an_earlier_worker_handler_runs_unchanged(tmp_path, legacy_handlers):
    env = LocalEnv(tmp_path / "project")
    env.write_manifest([make_job("old1", job_type="tts", model={"type": "LegacyTTS"}, epochs=2)])
    config = fast_config(tmp_path, handler_paths=(legacy_handlers,))
    run_worker(env.source(), config)
    response = env.response("old1")
    assert response["state"] == "completed", response
    assert response["result"] == {"checkpoint_path": "gpu_jobs/job_old1/checkpoint/best_model.pt",
                                  "epochs_completed": 2}
    assert response["epochs_completed"] == 2
    seen = _seen(config.work_dir)
    assert seen["work_dir_type"] == "PosixPath"
    assert seen["server_url"] is None  # a local project; on GitLab the server's address
    assert seen["model_type"] == "LegacyTTS" and seen["job_id"] == "old1" and seen["worker_id"] == "worker-a"
    assert seen["project_id"] == str(env.root)
    assert "access_token" not in seen and "no GitLab token" in seen["access_token_refused"]
    logs = env.read_file("gpu_jobs/job_old1/logs.txt").decode()
    assert "stage: download" in logs and "stage: training" in logs and "stage: upload" in logs
    assert "legacy training log line" in logs  # what it appended to callbacks.log_path reached "View Logs"


def _seen(work_dir: Path) -> dict:
    found = list(work_dir.rglob("seen.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def test_the_scanner_names_the_gitlab_server_but_never_hands_out_the_token(gitlab_store, gitlab_server):
    scanner = JobStorage(gitlab_store, callbacks=None)
    assert scanner.server_url == gitlab_server.url
    with pytest.raises(AttributeError, match="no GitLab token"):
        scanner.access_token  # noqa: B018
    assert getattr(scanner, "access_token", None) is None  # defensive legacy code gets nothing either
