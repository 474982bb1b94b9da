"""One redactor for everything the worker writes: logs, response.yaml, commits, and a job's own output."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, make_job
from worker_logging import REDACTED, REDACTOR, OutputRelay, redacted_data


def test_a_gitlab_token_and_its_basic_auth_forms_are_known_to_the_one_redactor():
    from gitlab_jobs import _Secret

    token = "glpat-redaction-unit-0001"
    secret = _Secret(token)
    basic = base64.b64encode(f"oauth2:{token}".encode()).decode()
    text = f"url ?private_token={token} header Authorization: Basic {basic}"
    assert secret.redact(text) == REDACTOR.redact(text) == f"url ?private_token={REDACTED} header " \
                                                         f"Authorization: Basic {REDACTED}"


def test_redacted_data_walks_result_dicts():
    REDACTOR.add("glpat-redaction-unit-0002")
    data = {"url": "https://oauth2:glpat-redaction-unit-0002@git.example/x.git", "count": 3,
            "nested": {"list": ["glpat-redaction-unit-0002", 1.5, None]}}
    assert redacted_data(data) == {"url": f"https://oauth2:{REDACTED}@git.example/x.git", "count": 3,
                                   "nested": {"list": [REDACTED, 1.5, None]}}


@pytest.mark.parametrize("max_held", [OutputRelay.MAX_HELD, 4])  # 4: unfinished lines are cut at once
def test_the_output_relay_catches_a_secret_split_across_writes(max_held):
    token = "glpat-redaction-unit-0003"
    REDACTOR.add(token)
    source_read, source_write = os.pipe()
    sink_read, sink_write = os.pipe()
    relay = OutputRelay({source_read: sink_write})
    relay.MAX_HELD = max_held
    relay.start()
    for piece in (b"before glpat-red", b"action-unit-0003 after\n", b"glp", b"at- is no token\n",
                  b"progress 10%\r", b"unfinished glpat-redaction", b"-unit-0003"):
        os.write(source_write, piece)
        time.sleep(0.05)  # separate reads in the relay (the result must not depend on them)
    os.close(source_write)
    relay.join(10)
    os.close(sink_write)
    with os.fdopen(sink_read, "rb") as sink:
        output = sink.read()
    assert output == f"before {REDACTED} after\nglpat- is no token\nprogress 10%\runfinished {REDACTED}".encode()


# -- end to end, on the GitLab test server --------------------------------------------------------------
LEAKY_HANDLER = '''
import logging
import os
import subprocess
import sys
import time

from storage import FileAction

logger = logging.getLogger("leaky")


def run(job_context, callbacks):
    token = os.environ["GITLAB_TOKEN"]  # as a library that read the environment would have it
    print(f"leak-print {token}")
    print(f"leak-stderr {token}", file=sys.stderr)
    os.write(1, f"leak-fd1 {token}\\n".encode())
    os.write(2, f"leak-fd2 {token}\\n".encode())
    subprocess.run([sys.executable, "-c", "import os; print('leak-subprocess', os.environ['GITLAB_TOKEN'])"],
                   check=True)
    logger.warning("leak-log %s", token)
    for epoch in range(1, 6):
        time.sleep(0.2)
        callbacks.heartbeat(epochs_completed=epoch, message=f"leak-status {token}")
    folder = f"gpu_jobs/job_{job_context['job_id']}"
    callbacks.scanner.commit([FileAction.create(f"{folder}/note.txt", b"note")], f"leak-commit {token}")
    if job_context["leak"] == "raise":
        raise RuntimeError(f"GET https://git.example/api/v4/projects?private_token={token} failed")
    return {"success": True, "source": f"https://oauth2:{token}@git.example/x.git", "nested": {"k": [token]}}
'''


def test_a_leaky_handler_leaks_nothing_anywhere(gitlab_server, tmp_path):
    handlers = tmp_path / "handlers"
    (handlers / "test" / "leaky").mkdir(parents=True)
    (handlers / "test" / "leaky" / "training.py").write_text(LEAKY_HANDLER)
    jobs = [make_job("raises", minutes_ago=2, model={"type": "Leaky"}, leak="raise"),
            make_job("returns", minutes_ago=1, model={"type": "Leaky"}, leak="return")]
    project = gitlab_server.add_project("team/leaky", files={
        "metadata.json": "{}\n", "gpu_jobs/manifest.yaml": yaml.safe_dump({"version": 1, "jobs": jobs})})
    command = [sys.executable, str(ROOT / "worker_entry.py"), "--gitlab-url", gitlab_server.url,
               "--worker-id", "leaktest", "--work-dir", str(tmp_path / "work"), "--handler-path", str(handlers),
               "--lease-seconds", "20", "--heartbeat-seconds", "0.4", "--loop-interval", "-1"]
    worker = subprocess.run(command, cwd=ROOT, env={**os.environ, "GITLAB_TOKEN": gitlab_server.token},
                            capture_output=True, text=True, timeout=180)
    token = gitlab_server.token
    assert worker.returncode == 0, worker.stderr[-2000:]
    # The job's output came through, redacted: stdout, stderr, fd-level writes and a subprocess's.
    for marker in ("leak-print", "leak-fd1", "leak-subprocess"):
        assert f"{marker} {REDACTED}" in worker.stdout, marker
    for marker in ("leak-stderr", "leak-fd2", "leak-log"):
        assert f"{marker} {REDACTED}" in worker.stderr, marker
    assert token not in worker.stdout and token not in worker.stderr

    failed = yaml.safe_load(gitlab_server.read(project, "gpu_jobs/job_raises/response.yaml"))
    assert failed["state"] == "failed"
    assert failed["error_message"] == (
        f"RuntimeError: GET https://git.example/api/v4/projects?private_token={REDACTED} failed")
    done = yaml.safe_load(gitlab_server.read(project, "gpu_jobs/job_returns/response.yaml"))
    assert done["state"] == "completed"
    assert done["result"] == {"source": f"https://oauth2:{REDACTED}@git.example/x.git", "nested": {"k": [REDACTED]}}
    assert f"leak-log {REDACTED}" in gitlab_server.read(project, "gpu_jobs/job_raises/logs.txt").decode()
    for file in (tmp_path / "work").rglob("*"):  # the worker's own disk: logs.txt as it was written
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file

    # Every version of every job file, and every commit message, in the project's history.
    statuses = set()
    commits = gitlab_server.commits(project)
    for commit in commits:
        assert token not in commit["message"], commit["message"]
        for path in gitlab_server.files(project, commit["id"]):
            data = gitlab_server.read(project, path, commit["id"]) or b""
            assert token.encode() not in data, (commit["id"], path)
            if path.endswith("response.yaml"):
                statuses.add(yaml.safe_load(data).get("status_message"))
    assert f"leak-status {REDACTED}" in statuses  # the heartbeats' text was written, redacted
    assert any(f"leak-commit {REDACTED}" in commit["message"] for commit in commits)
