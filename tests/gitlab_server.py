"""A GitLab stand-in on loopback for tests and benchmarks (the code lives in ``tests/gitlab_fake/``).

Run alone:

    python -m tests.gitlab_server --port 0 --token TOKEN --project bible/xyz=examples/demo_project \\
        [--faults 5xx=0.1,429=0.05,reset=0.05,slow=0.05] [--seed 1] [--max-commit-bytes 300000000]

The first line on stdout is ``GITLAB_URL=http://127.0.0.1:<port>``; then one ``PROJECT <id> <path>`` line
per project. It serves until killed (SIGTERM or Ctrl-C). ``GET /__stats`` counts requests per endpoint.

In-process (pytest): ``from gitlab_fake import GitLabTestServer`` (see ``tests/gitlab_fixtures.py``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

try:
    from .gitlab_fake import GitLabTestServer
    from .gitlab_fake.faults import parse_spec
except ImportError:  # imported as a top-level module, with tests/ on sys.path (as pytest does)
    from gitlab_fake import GitLabTestServer
    from gitlab_fake.faults import parse_spec

__all__ = ["GitLabTestServer", "main"]


def _project_arg(text: str) -> tuple[str, Path]:
    path, sep, folder = text.partition("=")
    if not sep or "/" not in path or not folder:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME=DIR, got {text!r}")
    if not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is not a folder")
    return path, Path(folder)


def _faults_arg(text: str) -> str:
    try:
        parse_spec(text)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.gitlab_server",
        description="Serve folders as GitLab projects on 127.0.0.1 (REST API v4 subset + Git LFS).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--token", required=True, help="the only token accepted (PRIVATE-TOKEN, Bearer, LFS Basic)")
    parser.add_argument("--project", action="append", type=_project_arg, default=[], metavar="NAMESPACE/NAME=DIR",
                        help="import DIR as a project (repeatable)")
    parser.add_argument("--faults", type=_faults_arg, default=None,
                        help="fault probabilities, e.g. 5xx=0.1,429=0.05,reset=0.05,slow=0.05")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    parser.add_argument("--max-commit-bytes", type=int, default=None,
                        help="answer 413 to commit requests with a larger body")
    parser.add_argument("--activity-throttle", type=float, default=0.0,
                        help="move last_activity_at at most once per this many seconds (GitLab: 3600)")
    parser.add_argument("--root", type=Path, default=None, help="where repositories live (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = GitLabTestServer(args.token, root=args.root, port=args.port, faults=args.faults, seed=args.seed,
                              max_commit_bytes=args.max_commit_bytes, activity_throttle=args.activity_throttle)
    projects = [server.add_project(path, folder) for path, folder in args.project]
    server.start()
    print(f"GITLAB_URL={server.url}", flush=True)
    for project in projects:
        print(f"PROJECT {project.id} {project.path_with_namespace}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
