"""Job verse filters (``include_verses`` / ``exclude_verses``): which cells a job may touch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Mapping

from job_settings import EXCLUDE_VERSES, INCLUDE_VERSES

from .cells import _norm_reference, cell_id, cell_reference, hash_cell_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerseFilter:
    """A job's ``include_verses`` / ``exclude_verses``.

    An item containing ``:`` is a reference (``"JHN 1:1"``): it matches ``globalReferences[0]``, an old-style
    id, or the hash UUID the editor derives from that reference. Anything else is a cell id. An empty or
    absent include list means every cell; exclusion always wins.
    """

    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    @classmethod
    def from_lists(cls, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> "VerseFilter":
        return cls(_filter_keys(include), _filter_keys(exclude))

    @classmethod
    def from_section(cls, section: Mapping | None) -> "VerseFilter":
        """From a manifest section such as ``training: {include_verses: [...]}``."""
        section = section or {}
        return cls.from_lists(section.get(INCLUDE_VERSES), section.get(EXCLUDE_VERSES))

    def is_listed(self, cell: Mapping) -> bool:
        """Named explicitly in the include list."""
        return bool(self.include) and not _cell_keys(cell).isdisjoint(self.include)

    def is_excluded(self, cell: Mapping) -> bool:
        return bool(self.exclude) and not _cell_keys(cell).isdisjoint(self.exclude)

    def allows(self, cell: Mapping) -> bool:
        return (not self.include or self.is_listed(cell)) and not self.is_excluded(cell)


def _filter_keys(items: Iterable[str] | str | None) -> frozenset[str]:
    if isinstance(items, str):  # `include_verses: "GEN 1:1"` means one verse, not its characters
        items = [items]
    keys: set[str] = set()
    for item in items or ():
        if not isinstance(item, str) or not item.strip():
            logger.warning("Ignoring verse filter item %r: not a reference or cell id", item)
            continue
        if ":" in item:
            ref = _norm_reference(item)
            keys.update({"ref:" + ref, "id:" + hash_cell_id(ref)})
        else:
            keys.add("id:" + item.strip().lower())
    return frozenset(keys)


def _cell_keys(cell: Mapping) -> set[str]:
    keys = set()
    cid = cell_id(cell)
    if cid:
        keys.add("id:" + cid.lower())
        if ":" in cid:
            keys.add("ref:" + _norm_reference(cid))
    ref = cell_reference(cell)
    if ref:
        keys.add("ref:" + _norm_reference(ref))
    return keys
