"""The handler contract has one home, ``handler_api``; ``handlers.base`` is its old name for handlers written
against it. (That every message and stop survives the pipe: tests/test_process_boundary.py.)"""

from __future__ import annotations

import handler_api
import handlers.base
from import_graph import import_graph


def test_the_old_name_hands_out_the_contracts_own_objects():
    """A handler that catches ``handlers.base.JobInterrupted`` catches what the worker's side raises."""
    assert {"JobCallbacks", "JobStorage", "JobInterrupted", "StopKind", "split_by_size"} <= set(handlers.base.__all__)
    assert set(handlers.base.__all__) <= set(handler_api.__all__)
    for name in handlers.base.__all__:
        assert getattr(handlers.base, name) is getattr(handler_api, name), name
    assert all(hasattr(handler_api, name) for name in handler_api.__all__)


def test_the_worker_side_reads_the_contract_without_the_handlers_package():
    """``job_process`` (the parent, and the child before it loads a handler) imports ``handler_api``, which
    pulls in no handler code: the contract is for handlers, not of them."""
    graph = import_graph()
    assert "handler_api" in {edge.target for edge in graph["job_process"]}
    seen, todo = set(), ["job_process"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [edge.target for edge in graph.get(name, [])]
    assert not sorted(name for name in seen if name == "handlers" or name.startswith("handlers."))


def test_a_scanner_does_not_say_which_backend_holds_the_project():
    """Where files land is the store's policy (``written_paths``), so handlers get no backend name to
    special-case."""
    assert not hasattr(handler_api.JobStorage, "kind")
    assert {"written_paths", "commit_bytes"} <= set(dir(handler_api.JobStorage))
