"""The SkyPilot task file: secrets stay secrets, and the command it runs matches the CLI."""

from __future__ import annotations

import re

import yaml

import worker_entry
from conftest import ROOT


def load_task() -> dict:
    return yaml.safe_load((ROOT / "skypilot_worker.yaml").read_text())


def test_token_is_a_secret_not_an_env():
    task = load_task()
    assert "GITLAB_TOKEN" in task["secrets"]
    assert "GITLAB_TOKEN" not in (task.get("envs") or {})
    assert "GITLAB_TOKEN" not in task["run"]  # the worker reads it from the environment itself


def test_spot_resources_with_recovery():
    resources = load_task()["resources"]
    assert resources["use_spot"] is True
    assert len(resources["accelerators"]) >= 2
    assert resources["job_recovery"]["strategy"]
    assert resources["disk_size"] >= 100


def test_run_uses_only_real_options_and_a_stable_worker_id():
    run = load_task()["run"]
    known = {opt for param in worker_entry.main.params for opt in param.opts}
    used = set(re.findall(r"(--[a-z][a-z-]+)", run))
    assert used, run
    assert used <= known, f"options not in the CLI: {used - known}"
    assert "SKYPILOT_TASK_ID" in run and "--worker-id" in used
    assert "make setup" in load_task()["setup"]
    assert re.search(r"make setup .*EXTRAS=(\s|$)", load_task()["setup"])  # no test tools, no Gradio on workers
