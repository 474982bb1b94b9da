"""Docs that travel with the code: every doc a file cites is in the repository, each doc names modules that
exist, and the README's handler example runs against the real callbacks (stopped, then resumed)."""

from __future__ import annotations

import collections
import json
import os
import re
import types
from pathlib import Path

import pytest

import handler_api
from handler_api import JobCallbacks, JobInterrupted
from local_store import LocalProjectStore
from storage import StorageError

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Folders that are not the project's own text: environments, build output, scratch, git itself.
_SKIP_DIRS = {".git", ".venv", ".venv-fleet", "build", "work", "demo_out", "__pycache__", "node_modules",
              ".pytest_cache"}
# A file name ending in .md, with or without folders before it (web addresses are matched, then left out).
_MD_CITATION = re.compile(r"(?<![\w.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def _project_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        found += [Path(folder, name) for name in files if name.endswith((".py", ".md"))]
    return sorted(found)


def _citations() -> list[tuple[Path, int, str]]:
    """(file, line number, cited path) for every .md path a .py or .md file of the project names."""
    cited = []
    for path in _project_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in _MD_CITATION.finditer(line):
                before = line[:match.start()]
                if re.search(r"https?://\S*$", before):
                    continue  # part of a web address
                cited.append((path, number, match.group(1)))
    return cited


def _resolves(citing: Path, cited: str) -> bool:
    """A cited doc exists: relative to the repository, to the citing file, or (a bare name) in docs/."""
    candidates = [ROOT / cited, citing.parent / cited]
    if "/" not in cited:
        candidates.append(DOCS / cited)
    return any(c.is_file() and ROOT in c.resolve().parents for c in candidates)


def _where(path: Path, number: int) -> str:
    return f"{path.relative_to(ROOT)}:{number}"


def test_the_scan_sees_the_projects_own_files():
    files = {p.relative_to(ROOT).as_posix() for p in _project_files()}
    assert {"README.md", "jobs.py", "docs/job_protocol.md", "tests/test_docs.py"} <= files
    assert not any(f.startswith((".venv/", ".git/")) for f in files)


def test_every_cited_doc_is_in_the_repository():
    missing = [f"{_where(path, n)} cites {cited}" for path, n, cited in _citations()
               if not _resolves(path, cited)]
    assert not missing, "docs cited but not in the repository:\n" + "\n".join(missing)


# The team's notes folder beside the repository: a user's clone has none of it. Spelt in two parts so
# that this file does not cite it.
OUTSIDE_DOCS = "/".join(("shared", "docs"))


def test_nothing_cites_docs_outside_the_repository():
    outside = [_where(path, n) for path in _project_files()
               for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE_DOCS in line]
    assert not outside, f"cite docs/ (in the repository), not {OUTSIDE_DOCS}, at:\n" + "\n".join(outside)


@pytest.mark.parametrize("name", ["job_protocol", "gitlab", "codex_format", "stabletts", "asr"])
def test_each_doc_names_modules_that_rely_on_it(name):
    text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
    head = text.split("\n\n", 2)[1]  # the paragraph under the title
    assert head.startswith("Relied on by:"), f"docs/{name}.md must say first which modules rely on it"
    paths = [n for n in re.findall(r"`([\w./-]+)`", head) if n.endswith((".py", "/"))]
    assert paths, f"docs/{name}.md names no module"
    folders: list[str] = []  # "the `codex/` package (`layout.py`, ...)": a bare name may be inside one
    gone = []
    for path in paths:
        if not any((ROOT / base / path).exists() for base in ["", *folders]):
            gone.append(path)
        if path.endswith("/"):
            folders.append(path)
    assert not gone, f"docs/{name}.md says these rely on it, but they do not exist: {gone}"


# -- the README's handler example, run for real ---------------------------------------------------------
def _readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"### {title}\n")
    end = readme.find("\n## ", start)
    return readme[start:end if end >= 0 else None]


def _example_handler() -> types.ModuleType:
    code = re.search(r"```python\n(.*?)```", _readme_section("Adding a handler"), re.S).group(1)
    module = types.ModuleType("readme_example_handler")
    exec(compile(code, "README.md (Adding a handler)", "exec"), module.__dict__)  # noqa: S102 - our own README
    return module


