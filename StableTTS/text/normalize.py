"""Script-independent text normalisation shared by every front end.

NFC, whitespace collapsing, and mapping of the punctuation of many scripts onto the few punctuation
symbols the model has (, . ! ? - … '), so that pauses survive (espeak, for one, silently ignores e.g. the
Ethiopic full stop). Characters removed here (quotes, brackets, symbols) are counted, never dropped silently.

Numbers: with a num2words language (``numbers``, saved with the front end) digits are written out as words
here, before phonemisation or romanisation, so training and inference read them alike. Numbers are runs of
decimal digits of any script (Unicode category Nd: 0-9, ٠-٩, ०-९, ๐-๙, ...), with 3-digit groups after
"," "." or a (no-break, thin) space read as one number ("1,000", "10 000"), and the Ethiopic numerals
፩-፼ (category No, additive: ፲፪ = 12, ፻ = 100, ፼ = 10,000). Anything else (verse references "3:16",
decimals) is read as separate numbers with a pause; other numeric characters (superscript footnote marks,
fractions, Roman numerals) are not numbers here and reach the front end as before. A number num2words
cannot write is left as it is, and `find_unspeakable` reports it, as it reports every number where the
language has no num2words reading, and likely abbreviations ("Mt.", "St."), which are never expanded here:
only the team knows what they stand for.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from typing import Sequence

from num2words import CONVERTER_CLASSES, num2words

from .scripts import main_scripts, script_of, script_profile

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


def normalize_text(text: str, numbers: str | None = None) -> tuple[str, Counter]:
    """NFC, numbers as words (`numbers`: a num2words language, see `expand_numbers`), unify punctuation,
    drop silent marks. Returns (text, Counter of characters removed)."""
    removed: Counter = Counter()
    out = []
    text = unicodedata.normalize("NFC", text)
    if numbers:
        text = expand_numbers(text, numbers)
    for ch in text:
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


# -- numbers -----------------------------------------------------------------------------------------
# Language tags projects carry (ISO 639-3, and 639-1 codes num2words spells otherwise) -> num2words' code.
ISO639_3_TO_NUM2WORDS: dict[str, str] = {
    "amh": "am", "ara": "ar", "arb": "ar", "aze": "az", "azj": "az", "bel": "be", "ben": "bn", "cat": "ca",
    "che": "ce", "ces": "cs", "cym": "cy", "dan": "da", "deu": "de", "eng": "en", "epo": "eo", "spa": "es",
    "fas": "fa", "pes": "fa", "fin": "fi", "fra": "fr", "heb": "he", "hun": "hu", "ind": "id", "isl": "is",
    "ita": "it", "jpn": "ja", "kan": "kn", "kor": "ko", "kaz": "kz", "kk": "kz", "lit": "lt", "lav": "lv",
    "lvs": "lv", "nld": "nl", "nor": "no", "nob": "no", "nb": "no", "pol": "pl", "por": "pt", "ron": "ro",
    "rus": "ru", "slk": "sk", "slv": "sl", "srp": "sr", "swe": "sv", "tel": "te", "tgk": "tg", "tha": "th",
    "tur": "tr", "ukr": "uk", "vie": "vi",
}
MAX_NUMBER = 10**9  # larger numbers are left as digits (reported): none in verse text, and slow or wrong in num2words
# num2words 0.5's Amharic converter fails (TypeError) from 1100 on and loops forever on some millions.
_BROKEN_FROM = {"am": 1100}
_GROUPED = r"\d{1,3}(?:[,. \u00a0\u202f\u2009\u066c]\d{3})+(?!\d)"
_NUMBER = re.compile(rf"({_GROUPED}|\d+)(\.?[ºª]|-[^\W\d_]{{1,3}}(?![^\W\d_])|[^\W\d_]*)")
_NUMBER_SPAN = re.compile(rf"{_GROUPED}|\d+(?:[:.,]\d+)*")  # "3:16", "1 000": one finding each
_ETHIOPIC = re.compile("[\u1369-\u137c]+")
# Ordinal endings written after the digits, by num2words language ("2nd", "2e", "2º", "2-й").
_ORDINAL_ENDINGS = {
    "en": {"st", "nd", "rd", "th"}, "fr": {"er", "re", "ère", "e", "ème", "eme", "nd", "nde"},
    "es": {"º", "ª", ".º", ".ª"}, "pt": {"º", "ª", ".º", ".ª"}, "it": {"º", "ª", ".º", ".ª"},
    "ru": {"-"}, "uk": {"-"}, "be": {"-"},  # "-" = any short ending after a hyphen
}
# Capitalised 1-3 letter word with a full stop, more text following: "Mt. Sinai", "St. Paul".
_ABBREVIATION = re.compile(r"(?<!\w)([^\W\d_]{1,3})\.(?=\s+\w)")
_WORD = re.compile(r"(?<!\w)([^\W\d_]+)(?!\w)(?!\.)")  # a word not followed by a full stop


def number_language(tag: str | None) -> str | None:
    """num2words code for a language tag ('fra', 'fr', 'fr-CH', 'pt_BR', 'rus'), None when it has none."""
    if not tag:
        return None
    parts = tag.strip().replace("-", "_").split("_")
    primary = parts[0].lower()
    candidates = [f"{primary}_{parts[1].upper()}"] if len(parts) > 1 else []
    candidates += [ISO639_3_TO_NUM2WORDS.get(primary), primary]
    for code in candidates:
        if code and code in CONVERTER_CLASSES and number_script(code):
            return code
    return None


@functools.lru_cache(maxsize=None)
def number_script(language: str) -> str | None:
    """The script num2words writes `language`'s numbers in ('Latin', 'Ethiopic'); None if it cannot."""
    try:
        words = num2words(21, lang=language)
    except Exception:  # noqa: BLE001 - converters raise NotImplementedError, KeyError, ... for what they lack
        return None
    scripts = main_scripts(script_profile([words]))
    return scripts[0] if scripts else None


