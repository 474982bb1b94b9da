"""Shared fixtures: a project "environment" the lifecycle tests drive the same way on every backend."""

from __future__ import annotations

import os
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_HANDLERS = Path(__file__).resolve().parent / "handlers"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jobs  # noqa: E402
from jobs import format_time, utc_now  # noqa: E402
from job_process import ChildSettings, ExecutionSettings  # noqa: E402
from local_store import LocalProjectStore, LocalSource  # noqa: E402
from project_env import ProjectEnv  # noqa: E402
from worker import Worker, WorkerConfig  # noqa: E402
from gitlab_fixtures import (  # noqa: E402,F401  (fixtures for the GitLab tests)
    codex_project_dir, gitlab_client, gitlab_env, gitlab_project, gitlab_server, gitlab_store,
    gitlab_token,
)


def make_job(job_id: str, behaviour: str = "succeed", *, minutes_ago: float = 10, **extra: Any) -> dict:
    """A manifest job for the probe test handler."""
    job = {
        "job_id": job_id,
        "job_type": "test",
        "mode": "training",
        "model": {"type": "Probe"},
        "submitted_at": format_time(utc_now() - timedelta(minutes=minutes_ago)),
        "epochs": 3,
        "probe": {"behaviour": behaviour},
        "canceled": False,
    }
    job.update(extra)
    return job


class LocalEnv(ProjectEnv):
    """A Codex project folder on disk; edits by 'translators' and 'the plugin' are plain file writes."""

    kind = "local"

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "metadata.json").write_text('{"projectName": "test"}\n')
        self.store = LocalProjectStore(root)

    def write_file(self, path: str, content: bytes | str) -> None:
        data = content.encode() if isinstance(content, str) else content
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp-test")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def read_file(self, path: str) -> bytes | None:
        target = self.root / path
        return target.read_bytes() if target.is_file() else None

    def remove_file(self, path: str) -> None:
        (self.root / path).unlink()

    def source(self):
        return LocalSource([self.root])

    def close(self) -> None:
        pass

@pytest.fixture
def record_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    monkeypatch.setenv("CODEX_TEST_RECORD_DIR", str(folder))
    return folder


def executions(record_dir: Path) -> list[tuple[str, str]]:
    log = record_dir / "executions.log"
    if not log.exists():
        return []
    return [tuple(line.split()[:2]) for line in log.read_text().splitlines() if line.strip()]


@pytest.fixture
def local_env(tmp_path) -> LocalEnv:
    return LocalEnv(tmp_path / "project")


def project_env(request, tmp_path):
    """The project of a test parametrised by backend (``request.param``): a folder on disk, or a project on
    the GitLab test server."""
    if request.param == "gitlab":
        yield request.getfixturevalue("gitlab_env")
        return
    environment = LocalEnv(tmp_path / "project")
    yield environment
    environment.close()


@pytest.fixture(params=["local", pytest.param("gitlab", marks=pytest.mark.slow)])
def env(request, tmp_path):
    """The project under test, on each backend. The GitLab half is marked slow: ``make test-fast`` runs every
    case on the folder, and the store contract (test_store_contract.py) on both backends, which is what lets
    one backend stand for the other in the edit loop; ``make test`` runs both."""
    yield from project_env(request, tmp_path)


class ProtocolClock:
    """The protocol's clock (``jobs.utc_now``) in the test's process, moved forward by hand: where time
    passing is the point (a timeout, a lease running out), a test jumps instead of waiting. Job processes
    keep the real clock; they never judge time themselves (the worker's keeper does)."""

    def __init__(self):
        self.offset = timedelta(0)

    def __call__(self):
        return utc_now() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def protocol_clock(monkeypatch) -> ProtocolClock:
    clock = ProtocolClock()
    monkeypatch.setattr(jobs, "utc_now", clock)
    return clock


