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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs import JobRow, describe_jobs  # noqa: E402
from local_jobs import LocalProjectStore  # noqa: E402
from worker_entry import render_table  # noqa: E402


def _outputs(row: JobRow) -> str:
    if row.state == "completed":
        result = row.result or {}
        parts = [f"{key}={value}" for key, value in result.items() if not isinstance(value, (dict, list))]
        return ", ".join(parts) or "completed"
    return row.message


def job_table(project: Path) -> str:
    rows = []
    for row in describe_jobs(LocalProjectStore(project)):
        duration = f"{(row.ended - row.started).total_seconds():.0f} s" if row.started and row.ended else ""
        rows.append((row.job_id, row.kind, row.state, duration, _outputs(row)))
    return render_table(("job", "type/mode", "state", "time", "outputs / message"), rows, max_width=110)


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
    print(job_table(project))
    print(f"\nJob folders, models, logs and generated takes are in {project}/gpu_jobs and its notebooks.")
    return code


if __name__ == "__main__":
    sys.exit(main())