def reads_numbers_in(text: str, language: str) -> bool:
    """Whether `text` gets `language`'s number words: its letters are (partly) in the script of those words,
    or it has none. A French tag must not put French numbers into a Ge'ez verse."""
    profile = script_profile([text])
    return not profile or number_script(language) in main_scripts(profile)


def expand_numbers(text: str, language: str) -> str:
    """Numbers of `text` (see the module docstring) as `language` words (a num2words code); a text in
    another script, or a number num2words cannot write, is left as it is."""
    if not reads_numbers_in(text, language):
        return text

    def ethiopic(match: re.Match) -> str:
        words = _number_words(ethiopic_value(match.group()), language)
        return f" {words} " if words else match.group()

    def decimal(match: re.Match) -> str:
        digits, ending = match.group(1), match.group(2)
        ordinal = _is_ordinal_ending(ending, language)
        words = _number_words(int(re.sub(r"\D", "", digits)), language, ordinal=ordinal)
        if words is None:
            return match.group()
        return f" {words} " if ordinal else f" {words} {ending}"

    return _NUMBER.sub(decimal, _ETHIOPIC.sub(ethiopic, text))


def ethiopic_value(numeral: str) -> int:
    """'፲፪' -> 12, '፻' -> 100, '፲፪፻፴፬' -> 1234, '፼' -> 10000: ፻ multiplies what stands before it
    since the last ፻ or ፼ (1 when nothing), ፼ multiplies everything before it."""
    total = hundreds = units = 0
    for ch in numeral:
        value = int(unicodedata.numeric(ch))
        if value == 100:
            hundreds += (units or 1) * 100
            units = 0
        elif value == 10000:
            total = (total + hundreds + units or 1) * 10000
            hundreds = units = 0
        else:
            units += value
    return total + hundreds + units


def _is_ordinal_ending(ending: str, language: str) -> bool:
    endings = _ORDINAL_ENDINGS.get(language.split("_")[0], set())
    return bool(ending) and (ending.lower() in endings or (ending.startswith("-") and "-" in endings))


@functools.lru_cache(maxsize=4096)
def _number_words(value: int, language: str, *, ordinal: bool = False) -> str | None:
    """num2words' reading, checked to be in the language's own script; None when there is none."""
    if value >= min(MAX_NUMBER, _BROKEN_FROM.get(language, MAX_NUMBER)):
        return None
    for to in (("ordinal", "cardinal") if ordinal else ("cardinal",)):
        try:
            words = num2words(value, lang=language, to=to)
        except Exception:  # noqa: BLE001 - a converter's gaps surface as assorted errors; try the next reading
            continue
        script = number_script(language)
        if words.strip() and all(script_of(ch) in (None, script) for ch in words):
            return words
    return None


def find_unspeakable(texts: Sequence[str], numbers: str | None = None,
                     reads_digits: bool = False) -> list[list[str]]:
    """Per text, what a front end with these settings will not say as the text means it, numbers first:
    "digits 12" (numbers not written out as words: `numbers` is None, the text is in another script, or
    num2words cannot write it; decimal digits are fine where the front end `reads_digits`, as espeak does,
    but Ethiopic numerals never are) and "abbreviation Mt." (a capitalised word of 1-3 letters with a full
    stop inside a sentence, unless the texts also use it as a word without one: "Go. Tell" is not flagged
    when "Go" occurs elsewhere)."""
    texts = [unicodedata.normalize("NFC", t) for t in texts]
    words = {m.group(1).lower() for t in texts for m in _WORD.finditer(t)}
    found = []
    for text in texts:
        items: list[str] = []
        expanded = expand_numbers(text, numbers) if numbers else text
        if not reads_digits:
            items += [f"digits {m.group()}" for m in _NUMBER_SPAN.finditer(expanded)]
        items += [f"digits {m.group()}" for m in _ETHIOPIC.finditer(expanded)]
        for m in _ABBREVIATION.finditer(text):
            token = m.group(1)
            if token[0].isupper() and (len(token) == 1 or token[1:].islower()) and token.lower() not in words:
                items.append(f"abbreviation {token}.")
        found.append(list(dict.fromkeys(items)))
    return found
