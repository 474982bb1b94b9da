"""A GitLab stand-in for tests: the REST API v4 subset the worker uses, Git LFS, faults and counters.

``tests/gitlab_server.py`` runs it as a process; ``GitLabTestServer`` runs it in-process.
"""

from .server import GitLabTestServer

__all__ = ["GitLabTestServer"]
