"""YAML from outside the worker (a manifest, a response.yaml), read with bounds, and values quoted short.

Anyone who can push to a project can write these files. Three things must not hurt the worker:

* a "billion laughs" document: a few hundred bytes whose aliases expand to billions of values. PyYAML
  builds it cheaply as a shared graph, but whatever walks it (``repr()`` in an error message, a JSON dump)
  visits every expanded value. So values are counted as they would be after expansion while the document
  is composed, and the document is refused past ``MAX_VALUES``;
* deep nesting, which would end in a ``RecursionError`` inside the parser: refused past ``MAX_DEPTH``;
* sheer size: refused past ``MAX_BYTES`` before parsing.

Every failure is a ``YamlRefused`` with a one-line reason. ``describe_value`` quotes a value for a message
by its type and a short prefix, never in full.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 8 * 1024 * 1024    # 50 jobs that each list 1,000 cell ids are about 2.5 MB
MAX_VALUES = 1_000_000         # scalars, lists and mappings, with every alias counted as what it stands for
MAX_DEPTH = 50                 # a manifest nests four levels; PyYAML's composer hits Python's recursion limit
                               # a few hundred levels down
_REASON_CHARS = 200


class YamlRefused(ValueError):
    """The text is not YAML this worker will read; the message says why in one line."""


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that counts values as expanded and bounds the nesting, while composing."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._anchored: dict[str, int] = {}  # anchor -> values it expands to (only finished anchors)

    def compose_node(self, parent, index):
        anchor = self.peek_event().anchor
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)  # raises for an undefined alias
            if anchor not in self._anchored:
                raise YamlRefused("an alias refers to a value that contains it")
            self._count(self._anchored[anchor])
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlRefused(f"values are nested more than {MAX_DEPTH} levels deep")
        before = self._values
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._count(1)
        if anchor is not None:
            self._anchored[anchor] = self._values - before
        return node

    def _count(self, values: int) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise YamlRefused(f"more than {MAX_VALUES:,} values once its aliases are expanded")


def load(text: str | bytes) -> Any:
    """Parse one YAML document safely (``safe_load`` types only), within the bounds above."""
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_BYTES:
        raise YamlRefused(f"{size / 2**20:.1f} MiB, more than the {MAX_BYTES / 2**20:.0f} MiB this worker reads")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except YamlRefused:
        raise
    except yaml.YAMLError as exc:
        raise YamlRefused(f"invalid YAML ({_yaml_problem(exc)})") from None
    except Exception as exc:  # a constructor's own error (a date like 2026-13-45, an int of 5,000 digits)
        raise YamlRefused(f"cannot be read ({_short(f'{type(exc).__name__}: {exc}')})") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    return _short(str(problem)) + where


def _short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 1] + "…"


def describe_value(value: Any, limit: int = 40) -> str:
    """A value as a message quotes it: ``'JHN 1:1'``, ``'abcdefgh…' (str, 1234 chars)``, ``list of 9 items``.
    Never the whole of a long or nested value: its size could be anything, and repr() walks aliases."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        quoted = repr(value[:limit])
        return f"{quoted[:-1]}…{quoted[-1]} (str, {len(value)} chars)"
    if value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
        return text if len(text) <= limit else f"a number of {len(text)} digits"
    if isinstance(value, dict):
        return f"mapping of {len(value)} key{'' if len(value) == 1 else 's'}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"list of {len(value)} item{'' if len(value) == 1 else 's'}"
    text = str(value) if type(value).__module__ == "datetime" else type(value).__name__
    return text if len(text) <= limit else type(value).__name__
