"""Text front ends: plain text -> blank-interspersed symbol ids, with a report of what was not representable.

Three kinds, chosen per project by `selection.select_frontend` and saved with the checkpoint (`to_dict`, which
also records why it was chosen) so inference encodes text exactly as training did:
- "phonemes": espeak-ng IPA mapped onto the published 401 symbols (best transfer from the pretrained model);
- "romanized": uroman romanisation (any script) mapped onto the same symbols; plain diacritic stripping
  when uroman is not installed (Latin-script text only);
- "characters": the project's own characters appended to the 401 symbols (the embedding is resized; the
  published symbols keep their pretrained rows).
Any of them may read numbers as words of a num2words language (``numbers``, see ``normalize``); a front end
saved without that key reads them as it always did.
"""
from __future__ import annotations

import functools
import importlib.util
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .espeak import espeak_voice_for, phonemize
from .mapping import IPA_TABLE, ROMAN_TABLE, MappingResult, map_to_symbols, tidy_symbols
from .normalize import find_unspeakable, normalize_text, number_script
from .symbols import PAD, SYMBOL_TO_ID, SYMBOLS, intersperse

FRONTEND_KINDS = ("phonemes", "romanized", "characters")
_UNSPEAKABLE = re.compile(r"So|Sk|Co|Cn|Cs")  # Unicode categories espeak cannot be trusted with


class FrontendUnavailable(RuntimeError):
    """The front end a checkpoint was trained with cannot run here (e.g. espeak or uroman is missing)."""


def _checked_numbers(numbers: str | None) -> str | None:
    if numbers is not None and not isinstance(numbers, str):
        raise ValueError(f"numbers must be a num2words language code, not {numbers!r}")
    if numbers and number_script(numbers) is None:
        raise FrontendUnavailable(f"this voice reads numbers as {numbers!r} words, which the installed num2words "
                                  "cannot write; install the num2words version it was trained with")
    return numbers or None


@dataclass
class EncodedText:
    text: str  # the normalised input
    symbols: list[str]  # symbols before blank interspersal
    ids: list[int]  # blank-interspersed ids, length 2·len(symbols) + 1
    unknown: Counter = field(default_factory=Counter)  # characters that could not be represented (dropped)
    approximated: Counter = field(default_factory=Counter)  # mapped to a near symbol or silent by design


def describe_counts(counts: Counter, limit: int = 12) -> str:
    """Counter({'ʔ': 3, '§': 1}) -> "'ʔ' (U+0294) ×3, '§' (U+00A7) ×1"."""
    items = [f"{ch!r} (U+{ord(ch[0]):04X}) ×{n}" for ch, n in counts.most_common(limit)]
    if len(counts) > limit:
        items.append(f"… {len(counts) - limit} more")
    return ", ".join(items)


def summarize(encoded: Iterable[EncodedText]) -> tuple[Counter, Counter]:
    """Total unknown and approximated characters over many encoded texts."""
    unknown, approximated = Counter(), Counter()
    for e in encoded:
        unknown.update(e.unknown)
        approximated.update(e.approximated)
    return unknown, approximated


