"""`make demo`: run the worker on a scratch copy of the bundled demo project and print what happened.

The bundled project (examples/demo_project) is never modified: it is copied to demo_out/project first,
the worker serves the copy with ``--local`` until no job is left, and a table of the jobs follows, then
demo_out/report.html (scripts/demo_report.py): loss curves, generated takes to listen to, and transcriptions
beside the verses their recordings speak.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo_report import JOB_COLUMNS, job_row, write_report  # noqa: E402
from jobs import describe_jobs  # noqa: E402
from make_demo_project import spoken_verses  # noqa: E402
from stores import open_project  # noqa: E402
from worker_entry import render_table  # noqa: E402


def job_table(project: Path) -> str:
    """The jobs of the project as a plain-text table."""
    rows = [job_row(row) for row in describe_jobs(open_project(project))]
    return render_table(JOB_COLUMNS, rows, max_width=110)


def write_demo_report(project: Path, out_html: Path) -> None:
    """Write the HTML report. It comes after the job table and never changes the exit code: a failure
    here is printed with its traceback, and the table above it stays what the run produced."""
    try:
        path = write_report(project, out_html, references=spoken_verses())
    except Exception:  # the edge of the demo: report the failure, keep the run's outcome
        sys.stdout.flush()  # the table first, then the traceback, also when both go to one pipe
        traceback.print_exc()
        print(f"\nCould not write the HTML report {out_html} (the traceback is above).", file=sys.stderr)
        return
    print(f"Report (jobs, loss curves, generated takes, transcriptions): {path}")


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
    print(f"Demo project copied to {project}; running the worker on it (small CPU models: a few minutes).", flush=True)
    started = time.monotonic()
    command = [sys.executable, str(ROOT / "worker_entry.py"), "--local", str(project), "--loop-interval", "-1",
               "--work-dir", str(args.out / "work"), "--worker-id", "demo-worker", "--device", args.device,
               "--heartbeat-seconds", "30"]
    code = subprocess.call(command, cwd=ROOT)
    print(f"\nWorker finished with exit code {code} after {time.monotonic() - started:.0f} s.\n")
    print(job_table(project))
    print(f"\nJob folders, models, logs and generated takes are in {project}/gpu_jobs and its notebooks.")
    write_demo_report(project, args.out / "report.html")
    return code


if __name__ == "__main__":
    sys.exit(main())
