"""Transcript normalisation for character-level CTC, for any script.

Everything is decided by Unicode categories rather than ASCII lists, so Ge'ez, Devanagari, Cyrillic and
Latin with diacritics all work the same way. Combining marks (categories ``Mn``/``Mc``/``Me``) are never
touched: in Devanagari they carry the vowels.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

logger = logging.getLogger(__name__)

# Apostrophes join a word ("don't" -> "dont", "Peter's" -> "peters"); every other punctuation mark
# separates words (",", "—", Ethiopic wordspace "፡", Devanagari danda "।"), so it becomes a space.
# The modifier letters ʼ (U+02BC) and ʻ (U+02BB) are letters (glottal stops), not apostrophes: kept.
_APOSTROPHES = frozenset("'\u2019\u2018\u2032\uff07")
# Zero-width (non-)joiners are part of the spelling in Persian, Malayalam and others: keep them.
# Other format characters (BOM, soft hyphen, bidi marks) are invisible noise.
_KEPT_FORMAT_CHARS = frozenset("\u200c\u200d")


@dataclass(frozen=True)
class TextNormalization:
    """How transcripts are cleaned before they become CTC labels (manifest ``text_normalization``)."""

    lowercase: bool = True  # case carries no sound
    remove_punctuation: bool = True  # punctuation (and symbols) carry no sound
    remove_numbers: bool = False  # digits are read out as words, so by default a team spells them out

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> "TextNormalization":
        """Build from the manifest's ``text_normalization`` mapping; unknown keys are ignored."""
        options = options or {}
        return cls(
            lowercase=bool(options.get("lowercase", cls.lowercase)),
            remove_punctuation=bool(options.get("remove_punctuation", cls.remove_punctuation)),
            remove_numbers=bool(options.get("remove_numbers", cls.remove_numbers)),
        )


def normalize_text(text: str, options: TextNormalization = TextNormalization()) -> str:
    """Return ``text`` in NFC, cleaned per ``options``, with single spaces between words.

    >>> normalize_text("Hello, World!  It's 3 o’clock.")
    'hello world its 3 oclock'
    """
    text = unicodedata.normalize("NFC", text)
    if options.lowercase:
        text = text.lower()
    out: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch.isspace() or category.startswith("Z"):
            out.append(" ")
        elif category == "Cf":
            if ch in _KEPT_FORMAT_CHARS:
                out.append(ch)
        elif category == "Cc":
            out.append(" ")  # control characters (tabs were handled above) never belong in a label
        elif category == "Cs":
            continue  # a lone surrogate is a decoding accident
        # Private-use (Co) and unassigned (Cn) code points fall through and are kept: some orthographies
        # live in the private-use area (SIL fonts), and a script newer than Python's Unicode tables
        # looks unassigned.
        elif options.remove_punctuation and ch in _APOSTROPHES:
            continue
        elif options.remove_punctuation and category[0] in "PS":
            out.append(" ")
        elif options.remove_numbers and category[0] == "N":
            out.append(" ")
        else:
            out.append(ch)
    # lower() and the removals can change composition (e.g. a removed character between a base letter
    # and its mark), so normalise once more after the edits.
    return unicodedata.normalize("NFC", " ".join("".join(out).split()))

