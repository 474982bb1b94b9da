"""The job folder (``gpu_jobs/job_<id>/``) and the project files a manifest names.

``job_paths`` gives a handler its job's folder paths (``jobs.job_paths``). ``upload_job_files``
puts models, checkpoints and metrics there, creating or updating as needed (a retried job finds the files of
an earlier attempt). ``fetch_project_file`` fetches a file a manifest field names (``model.base_checkpoint``,
``voice_reference``), confined to the project, with an error a translator can act on when it is not there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import codex
import jobs
from git_lfs import fetch_real
from handler_api import split_by_size
from jobs import JobPaths
from storage import FileAction, FileAlreadyExists, FileMissing, confine_path

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from handler_api import JobCallbacks

logger = logging.getLogger(__name__)

_UPLOAD_ATTEMPTS = 3


def job_paths(job_context: Mapping[str, Any]) -> JobPaths:
    """The job folder paths of ``job_context["job_id"]`` (``jobs.job_paths``, for a handler's context)."""
    return jobs.job_paths(job_context["job_id"])


def upload_job_files(callbacks: "JobCallbacks", files: Mapping[str, str | Path], message: str) -> int:
    """Commit local files to project paths inside this job's folder (``{project path: local path}``), each
    created or updated as the project holds it now, in as few commits as the body cap allows. Returns the
    number of commits. Paths outside ``gpu_jobs/job_<id>/`` are refused: a job writes only its own folder."""
    scanner = callbacks.scanner
    folder = jobs.job_paths(callbacks.get_job_config("job_id")).folder
    sources: dict[str, Path] = {}
    for path, local in files.items():
        safe = confine_path(path, what="job file")
        if not safe.startswith(folder + "/"):
            raise ValueError(f"upload_job_files writes only inside {folder}/, not {path}")
        if not Path(local).is_file():
            raise FileNotFoundError(f"cannot upload {local} to {safe}: no such file")
        sources[safe] = Path(local)
    if not sources:
        return 0
    sized = [FileAction.create(p, source=s) for p, s in sources.items()]   # create or update: same size
    batches = split_by_size(sized, scanner.max_commit_bytes)
    for number, batch in enumerate(batches, 1):
        suffix = f" ({number}/{len(batches)})" if len(batches) > 1 else ""
        _commit_files(callbacks, {a.path: sources[a.path] for a in batch}, message + suffix)
    logger.info("Uploaded %d job file(s) in %d commit(s): %s", len(sources), len(batches), ", ".join(sources))
    return len(batches)


def _commit_files(callbacks: "JobCallbacks", files: dict[str, Path], message: str) -> None:
    scanner = callbacks.scanner
    for attempt in range(1, _UPLOAD_ATTEMPTS + 1):
        # Decided per attempt: an earlier attempt of the job may have left the file, or just removed it.
        actions = [FileAction.update(p, source=s) if scanner.exists(p) else FileAction.create(p, source=s)
                   for p, s in files.items()]
        try:
            scanner.commit(actions, message)
            return
        except (FileAlreadyExists, FileMissing) as exc:
            if attempt == _UPLOAD_ATTEMPTS:
                raise
            logger.info("%s changed while uploading (%s); retrying", exc.path, exc)


class ProjectFileMissing(FileNotFoundError):
    """A file a manifest field names is not in the project (or is only a Git LFS pointer)."""


def fetch_project_file(callbacks: "JobCallbacks", path: str, dest: str | Path, *, field: str = "path") -> Path:
    """Download the project file ``path`` (named by the manifest field ``field``) to ``dest``.

    The path is confined to the project (``UnsafePath`` otherwise). An attachment named by its ``pointers/``
    path is also looked for at its ``files/`` twin and the other way round, because a local checkout keeps
    the real bytes in ``files/``. Raises ``ProjectFileMissing`` naming the field and the path when no real
    bytes exist (absent, empty, or only an LFS pointer).
    """
    safe = confine_path(path, what=field)
    twin = codex.attachment_twin(safe)
    fetched = fetch_real(callbacks.scanner.download, [safe, *([twin] if twin else [])], Path(dest))
    if fetched.local is None:
        raise ProjectFileMissing(f"{field} names {path}, which is not in the project: {'; '.join(fetched.problems)}")
    logger.info("Fetched %s (%s) from %s", field, path, fetched.path)
    return fetched.local

