"""One scaling cycle of the GPU fleet (cron-friendly), or a loop with --watch.

Example:

    GITLAB_TOKEN=... python scale_workers.py --max-workers 4 --dry-run      # print the plan, change nothing
    GITLAB_TOKEN=... python scale_workers.py --max-workers 4 --watch 300    # a cycle every 5 minutes

See fleet.py for what a cycle does and the README's deployment section for the sizing rule.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

import fleet
from stores import DEFAULT_GITLAB_URL, open_source
from worker_logging import configure_logging

logger = logging.getLogger(__name__)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--token", envvar="GITLAB_TOKEN", show_envvar=True, default=None,
              help="The workers' GitLab token: counts the queue and is handed to launched workers as a "
                   "SkyPilot secret (never logged). Not needed with --local.")
@click.option("--gitlab-url", envvar="GITLAB_URL", show_envvar=True, default=DEFAULT_GITLAB_URL,
              show_default=True, help="GitLab server the workers poll.")
@click.option("--local", "local_paths", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Count the jobs of a Codex project folder instead of GitLab (repeatable).")
@click.option("--min-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Standing workers that poll even when the queue is empty.")
@click.option("--max-workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Never run more GPU workers than this.")
@click.option("--jobs-per-worker", type=click.IntRange(min=1), default=1, show_default=True,
              help="Queued jobs per worker: workers wanted = ceil(jobs / this).")
@click.option("--target-wait-minutes", type=click.FloatRange(min=1), default=None,
              help="Instead of --jobs-per-worker: size the fleet so the last queued job starts within about "
                   "this long, from the median duration of the projects' completed jobs.")
@click.option("--task-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=fleet.TASK_FILE,
              show_default=True, help="The worker's SkyPilot task.")
@click.option("--name-prefix", default="codex-worker", show_default=True,
              help="Managed job names of this fleet's workers (other managed jobs are left alone).")
@click.option("--lease-seconds", type=click.FloatRange(min=1), default=1800.0, show_default=True,
              help="The launched workers' --lease-seconds (LEASE_SECONDS in their task).")
@click.option("--max-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="The workers' --max-retries.")
@click.option("--watch", "watch_seconds", type=click.FloatRange(min=10), default=None,
              help="Run a cycle every SECONDS until interrupted (one process: idle cycles stay cheap).")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def main(token, gitlab_url, local_paths, min_workers, max_workers, jobs_per_worker, target_wait_minutes,
         task_file, name_prefix, lease_seconds, max_retries, watch_seconds, dry_run, verbose):
    """Launch GPU workers (SkyPilot managed jobs) for the jobs waiting in the projects; workers drain and exit."""
    configure_logging(verbose=verbose, secrets=[token or ""])  # registers the token with the one redactor
    try:
        settings = fleet.FleetSettings(min_workers, max_workers, jobs_per_worker, name_prefix)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    source = _source(local_paths, token, gitlab_url)
    try:
        api = fleet.SkyPilotSdk()
    except ImportError:
        raise click.ClickException("SkyPilot is not installed here: pip install skypilot") from None
    cycle_fleet = fleet.SkyPilotFleet(api, settings, task_file=task_file, token=token,
                                      envs={"GITLAB_URL": gitlab_url, "LEASE_SECONDS": f"{lease_seconds:g}"})
    try:
        while True:
            fleet.run_cycle(source, cycle_fleet, max_retries=max_retries,
                            dry_run=dry_run, target_wait_minutes=target_wait_minutes, echo=click.echo)
            if watch_seconds is None:
                return
            time.sleep(watch_seconds)
    except KeyboardInterrupt:
        return
    finally:
        source.close()


def _source(local_paths, token, gitlab_url):
    if not local_paths and not token:
        raise click.UsageError("no GitLab token: pass --token or set GITLAB_TOKEN, or count a folder with --local")
    return open_source(local_paths, token, gitlab_url)


if __name__ == "__main__":
    main()
