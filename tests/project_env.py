"""What the lifecycle tests need of a project, whatever backend holds it."""

from __future__ import annotations

import time
from typing import Callable

import yaml


class ProjectEnv:
    """A project the tests drive like the plugin and the translators do. Backends implement
    ``write_file``/``read_file``/``remove_file``/``source``; the rest is shared."""

    kind = "abstract"

    def write_file(self, path: str, content: bytes | str) -> None:
        raise NotImplementedError

    def read_file(self, path: str) -> bytes | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def write_manifest(self, jobs: list[dict], version: int = 1) -> None:
        self.write_file("gpu_jobs/manifest.yaml", yaml.safe_dump({"version": version, "jobs": jobs}, sort_keys=False))

    def response(self, job_id: str) -> dict | None:
        raw = self.read_file(f"gpu_jobs/job_{job_id}/response.yaml")
        return yaml.safe_load(raw) if raw is not None else None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError("condition not met in time")

    def wait_state(self, job_id: str, state: str, timeout: float = 30.0) -> dict:
        """Wait for ``state``; for running, wait until the handler has reported at least once."""
        def reached() -> bool:
            response = self.response(job_id) or {}
            return response.get("state") == state and (state != "running"
                                                        or response.get("status_message") != "claimed")

        self.wait_for(reached, timeout)
        return self.response(job_id)
