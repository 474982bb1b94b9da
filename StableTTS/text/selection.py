"""Choosing a project's text front end from its texts as well as its language tag.

Real projects often carry a wrong or missing language tag, and espeak-ng "reads" scripts its voice does not
know: the French voice spells every Ge'ez letter by name (about 25 symbols a letter), so no recording is long
enough for its text. A voice is therefore used only when it reads a sample of the project's own words like
speech: it reads (part of) the text itself, spells no letter names, skips no letters, switches to another
language only for a whole script, and writes a plausible number of symbols per letter. Otherwise uroman
romanisation, and where that cannot represent the letters, the project's own characters.

Numbers are read as words of the tag's language (num2words) only where the tag is shown to be the texts'
language: num2words has it, its number words are in a main script of the texts, and the tag's espeak voice,
where there is one, passed the check above (a voice that cannot read the texts means the tag is wrong).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from .espeak import LANGUAGE_SWITCH, espeak_available, espeak_voice_for, read_words
from .frontends import FRONTEND_KINDS, CharacterFrontend, PhonemeFrontend, RomanizedFrontend, TextFrontend
from .mapping import IPA_TABLE, map_to_symbols
from .normalize import normalize_text, number_language, number_script
from .scripts import SYLLABIC, describe_scripts, is_letter, join_names, letter_count, main_scripts, script_profile
from .symbols import PUNCTUATION

logger = logging.getLogger(__name__)

SAMPLE_TEXTS = 128  # texts spread over the project that the checks read (uroman needs a few seconds for them)
SAMPLE_WORDS = 600  # distinct words of those texts, at most
SYMBOLS_PER_LETTER = (0.5, 4.0)  # a plausible reading of a whole text, by any front end
SPELLED = 5.0  # symbols per letter above which a word was spelled out letter by letter ("lettre 1B0")
SPELLED_SYLLABIC = 9.0  # the same for scripts whose letters are syllables or words (Han, Hangul, Ge'ez, ...)
SKIPPED = 0.34  # symbols per letter below which espeak left most of a word out
MAX_SPELLED = 0.02  # share of the letters in spelled or skipped words that rules a voice out
MAX_SWITCHED = 0.05  # a main script the voice reads itself: at most this share switched to another language
HANDED_OVER = 0.8  # a main script espeak hands to another voice: at least this share switched
_NOT_PHONES = frozenset(PUNCTUATION) | {" "}


@dataclass(frozen=True)
class VoiceCheck:
    """How an espeak voice reads a sample of a project's words."""

    ok: bool
    reason: str  # one line for people
    symbols_per_letter: float


def sample_texts(texts: Sequence[str], limit: int = SAMPLE_TEXTS) -> list[str]:
    """Up to `limit` non-empty texts spread evenly over `texts` (the same texts on every run)."""
    non_empty = [t for t in texts if t and t.strip()]
    if len(non_empty) <= limit:
        return non_empty
    step = len(non_empty) / limit
    return [non_empty[int(i * step)] for i in range(limit)]


def sample_words(texts: Sequence[str], limit: int = SAMPLE_WORDS) -> Counter:
    """Distinct words (with at least one letter, edge punctuation removed) -> occurrences, first seen first."""
    words: Counter = Counter()
    for text in texts:
        for token in normalize_text(text)[0].split():
            word = _trim(token)
            if word and (word in words or len(words) < limit):
                words[word] += 1
    return words


def _trim(token: str) -> str:
    start, end = 0, len(token)
    while start < end and not is_letter(token[start]):
        start += 1
    while end > start and not is_letter(token[end - 1]):
        end -= 1
    return token[start:end]


def phone_count(symbols: Sequence[str]) -> int:
    """Symbols that take time to say: everything but spaces and punctuation (stress marks included)."""
    return sum(1 for s in symbols if s not in _NOT_PHONES)


@dataclass(frozen=True)
class Fit:
    """How a front end writes a sample of texts."""

    represented: float  # share of the letters not reported unknown (1.0 without letters)
    symbols_per_letter: float | None  # spoken symbols per letter; None without letters


