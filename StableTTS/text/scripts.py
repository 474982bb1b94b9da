"""Which writing systems a text is written in, read from the Unicode names of its letters.

The front end is chosen from the text as well as the language tag (tags are often wrong or missing), so it
needs to know the scripts of the letters; `unicodedata` names give them without another dependency.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Iterable

# Scripts whose letters stand for syllables or words: one letter rightly reads as several phonemes.
SYLLABIC = frozenset({"Ethiopic", "Han", "Hangul", "Hiragana", "Katakana", "Yi", "Cherokee",
                      "Canadian Syllabics", "Vai", "Bamum", "Bopomofo", "Tangut", "Nushu"})

# Unicode name prefixes of more than one word, and first words that are not the script's name.
_MULTI_WORD = ("CANADIAN SYLLABICS", "OL CHIKI", "TAI THAM", "TAI VIET", "TAI LE", "NEW TAI LUE", "MEETEI MAYEK",
               "SYLOTI NAGRI", "HANIFI ROHINGYA", "MASARAM GONDI", "GUNJALA GONDI", "PAU CIN HAU", "OLD ITALIC",
               "OLD PERSIAN", "OLD TURKIC", "NYIAKENG PUACHUE HMONG", "PAHAWH HMONG", "SORA SOMPENG", "WARANG CITI",
               "ZANABAZAR SQUARE", "KAYAH LI", "TAI YO")
_FIRST_WORD = {"CJK": "Han", "KANGXI": "Han", "IDEOGRAPHIC": "Han", "NKO": "NKo"}
_NOT_A_SCRIPT = {"COMBINING", "MODIFIER", "FEMININE", "MASCULINE", "SUPERSCRIPT", "SUBSCRIPT"}
_WIDTH_FORMS = {"FULLWIDTH", "HALFWIDTH"}  # "FULLWIDTH LATIN SMALL LETTER A": the script is the next word


def is_letter(ch: str) -> bool:
    """Letters and the marks that belong to them (vowel signs, diacritics): what a front end must speak."""
    return unicodedata.category(ch)[0] in "LM"


def letter_count(text: str) -> int:
    return sum(1 for ch in text if is_letter(ch))


def script_of(ch: str) -> str | None:
    """'ሰ' -> 'Ethiopic', 'é' -> 'Latin', '한' -> 'Hangul'; None for what is not a letter of a script (digits,
    punctuation, spaces, combining marks and modifier letters, which take the script of their base)."""
    if not is_letter(ch):
        return None
    name = unicodedata.name(ch, "")
    if not name:
        return "Unknown"
    words = name.split()
    if words[0] in _WIDTH_FORMS and len(words) > 1:
        words = words[1:]
    if words[0] in _NOT_A_SCRIPT:
        return None
    joined = " ".join(words)
    for prefix in _MULTI_WORD:
        if joined.startswith(prefix + " "):
            return prefix.title()
    return _FIRST_WORD.get(words[0], words[0].title())


def script_profile(texts: Iterable[str]) -> Counter:
    """Letters per script over `texts`, e.g. Counter({'Ethiopic': 412, 'Latin': 3})."""
    profile: Counter = Counter()
    for text in texts:
        for ch in text:
            script = script_of(ch)
            if script is not None:
                profile[script] += 1
    return profile


def main_scripts(profile: Counter, share: float = 0.1) -> list[str]:
    """The scripts that hold at least `share` of the letters, most letters first."""
    total = sum(profile.values())
    return [s for s, n in profile.most_common() if total and n / total >= share]


def describe_scripts(profile: Counter) -> str:
    """'Ethiopic', or 'Latin and Ethiopic' (scripts with at least a tenth of the letters); '' without letters."""
    return join_names(main_scripts(profile))


def join_names(names: list[str]) -> str:
    """['Latin'] -> 'Latin'; ['Latin', 'Cyrillic', 'Greek'] -> 'Latin, Cyrillic and Greek'."""
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
