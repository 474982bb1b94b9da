"""A job shaped like a real one (audio in, a take per verse + a notebook change + a 20 MB model out) against
the GitLab test server while it misbehaves: every job ends in a terminal state, nothing is written twice,
nothing is lost — a translator's edit made during the job included."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest
import yaml

from conftest import ROOT, make_job
from test_gitlab_worker import start_gitlab_worker

DEMO = ROOT / "examples" / "demo_project"
NOTEBOOK = "files/target/JHN.codex"


def _translator_edit(text: str) -> tuple[str, str]:
    """Change the first verse a translator would type into; returns (new notebook text, new value)."""
    data = json.loads(text)
    cell = next(c for c in data["cells"] if c["metadata"].get("type") == "text" and c.get("value"))
    cell["value"] = "<span>Translator's fix while the job ran</span>"
    cell["metadata"].setdefault("edits", []).append({"editMap": ["value"], "value": cell["value"],
                                                      "timestamp": 1, "type": "user-edit", "author": "ana",
                                                      "validatedBy": []})
    return json.dumps(data, ensure_ascii=False, indent=2), cell["value"]


def _generated_takes(notebook: dict) -> dict[str, int]:
    counts = {}
    for cell in notebook["cells"]:
        attachments = (cell.get("metadata") or {}).get("attachments") or {}
        generated = [a for a in attachments.values() if a.get("isGenerated")]
        if generated:
            counts[cell["metadata"]["id"]] = len(generated)
    return counts


@pytest.mark.slow  # a whole job (download, train, write back) through an unreliable server: 7-13 s each
@pytest.mark.parametrize("faults", ["5xx=0.15", "429=0.15", "reset=0.08", "slow=0.1"])
def test_shaped_job_under_faults(gitlab_server, tmp_path, record_dir, faults):
    job = make_job("shaped1", model={"type": "Shaped"}, mode="training_and_inference", shaped={"wait": True})
    project = gitlab_server.add_project("team/demo", folder=DEMO)
    gitlab_server.push(project, {"gpu_jobs/manifest.yaml": yaml.safe_dump({"version": 1, "jobs": [job]})})
    before = {path: _generated_takes(json.loads(gitlab_server.read(project, path)))
              for path in ("files/target/JHN.codex", "files/target/GEN.codex")}
    assert not any(before.values())
    gitlab_server.set_faults(faults)
    worker = start_gitlab_worker(gitlab_server, tmp_path, "faulty")

    ready = record_dir / "shaped1.ready"
    deadline_job = time.monotonic() + 240
    while not ready.exists():
        assert worker.poll() is None, "the worker ended before the job got to its write-back"
        assert time.monotonic() < deadline_job
        time.sleep(0.1)
    edited, value = _translator_edit(gitlab_server.read(project, NOTEBOOK).decode())
    gitlab_server.push(project, {NOTEBOOK: edited})
    (record_dir / "shaped1.go").write_text("go")
    assert worker.wait(timeout=300) == 0
    injected = gitlab_server.stats()["faults_injected"]
    gitlab_server.set_faults(None)

    assert sum(injected.values()) > 0, "no fault was injected: the test proved nothing"
    response = yaml.safe_load(gitlab_server.read(project, "gpu_jobs/job_shaped1/response.yaml"))
    assert response["state"] == "completed", response
    result = response["result"]
    # A 20 MB model goes to LFS (only its pointer is in git), and .gitattributes now says so.
    assert gitlab_server.read(project, result["checkpoint_path"]).startswith(b"version https://git-lfs")
    assert "gpu_jobs/**/*.pt filter=lfs" in gitlab_server.read(project, ".gitattributes").decode()
    model = gitlab_server.read_lfs(project, result["checkpoint_path"])
    assert len(model) == 20 * 1024 * 1024
    assert hashlib.sha256(model).hexdigest() == result["model_sha256"]
    notebooks = {path: json.loads(gitlab_server.read(project, path)) for path in before}
    assert any(c.get("value") == value for c in notebooks[NOTEBOOK]["cells"]), "the translator's edit was lost"
    takes = {cell: n for notebook in notebooks.values() for cell, n in _generated_takes(notebook).items()}
    assert takes and set(takes.values()) == {1}, takes  # one take per cell: nothing written twice
    assert result["uploaded_count"] == len(takes)
    for notebook in notebooks.values():
        for cell in notebook["cells"]:
            for attachment in ((cell.get("metadata") or {}).get("attachments") or {}).values():
                if attachment.get("isGenerated"):
                    pointer = attachment["url"].replace("/files/", "/pointers/")
                    assert gitlab_server.read_lfs(project, pointer), f"{pointer} has no audio"
    trailers = [m.group(1) for c in gitlab_server.commits(project)
                for m in [re.search(r"Worker-Commit-Id: (\S+)", c["message"])] if m]
    assert len(trailers) == len(set(trailers)), "a commit landed twice"