class _Worker:
    """Plays the worker's side of the pipe: performs commits at once, records progress, sends a stop."""

    def __init__(self, store, stop_after_epoch=None):
        self.store = store
        self.stop_after_epoch = stop_after_epoch
        self.inbox: collections.deque = collections.deque()
        self.epochs: list[int] = []

    def send(self, message) -> None:
        if isinstance(message, handler_api.ProgressReport):
            if message.epochs_completed is not None:
                self.epochs.append(message.epochs_completed)
                if message.epochs_completed == self.stop_after_epoch:  # seen by the handler's next heartbeat
                    self.inbox.append(handler_api.StopRequest("interrupted", "the machine is being preempted"))
        elif isinstance(message, handler_api.CommitRequest):
            error = None
            try:
                self.store.commit(message.actions, message.message)
            except StorageError as exc:
                error = exc
            self.inbox.append(handler_api.CommitDone(message.request_id, error))

    def poll(self, timeout=0.0) -> bool:
        return bool(self.inbox)

    def recv(self):
        return self.inbox.popleft()


def _attempt(store, tmp_path, name, stop_after_epoch=None):
    worker = _Worker(store, stop_after_epoch)
    context = {"job_id": "docs1", "job_type": "tts", "mode": "training", "epochs": 4,
               "project_id": store.name, "response": {"worker_id": name, "state": "running"}}
    return JobCallbacks(worker, store, context, tmp_path / name), worker, context


def test_the_readme_handler_example_runs_stops_and_resumes(tmp_path):
    handler = _example_handler()
    project = tmp_path / "project"
    project.mkdir()
    store = LocalProjectStore(project)
    resume = "gpu_jobs/job_docs1/resume/state.json"

    callbacks, first, context = _attempt(store, tmp_path, "worker-a", stop_after_epoch=1)
    with pytest.raises(JobInterrupted) as stopped:
        handler.run(context, callbacks)
    assert stopped.value.kind is handler_api.StopKind.INTERRUPTED
    assert first.epochs == [1, 2]
    assert (project / resume).is_file(), "the resume folder was not committed to the job folder"
    assert json.loads((project / resume).read_text()) == {"epoch": 2}  # saved with force=True on the stop

    callbacks, second, context = _attempt(store, tmp_path, "worker-b")
    result = handler.run(context, callbacks)
    assert second.epochs == [3, 4]  # continued after the saved epoch, on a fresh work folder
    assert result == {"success": True, "checkpoint_path": "gpu_jobs/job_docs1/checkpoint/model.json"}
    assert json.loads((project / result["checkpoint_path"]).read_text()) == {"epochs": 4}
    assert not (project / "gpu_jobs/job_docs1/resume").exists()  # clear_resume_state removed it


def test_the_readme_names_only_callbacks_that_exist(tmp_path):
    store = LocalProjectStore(tmp_path)
    callbacks, _, _ = _attempt(store, tmp_path, "worker-a")
    section = _readme_section("Adding a handler")
    for owner, prefix in ((callbacks, "callbacks"), (callbacks.scanner, "scanner")):
        names = set(re.findall(rf"\b{prefix}\.(\w+)", section))
        assert names, f"the README names no {prefix}.* at all"
        unknown = sorted(n for n in names if n not in dir(owner))
        assert not unknown, f"README.md names {prefix}.{unknown} but {type(owner).__name__} has no such member"


# What the worker's side of the contract calls; handlers never need it.
_WORKER_ONLY = {"resolve_outcome"}


def test_the_readme_documents_everything_callbacks_offer_a_handler():
    """The other direction: every public member of ``JobCallbacks`` and of its ``scanner`` is in the README's
    handler API, the resume calls included, so a handler author need not read handler_api.py."""
    section = _readme_section("Adding a handler")
    for cls, prefix in ((handler_api.JobCallbacks, "callbacks"), (handler_api.JobStorage, "scanner")):
        offered = {n for n in vars(cls) if not n.startswith("_")} - _WORKER_ONLY
        named = set(re.findall(rf"\b{prefix}\.(\w+)", section))
        assert not sorted(offered - named), f"README.md's handler API leaves out {prefix}.{sorted(offered - named)}"
    assert "save_resume_state(force=" in section