def fast_config(tmp_path: Path, worker_id: str = "worker-a", **overrides: Any) -> WorkerConfig:
    """Worker settings scaled down so lifecycle tests take seconds, not hours."""
    execution = ExecutionSettings(
        heartbeat_seconds=overrides.pop("heartbeat_seconds", 0.3),
        check_seconds=overrides.pop("check_seconds", 0.1),
        grace_seconds=overrides.pop("grace_seconds", 2.0),
        child=ChildSettings(in_process=overrides.pop("in_process", False)),
    )
    config = WorkerConfig(
        worker_id=worker_id, work_dir=tmp_path / f"work-{worker_id}", lease_seconds=overrides.pop("lease_seconds", 5.0),
        heartbeat_seconds=execution.heartbeat_seconds, max_retries=overrides.pop("max_retries", 3),
        loop_interval=overrides.pop("loop_interval", -1), keep_jobs=overrides.pop("keep_jobs", 5),
        handler_paths=overrides.pop("handler_paths", (TEST_HANDLERS,)), execution=execution,
    )
    assert not overrides, overrides
    return config


def run_worker(source, config: WorkerConfig) -> Worker:
    worker = Worker(source, config)
    worker.run()
    return worker


def run_worker_in_thread(source, config: WorkerConfig) -> tuple[Worker, threading.Thread]:
    worker = Worker(source, config)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def write_tar(path: Path, members) -> Path:
    """A tar.gz at ``path`` from (TarInfo, bytes or None) pairs: the hostile archives tests hand to loaders."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def tar_file(name: str, data: bytes = b"{}"):
    """A regular archive member for ``write_tar``."""
    import tarfile

    return tarfile.TarInfo(name), data


def tar_link(name: str, target: str, kind: bytes | None = None):
    """A link (symbolic unless ``kind`` says otherwise, e.g. tarfile.LNKTYPE or CHRTYPE) for ``write_tar``."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind or tarfile.SYMTYPE, target
    return info, None


def block_network(mp: pytest.MonkeyPatch) -> None:
    """No network: the Hugging Face offline switch, and a socket guard that proves it (any IPv4/IPv6
    connection raises; Unix sockets, e.g. multiprocessing's, still work)."""
    import socket

    mp.setenv("HF_HUB_OFFLINE", "1")
    real_connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access in an offline test: {address}")
        return real_connect(sock, address)

    mp.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def runner(monkeypatch):
    """click's CliRunner for the worker's CLIs, without the caller's token, worker id or handler path."""
    import logging

    from click.testing import CliRunner

    for name in ("GITLAB_TOKEN", "WORKER_ID", "WORKER_HANDLER_PATH"):
        monkeypatch.delenv(name, raising=False)
    yield CliRunner()
    root = logging.getLogger()  # main() installs a stderr handler bound to the runner's closed stream
    for handler in [h for h in root.handlers if getattr(h, "_codex_worker", False)]:
        root.removeHandler(handler)


def undocumented_options(command, readme: str) -> list[str]:
    """The long options and env vars of a click ``command`` that the README never names."""
    missing = []
    for param in command.params:
        missing += [name for name in param.opts if name.startswith("--") and name != "--help"
                    and f"`{name}" not in readme]
        if getattr(param, "envvar", None) and f"`{param.envvar}`" not in readme:
            missing.append(param.envvar)
    return missing


@pytest.fixture
def hub_offline(monkeypatch):
    """No Hugging Face hub downloads: offline mode, and the worker's cached reachability answer forgotten."""
    import model_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_hub.hub_reachable.cache_clear()
    yield
    model_hub.hub_reachable.cache_clear()


@pytest.fixture
def heartbeat_messages(monkeypatch) -> list[str]:
    """Every status message a job running in this process sends (``JobCallbacks.heartbeat``), in order."""
    from handler_api import JobCallbacks

    seen: list[str] = []
    heartbeat = JobCallbacks.heartbeat

    def recording(self, *args, message=None, **kwargs):
        seen.append(message)
        return heartbeat(self, *args, message=message, **kwargs)

    monkeypatch.setattr(JobCallbacks, "heartbeat", recording)
    return seen


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """In-process models in tests are tiny: they gain nothing from a second thread, and on a shared 2-core
    runner OpenMP's spinning threads make them several times slower. (Job processes get OMP_NUM_THREADS.)"""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _hub_mode_restored(monkeypatch):
    """A test that finds the hub unreachable switches the process to offline mode (model_hub): restored after
    it, like everything monkeypatch touches, so no test inherits another's answer."""
    import os

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    if "HF_HUB_OFFLINE" in os.environ:
        monkeypatch.setenv("HF_HUB_OFFLINE", os.environ["HF_HUB_OFFLINE"])
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture(autouse=True)
def _info_logging():
    """The CLI logs at INFO; tests that drive Worker directly get the same, so job logs are complete."""
    import logging

    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(previous)
