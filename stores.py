"""Opening projects: the one module that knows both storage backends.

The worker's CLI, the fleet controller, the dataset exporter, the demo and a job's process all get their
stores and sources here. The backends (``local_store``, ``gitlab_jobs``) import only ``storage``, never this
module, so the imports form no circle. python-gitlab is imported only when a GitLab project is opened: local
runs (and their job processes) do without its half-second import.
"""

from __future__ import annotations

import os
from typing import Sequence

from local_store import LocalProjectStore, LocalSource
from storage import ProjectSource, ProjectStore, StoreSpec

#: The GitLab server the translation teams' projects live on.
DEFAULT_GITLAB_URL = "https://git.genesisrnd.com"


def open_store(spec: StoreSpec) -> ProjectStore:
    """Rebuild a store from its spec (in a job's process); a GitLab store reads ``$GITLAB_TOKEN``."""
    if spec.kind == "local":
        return LocalProjectStore.from_spec(spec)
    if spec.kind == "gitlab":
        from gitlab_jobs import GitLabProjectStore

        return GitLabProjectStore.from_spec(spec)
    raise ValueError(f"unknown store kind {spec.kind!r}")


def open_source(local_paths: Sequence[str | os.PathLike[str]] = (), token: str | None = None,
                gitlab_url: str = DEFAULT_GITLAB_URL) -> ProjectSource:
    """The project folders ``local_paths`` when there are any, else every GitLab project ``token`` can see.
    Without a token the GitLab source raises ``GitLabAuthError`` (a ``StorageError``)."""
    if local_paths:
        return LocalSource(local_paths)
    from gitlab_jobs import GitLabSource

    return GitLabSource(gitlab_url or DEFAULT_GITLAB_URL, token)


def open_project(local: str | os.PathLike[str] | None = None, *, project: int | str | None = None,
                 token: str | None = None, gitlab_url: str = DEFAULT_GITLAB_URL) -> ProjectStore:
    """One project: the folder ``local`` (``FileNotFoundError`` when it is none), else the GitLab project
    ``project`` (a numeric id or ``namespace/name``; the token defaults to ``$GITLAB_TOKEN``)."""
    if local is not None:
        return LocalProjectStore(local)
    if project is None:
        raise ValueError("open_project needs a local folder or a GitLab project")
    from gitlab_jobs import GitLabProjectStore

    return GitLabProjectStore(gitlab_url or DEFAULT_GITLAB_URL, project, token=token)
