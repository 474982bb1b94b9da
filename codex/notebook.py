"""Notebooks (``.codex``/``.source``): strict parsing, and writing back in the file's own JSON layout so that
only the cells we changed differ."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from storage import ProjectStore

from .cells import cell_id


class NotebookError(ValueError):
    """A notebook that cannot be fully parsed; it is never written back."""


#: Larger files are refused before parsing: a Bible book with its edit history is a few MB, and parsing
#: a file of this size already takes gigabytes of memory.
MAX_NOTEBOOK_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class _Style:
    """How the file was laid out, so a rewrite changes only what we changed."""

    indent: str | None = "  "       # None: compact, as JSON.stringify(data) writes
    newline: str = "\n"
    trailing: str = ""              # whatever followed the closing brace
    bom: bool = False


@dataclass
class Notebook:
    """A parsed notebook. ``data`` is the JSON with key order kept; edit it in place, then ``to_text()``."""

    path: str
    data: dict
    original_text: str
    version: str | None = None
    style: _Style = field(default_factory=_Style)

    @property
    def cells(self) -> list[dict]:
        return self.data["cells"]

    def cells_by_id(self) -> dict[str, list[dict]]:
        """Cell id -> cells with that id (a list: broken files can repeat an id)."""
        index: dict[str, list[dict]] = {}
        for cell in self.cells:
            cid = cell_id(cell)
            if cid:
                index.setdefault(cid, []).append(cell)
        return index

    def to_text(self) -> str:
        """Serialise in the file's own layout (``JSON.stringify(data, null, 2)`` for the editor's files)."""
        body = _encode_json(self.data, self.style.indent, 0)
        if self.style.newline != "\n":
            body = body.replace("\n", self.style.newline)
        return ("\ufeff" if self.style.bom else "") + body + self.style.trailing


def parse_notebook(content: str | bytes, path: str = "", *, version: str | None = None) -> Notebook:
    """Parse a ``.codex``/``.source`` file strictly. Raises ``NotebookError`` for anything we could not rewrite
    (invalid JSON, nesting too deep to read, a file over ``MAX_NOTEBOOK_BYTES``, the wrong shape)."""
    name = path or "notebook"
    if len(content) > MAX_NOTEBOOK_BYTES:
        raise NotebookError(f"{name} is {len(content) / 2**20:.0f} MB, more than the "
                            f"{MAX_NOTEBOOK_BYTES / 2**20:.0f} MB a notebook may have")
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
    except UnicodeDecodeError as exc:
        raise NotebookError(f"{name} is not UTF-8: {exc}") from exc
    bom = text.startswith("\ufeff")
    body = text[1:] if bom else text
    try:
        data = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_reject_constant,
                          parse_float=_SpelledFloat)
    except RecursionError:
        raise NotebookError(f"{name} is nested too deeply to read") from None
    except MemoryError:
        raise NotebookError(f"{name} is too large to read") from None
    except ValueError as exc:   # JSONDecodeError, ours, and e.g. an integer of more than 4300 digits
        raise NotebookError(f"{name} is not valid notebook JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookError(f"{name} has no 'cells' list")
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or not isinstance(cell.get("metadata", {}), dict):
            raise NotebookError(f"{name}: cell {i} is not an object with object metadata")
    return Notebook(path=path, data=data, original_text=text, version=version, style=_detect_style(body, bom))


def load_notebook(store: ProjectStore, path: str) -> Notebook | None:
    """Read and parse a notebook from a store (None when absent; ``NotebookError`` when unparsable)."""
    found = store.read(path)
    if found is None:
        return None
    return parse_notebook(found.content, path, version=found.version)


class _SpelledFloat(float):
    """A float that remembers how the file spelled it ("3.0" from Python tools, "3" or "1e-7" from the
    editor), so numbers we did not touch are written back exactly as they were."""

    def __new__(cls, text: str) -> "_SpelledFloat":
        value = super().__new__(cls, text)
        value.text = text
        return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            # json.loads would keep the last one silently; a rewrite would then drop data.
            raise NotebookError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise NotebookError(f"{name} is not JSON")


def _detect_style(body: str, bom: bool) -> _Style:
    stripped = body.rstrip()
    trailing = body[len(stripped):]
    match = re.match(r"\{\r?\n([ \t]+)\S", stripped)
    newline = "\r\n" if "\r\n" in stripped else "\n"
    if match:
        return _Style(match.group(1), newline, trailing, bom)
    return _Style(None if "\n" not in stripped else "  ", newline, trailing, bom)


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _encode_json(value: Any, indent: str | None, depth: int) -> str:
    """JSON.stringify's output. Numbers we add are spelled as JavaScript does (3, 1e-7), not as Python
    (3.0, 1e-07); numbers read from the file keep their own spelling.

    Iterative, with its own stack: any nesting the parser accepted can be written back, whatever the depth
    of the caller's stack.
    """
    parts: list[str] = []
    todo: list[tuple[Any, int | None]] = [(value, depth)]    # (value, its depth), or (text, None) to emit
    while todo:
        item, level = todo.pop()
        if level is None:
            parts.append(item)
            continue
        if not isinstance(item, (dict, list)) or not item:
            parts.append(_encode_scalar(item))
            continue
        is_object = isinstance(item, dict)
        inner = "" if indent is None else "\n" + indent * (level + 1)
        colon = ":" if indent is None else ": "
        steps: list[tuple[Any, int | None]] = []
        for number, (key, child) in enumerate(item.items() if is_object else enumerate(item)):
            prefix = inner if number == 0 else "," + inner
            steps.append((prefix + _encode_scalar(key) + colon if is_object else prefix, None))
            steps.append((child, level + 1))
        steps.append((("" if indent is None else "\n" + indent * level) + ("}" if is_object else "]"), None))
        parts.append("{" if is_object else "[")
        todo.extend(reversed(steps))
    return "".join(parts)


def _encode_scalar(value: Any) -> str:
    if isinstance(value, str):
        # JSON.stringify escapes lone surrogates (which json.loads can produce) instead of emitting them raw.
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, _SpelledFloat):
        return value.text
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, (dict, list)):     # only empty ones reach here
        return "{}" if isinstance(value, dict) else "[]"
    raise TypeError(f"cannot write {type(value).__name__} into a notebook")


def _js_number(x: float) -> str:
    """ECMAScript Number::toString for a finite double (shortest round-trip digits, JS exponent rules)."""
    if x != x or x in (float("inf"), float("-inf")):
        raise TypeError("NaN and Infinity cannot be written to JSON")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    point = mantissa.index(".") if "." in mantissa else len(mantissa)
    digits = mantissa.replace(".", "")
    zeros = len(digits) - len(digits.lstrip("0"))
    digits = digits.strip("0")
    n = point - zeros + int(exp or 0)          # value = 0.DIGITS x 10^n
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + digits
    else:
        e = n - 1
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + out
