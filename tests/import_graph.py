"""The project's import graph, read from the source with ``ast`` (nothing is imported).

Nodes are the project's modules: the top-level ``*.py`` files, every module of the packages, and the entry
scripts under ``scripts/`` and ``bench/`` (named by their path, resolved against their own folder first, as
Python runs them). An edge ``a -> b`` means running ``a`` may import ``b``: module-level imports and the
ones inside functions alike, because a circle closed by a lazy import is still a circle in the design (and
runs as one the day the call moves to import time). ``if TYPE_CHECKING:`` imports never run and are left out.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("codex", "handlers", "StableTTS", "asr", "tts")
SCRIPT_DIRS = ("scripts", "bench")


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the project, and whether it runs only when a function is called."""

    target: str
    line: int
    lazy: bool


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for the top-level files and the packages (``pkg/__init__.py`` is ``pkg``)."""
    modules = {path.stem: path for path in sorted(root.glob("*.py"))}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


@functools.lru_cache(maxsize=None)
def string_constants(path: Path) -> tuple[str, ...]:
    """The string literals of a module, docstrings left out (to find where a value is written); parsed once
    per test run, since several checks ask every module about many values."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return tuple(node.value for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings)


def entry_scripts(root: Path = ROOT) -> dict[str, Path]:
    """``scripts/x.py``-style names -> files: programs run by path, which nothing imports."""
    return {path.relative_to(root).as_posix(): path for folder in SCRIPT_DIRS
            for path in sorted((root / folder).glob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _statements(tree: ast.Module):
    """(import statement, inside a function?) for every import that can run."""
    pending: list[tuple[ast.AST, bool]] = [(node, False) for node in tree.body]
    while pending:
        node, lazy = pending.pop()
        if _type_checking_block(node):
            pending += [(child, lazy) for child in node.orelse]
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, lazy
            continue
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        pending += [(child, inner) for child in ast.iter_child_nodes(node)]


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(name: str, path: Path, modules: dict[str, Path], local: dict[str, str] | None = None) -> list[Import]:
    """The project modules that module ``name`` (file ``path``) imports. ``local`` maps the names a script's
    own folder provides (a script's folder comes first on ``sys.path``) to their node names.

    ``import a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``; ``from a.b import c`` runs ``a``, ``a.b`` and the
    module ``a.b.c`` when there is one. Packages that contain the importer are left out: Python has already
    started them before it runs the importer, so ``from codex.cells import x`` inside ``codex.changes`` is no
    edge back to ``codex`` (``from codex import x`` of a name, not a module, is).
    """
    local = local or {}
    package = _package_of(name, path) if name in modules else ""
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)} if name in modules else set()
    found: list[Import] = []

    def add(target: str, line: int, lazy: bool) -> None:
        if target in local:
            found.append(Import(local[target], line, lazy))
        elif target in modules and target != name:
            found.append(Import(target, line, lazy))

    def add_dotted(dotted: str, line: int, lazy: bool) -> None:
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in ancestors:
                add(prefix, line, lazy)

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node, lazy in _statements(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add_dotted(alias.name, node.lineno, lazy)
            continue
        if node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            origin = ".".join([*base, node.module] if node.module else base)
        else:
            origin = node.module or ""
        add_dotted(origin, node.lineno, lazy)
        submodules = [f"{origin}.{alias.name}" for alias in node.names if f"{origin}.{alias.name}" in modules]
        for target in submodules:
            add(target, node.lineno, lazy)
        if origin in ancestors and len(submodules) < len(node.names):
            add(origin, node.lineno, lazy)  # a name (not a module) from a package this module belongs to
    return found


def import_graph(root: Path = ROOT) -> dict[str, list[Import]]:
    """Every node and what it imports."""
    modules = project_modules(root)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    for name, path in entry_scripts(root).items():
        folder = path.parent
        local = {p.stem: p.relative_to(root).as_posix() for p in folder.glob("*.py") if p.stem not in modules}
        graph[name] = imports_of(name, path, modules, local)
    return graph


def find_cycle(graph: dict[str, list[Import]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for edge in graph.get(node, []):
            if state.get(edge.target) == 1:
                return path[path.index(edge.target):] + [edge.target]
            if edge.target not in state:
                cycle = visit(edge.target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def dependency_order(graph: dict[str, list[Import]]) -> list[str]:
    """Every node after everything it imports (the graph must be acyclic)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        done.add(node)
        for edge in sorted(graph.get(node, []), key=lambda e: e.target):
            if edge.target not in done:
                visit(edge.target)
        order.append(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return order


def describe_cycle(graph: dict[str, list[Import]], cycle: list[str]) -> str:
    """``a (line 3) -> b (line 10, in a function) -> a``: where each step of the circle is written."""
    steps = []
    for here, there in zip(cycle, cycle[1:]):
        edge = next(e for e in graph[here] if e.target == there)
        steps.append(f"{here} (line {edge.line}{', in a function' if edge.lazy else ''})")
    return " -> ".join(steps + [cycle[-1]])
