"""`make demo`: run the worker on a scratch copy of the bundled demo project and print what happened.

The bundled project (examples/demo_project) is never modified: it is copied to demo_out/project first,
the worker serves the copy with ``--local`` until no job is left, and a table of the jobs follows.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _time(value) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _summary(response: dict) -> str:
    if response.get("state") == "completed":
        result = response.get("result") or {}
        parts = [f"{key}={value}" for key, value in result.items() if not isinstance(value, (dict, list))]
        return ", ".join(parts) or "completed"
    return str(response.get("error_message") or response.get("termination_reason")
               or response.get("status_message") or "")


def job_table(project: Path) -> list[tuple[str, str, str, str, str]]:
    manifest = yaml.safe_load((project / "gpu_jobs" / "manifest.yaml").read_text())
    rows = []
    for job in manifest.get("jobs") or []:
        job_id = str(job.get("job_id"))
        kind = f"{job.get('job_type')}/{job.get('mode')}"
        response_file = project / "gpu_jobs" / f"job_{job_id}" / "response.yaml"
        if not response_file.exists():
            rows.append((job_id, kind, "pending", "", ""))
            continue
        response = yaml.safe_load(response_file.read_text()) or {}
        started, ended = _time(response.get("claimed_at")), _time(response.get("timestamp"))
        duration = f"{(ended - started).total_seconds():.0f} s" if started and ended else ""
        rows.append((job_id, kind, str(response.get("state")), duration, _summary(response)))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("job", "type/mode", "state", "time", "outputs / message")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(4)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[4]
    print(line)
    print("-" * min(len(line) + 40, 160))
    for row in rows:
        message = row[4] if len(row[4]) <= 100 else row[4][:97] + "..."
        print("  ".join(value.ljust(w) for value, w in zip(row, widths)) + "  " + message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=ROOT / "examples" / "demo_project")
    parser.add_argument("--out", type=Path, default=ROOT / "demo_out")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    project = args.out / "project"
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.source, project)
    print(f"Demo project copied to {project}; running the worker on it (jobs use the tiny presets).", flush=True)
    started = time.monotonic()
    command = [sys.executable, str(ROOT / "worker_entry.py"), "--local", str(project), "--loop-interval", "-1",
               "--work-dir", str(args.out / "work"), "--worker-id", "demo-worker", "--device", args.device,
               "--heartbeat-seconds", "30"]
    code = subprocess.call(command, cwd=ROOT)
    print(f"\nWorker finished with exit code {code} after {time.monotonic() - started:.0f} s.\n")
    print_table(job_table(project))
    print(f"\nJob folders, models, logs and generated takes are in {project}/gpu_jobs and its notebooks.")
    return code


if __name__ == "__main__":
    sys.exit(main())
