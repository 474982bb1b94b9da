"""The bundled demo project (examples/demo_project) as a test environment, on either backend.

Tests read it the way a test should: plain JSON and plain files, never through the codex package, so that what they
check does not depend on the code under test.

    from demo_env import DemoProject, GitLabDemoProject, reference, current_take
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from conftest import ROOT, LocalEnv
from gitlab_fixtures import GitLabEnv
from local_store import LocalProjectStore

DEMO = ROOT / "examples" / "demo_project"
BOOKS = ("GEN", "JHN")
FILES = ".project/attachments/files"
POINTERS = ".project/attachments/pointers"


class DemoReads:
    """What the tests read and change in the demo project, whatever backend holds it."""

    def notebook(self, book: str) -> dict:
        return json.loads(self.read_file(f"files/target/{book}.codex"))

    def save_notebook(self, book: str, data: dict) -> None:
        """As the editor writes it: JSON.stringify(data, null, 2)."""
        self.write_file(f"files/target/{book}.codex", json.dumps(data, indent=2, ensure_ascii=False))

    def cells(self) -> dict[str, dict]:
        """Reference -> cell, both books."""
        return {reference(cell): cell for book in BOOKS for cell in self.notebook(book)["cells"]}

    def manifest_jobs(self) -> list[dict]:
        return yaml.safe_load(self.read_file("gpu_jobs/manifest.yaml"))["jobs"]

    def logs(self, job_id: str) -> str:
        return (self.read_file(f"gpu_jobs/job_{job_id}/logs.txt") or b"").decode()


class DemoProject(DemoReads, LocalEnv):
    """A copy of examples/demo_project on disk (LocalEnv's own constructor would replace its metadata.json)."""

    def __init__(self, root: Path):
        shutil.copytree(DEMO, root)
        self.root = root
        self.store = LocalProjectStore(root)

    def job_files(self, job_id: str, folder: str) -> list[str]:
        """Files under the job folder's ``folder``, relative to it."""
        base = self.root / "gpu_jobs" / f"job_{job_id}" / folder
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()) if base.exists() else []

    def attachments(self) -> dict[str, bytes]:
        base = self.root / ".project" / "attachments"
        return {p.relative_to(self.root).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


class GitLabDemoProject(DemoReads, GitLabEnv):
    """The demo project pushed to the GitLab test server, its audio in LFS as the editor syncs it."""

    def __init__(self, server, scratch: Path, path: str = "bible/demo"):
        shutil.copytree(DEMO, scratch)
        super().__init__(server, path, folder=scratch)

    def job_files(self, job_id: str, folder: str) -> list[str]:
        prefix = f"gpu_jobs/job_{job_id}/{folder}/"
        return sorted(p.removeprefix(prefix) for p in self.server.files(self.project) if p.startswith(prefix))


def reference(cell: dict) -> str:
    """The cell's verse reference (the editor's globalReferences; older cells: the cell id)."""
    refs = (cell["metadata"].get("data") or {}).get("globalReferences") or []
    return refs[0] if refs else cell["metadata"]["id"]


def live_audio(cell: dict) -> dict[str, dict]:
    return {k: a for k, a in (cell["metadata"].get("attachments") or {}).items()
            if a.get("type") == "audio" and not a.get("isDeleted")}


def current_take(meta: dict) -> str | None:
    """The editor's rule: the selected take when live, else the newest live take."""
    live = {k: a for k, a in (meta.get("attachments") or {}).items()
            if a.get("type") == "audio" and not a.get("isDeleted")}
    if meta.get("selectedAudioId") in live:
        return meta["selectedAudioId"]
    return max(live, key=lambda k: live[k]["createdAt"]) if live else None