class TextFrontend:
    """Base class. Subclasses implement `_symbols_batch`, `_settings` and `describe`."""

    kind: str = ""
    language: str | None = None
    reason: str = ""  # why this front end was chosen for the project (for people; set by select_frontend)
    numbers: str | None = None  # num2words language that numbers are written out in; None: left as digits
    reads_digits = False  # digits left as digits are still spoken (espeak reads them in its voice's language)

    @property
    def symbols(self) -> list[str]:
        return SYMBOLS

    @property
    def n_vocab(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> EncodedText:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[EncodedText]:
        """Encode many texts (one espeak call for all, where used)."""
        normalised = [normalize_text(t, self.numbers) for t in texts]
        mapped = self._symbols_batch([n for n, _ in normalised])
        out = []
        for (text, removed), result in zip(normalised, mapped):
            result.approximated.update(removed)
            symbols = tidy_symbols(result.symbols)
            ids = [self._id(s) for s in symbols]
            out.append(EncodedText(text, symbols, intersperse(ids), result.unknown, result.approximated))
        return out

    def unspeakable(self, texts: Sequence[str]) -> list[list[str]]:
        """Per text, the numbers and likely abbreviations this front end will not speak as meant
        ("digits 12", "abbreviation Mt."; see ``normalize.find_unspeakable``)."""
        return find_unspeakable(texts, self.numbers, self.reads_digits)

    def coverage(self, texts: Sequence[str]) -> float:
        """Share of non-space input characters that were represented (not reported unknown)."""
        encoded = self.encode_batch(texts)
        total = sum(sum(1 for ch in e.text if not ch.isspace()) for e in encoded)
        lost = sum(sum(e.unknown.values()) for e in encoded)
        return 1.0 if total == 0 else max(0.0, 1.0 - lost / total)

    def _id(self, symbol: str) -> int:
        return SYMBOL_TO_ID[symbol]

    def _symbols_batch(self, texts: list[str]) -> list[MappingResult]:
        raise NotImplementedError

    def _settings(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        """For people: 'espeak phonemes (fr-fr)', 'uroman romanisation', ..."""
        raise NotImplementedError

    def status(self) -> str:
        """One line for a job's status: 'text front end romanized: <why>'."""
        return f"text front end {self.kind}: {self.reason or self.describe()}"

    def to_dict(self) -> dict:
        """What rebuilds this front end (`frontend_from_dict`), plus the reason it was chosen. ``numbers`` only
        when set, so a front end without it saves (and caches) exactly as before the key existed."""
        return {**self._settings(), **({"numbers": self.numbers} if self.numbers else {}),
                **({"reason": self.reason} if self.reason else {})}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class PhonemeFrontend(TextFrontend):
    """espeak-ng IPA mapped onto the published symbols."""

    kind = "phonemes"
    reads_digits = True

    def __init__(self, language: str, voice: str | None = None, numbers: str | None = None):
        self.language = language
        self.numbers = _checked_numbers(numbers)
        self.voice = voice or espeak_voice_for(language)
        if self.voice is None or espeak_voice_for(self.voice) is None:
            raise FrontendUnavailable(
                f"espeak-ng phonemes for {language!r} are not available here "
                "(install phonemizer and espeakng-loader, or the language has no espeak voice)"
            )

    def _symbols_batch(self, texts: list[str]) -> list[MappingResult]:
        results, cleaned = [], []
        for text in texts:
            # Emoji, private-use and other symbols are skipped, misread or spelled out by espeak depending on
            # the voice: remove them before phonemising and report them as unknown.
            result = MappingResult()
            kept = []
            for ch in text:
                if _UNSPEAKABLE.match(unicodedata.category(ch)):
                    result.unknown[ch] += 1
                else:
                    kept.append(ch)
            results.append(result)
            cleaned.append("".join(kept))
        for result, ipa in zip(results, phonemize(cleaned, self.voice)):
            # IPA the table lacks (tone numbers, rare diacritics) is phonetic detail dropped, not a character
            # of the text that went unspoken: count it as approximated.
            mapped = map_to_symbols(ipa, IPA_TABLE)
            result.symbols.extend(mapped.symbols)
            result.approximated.update(mapped.approximated)
            result.approximated.update(mapped.unknown)
        return results

    def _settings(self) -> dict:
        return {"kind": self.kind, "language": self.language, "espeak_voice": self.voice}

    def describe(self) -> str:
        return f"espeak phonemes ({self.voice})"


@functools.lru_cache(maxsize=1)
def _uroman():
    try:
        import uroman
    except ImportError:
        return None
    return uroman.Uroman()  # loads its tables once (a few seconds)


def uroman_available() -> bool:
    return importlib.util.find_spec("uroman") is not None


class RomanizedFrontend(TextFrontend):
    """Romanisation (uroman for any script, or diacritic stripping for Latin script) onto the published symbols."""

    kind = "romanized"

    def __init__(self, language: str | None = None, romanizer: str | None = None, numbers: str | None = None):
        self.language = language
        self.numbers = _checked_numbers(numbers)
        self.romanizer = romanizer or ("uroman" if uroman_available() else "latin")
        if self.romanizer not in ("uroman", "latin"):
            raise ValueError(f"unknown romanizer {self.romanizer!r}")
        if self.romanizer == "uroman" and not uroman_available():
            raise FrontendUnavailable("this voice was trained with uroman romanisation; install `uroman`")

    def _romanize(self, text: str) -> str:
        if self.romanizer == "latin":
            return text
        lcode = self.language if self.language and len(self.language) == 3 else None
        return _uroman().romanize_string(text, lcode=lcode)

    def _symbols_batch(self, texts: list[str]) -> list[MappingResult]:
        return [map_to_symbols(self._romanize(t).lower(), ROMAN_TABLE) for t in texts]

    def _settings(self) -> dict:
        return {"kind": self.kind, "language": self.language, "romanizer": self.romanizer}

    def describe(self) -> str:
        return "uroman romanisation" if self.romanizer == "uroman" else "Latin letters without diacritics"


class CharacterFrontend(TextFrontend):
    """The project's own characters: published symbols keep their ids, new characters get ids from 401 on."""

    kind = "characters"

    def __init__(self, extra_symbols: Sequence[str] = (), language: str | None = None, lowercase: bool = True,
                 numbers: str | None = None):
        self.language = language
        self.numbers = _checked_numbers(numbers)
        self.lowercase = lowercase
        self.extra_symbols = [s for s in dict.fromkeys(extra_symbols) if s not in SYMBOL_TO_ID]
        self._table = {**SYMBOL_TO_ID, **{s: len(SYMBOLS) + i for i, s in enumerate(self.extra_symbols)}}

    @classmethod
    def from_texts(cls, texts: Iterable[str], language: str | None = None, lowercase: bool = True,
                   numbers: str | None = None):
        """Vocabulary = every character of the (normalised) texts not already among the published symbols."""
        seen: set[str] = set()
        for text in texts:
            normalised, _ = normalize_text(text, numbers)
            seen.update(normalised.lower() if lowercase else normalised)
        extra = sorted(ch for ch in seen if ch not in SYMBOL_TO_ID and not ch.isspace())
        return cls(extra, language=language, lowercase=lowercase, numbers=numbers)

    @property
    def symbols(self) -> list[str]:
        return SYMBOLS + self.extra_symbols

    def _id(self, symbol: str) -> int:
        return self._table[symbol]

    def _symbols_batch(self, texts: list[str]) -> list[MappingResult]:
        results = []
        for text in texts:
            result = MappingResult()
            for ch in text.lower() if self.lowercase else text:
                if ch in self._table and ch != PAD:
                    result.symbols.append(ch)
                elif ch.isspace():
                    result.symbols.append(" ")
                else:
                    result.unknown[ch] += 1
            results.append(result)
        return results

    def _settings(self) -> dict:
        return {"kind": self.kind, "language": self.language, "lowercase": self.lowercase,
                "extra_symbols": self.extra_symbols}

    def describe(self) -> str:
        return f"the project's own characters ({len(self.extra_symbols)} new symbols)"


def frontend_from_dict(data: dict) -> TextFrontend:
    """Rebuild the front end saved in a checkpoint sidecar (raises FrontendUnavailable if it cannot run here)."""
    kind = data.get("kind")
    numbers = data.get("numbers")  # absent in sidecars older than number reading: digits as they always were
    frontend: TextFrontend
    if kind == "phonemes":
        frontend = PhonemeFrontend(data.get("language") or data["espeak_voice"], voice=data.get("espeak_voice"),
                                   numbers=numbers)
    elif kind == "romanized":
        frontend = RomanizedFrontend(data.get("language"), romanizer=data.get("romanizer"), numbers=numbers)
    elif kind == "characters":
        frontend = CharacterFrontend(data.get("extra_symbols", []), language=data.get("language"),
                                     lowercase=data.get("lowercase", True), numbers=numbers)
    else:
        raise ValueError(f"unknown text front end kind {kind!r} in sidecar")
    frontend.reason = str(data.get("reason") or "")
    return frontend
