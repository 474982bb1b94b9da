"""Runs scale_workers.py inside the fleet's own venv (.venv-fleet, real SkyPilot) with SkyPilot's SDK calls
recorded at one boundary: ``sky.jobs.queue_v2``, ``sky.jobs.launch``, ``sky.jobs.cancel`` and ``sky.get``.
Everything else is SkyPilot's own code, our task YAML's loading and validation included.

Input: $FLEET_QUEUE, the managed-job records the fake queue answers (JSON). Output: the CLI's own lines, then
one line ``CALLS <json>`` with what was asked of SkyPilot (never the token: only whether it was passed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sky  # noqa: E402

calls: list = []
records = json.loads(os.environ.get("FLEET_QUEUE", "[]"))
token = os.environ.get("GITLAB_TOKEN", "")


def _reveal(secret) -> str | None:
    """SkyPilot keeps secrets as pydantic SecretStr (masked in its logs)."""
    return secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret


def queue_v2(**kwargs):
    calls.append(["queue", {k: kwargs.get(k) for k in ("refresh", "skip_finished")}])
    return ("queue",)


def launch(task, name=None, **kwargs):
    assert isinstance(task, sky.Task), type(task)
    calls.append(["launch", {
        "name": name, "task_name": task.name, "envs": dict(task.envs),
        "secrets": sorted(task.secrets), "token_passed": bool(token) and _reveal(task.secrets.get("GITLAB_TOKEN")) == token,
        "accelerators": sorted(str(r.accelerators) for r in task.resources),
        "use_spot": sorted({bool(r.use_spot) for r in task.resources}),
    }])
    return ("launch",)


def cancel(job_ids=None, **kwargs):
    calls.append(["cancel", list(job_ids or [])])
    return ("cancel",)


def get(request):
    kind = request[0]
    if kind == "queue":
        return records, len(records), {}, len(records)
    if kind == "launch":
        return [1000 + len(calls)], None
    return None


sky.jobs.queue_v2, sky.jobs.launch, sky.jobs.cancel, sky.get = queue_v2, launch, cancel, get

import scale_workers  # noqa: E402

try:
    scale_workers.main(sys.argv[1:], standalone_mode=False)
finally:
    print("CALLS " + json.dumps(calls), flush=True)
