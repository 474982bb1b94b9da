"""Script-independent text normalisation shared by every front end.

NFC, whitespace collapsing, and mapping of the punctuation of many scripts onto the few punctuation
symbols the model has (, . ! ? - … '), so that pauses survive (espeak, for one, silently ignores e.g. the
Ethiopic full stop). Characters removed here (quotes, brackets, symbols) are counted, never dropped silently.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Sentence-final and clause punctuation of the scripts Bible translations are written in.
PUNCTUATION_MAP: dict[str, str] = {
    # Ethiopic
    "።": ".", "፣": ",", "፤": ",", "፥": ",", "፦": ",", "፧": "?", "፨": ".", "፡": " ",
    # Devanagari / Indic danda
    "।": ".", "॥": ".",
    # Arabic script
    "،": ",", "؛": ",", "؟": "?", "۔": ".",
    # CJK and full-width
    "。": ".", "，": ",", "、": ",", "！": "!", "？": "?", "；": ",", "：": ",", "．": ".",
    # Armenian, Myanmar, Hebrew, Tibetan, Khmer, Thai, Greek
    "։": ".", "՝": ",", "՞": "?", "՜": "!", "။": ".", "၊": ",", "׃": ".", "׀": ",", "།": ",", "៖": ",",
    "។": ".", "៕": ".", "ฯ": ".", "·": ",",
    # Latin-script variants
    ";": ",", ":": ",", "—": "-", "–": "-", "‐": "-", "‑": "-", "‒": "-", "―": "-", "¡": "", "¿": "",
    "’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'",
}
# Silent in speech: removed but counted.
SILENT = set("\"“”„‟«»‹›()[]{}<>*_#/\\|¶§†‡•◦※")

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> tuple[str, Counter]:
    """NFC, unify punctuation, drop silent marks. Returns (text, Counter of characters removed)."""
    removed: Counter = Counter()
    out = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in PUNCTUATION_MAP:
            out.append(PUNCTUATION_MAP[ch])
        elif ch in SILENT:
            removed[ch] += 1
            out.append(" ")
        elif unicodedata.category(ch) == "Cf":  # zero-width (non-)joiners, direction marks: not spoken
            removed[ch] += 1
        else:
            out.append(ch)
    joined = "".join(out).replace("...", "…")
    joined = _SPACES.sub(" ", joined).strip()
    joined = re.sub(r" ([,.!?…])", r"\1", joined)  # "word ." -> "word." after removals
    return joined, removed
