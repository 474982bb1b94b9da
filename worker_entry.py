"""Command line of the Codex GPU worker.

Example:

    python worker_entry.py --local examples/demo_project --loop-interval -1
    GITLAB_TOKEN=... python worker_entry.py --gitlab-url https://git.genesisrnd.com --log-format json
    GITLAB_TOKEN=... python worker_entry.py --check --device cuda        # preflight: exit 1 if jobs would fail
    GITLAB_TOKEN=... python worker_entry.py --job bible/xyz:1763655321982 --dry-run
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Sequence

import click

from job_process import ChildSettings, ExecutionSettings
from storage import StorageError
from stores import DEFAULT_GITLAB_URL, open_source
from worker import Worker, WorkerConfig
from worker_logging import REDACTOR, configure_logging

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _split_paths(ctx, param, value):
    """--handler-path may repeat; $WORKER_HANDLER_PATH holds several folders separated by ':'."""
    paths: list[str] = []
    for item in value or ():
        paths.extend(p for p in str(item).split(os.pathsep) if p)
    return tuple(Path(p) for p in paths)


def _parse_job(ctx, param, value):
    """--job PROJECT:JOB_ID → (PROJECT, JOB_ID); job ids hold no ':', project paths may."""
    if value is None:
        return None
    project, sep, job_id = value.rpartition(":")
    if not sep or not project or not job_id:
        raise click.BadParameter(f"{value!r} is not PROJECT:JOB_ID, e.g. bible/xyz:1763655321982")
    return project, job_id


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--token", envvar="GITLAB_TOKEN", show_envvar=True, default=None,
              help="GitLab access token (never logged). Not needed with --local.")
@click.option("--worker-id", envvar="WORKER_ID", show_envvar=True, default=None,
              help="Name written into response.yaml; default: hostname-pid. Keep it stable across restarts "
                   "to resume this worker's own claims at once.")
@click.option("--gitlab-url", envvar="GITLAB_URL", show_envvar=True, default=DEFAULT_GITLAB_URL,
              show_default=True, help="GitLab server to poll.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("work"),
              show_default=True, help="Scratch folder for job data (per project and job).")
@click.option("--loop-interval", type=float, default=60.0, show_default=True,
              help="Seconds between polls; -1 exits when no job is left.")
@click.option("--keep-jobs", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many job work folders to keep on disk.")
@click.option("--local", "local_paths", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Serve a Codex project folder on disk instead of GitLab (repeatable; no token needed).")
@click.option("--handler-path", "handler_paths", multiple=True, envvar="WORKER_HANDLER_PATH", show_envvar=True,
              callback=_split_paths,
              help="Extra folder searched for <job_type>/<model>/<mode>.py before the built-in handlers "
                   "(repeatable).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Shared folder (e.g. a bucket mount) for resumable training state; without it the state "
                   "is kept in the job folder of the project.")
@click.option("--lease-seconds", type=click.FloatRange(min=1), default=1800.0, show_default=True,
              help="How long a claim holds without a heartbeat before another worker may take over.")
@click.option("--heartbeat-seconds", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
              help="How often the lease is renewed (a commit in the project).")
@click.option("--max-retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Takeovers of an expired lease before the job is marked failed.")
@click.option("--legacy-claim-hours", type=click.FloatRange(min=0), default=24.0, show_default=True,
              help="How long a claim of the earlier worker (a response.yaml without lease_expires_at) is held "
                   "after its last write: it sends no heartbeat while it trains.")
@click.option("--grace-seconds", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="After a stop request (cancel, shutdown), how long a job may take to save before it is killed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where handlers run their models.")
@click.option("--gpus", default="", metavar="auto|0,1,...",
              help="Run one job per GPU at the same time: 'auto' (every visible GPU) or a list of GPU ids. "
                   "Default: one job at a time.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines on stderr: text, or one JSON object per line.")
@click.option("--in-process", is_flag=True,
              help="Run handlers in the worker's own process (debugging; a hang or crash takes the worker down).")
@click.option("--list-jobs", is_flag=True,
              help="Print the jobs of every reachable project (or --local folder) as a table, then each "
                   "project's last job activity, and exit.")
@click.option("--check", is_flag=True,
              help="Preflight: check the token, the projects, the GPU, disk, models, audio codecs and espeak-ng; "
                   "print a table and exit 1 if jobs would fail here.")
@click.option("--min-free-gb", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="With --check: the least free disk space in --work-dir that passes.")
@click.option("--job", "named_job", metavar="PROJECT:JOB_ID", callback=_parse_job,
              help="Run just this job if it may run now, then exit (PROJECT: the GitLab path, or a --local "
                   "folder's name or path).")
@click.option("--dry-run", is_flag=True,
              help="With --job: print what the worker would decide for it, and why. With --unshare-idle-days: "
                   "list the projects it would leave. Changes nothing.")
@click.option("--unshare-idle-days", type=click.FloatRange(min=0, min_open=True), default=None, metavar="DAYS",
              help="Leave (remove the worker user's own membership of) every project without job activity for "
                   "DAYS, none with an unfinished job or an unreadable manifest, and exit.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def main(token, worker_id, gitlab_url, work_dir, loop_interval, keep_jobs, local_paths, handler_paths,
         checkpoint_dir, lease_seconds, heartbeat_seconds, max_retries, legacy_claim_hours, grace_seconds, device,
         gpus, log_format, in_process, list_jobs, check, min_free_gb, named_job, dry_run, unshare_idle_days,
         verbose):
    """Poll Codex projects for GPU jobs (gpu_jobs/manifest.yaml), run them, and write the results back."""
    worker_id = worker_id or default_worker_id()
    configure_logging(log_format=log_format, verbose=verbose, worker_id=worker_id, secrets=[token or ""])
    if heartbeat_seconds * 2 > lease_seconds:
        raise click.UsageError("--heartbeat-seconds must be at most half of --lease-seconds, "
                               "or a slow heartbeat would let the lease lapse")
    gpu_ids = _parse_gpus(gpus)
    if gpu_ids and in_process:
        raise click.UsageError("--gpus needs job processes (each sees only its GPU); drop --in-process")
    tools = [name for name, used in (("--check", check), ("--list-jobs", list_jobs), ("--job", named_job),
                                     ("--unshare-idle-days", unshare_idle_days is not None)) if used]
    if len(tools) > 1:
        raise click.UsageError(f"{' and '.join(tools)} do not go together: choose one")
    if dry_run and not (named_job or unshare_idle_days is not None):
        raise click.UsageError("--dry-run goes with --job or --unshare-idle-days")
    if unshare_idle_days is not None and local_paths:
        raise click.UsageError("--unshare-idle-days leaves GitLab projects; it has nothing to do with --local")
    source = _build_source(local_paths, token, gitlab_url)
    if check:
        sys.exit(_preflight(source, gitlab=not local_paths, work_dir=work_dir, device=device, gpu_ids=gpu_ids,
                            min_free_gb=min_free_gb))
    if unshare_idle_days is not None:
        sys.exit(_unshare(source, unshare_idle_days, dry_run))
    if list_jobs:
        try:
            _print_jobs(source)
        except StorageError as exc:
            raise click.ClickException(str(exc)) from None
        return
    execution = ExecutionSettings(
        heartbeat_seconds=heartbeat_seconds,
        check_seconds=min(60.0, heartbeat_seconds / 2),
        grace_seconds=grace_seconds,
        child=ChildSettings(log_format=log_format, verbose=verbose, device=device, in_process=in_process),
    )
    config = WorkerConfig(
        worker_id=worker_id, work_dir=work_dir, lease_seconds=lease_seconds, heartbeat_seconds=heartbeat_seconds,
        max_retries=max_retries, legacy_claim_hours=legacy_claim_hours, loop_interval=loop_interval,
        keep_jobs=keep_jobs, handler_paths=handler_paths, checkpoint_dir=checkpoint_dir, gpus=gpu_ids,
        execution=execution,
    )
    worker = Worker(source, config)
    if named_job:
        sys.exit(_one_job(worker, named_job, dry_run))
    _install_signal_handlers(worker)
    try:
        code = worker.run()
    except StorageError as exc:  # e.g. a refused token: say so plainly, without a traceback
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


def _parse_gpus(value: str) -> list[str]:
    value = (value or "").strip()
    if not value:
        return []
    if value == "auto":
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    ids = [part.strip() for part in value.split(",") if part.strip()]
    if not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
        raise click.BadParameter(f"{value!r} is not 'auto' or a list of distinct GPU ids like 0,1,2",
                                 param_hint="--gpus")
    return ids


def _build_source(local_paths, token, gitlab_url):
    if not local_paths:
        if not token:
            raise click.UsageError("no GitLab token: pass --token or set GITLAB_TOKEN, or serve a folder with "
                                   "--local PATH")
        # Children (job processes) read the token from the environment; it never travels in arguments.
        os.environ["GITLAB_TOKEN"] = token
        REDACTOR.add(token)
    return open_source(local_paths, token, gitlab_url)


JOB_COLUMNS = ("project", "job", "type/mode", "state", "worker", "epochs", "last update", "message")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, max_width: int = 60) -> str:
    """A plain-text table; long cells are cut so one job stays on one line."""
    cut = [[value if len(value) <= max_width else value[: max_width - 1] + "…" for value in map(str, row)]
           for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cut)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cut]
    return "\n".join(lines)


def _print_jobs(source) -> None:
    from jobs import describe_jobs, format_time
    from project_activity import project_activity

    rows, projects = [], []
    try:
        for store in source.poll():
            for job in describe_jobs(store):
                rows.append((job.project, job.job_id, job.kind, job.state, job.worker_id, job.epochs, job.updated,
                             job.message))
            activity = project_activity(store)
            last = format_time(activity.last_job_activity) if activity.last_job_activity else ""
            projects.append((activity.project, str(activity.jobs), str(activity.unfinished), last,
                             activity.problem))
    finally:
        source.close()
    click.echo(render_table(JOB_COLUMNS, rows) if rows else "No jobs in any reachable project.")
    if projects:
        click.echo("")
        click.echo(render_table(PROJECT_COLUMNS, projects))


PROJECT_COLUMNS = ("project", "jobs", "unfinished", "last job activity", "problem")
CHECK_COLUMNS = ("check", "status", "detail")
UNSHARE_COLUMNS = ("project", "jobs", "unfinished", "last job activity", "action", "why")


def _preflight(source, **options) -> int:
    """--check: the table of checks; 1 when a job would fail on this machine."""
    import preflight

    try:
        results = preflight.run_checks(source, **options)
    finally:
        source.close()
    table = render_table(CHECK_COLUMNS, [(r.check, r.status.value, r.detail) for r in results], max_width=240)
    click.echo(REDACTOR.redact(table))  # details quote GitLab's answers; the token is never among them
    click.echo(preflight.summary(results))
    return 1 if preflight.failed(results) else 0


def _unshare(source, idle_days: float, dry_run: bool) -> int:
    """--unshare-idle-days: leave idle projects (or, dry, list them); 1 when one could not be left."""
    from jobs import format_time
    from project_activity import unshare_idle

    try:
        outcomes = unshare_idle(source, idle_days=idle_days, dry_run=dry_run)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        source.close()
    rows = []
    for outcome in outcomes:
        activity = outcome.verdict.activity
        last = format_time(activity.last_job_activity) if activity.last_job_activity else ""
        rows.append((activity.project, str(activity.jobs), str(activity.unfinished), last, outcome.action,
                     outcome.verdict.reason))
    click.echo(render_table(UNSHARE_COLUMNS, rows, max_width=100) if rows else "No project visible to the token.")
    return 1 if any(outcome.failed for outcome in outcomes) else 0


def _one_job(worker: Worker, named_job: tuple[str, str], dry_run: bool) -> int:
    """--job PROJECT:JOB_ID: run it (or, dry, say what would happen); 1 when it did not run to completion."""
    project, job_id = named_job
    try:
        store = _named_store(worker.source, project)
    except StorageError as exc:
        worker.source.close()
        raise click.ClickException(str(exc)) from None
    try:
        if not dry_run:
            _install_signal_handlers(worker)
        ok, message = worker.run_named_job(store, job_id, dry_run=dry_run)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    if not ok and not dry_run:
        raise click.ClickException(message)
    click.echo(message)
    return 0 if ok else 1


def _named_store(source, project: str):
    """The store ``--job`` names: a --local folder (by name or path), or a GitLab project by path."""
    stores = getattr(source, "stores", None)
    if stores is None:
        return source.open_project(project)
    wanted = Path(project).expanduser()
    for store in stores:
        if store.root.name == project or (wanted.exists() and store.root == wanted.resolve()):
            return store
    raise click.UsageError(f"--job names project {project!r}, which is none of the --local folders")


def _install_signal_handlers(worker: Worker) -> None:
    """First SIGTERM/SIGINT: stop the job at its next heartbeat, release it, exit 0. Second: stop now."""

    def handle(signum, frame):
        name = signal.Signals(signum).name
        if worker.stopping:
            logger.warning("%s again: stopping now", name, extra={"event": "worker_stopping"})
            worker.request_stop(immediate=True)
        else:
            logger.warning("%s: finishing at the next heartbeat, then releasing the job (again to stop now)",
                           name, extra={"event": "worker_stopping"})
            worker.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


if __name__ == "__main__":
    main()
