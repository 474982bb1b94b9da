"""Finding and loading a job's handler: ``<root>/<job_type>/<model>/<mode>.py``.

Extra roots (``--handler-path``) are searched before the built-in ``handlers`` package, so a team can add a
model type without forking. Folder names compare like model names: case, ``-`` and ``_`` do not matter.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Sequence

import jobs

logger = logging.getLogger(__name__)

BUILTIN_HANDLERS = Path(__file__).resolve().parent / "handlers"
_MODES = ("training", "inference", "training_and_inference")


class HandlerNotFound(LookupError):
    """No handler for a job, or one that cannot be imported. The message is for translators: it names the
    job's fields and what this worker can do, never a server path."""


def find_handler(job: jobs.JobSpec, roots: Sequence[Path]) -> Path:
    """The handler file for ``job`` in the first root that has it; raises ``HandlerNotFound``."""
    looked: list[str] = []
    for root in [*roots, BUILTIN_HANDLERS]:
        type_dir = _match_dir(Path(root), job.job_type.lower())
        model_dir = _match_dir(type_dir, job.model_key) if type_dir else None
        candidate = (model_dir or Path(root) / job.job_type / job.model_key) / f"{job.mode}.py"
        looked.append(str(candidate))
        if candidate.is_file():
            return candidate
    logger.debug("no handler for job %s; looked for %s", job.job_id, ", ".join(looked))
    known = known_handlers(roots)
    raise HandlerNotFound(
        f"this worker has no handler for job_type {job.job_type!r} with model.type {job.model_type!r} in mode "
        f"{job.mode!r}; it runs: {', '.join(known) if known else 'no handlers'}"
    )


def known_handlers(roots: Sequence[Path] = ()) -> list[str]:
    """``job_type/model (modes)`` for every handler this worker can run, e.g. ``tts/stabletts (inference,
    training)``."""
    found: dict[str, set[str]] = {}
    for root in [*roots, BUILTIN_HANDLERS]:
        for type_dir in _subdirs(Path(root)):
            for model_dir in _subdirs(type_dir):
                modes = {mode for mode in _MODES if (model_dir / f"{mode}.py").is_file()}
                if modes:
                    key = f"{type_dir.name.lower()}/{jobs.normalise_model_name(model_dir.name)}"
                    found.setdefault(key, set()).update(modes)
    return [f"{key} ({', '.join(sorted(modes))})" for key, modes in sorted(found.items())]


def _subdirs(parent: Path) -> list[Path]:
    if not parent.is_dir():
        return []
    return sorted(entry for entry in parent.iterdir() if entry.is_dir() and not entry.name.startswith(("_", ".")))


def _match_dir(parent: Path, key: str) -> Path | None:
    for entry in _subdirs(parent):
        if jobs.normalise_model_name(entry.name) == key:
            return entry
    return None


def load_handler(path: Path):
    """Import a handler module; built-in handlers by package name so their own imports work."""
    path = Path(path).resolve()
    if BUILTIN_HANDLERS in path.parents:
        dotted = ".".join(("handlers", *path.relative_to(BUILTIN_HANDLERS).with_suffix("").parts))
        return importlib.import_module(dotted)
    relative = "/".join(path.with_suffix("").parts[-3:])
    name = "codex_job_handler_" + relative.replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HandlerNotFound(f"cannot import the handler {relative}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise HandlerNotFound(f"the handler {relative}.py has no run(job_context, callbacks) function")
    return module
