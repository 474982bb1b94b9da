"""espeak-ng phonemisation through `phonemizer`, using the libespeak-ng shipped by the PyPI package
`espeakng-loader` when present (no system package needed), else a system libespeak-ng if phonemizer finds one.
"""
from __future__ import annotations

import functools
import logging
import re

logger = logging.getLogger(__name__)

# ISO 639-3 (and macrolanguage member) codes of the languages espeak-ng 1.52 has voices for -> its voice
# (and "zh", which espeak calls cmn).
# espeak names most voices by ISO 639-1; Bible-translation projects usually carry 639-3 codes.
ISO639_3_TO_ESPEAK: dict[str, str] = {
    "afr": "af", "amh": "am", "arg": "an", "ara": "ar", "arb": "ar", "asm": "as", "aze": "az", "azj": "az",
    "bak": "ba", "bel": "be", "bul": "bg", "ben": "bn", "bpy": "bpy", "bos": "bs", "cat": "ca",
    "chr": "chr-US-Qaaa-x-west", "cmn": "cmn", "zho": "cmn", "ces": "cs", "chv": "cv", "cym": "cy",
    "dan": "da", "deu": "de", "ell": "el", "eng": "en-us", "epo": "eo", "spa": "es", "est": "et", "ekk": "et",
    "eus": "eu", "fas": "fa", "pes": "fa", "fin": "fi", "fao": "fo", "fra": "fr-fr", "gle": "ga", "gla": "gd",
    "grn": "gn", "gug": "gn", "grc": "grc", "guj": "gu", "hak": "hak", "haw": "haw", "heb": "he", "hin": "hi",
    "hrv": "hr", "hat": "ht", "hun": "hu", "hye": "hy", "hyw": "hyw", "ina": "ia", "ind": "id", "ido": "io",
    "isl": "is", "ita": "it", "jpn": "ja", "jbo": "jbo", "kat": "ka", "kaa": "kaa", "kaz": "kk", "kal": "kl",
    "kan": "kn", "kor": "ko", "kok": "kok", "gom": "kok", "kur": "ku", "kmr": "ku", "kir": "ky", "lat": "la",
    "ltz": "lb", "lfn": "lfn", "lit": "lt", "ltg": "ltg", "lav": "lv", "lvs": "lv", "mri": "mi", "mkd": "mk",
    "mal": "ml", "mar": "mr", "msa": "ms", "zsm": "ms", "mlt": "mt", "mto": "mto", "mya": "my", "nob": "nb",
    "nor": "nb", "nci": "nci", "nep": "ne", "npi": "ne", "nld": "nl", "nog": "nog", "orm": "om", "gaz": "om",
    "ori": "or", "ory": "or", "pan": "pa", "pap": "pap", "pol": "pl", "por": "pt", "que": "qu", "quc": "quc",
    "ron": "ro", "rus": "ru", "snd": "sd", "shn": "shn", "sin": "si", "slk": "sk", "slv": "sl", "smj": "smj",
    "sqi": "sq", "als": "sq", "srp": "sr", "swe": "sv", "swa": "sw", "swh": "sw", "tam": "ta", "tel": "te",
    "tha": "th", "tir": "ti", "tuk": "tk", "tsn": "tn", "tur": "tr", "tat": "tt", "uig": "ug", "ukr": "uk",
    "urd": "ur", "uzb": "uz", "uzn": "uz", "vie": "vi", "yue": "yue", "zh": "cmn",
}

# espeak's mark where it reads on in another language, e.g. "(en)" in "(en)iːθɪˈɒpɪk(fr)lˈɛtʁ..." (kept only in
# `read_words`, for the front-end check).
LANGUAGE_SWITCH = re.compile(r"\(([a-z]{2,3}(?:-[a-z0-9]+)*)\)", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _backend_class():
    """phonemizer's EspeakBackend wired to the bundled library, or None when espeak cannot be used."""
    try:
        from phonemizer.backend import EspeakBackend
        from phonemizer.backend.espeak.wrapper import EspeakWrapper
    except ImportError:
        logger.info("phonemizer is not installed: no espeak phonemes")
        return None
    try:
        import espeakng_loader

        EspeakWrapper.set_library(espeakng_loader.get_library_path())
        EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
    except ImportError:
        logger.info("espeakng-loader not installed; trying a system libespeak-ng")
    try:
        if not EspeakBackend.is_available():
            return None
        EspeakBackend.version()
    except Exception as exc:  # phonemizer raises RuntimeError/OSError variants when the library is missing
        logger.info("espeak-ng is not usable: %s", exc)
        return None
    return EspeakBackend


def espeak_available() -> bool:
    return _backend_class() is not None


@functools.lru_cache(maxsize=1)
def espeak_voices() -> dict[str, str]:
    """Lower-case voice name -> espeak's own spelling (e.g. 'chr-us-qaaa-x-west' -> 'chr-US-Qaaa-x-west')."""
    backend = _backend_class()
    return {v.lower(): v for v in backend.supported_languages()} if backend else {}


def espeak_voice_for(language: str | None) -> str | None:
    """espeak voice for an ISO 639-1/639-3 code or an espeak voice name; None if unsupported/unavailable."""
    if not language or not espeak_available():
        return None
    code = language.strip().lower().replace("_", "-")
    primary = code.split("-")[0]
    voices = espeak_voices()
    for candidate in (code, ISO639_3_TO_ESPEAK.get(code), ISO639_3_TO_ESPEAK.get(primary), primary):
        if candidate and candidate.lower() in voices:
            return voices[candidate.lower()]
    if primary == "en":
        return "en-us"
    # Languages espeak has only regional voices for ("fr" -> fr-fr, fr-be, fr-ch): the home variant, else the first.
    regional = sorted(v for v in voices if v.startswith(primary + "-"))
    if regional:
        return voices[f"{primary}-{primary}" if f"{primary}-{primary}" in regional else regional[0]]
    return None


@functools.lru_cache(maxsize=8)
def _backend(voice: str):
    quiet = logging.getLogger("stabletts.phonemizer")
    quiet.setLevel(logging.ERROR)  # phonemizer warns per batch about word-count mismatches; not actionable
    return _backend_class()(
        voice, preserve_punctuation=True, with_stress=True, language_switch="remove-flags", logger=quiet
    )


@functools.lru_cache(maxsize=8)
def _flagging_backend(voice: str):
    quiet = logging.getLogger("stabletts.phonemizer")
    quiet.setLevel(logging.ERROR)
    return _backend_class()(voice, preserve_punctuation=False, with_stress=True, language_switch="keep-flags",
                            logger=quiet)


def read_words(words: list[str], voice: str) -> list[str]:
    """espeak's IPA for each word read alone, with its language-switch marks kept ("(en)...(fr)")."""
    keep = [i for i, w in enumerate(words) if w.strip()]
    out = [""] * len(words)
    if keep:
        for i, p in zip(keep, _flagging_backend(voice).phonemize([words[i] for i in keep], strip=True, njobs=1)):
            out[i] = p
    return out


def phonemize(texts: list[str], voice: str) -> list[str]:
    """IPA strings for `texts` (one per text, '' for empty input) with stress marks and punctuation kept."""
    keep = [i for i, t in enumerate(texts) if t.strip()]
    out = [""] * len(texts)
    if keep:
        # Empty inputs are skipped: phonemizer drops them from its output, which would misalign the list.
        phones = _backend(voice).phonemize([texts[i] for i in keep], strip=True, njobs=1)
        for i, p in zip(keep, phones):
            out[i] = p
    return out
