"""The project's modules import each other without a circle, the storage backends are known to one module
only, and every module imports cleanly in dependency order (tests/import_graph.py reads the graph)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import import_graph
from import_graph import ROOT, dependency_order, describe_cycle, find_cycle, import_graph as build_graph

@pytest.fixture(scope="module")
def graph():
    return build_graph()


def test_the_project_imports_form_no_circle(graph):
    assert {"storage", "stores", "local_store", "gitlab_jobs", "jobs", "codex", "codex.changes",
            "handlers.tts.stabletts.synthesis", "scripts/run_demo.py"} <= set(graph)
    cycle = find_cycle(graph)  # imports inside functions count too: a lazy import only hides a circle
    assert cycle is None, "import circle: " + describe_cycle(graph, cycle)


def test_one_module_knows_both_storage_backends(graph):
    """storage.py is the interface: it imports no backend. Only stores.py opens them (bench/ times the
    GitLab store alone, and local_jobs is the old name of local_store)."""
    assert [e.target for e in graph["storage"]] == []
    importers = {backend: {node for node, edges in graph.items() if any(e.target == backend for e in edges)}
                 for backend in ("local_store", "gitlab_jobs")}
    assert importers["local_store"] == {"stores", "local_jobs"}, importers
    assert importers["gitlab_jobs"] <= {"stores", "bench/bench_gitlab.py"}, importers


# The command lines: they import libraries, never each other, and no library imports them.
CLIS = {"worker_entry", "scale_workers", "train_stabletts", "inference_stabletts", "preprocess_stabletts",
        "batch_tts_inference", "train_w2v2bert_asr", "inference_w2v2bert_asr", "gradio_demo_stabletts",
        "gradio_demo_w2v2bert_asr", "gitlab_to_hf_dataset", "preprocess_audio"}
# What the model libraries may not reach: the worker, its protocol and stores, and the handlers.
WORKER_SIDE = {"worker", "job_process", "jobs", "handler_api", "handler_discovery", "stores", "storage",
               "local_store", "local_jobs", "gitlab_jobs", "claim_records", "fleet", "preflight"}
LIBRARIES = ("StableTTS", "tts", "asr")


def _home(module: str) -> str:
    return module.split(".")[0]


def test_no_module_imports_a_command_line(graph):
    """A script's helpers that others need live in a library (tests and scripts/ may drive the CLIs)."""
    importers = {(node, e.target) for node, edges in graph.items() for e in edges
                 if e.target in CLIS and "/" not in node and e.target != node}
    # preprocess_audio and gitlab_to_hf_dataset are libraries with a command line of their own.
    importers = {(node, target) for node, target in importers if target not in ("preprocess_audio", "gitlab_to_hf_dataset")}
    assert importers == set(), sorted(importers)


def test_the_model_libraries_know_nothing_of_the_worker(graph):
    reached = {(node, e.target) for node, edges in graph.items() if _home(node) in LIBRARIES for e in edges
               if _home(e.target) in WORKER_SIDE | {"handlers"}}
    assert reached == set(), sorted(reached)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in import_graph.PACKAGES + import_graph.SCRIPT_DIRS:
        (tmp_path / folder).mkdir(exist_ok=True)
    return tmp_path


def test_a_circle_is_found_and_named_with_its_lines(tmp_path):
    root = _tree(tmp_path, {
        "alpha.py": "import beta\n",
        "beta.py": "import os\n\n\ndef later():\n    from gamma import thing\n",
        "gamma.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import delta\nimport alpha\n",
        "delta.py": "import gamma\n",
    })
    graph = build_graph(root)
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"alpha", "beta", "gamma"}
    text = describe_cycle(graph, cycle)
    assert "beta (line 5, in a function) -> gamma" in text and "alpha (line 1) -> beta" in text
    # The TYPE_CHECKING import never runs: delta -> gamma alone is no circle.
    assert [e.target for e in graph["gamma"]] == ["alpha"]


def test_package_rules_an_import_of_a_sibling_is_no_edge_back_to_its_package(tmp_path):
    root = _tree(tmp_path, {
        "codex/__init__.py": "from .changes import apply\nfrom codex.cells import cell\n",
        "codex/cells.py": "cell = 1\n",
        "codex/changes.py": "from codex.cells import cell\nfrom . import cells\n\n\ndef apply():\n    pass\n",
        "asr/__init__.py": "",
        "asr/decode.py": "from asr import postcorrect\n",
        "asr/postcorrect.py": "from asr import decode\n",
    })
    graph = build_graph(root)
    assert sorted(e.target for e in graph["codex.changes"]) == ["codex.cells", "codex.cells"]
    assert find_cycle({k: v for k, v in graph.items() if not k.startswith("asr")}) is None
    assert set(find_cycle(graph)) == {"asr.decode", "asr.postcorrect"}
    # A name (not a module) taken from the importer's own package is an edge back to it.
    (root / "codex/cells.py").write_text("from codex import apply\n")
    graph = {k: v for k, v in build_graph(root).items() if not k.startswith("asr")}
    assert {"codex", "codex.cells"} <= set(find_cycle(graph))


def test_every_top_level_module_is_packaged():
    """pyproject's py-modules names every top-level module (stores.py and local_store.py were new)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"])
    on_disk = {path.stem for path in ROOT.glob("*.py")}
    assert listed == on_disk


@pytest.mark.parametrize("value, home", [("https://git.genesisrnd.com", "stores"),
                                         ("gpu_jobs/manifest.yaml", "jobs")])
def test_each_storage_constant_is_written_once(value, home):
    """DEFAULT_GITLAB_URL and MANIFEST_PATH have one home; every other module imports them."""
    homes = [name for name, path in import_graph.project_modules().items()
             if value in import_graph.string_constants(path)]
    assert homes == [home]


@pytest.mark.slow  # a fresh interpreter importing torch, transformers and gradio: ~10-25 s on 2 shared cores
def test_every_module_imports_in_dependency_order(graph):
    """Each project module, imported after everything it imports, in a fresh interpreter: a module that
    only worked because another had been imported first fails here, named."""
    modules = set(import_graph.project_modules())
    order = [name for name in dependency_order(graph) if name in modules]
    code = ("import importlib, json, sys, traceback\n"
            "for name in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except BaseException:\n"
            "        print(name); traceback.print_exc(); sys.exit(1)\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(order)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert len(order) == len(modules)
