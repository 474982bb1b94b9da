"""The inference step of the StableTTS modes: a voice speaks every verse that has text and no usable take.

Every verse cell with text and no usable take (the job's ``inference`` filter) gets one generated take,
spoken by ``tts.inference`` and attached by ``handlers.common.write_generated_takes`` (unique file names,
selected only where the editor plays no translator's take, selected or by its newest-take fallback). The
text is the cell text as training read it (``codex.html_to_text``: no markup reaches the model).

Vocoder: Vocos weights from the Hugging Face cache or hub when available; otherwise the Griffin-Lim
fallback, which is said in logs.txt and in the result (``vocoder: griffin-lim``).

Numbers and abbreviations: verses whose numbers the voice's front end leaves as digits it cannot speak, or
that hold likely abbreviations ("Mt."), are found before synthesis and listed (``unspeakable_count``,
``unspeakable_cells``: cell, reference, what), and named in the status while the verses are spoken; the
training texts the same way (``training_run.py``: ``unspeakable_training_texts``, ``unspeakable_training_cells``).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from handlers.common import (ALREADY_RECORDED, EMPTY_TEXT, GeneratedTake, SkipReport, cells_needing_audio, count,
                             write_generated_takes)
from handlers.common.reports import PROGRESS_SECONDS
from preprocess_audio import encode_audio
from StableTTS import CheckpointError
from StableTTS.text import describe_counts
from tts import HUB_VOCOS_FILE, SAMPLE_RATE, TTSVoice, hub_file, load_voice, synthesize_iter
from tts.job_settings import SynthesisSettings

from .job_inputs import Reference

logger = logging.getLogger(__name__)

MODEL_NAME = "StableTTS"
UNSPEAKABLE_LISTED = 50  # cells a result lists one by one; the count says how many there are in all


@dataclass
class Unspeakable:
    """Cells with numbers or abbreviations the voice will not speak as meant, found before speaking them."""

    cells: list[dict[str, str]]  # {"cell_id", "reference", "what": "digits 12, abbreviation Mt."}
    kinds: set[str]  # "digits", "abbreviation"

    @classmethod
    def find(cls, frontend, cells: Sequence) -> "Unspeakable":
        found = frontend.unspeakable([c.text for c in cells])
        listed = [{"cell_id": c.cell_id, "reference": c.reference or c.cell_id, "what": ", ".join(items)}
                  for c, items in zip(cells, found) if items]
        return cls(listed, {item.split(" ", 1)[0] for items in found for item in items})

    def listed(self) -> list[dict[str, str]]:
        return self.cells[:UNSPEAKABLE_LISTED]

    def note(self, what: str = "verses") -> str:
        """'3 verses have numbers this voice cannot speak: JHN 1:14, JHN 2:3, JHN 3:16, …' ('' for none)."""
        if not self.cells:
            return ""
        noun = " or ".join(n for k, n in (("digits", "numbers"), ("abbreviation", "abbreviations")) if k in self.kinds)
        refs = ", ".join(c["reference"] for c in self.cells[:3]) + (", …" if len(self.cells) > 3 else "")
        have = "has" if len(self.cells) == 1 else "have"
        what = what[:-1] if len(self.cells) == 1 else what
        return f"{len(self.cells)} {what} {have} {noun} this voice cannot speak: {refs}"


def load_job_voice(callbacks, checkpoint: Path, language: str | None) -> TTSVoice:
    """A checkpoint with the front end of its sidecar (``language`` only for one without), on the job's
    device, with the best vocoder here: Vocos when its weights can be had, else Griffin-Lim (said loudly)."""
    try:
        voice = load_voice(checkpoint, vocoder=hub_file(HUB_VOCOS_FILE), device=callbacks.get_device(),
                           language=language)
    except ValueError as exc:  # the front end and the model disagree (a sidecar from another checkpoint)
        raise CheckpointError(str(exc)) from None
    if voice.vocoder_is_fallback:
        logger.warning("Vocoder: %s (fallback: no Vocos weights available here); the generated audio will sound "
                       "phasey", voice.vocoder_name)
    else:
        logger.info("Vocoder: %s", voice.vocoder_name)
    return voice


def synthesize_cells(callbacks, notebooks, voice: TTSVoice, reference: Reference,
                     settings: SynthesisSettings, review=None) -> dict[str, Any]:
    """One generated take per selected cell; returns the result keys of an inference job. ``review(takes)``
    may return the takes marked ``select=False`` before they are written back (``listen_check``)."""
    work = Path(callbacks.get_work_dir())
    selection = cells_needing_audio(callbacks, notebooks)
    cells = selection.cells
    skipped = SkipReport()
    skipped.extend(selection.skipped)
    takes: list[GeneratedTake] = []
    unknown: Counter = Counter()
    out = work / "generated"
    logger.info("Synthesizing %d verse(s) with %s (%s); vocoder %s; %d step(s), cfg %.1f, temperature %.2f, "
                "length scale %.2f, %s", len(cells), reference.description, voice.frontend.kind,
                voice.vocoder_name, settings.steps, settings.cfg_scale, settings.temperature,
                settings.length_scale, settings.audio_format)
    unsaid = Unspeakable.find(voice.frontend, cells)
    note = f" · {unsaid.note()}" if unsaid.cells else ""
    if unsaid.cells:
        logger.warning("%s (the verses are spoken without them)", unsaid.note())
        for entry in unsaid.cells[:UNSPEAKABLE_LISTED]:
            logger.info("  %s (%s): %s", entry["reference"], entry["cell_id"], entry["what"])
    callbacks.heartbeat(message=f"synthesizing 0/{len(cells)} verses{note}")
    last = time.monotonic()
    spoken_iter = synthesize_iter(voice, [c.text for c in cells], reference.samples, steps=settings.steps,
                                  cfg_scale=settings.cfg_scale, temperature=settings.temperature,
                                  length_scale=settings.length_scale, seed=0)
    for done, spoken in enumerate(spoken_iter, 1):
        cell = cells[spoken.index]
        unknown.update(spoken.encoded.unknown)
        if spoken.audio.size == 0:
            skipped.add(cell, EMPTY_TEXT, "nothing the voice can speak")
        else:
            path = out / f"{spoken.index:06d}.{settings.audio_format}"
            encode_audio(spoken.audio, SAMPLE_RATE, path, settings.audio_format)
            takes.append(GeneratedTake(cell, path))
        if done == len(cells) or time.monotonic() - last >= PROGRESS_SECONDS:
            callbacks.heartbeat(message=f"synthesizing {done}/{len(cells)} verses{note}")
            last = time.monotonic()
    if review is not None:
        takes = review(takes)
    written = write_generated_takes(callbacks, takes, model_name=MODEL_NAME, audio_format=settings.audio_format)
    skipped.extend(written.skipped)
    skipped.log("while synthesizing")
    if unknown:
        logger.warning("%d character(s) could not be spoken by the %s front end and were left out: %s",
                       sum(unknown.values()), voice.frontend.kind, describe_counts(unknown))
    result = {**written.as_result(), "skipped_count": len(skipped), "skipped_reasons": skipped.counts(),
              "skipped_recorded": selection.skipped.counts().get(ALREADY_RECORDED, 0),
              "vocoder": voice.vocoder_name, "voice": reference.description,
              "unspoken_characters": sum(unknown.values()), "unspeakable_count": len(unsaid.cells)}
    if unknown:
        result["unspoken_characters_detail"] = describe_counts(unknown)
    if unsaid.cells:
        result["unspeakable_cells"] = unsaid.listed()
        result["unspeakable_summary"] = unsaid.note()
    return result


def synthesis_phrase(spoken: dict[str, Any]) -> str:
    """The status line's part for synthesis: ``6 verses spoken, 1 skipped``."""
    skipped = spoken.get("skipped_count") or 0
    return count(spoken["uploaded_count"], "verse") + " spoken" + (f", {skipped} skipped" if skipped else "")