def measure(frontend: TextFrontend, texts: Sequence[str]) -> Fit:
    """Encode `texts` with `frontend` and count what became of their letters."""
    encoded = frontend.encode_batch(list(texts))
    letters = sum(letter_count(e.text) for e in encoded)
    if not letters:
        return Fit(1.0, None)
    lost = sum(n for e in encoded for ch, n in e.unknown.items() if is_letter(ch[0]))
    return Fit(1.0 - lost / letters, sum(phone_count(e.symbols) for e in encoded) / letters)


@dataclass
class _Tally:
    """How a voice read the words of one script (letter counts)."""

    letters: int = 0
    switched: int = 0
    into: Counter = field(default_factory=Counter)  # the languages espeak switched to


def check_voice(voice: str, texts: Sequence[str]) -> VoiceCheck:
    """Read the sample's words with `voice` and say whether that looks like speech (see the module docstring).

    espeak hands a script its voice does not read to a voice that does ("(en)" for Latin words in Russian
    text): fine for a second script of the project, as long as the voice reads one of the main scripts itself
    and every script is either read or handed over whole. A script handed over only in part means the voice
    guesses word by word (French reading Swahili switches to English for half the words): wrong language.
    """
    words = sample_words(texts)
    profile = script_profile(words.elements())
    main = main_scripts(profile)
    scripts = describe_scripts(profile) or "unclassified"
    tallies = {script: _Tally() for script in main}
    letters = spelled = skipped = phones = 0
    for (word, count), ipa in zip(words.items(), read_words(list(words), voice)):
        n = letter_count(word) * count
        word_phones = phone_count(map_to_symbols(LANGUAGE_SWITCH.sub(" ", ipa), IPA_TABLE).symbols) * count
        found = script_profile([word]).most_common(1)
        script = found[0][0] if found else None
        letters += n
        phones += word_phones
        if word_phones > n * (SPELLED_SYLLABIC if script in SYLLABIC else SPELLED):
            spelled += n
        elif word_phones < n * SKIPPED:
            skipped += n
        if script in tallies:  # words of a minor script may switch as they like
            tally = tallies[script]
            tally.letters += n
            flags = {f.lower() for f in LANGUAGE_SWITCH.findall(ipa) if not voice.lower().startswith(f.lower())}
            if flags:
                tally.switched += n
                tally.into.update(flags)
    if not letters:
        return VoiceCheck(True, f"espeak voice {voice} (the texts have no letters to check it on)", 0.0)
    ratio = phones / letters
    own = [s for s, t in tallies.items() if t.switched <= MAX_SWITCHED * t.letters]
    handed = {s: t for s, t in tallies.items() if t.switched >= HANDED_OVER * t.letters}
    problems = []  # (letters affected, what happens to them): the largest is named, letter names first on a tie
    if spelled > MAX_SPELLED * letters:
        problems.append((spelled, f"it reads letter names for {spelled / letters:.0%} of it "
                                  f"({ratio:.1f} symbols per letter)"))
    if skipped > MAX_SPELLED * letters:
        problems.append((skipped, f"it skips {skipped / letters:.0%} of the letters"))
    for script, tally in tallies.items():
        if script not in own and script not in handed:
            problems.append((tally.switched, f"it switches to {_languages(tally)} for "
                                             f"{tally.switched / tally.letters:.0%} of the {script} words"))
    if not own:
        into = ", ".join(sorted({lang for t in handed.values() for lang in t.into}))
        problems.append((sum(t.switched for t in handed.values()), f"it switches to {into} for all of it"))
    if problems:
        worst = max(problems, key=lambda p: p[0])[1]
        return VoiceCheck(False, f"espeak voice {voice} cannot read this {scripts} text: {worst}", ratio)
    low, high = SYMBOLS_PER_LETTER
    if not low <= ratio <= high:
        return VoiceCheck(False, f"espeak voice {voice} writes {ratio:.1f} symbols per letter of this {scripts} "
                                 f"text (a plausible reading has {low:g} to {high:g})", ratio)
    reads = f"espeak voice {voice} reads this {join_names(own)} text"
    passes = "".join(f" and switches to {_languages(t)} for the {s} text" for s, t in handed.items())
    return VoiceCheck(True, f"{reads}{passes} ({ratio:.1f} symbols per letter)", ratio)


def _languages(tally: _Tally) -> str:
    return ", ".join(lang for lang, _ in tally.into.most_common()) or "another language"


