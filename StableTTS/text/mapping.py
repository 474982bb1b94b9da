"""Mapping of phoneme (IPA) or romanised strings onto the published symbol set, with accounting.

Order per position: a table entry (longest match) -> the symbol itself -> the base letter after stripping
diacritics (counted as approximated) -> unknown (counted, dropped). Nothing disappears without a count.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from .symbols import SYMBOL_TO_ID

# Symbols a front end may emit: punctuation, phone characters and space (ids 1–68), minus N and Q, which
# the upstream front ends use as special markers, not sounds.
EMITTABLE = frozenset(s for s, i in SYMBOL_TO_ID.items() if 1 <= i <= 68) - {"N", "Q"}

# IPA (as espeak-ng writes it) -> nearest symbols of the set. "" = deliberately silent (counted).
IPA_TABLE: dict[str, str] = {
    "ɡ": "g", "r": "ɹ", "c": "k", "q": "k", "ɐ": "ə", "ɜ": "ə", "ɚ": "əɹ", "ɝ": "əɹ", "ʌ": "ə", "ɘ": "ə",
    "ɒ": "ɔ", "ɞ": "ɔ", "ɵ": "o", "ø": "e", "œ": "ɛ", "ɶ": "a", "ɤ": "ɯ", "ɨ": "ɪ", "ᵻ": "ɪ", "ʉ": "u",
    "ʏ": "y", "ᵿ": "ʊ",
    "ʂ": "ʃ", "ʐ": "ʒ", "ɕ": "ʃ", "ʈ": "t", "ɖ": "d", "ɳ": "n", "ɭ": "ɫ", "ɲ": "nj", "ɟ": "dʒ", "ʄ": "dʒ",
    "ɣ": "g", "χ": "x", "ʁ": "ɹ", "ħ": "h", "ʕ": "h", "ɬ": "ɫ", "ɮ": "l", "ʋ": "v", "ɱ": "m", "ʎ": "l",
    "ʝ": "j", "ɰ": "ɯ", "ʍ": "w", "ɺ": "ɾ", "ɽ": "ɾ", "ʀ": "ɹ", "ʙ": "b", "ⱱ": "v", "ɓ": "b", "ɗ": "d",
    "ʛ": "g", "ɠ": "g", "ǀ": "", "ǁ": "", "ǃ": "", "ǂ": "", "ʘ": "",
    "ʷ": "w", "ʲ": "j", "ⁿ": "n", "ᵑ": "ŋ", "ᵐ": "m", "ˠ": "", "ˤ": "", "ʼ": "", "ˀ": "", "ᵝ": "",
    "ː": "", "ˑ": "", "͡": "", "‿": "", "|": ",", "‖": ".", "ʔ": "", "ʡ": "", "ʢ": "",
    # espeak writes "-" between unstressed function words and the next word (French "le-"), and passes
    # quotes through; neither is a pause.
    "-": "", '"': "", "«": "", "»": "", "“": "", "”": "", "„": "",
}

# Romanised (uroman / Latin orthography) letters -> symbols. The set spells sounds in IPA, where j is /j/
# and y a front rounded vowel, so orthographic j and y are remapped; c, q, r have no symbol of their own.
ROMAN_TABLE: dict[str, str] = {
    "sh": "ʃ", "ch": "tʃ", "zh": "ʒ", "ny": "nj", "ñ": "nj",
    "c": "k", "q": "k", "r": "ɾ", "x": "ks", "j": "dʒ", "y": "j",
    "ŋ": "ŋ", "ɛ": "ɛ", "ɔ": "ɔ", "ə": "ə", "ɪ": "ɪ", "ʊ": "ʊ", "ɲ": "nj", "ɓ": "b", "ɗ": "d", "ƙ": "k",
    "ƴ": "j", "ʃ": "ʃ", "ʒ": "ʒ", "θ": "θ", "ð": "ð", "ß": "s", "ø": "e", "æ": "æ", "œ": "ɛ", "đ": "d",
    "ł": "ɫ", "ħ": "h", "ı": "i", "ç": "s", "ʔ": "", "ʼ": "",
    "·": "",  # uroman's rendering of the Tibetan tsheg between syllables: no sound of its own
}


@dataclass
class MappingResult:
    symbols: list[str] = field(default_factory=list)
    unknown: Counter = field(default_factory=Counter)  # not representable: dropped, with counts
    approximated: Counter = field(default_factory=Counter)  # mapped to a near symbol, or silent by design


def map_to_symbols(text: str, table: dict[str, str], result: MappingResult | None = None) -> MappingResult:
    """Greedy longest-match mapping of `text` onto EMITTABLE symbols; see the module docstring."""
    result = result or MappingResult()
    longest = max((len(k) for k in table), default=1)
    i = 0
    previous_known = True  # whether the last character was represented (decides what a lone mark means)
    while i < len(text):
        for size in range(min(longest, len(text) - i), 0, -1):
            piece = text[i : i + size]
            if piece in table:
                mapped = table[piece]
                if mapped != piece:
                    result.approximated[piece] += 1
                result.symbols.extend(mapped)
                i += size
                previous_known = True
                break
        else:
            ch = text[i]
            i += 1
            if ch in EMITTABLE:
                result.symbols.append(ch)
                previous_known = True
                continue
            base = _strip_marks(ch)
            if base and all(b in EMITTABLE or b in table for b in base):
                result.approximated[ch] += 1
                for b in base:
                    result.symbols.extend(table.get(b, b))
            elif unicodedata.category(ch) == "Mn" and previous_known:
                # A diacritic (tone, nasalisation) on a represented letter: the letter stands for both.
                result.approximated[ch] += 1
                continue
            elif ch.isspace():
                result.symbols.append(" ")
            else:  # includes marks on unknown letters (e.g. Indic vowel signs): unknown like their base
                result.unknown[ch] += 1
                previous_known = False
                continue
            previous_known = True
    return result


def _strip_marks(ch: str) -> str:
    """'é' -> 'e', 'ɔ̃' -> 'ɔ'; '' if nothing but marks remains."""
    return "".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn")


def tidy_symbols(symbols: list[str]) -> list[str]:
    """Collapse repeated spaces and trim spaces at the ends (they would only add blank frames)."""
    out: list[str] = []
    for s in symbols:
        if s == " " and (not out or out[-1] == " "):
            continue
        out.append(s)
    while out and out[-1] == " ":
        out.pop()
    return out
