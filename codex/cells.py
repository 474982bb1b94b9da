"""Reading one cell: its id, verse reference, type, deletion mark, value edits, and its value as plain text."""

from __future__ import annotations

import hashlib
import unicodedata
from html.parser import HTMLParser
from typing import Mapping

CELL_TYPES = ("text", "paratext", "style", "milestone")


def cell_id(cell: Mapping) -> str:
    """The cell's ``metadata.id`` ('' when missing)."""
    value = cell.get("metadata", {}).get("id")
    return value.strip() if isinstance(value, str) else ""


def cell_type(cell: Mapping) -> str:
    """``metadata.type``; cells of old projects without one are verse text."""
    value = cell.get("metadata", {}).get("type")
    return value if isinstance(value, str) and value else "text"


def cell_reference(cell: Mapping) -> str | None:
    """The verse reference: ``data.globalReferences[0]``, else an old-style id such as ``"GEN 1:1"``."""
    meta = cell.get("metadata", {})
    data = meta.get("data")
    refs = data.get("globalReferences") if isinstance(data, dict) else None
    if isinstance(refs, list) and refs and isinstance(refs[0], str) and refs[0].strip():
        return " ".join(refs[0].split())
    cid = cell_id(cell)
    return " ".join(cid.split()) if ":" in cid else None


def is_deleted_cell(cell: Mapping) -> bool:
    data = cell.get("metadata", {}).get("data")
    return isinstance(data, dict) and bool(data.get("deleted"))


def hash_cell_id(reference: str) -> str:
    """The UUID the editor's migration gives an old-style id: SHA-256 of it, first 32 hex chars as 8-4-4-4-12."""
    h = hashlib.sha256(reference.encode("utf-8")).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _norm_reference(ref: str) -> str:
    """The form references are compared in: single spaces, upper case."""
    return " ".join(ref.split()).upper()


_BLOCK_TAGS = frozenset("""address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5
    h6 header hr li main nav ol p pre section table tbody td tfoot th thead tr ul""".split())
_DROP_CONTENT_TAGS = frozenset({"script", "style", "template", "head", "title"})


class _TextExtractor(HTMLParser):
    """Collects the text a reader sees. Footnote markers (``<sup class="footnote-marker">1</sup>``) are not
    part of the spoken verse, so their content is dropped like scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._dropping: list[str] = []      # stack of tags whose content is being dropped

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._dropping:
            if tag == self._dropping[0]:
                self._dropping.append(tag)
            return
        classes = " ".join(v or "" for k, v in attrs if k == "class").split()
        if tag in _DROP_CONTENT_TAGS or "footnote-marker" in classes:
            self._dropping.append(tag)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._dropping and tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self._dropping:
            if tag == self._dropping[0]:
                self._dropping.pop()
            return
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._dropping:
            self.parts.append(data)


def html_to_text(value: str | None) -> str:
    """Plain text of a cell value: tags stripped, entities decoded, whitespace collapsed, Unicode NFC.

    The script is kept as written (no transliteration; combining marks and right-to-left text untouched).
    """
    if not value or not isinstance(value, str):
        return ""
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    # convert_charrefs=True decodes every named and numeric entity (html.unescape) inside the parser.
    return unicodedata.normalize("NFC", " ".join("".join(parser.parts).split()))


def cell_text(cell: Mapping) -> str:
    """The clean text of a cell's ``value``."""
    return html_to_text(cell.get("value"))


_JSON_KINDS = ((bool, "true/false"), (int, "a number"), (float, "a number"), (list, "a list"), (dict, "an object"))


def non_text_value(cell: Mapping) -> str | None:
    """What the cell's ``value`` is when it is not text ("a number", "a list", ...), else None.

    The editor shows a missing or null value as an empty cell, so those are text (empty). Anything else that
    is not a string is data we do not understand: it is never overwritten, nor read as "no text".
    """
    value = cell.get("value")
    if value is None or isinstance(value, str):
        return None
    return next((name for kind, name in _JSON_KINDS if isinstance(value, kind)), type(value).__name__)


def value_edits(cell: Mapping) -> list[dict]:
    """Edits that set the value: ``editMap == ["value"]``, or the legacy form with ``cellValue``."""
    edits = cell.get("metadata", {}).get("edits")
    if not isinstance(edits, list):
        return []
    return [e for e in edits if isinstance(e, dict) and (e.get("editMap") == ["value"] or
                                                         ("editMap" not in e and "cellValue" in e))]