def select_frontend(
    language: str | None,
    texts: Sequence[str] = (),
    kind: str = "auto",
    min_coverage: float = 0.98,
) -> TextFrontend:
    """Choose the text front end for a project; the result's `reason` says why (one line for people).

    kind="auto": espeak phonemes when the language has an espeak voice AND that voice passes `check_voice` on
    a sample of `texts`; otherwise uroman romanisation when it represents at least `min_coverage` of the
    sample's letters with a plausible number of symbols per letter; otherwise a character vocabulary built
    from the texts (the model's embedding must then be resized to `frontend.n_vocab`). Without texts nothing
    can be checked: the voice, else romanisation. kind="phonemes" / "romanized" / "characters" forces one
    (FrontendUnavailable / ValueError if it cannot be built).
    """
    if kind not in ("auto", *FRONTEND_KINDS):
        raise ValueError(f"kind must be 'auto' or one of {FRONTEND_KINDS}, got {kind!r}")
    sample = sample_texts(texts)
    if kind == "characters" and not texts:
        raise ValueError("a character front end is built from the project's texts; none were given")
    if kind != "auto":
        numbers = number_reading(language, sample)
        forced: TextFrontend
        if kind == "characters":
            forced = CharacterFrontend.from_texts(texts, language=language, numbers=numbers)
        elif kind == "phonemes":
            forced = PhonemeFrontend(language or "", numbers=numbers)
        else:
            forced = RomanizedFrontend(language, numbers=numbers)
        return _chosen(forced, language, f"asked for ({kind})")

    voice = espeak_voice_for(language)
    if voice is not None and not sample:
        return _chosen(PhonemeFrontend(language, voice), language,
                       f"espeak voice {voice} for {language!r} (no texts to check it on)")
    check = check_voice(voice, sample) if voice is not None else None
    numbers = number_reading(language, sample, check)
    if check is not None:
        if check.ok:
            return _chosen(PhonemeFrontend(language, voice, numbers=numbers), language, check.reason)
        steps = [check.reason]
    else:
        steps = [_no_voice(language, describe_scripts(script_profile(normalize_text(t)[0] for t in sample)))]

    romanized = RomanizedFrontend(language, numbers=numbers)
    if not sample:
        return _chosen(romanized, language, "; ".join(steps + [f"{romanized.describe()} instead"]))
    fit = measure(romanized, sample)
    low, high = SYMBOLS_PER_LETTER
    ratio = fit.symbols_per_letter
    if fit.represented >= min_coverage and (ratio is None or low <= ratio <= high):
        figure = f" ({ratio:.1f} symbols per letter)" if ratio is not None else ""
        return _chosen(romanized, language, "; ".join(steps + [f"{romanized.describe()} instead{figure}"]))
    if fit.represented < min_coverage:
        steps.append(f"{romanized.describe()} represents only {fit.represented:.0%} of the letters")
    else:
        steps.append(f"{romanized.describe()} writes {ratio:.1f} symbols per letter")
    characters = CharacterFrontend.from_texts(texts, language=language, numbers=numbers)
    return _chosen(characters, language, "; ".join(steps + [f"{characters.describe()} instead"]))


def number_reading(language: str | None, sample: Sequence[str], check: VoiceCheck | None = None) -> str | None:
    """The num2words language the project's numbers are read in, or None (see the module docstring).
    `check`: the tag's voice already checked on `sample`; without it the voice is checked here if needed."""
    code = number_language(language)
    if code is None or not sample:
        return None
    if number_script(code) not in main_scripts(script_profile(normalize_text(t)[0] for t in sample)):
        return None
    if check is None:
        voice = espeak_voice_for(language)
        check = check_voice(voice, sample) if voice is not None else None
    return code if check is None or check.ok else None


def _no_voice(language: str | None, scripts: str) -> str:
    text = f" ({scripts} text)" if scripts else ""
    if not language:
        return f"no language tag{text}"
    if not espeak_available():
        return f"espeak-ng is not installed here{text}"
    return f"espeak-ng has no voice for {language!r}{text}"


def _chosen(frontend: TextFrontend, language: str | None, reason: str) -> TextFrontend:
    if frontend.numbers:
        reason += f"; numbers read as {frontend.numbers} words (num2words)"
    frontend.reason = reason
    logger.info("Text front end for %r: %s -- %s", language, frontend.describe(), reason)
    return frontend
