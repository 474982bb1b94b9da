"""Text front ends for any script: phonemes (espeak-ng), romanisation (uroman), or project characters."""
from .frontends import (
    CharacterFrontend,
    EncodedText,
    FrontendUnavailable,
    PhonemeFrontend,
    RomanizedFrontend,
    TextFrontend,
    describe_counts,
    frontend_from_dict,
    summarize,
)
from .selection import VoiceCheck, check_voice, select_frontend
from .normalize import normalize_text
from .espeak import espeak_available, espeak_voice_for
from .symbols import BLANK_ID, SYMBOL_TO_ID, SYMBOLS, intersperse

__all__ = [
    "BLANK_ID", "SYMBOLS", "SYMBOL_TO_ID", "CharacterFrontend", "EncodedText", "FrontendUnavailable",
    "PhonemeFrontend", "RomanizedFrontend", "TextFrontend", "describe_counts", "espeak_available",
    "espeak_voice_for", "frontend_from_dict", "intersperse", "normalize_text", "select_frontend", "summarize",
    "VoiceCheck", "check_voice",
]
