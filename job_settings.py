"""Manifest values → settings: the one reader behind every model family's ``from_job``.

A job is one entry of ``gpu_jobs/manifest.yaml`` (a mapping; docs/job_protocol.md lists its keys). Settings
are addressed by dotted keys (``"inference.diffusion_steps"``); a key that is absent or ``null`` takes its
default. A value that cannot be used raises ``JobSettingError`` (a ``JobInputError``) naming the key and the value, which
a handler reports as the job's failure: a translator can fix it, so it is never a traceback.

YAML gives booleans and numbers, but the plugin (and people) sometimes write ``"true"`` or ``"20"``: those
mean what they say. ``True`` is never taken as the number 1.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")

# Keys both model families read (their own keys live in tts/ and asr/job_settings.py), and the paths the
# protocol confines to the project before a handler sees them (jobs.py).
BASE_CHECKPOINT = "model.base_checkpoint"
FROM_SCRATCH = "model.from_scratch"
LANGUAGE = "model.language"
PRESET = "model.preset"
VOICE_REFERENCE = "voice_reference"  # TTS only, but confined and rewritten by jobs.py
FILTER_SECTIONS = ("training", "inference")  # each may hold the two verse lists below
INCLUDE_VERSES = "include_verses"
EXCLUDE_VERSES = "exclude_verses"


class JobInputError(ValueError):
    """What a translator or an admin can fix (a setting, a missing file, nothing to train on): the message,
    one line naming the file or key, becomes the job's failure."""


class JobSettingError(JobInputError):
    """A manifest value that cannot be used; the message names the key."""


def lookup(job: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The value at dotted ``key`` in ``job``, or ``default`` when it is absent or null."""
    value: Any = job
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return default if value is None else value


def parse_flag(value: Any, key: str) -> bool:
    """A true/false setting: a YAML boolean, or one of the strings true/yes/1, false/no/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise JobSettingError(f"job setting {key!r} must be true or false, not {value!r}")


class JobSettings:
    """Typed, checked reads of one manifest job entry."""

    def __init__(self, job: Mapping[str, Any]):
        self.job = job

    def has(self, key: str) -> bool:
        return lookup(self.job, key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        return lookup(self.job, key, default)

    def flag(self, key: str, default: bool) -> bool:
        value = lookup(self.job, key)
        return default if value is None else parse_flag(value, key)

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        return self._number(key, default, int, minimum, maximum)

    def number(self, key: str, default: float | None = None, *, minimum: float | None = None,
               maximum: float | None = None) -> float | None:
        return self._number(key, default, float, minimum, maximum)

    def text(self, key: str, default: str | None = None, *, choices: Sequence[str] | None = None,
             lower: bool = False) -> str | None:
        value = lookup(self.job, key)
        if value is None:
            return default
        if isinstance(value, (Mapping, list)):
            raise JobSettingError(f"job setting {key!r} must be text, not {value!r}")
        text = str(value).strip()
        text = text.lower() if lower else text
        if choices is not None and text not in choices:
            raise JobSettingError(f"job setting {key!r} must be one of {', '.join(choices)}, not {value!r}")
        return text

    def _number(self, key: str, default: Any, kind: type, minimum: Any, maximum: Any) -> Any:
        value = lookup(self.job, key)
        if value is None:
            return default
        what = "a whole number" if kind is int else "a number"
        try:
            if isinstance(value, bool):
                raise ValueError
            number = kind(float(value)) if kind is int and not isinstance(value, int) else kind(value)
            if kind is int and not isinstance(value, int) and float(value) != number:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise JobSettingError(f"job setting {key!r} must be {what}, not {value!r}") from None
        if number != number:  # NaN
            raise JobSettingError(f"job setting {key!r} must be {what}, not {value!r}")
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            bounds = (f"between {minimum:g} and {maximum:g}" if minimum is not None and maximum is not None
                      else f"at least {minimum:g}" if minimum is not None else f"at most {maximum:g}")
            raise JobSettingError(f"job setting {key!r} must be {bounds}, not {value!r}")
        return number
