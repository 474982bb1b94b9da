"""What the three StableTTS handlers share: job settings, the training run, the voice, and the synthesis.

Training (``train_voice``): the project's recorded verses with text (the job's ``training`` filter) are
fetched, handed to ``tts.train`` as plain ``Utterance`` records, and followed through hooks that
write ``checkpoint/training_metrics.csv``, send a heartbeat per epoch ("epoch 12/100 · val loss 1.23 · ETA
41 min") and keep the resumable state in ``callbacks.get_resume_dir()``. When the worker stops the job
(``JobInterrupted``) the state of the last finished epoch is uploaded at once, so the next worker continues
at the next epoch. The best model is uploaded as ``checkpoint/best_model.pt`` (a plain state_dict) with its
``best_model.json`` sidecar (model config, text front end, training settings, default voice).

Synthesis (``synthesise_cells``): every verse cell with text and no usable take (the job's ``inference``
filter) gets one generated take, attached by ``handlers.common.write_generated_takes`` (unique file names,
selected only where the editor plays no translator's take, selected or by its newest-take fallback). The
text is the cell text as training read it (``codex.html_to_text``: no markup reaches the model).

The voice (``voice_reference``): the job's ``voice_reference`` recording when given. Without one ("Use
Default Voice") it is the training data's median-length recording, silence-trimmed: a typical take of the
team's own reader, neither a two-word verse nor a genealogy. The training run records which one in the
checkpoint sidecar (``extra.default_voice``); when that file is gone (or the checkpoint has no sidecar), the
project's current recordings are used the same way (median length by attachment metadata), and a project
without any recording falls back to the model's learned average voice. The result says which was used.

Vocoder: Vocos weights from the Hugging Face cache or hub when available; otherwise the Griffin-Lim
fallback, which is said in logs.txt and in the result (``vocoder: griffin-lim``).

Numbers and abbreviations: verses whose numbers the voice's front end leaves as digits it cannot speak, or
that hold likely abbreviations ("Mt."), are found before synthesis and listed (``unspeakable_count``,
``unspeakable_cells``: cell, reference, what), and named in the status while the verses are spoken; the
training texts the same way (``unspeakable_training_texts``, ``unspeakable_training_cells``).
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import codex
from handlers.base import JobInterrupted
from handlers.common import (
    EMPTY_TEXT,
    TTS_METRICS_COLUMNS,
    CollectedAudio,
    GeneratedTake,
    MetricsLog,
    ProjectFileMissing,
    SkipReport,
    cells_needing_audio,
    collect_training_pairs,
    fetch_cell_audio,
    fetch_project_file,
    job_paths,
    upload_job_files,
    write_generated_takes,
)
from handlers.common.reports import PROGRESS_SECONDS
from inference_stabletts import SAMPLE_RATE, TTSVoice, load_reference, load_voice, synthesize_iter
from preprocess_audio import ENCODE_FORMATS, AudioError, encode_audio
from storage import UnsafePath
from StableTTS import CheckpointError, load_model, read_sidecar, sidecar_path
from StableTTS.text import FrontendUnavailable, describe_counts, frontend_from_dict
from tts import (HUB_VOCOS_FILE, STATE_FILE, NoTrainingData, PretrainedUnavailable, TrainConfig,
                          TrainHooks, TrainResult, Utterance, hub_file, pretrained_weights, train)
from tts.config import FRONTEND_CHOICES

logger = logging.getLogger(__name__)

MODEL_NAME = "StableTTS"
UNSPEAKABLE_LISTED = 50  # cells a result lists one by one; the count says how many there are in all


# -- job settings ------------------------------------------------------------------------------------
class JobSettingError(ValueError):
    """A manifest value that cannot be used; the message names the key."""


def _setting(callbacks, key: str, kind: type, default: Any = None) -> Any:
    value = callbacks.get_job_config(key)
    if value is None:
        return default
    try:
        if kind is bool and not isinstance(value, bool):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise JobSettingError(f"job setting {key!r} must be {'true/false' if kind is bool else 'a number'}, "
                              f"not {value!r}") from None


def project_language(callbacks) -> str | None:
    """``model.language`` from the manifest, else the target language tag of the project's metadata.json.

    Only a hint: the text front end checks it against the texts (metadata tags are often wrong or missing)."""
    language = str(callbacks.get_job_config("model.language") or "").strip()
    if language:
        logger.info("Project language from model.language: %s", language)
        return language
    file = callbacks.scanner.read("metadata.json")
    try:
        languages = json.loads(file.content).get("languages") if file else None
    except (ValueError, AttributeError):
        logger.warning("metadata.json cannot be read; the text front end is chosen without a language")
        return None
    for entry in languages if isinstance(languages, list) else []:
        if isinstance(entry, dict) and entry.get("projectStatus") == "target" and entry.get("tag"):
            logger.info("Project language from metadata.json: %s", entry["tag"])
            return str(entry["tag"])
    return None


def training_config(callbacks, base_checkpoint: Path | None) -> TrainConfig:
    """TrainConfig from the manifest (``epochs``, ``model.*``, the earlier worker's tuning keys)."""
    frontend = str(callbacks.get_job_config("model.frontend") or "auto").strip().lower()
    if frontend not in FRONTEND_CHOICES:
        raise JobSettingError(f"model.frontend must be one of {', '.join(FRONTEND_CHOICES)}, not {frontend!r}")
    if _setting(callbacks, "model.use_uroman", bool, False):
        frontend = "romanized"
    values = {
        "epochs": _setting(callbacks, "epochs", int, TrainConfig.epochs),
        "preset": str(callbacks.get_job_config("model.preset", "v1.1")),
        "pretrained": not _setting(callbacks, "model.from_scratch", bool, False),
        "language": project_language(callbacks),
        "frontend": frontend,
        "base_checkpoint": str(base_checkpoint) if base_checkpoint else None,
        "learning_rate": _setting(callbacks, "learning_rate", float),
        "batch_size": _setting(callbacks, "batch_size", int, TrainConfig.batch_size),
        "val_split": _setting(callbacks, "val_split", float, TrainConfig.val_split),
        "warmup_steps": _setting(callbacks, "warmup_steps", int, TrainConfig.warmup_steps),
        "gradient_accumulation_steps": _setting(callbacks, "gradient_accumulation_steps", int, 1),
        "max_clip_seconds": _setting(callbacks, "max_duration_seconds", float, TrainConfig.max_clip_seconds),
        "seed": _setting(callbacks, "seed", int, TrainConfig.seed),
    }
    for ignored in ("save_steps", "eval_steps", "test_split"):
        if callbacks.get_job_config(ignored) is not None:
            logger.info("Job setting %r is not used by StableTTS training (state is kept per epoch)", ignored)
    try:
        return TrainConfig(**values)
    except ValueError as exc:
        raise JobSettingError(str(exc)) from None


def fetch_base_checkpoint(callbacks, work: Path) -> Path | None:
    """``model.base_checkpoint`` (+ its .json sidecar when the project has one) in ``work``, or None.

    The file is untrusted: it is only ever read as weights (``weights_only`` / safetensors), and it is
    loaded once here so that a hostile or mismatched file fails the job before any audio is fetched.
    Raises ProjectFileMissing / UnsafePath for a path that is absent or leaves the project, CheckpointError
    for a file that is not a usable StableTTS checkpoint.
    """
    path = callbacks.get_job_config("model.base_checkpoint")
    if not path:
        return None
    path = str(path)
    suffix = ".safetensors" if path.lower().endswith(".safetensors") else ".pt"
    local = fetch_project_file(callbacks, path, work / "base_checkpoint" / f"base{suffix}",
                               field="model.base_checkpoint")
    sidecar = Path(path).with_suffix(".json").as_posix()
    if callbacks.scanner.exists(sidecar):
        fetch_project_file(callbacks, sidecar, sidecar_path(local), field="model.base_checkpoint sidecar")
    else:
        sidecar_path(local).unlink(missing_ok=True)
        logger.info("%s has no sidecar (%s): sizes come from its tensors", path, sidecar)
    try:
        load_model(local)
    except CheckpointError as exc:
        raise CheckpointError(f"model.base_checkpoint {path} cannot be used: {_problem(exc, local, path)}") from None
    return local


def _problem(exc: CheckpointError, local: Path, path: str) -> str:
    """The checkpoint error for translators: one line, naming the project's files instead of our copies."""
    side, project_side = str(sidecar_path(local)), Path(path).with_suffix(".json").as_posix()
    text = str(exc).replace(str(local) + ": ", "").replace(str(local), path).replace(side, project_side)
    return " ".join(text.split())


USER_ERRORS = (JobSettingError, ProjectFileMissing, UnsafePath, CheckpointError, FrontendUnavailable,
               NoTrainingData, AudioError)  # failures a translator can act on: the message says what to fix


# -- training ----------------------------------------------------------------------------------------
@dataclass
class TrainedVoice:
    result: TrainResult
    checkpoint_path: str  # project path of best_model.pt
    collected: CollectedAudio  # the training recordings (local files)
    summary: dict[str, Any]  # result keys of a training job


class _Heartbeat:
    """Heartbeats at most every few seconds (always at an epoch's end, carrying the metrics CSV so the
    plugin's chart counts the same epochs as ``epochs_completed``), metrics rows, resumable state."""

    def __init__(self, callbacks, metrics: MetricsLog, metrics_path: str):
        self.callbacks = callbacks
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.last = 0.0

    def progress(self, message: str) -> None:
        if time.monotonic() - self.last >= PROGRESS_SECONDS:
            self.callbacks.heartbeat(message=message)
            self.last = time.monotonic()

    def epoch_end(self, report) -> None:
        self.metrics.follow(report.history)
        self.callbacks.heartbeat(epochs_completed=report.epoch, message=report.status(),
                                 files={self.metrics_path: self.metrics.path})
        self.last = time.monotonic()
        self.callbacks.save_resume_state()  # throttled by the worker


def train_voice(callbacks, job_context: dict, notebooks) -> TrainedVoice:
    """Collect the recordings, train (resuming when a state exists), upload checkpoint + metrics."""
    work = Path(callbacks.get_work_dir())
    paths = job_paths(job_context)
    base = fetch_base_checkpoint(callbacks, work)
    config = training_config(callbacks, base)
    if not (Path(callbacks.get_resume_dir()) / STATE_FILE).is_file():  # a resumed run needs no start
        try:
            pretrained_weights(config)  # fails the job before any audio is fetched
        except PretrainedUnavailable as exc:
            raise PretrainedUnavailable(f"{exc}; set model.from_scratch: true to train from scratch instead "
                                        "(a usable voice then needs far more recordings)") from None
    # codex's training pairs leave out generated takes and machine-written text: never our own output.
    collected = collect_training_pairs(callbacks, notebooks, work, max_seconds=config.max_clip_seconds)
    utterances = [Utterance(item.cell.cell_id, item.text, item.audio_path, item.source_path) for item in collected]
    metrics = MetricsLog(work / "checkpoint" / "training_metrics.csv", TTS_METRICS_COLUMNS)
    beat = _Heartbeat(callbacks, metrics, paths.metrics)
    try:
        result = train(utterances, config, work / "checkpoint", cache_dir=work / "tts_cache",
                       resume_dir=callbacks.get_resume_dir(), device=callbacks.get_device(),
                       hooks=TrainHooks(progress=beat.progress, epoch_end=beat.epoch_end))
    except JobInterrupted:
        # The folder holds the last finished epoch: make it survive this worker, then stop.
        callbacks.save_resume_state(force=True)
        raise
    metrics.follow(result.history)
    sidecar = sidecar_path(result.checkpoint)
    upload_job_files(callbacks, {paths.checkpoint: result.checkpoint,
                                 str(Path(paths.checkpoint).with_suffix(".json").as_posix()): sidecar,
                                 paths.metrics: metrics.path}, "StableTTS: best model and training metrics")
    skipped = Counter(collected.skipped.counts()) + Counter(result.skip_counts())
    summary = {
        "checkpoint_path": paths.checkpoint, "best_epoch": result.best_epoch,
        "best_metric_value": round(result.best_value, 6), "best_metric": result.best_metric,
        "train_clips": result.train_clips, "val_clips": result.val_clips,
        "skipped_clips": sum(skipped.values()), "skipped_clip_reasons": dict(skipped.most_common()),
        "unknown_characters": sum(result.unknown_characters.values()),
        "initialised_from": result.initialised_from, "text_frontend": result.frontend.get("kind"),
        "frontend_reason": _frontend_reason(result, base), "device": result.device, "precision": result.precision,
    }
    if base is not None:
        summary["initialised_from"] = str(callbacks.get_job_config("model.base_checkpoint"))
    if result.unknown_characters:
        summary["unknown_characters_detail"] = describe_counts(result.unknown_characters)
    trained_ids = {u.id for u in utterances} - {s.id for s in result.skipped}
    trained_cells = [item.cell for item in collected if item.cell.cell_id in trained_ids]
    unsaid = Unspeakable.find(frontend_from_dict(result.frontend), trained_cells)
    summary["unspeakable_training_texts"] = len(unsaid.cells)
    if unsaid.cells:
        summary["unspeakable_training_cells"] = unsaid.listed()
        logger.warning("Training: %s (trained as written)", unsaid.note("training texts"))
    logger.info("Training done: best epoch %d (%s %.4f), %d clip(s) trained, %d skipped", result.best_epoch,
                result.best_metric, result.best_value, result.train_clips + result.val_clips, sum(skipped.values()))
    return TrainedVoice(result, paths.checkpoint, collected, summary)


def _frontend_reason(result: TrainResult, base: Path | None) -> str:
    """Why the run read the texts as it did; a base checkpoint's front end is kept whatever the texts are."""
    reason = result.frontend_reason
    if base is not None and "frontend" in (checkpoint_sidecar(base) or {}):
        reason = "kept from model.base_checkpoint (its symbols must keep their meaning)" + \
                 (f"; chosen then because {reason}" if reason else "")
    logger.info("Text front end: %s (%s)", result.frontend.get("kind"), reason or "no reason recorded")
    return reason


# -- the voice ---------------------------------------------------------------------------------------
def load_job_voice(callbacks, checkpoint: Path) -> TTSVoice:
    """A checkpoint with the front end of its sidecar, on the job's device, with the best vocoder here:
    Vocos when its weights can be had, else Griffin-Lim (said loudly)."""
    try:
        voice = load_voice(checkpoint, vocoder=hub_file(HUB_VOCOS_FILE), device=callbacks.get_device(),
                           language=project_language(callbacks))
    except ValueError as exc:  # the front end and the model disagree (a sidecar from another checkpoint)
        raise CheckpointError(str(exc)) from None
    if voice.vocoder_is_fallback:
        logger.warning("Vocoder: %s (fallback: no Vocos weights available here); the generated audio will sound "
                       "phasey", voice.vocoder_name)
    else:
        logger.info("Vocoder: %s", voice.vocoder_name)
    return voice


@dataclass
class Reference:
    samples: np.ndarray | None  # 44.1 kHz mono, trimmed; None = the model's average voice
    description: str


def voice_reference(callbacks, notebooks, sidecar: dict | None, work: Path,
                    local_files: dict[str, Path] | None = None) -> Reference:
    """The voice to speak with (see the module docstring). Raises for a ``voice_reference`` that cannot be
    used: the job asked for that voice, and another one would be a silent substitution."""
    chosen = callbacks.get_job_config("voice_reference")
    if chosen:
        local = _fetch_voice_reference(callbacks, str(chosen), work / "voice" / Path(str(chosen)).name)
        return Reference(load_reference(local), f"voice_reference {chosen}")
    default = ((sidecar or {}).get("extra") or {}).get("default_voice") or {}
    source = default.get("source")
    if source:
        local = (local_files or {}).get(source)
        try:
            if local is None:
                local = fetch_project_file(callbacks, source, work / "voice" / Path(source).name,
                                           field="default voice")
            return Reference(load_reference(local), f"default: the training data's median-length take {source}")
        except (OSError, ValueError, AudioError) as exc:  # gone from the project, or not decodable any more
            logger.warning("The checkpoint's default voice %s cannot be used (%s); choosing another", source, exc)
    return _median_project_take(callbacks, notebooks, work)


def _fetch_voice_reference(callbacks, chosen: str, dest: Path) -> Path:
    """The take ``voice_reference`` names, in whichever layout the project keeps it now. On an old-layout
    project the plugin names ``.project/attachments/<BOOK>/<take>`` (the worker has already made its
    absolute path project-relative); the editor may since have moved the take to ``files/`` + ``pointers/``,
    and the other way round. ``fetch_project_file`` itself tries the files/ and pointers/ twins."""
    try:
        return fetch_project_file(callbacks, chosen, dest, field="voice_reference")
    except ProjectFileMissing as missing:
        alternatives = _other_attachment_layouts(chosen)
        for alternative in alternatives:
            try:
                return fetch_project_file(callbacks, alternative, dest, field="voice_reference")
            except ProjectFileMissing:
                continue
        if not alternatives:
            raise
        raise ProjectFileMissing(f"{missing}; nor is it at {' or '.join(alternatives)}") from None


def _other_attachment_layouts(path: str) -> list[str]:
    """``.project/attachments/JHN/a.webm`` <-> ``.project/attachments/pointers/JHN/a.webm``."""
    prefix = codex.ATTACHMENTS_DIR + "/"
    if not path.startswith(prefix):
        return []
    first, _, rest = path[len(prefix):].partition("/")
    if not rest:
        return []
    if prefix + first in (codex.FILES_DIR, codex.POINTERS_DIR):
        return [prefix + rest] if "/" in rest else []  # current layout -> old: <BOOK>/<take>
    return [f"{codex.POINTERS_DIR}/{first}/{rest}"]


def _median_project_take(callbacks, notebooks, work: Path) -> Reference:
    cells = codex.select_training_pairs(notebooks).cells  # recordings only: no generated takes
    seconds = [float((c.audio_take.metadata or {}).get("durationSec") or 0) for c in cells]
    known = [s for s in seconds if s > 0]
    target = statistics.median(known) if known else 0.0
    # Nearest the median first; takes without a recorded duration last. A few tries, not the whole project.
    for index in sorted(range(len(cells)), key=lambda i: (seconds[i] <= 0, abs(seconds[i] - target)))[:5]:
        fetched = fetch_cell_audio(callbacks, [cells[index]], work, log=False)
        for item in fetched:
            try:
                samples = load_reference(item.audio_path)
            except AudioError as exc:
                logger.info("Default voice candidate %s unusable: %s", item.source_path, exc.reason)
                continue
            return Reference(samples, f"default: the project's median-length take {item.source_path}")
    logger.warning("No recording in the project can serve as the voice: using the model's average voice")
    return Reference(None, "default: the model's average voice (the project has no usable recording)")


def checkpoint_sidecar(checkpoint: Path) -> dict | None:
    try:
        return read_sidecar(checkpoint)
    except ValueError as exc:
        logger.warning("Ignoring the checkpoint's sidecar: %s", exc)
        return None


# -- synthesis ---------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class SynthesisSettings:
    steps: int = 10  # inference.diffusion_steps
    temperature: float = 1.0
    length_scale: float = 1.0
    cfg_scale: float = 3.0
    audio_format: str = "webm"  # Opus at 48 kHz in WebM, what the editor records

    @classmethod
    def from_job(cls, callbacks) -> "SynthesisSettings":
        fmt = str(callbacks.get_job_config("inference.audio_format", "webm")).lower().lstrip(".")
        if fmt not in ENCODE_FORMATS:
            raise JobSettingError(f"inference.audio_format must be one of {', '.join(ENCODE_FORMATS)}, not {fmt!r}")
        settings = cls(
            steps=_setting(callbacks, "inference.diffusion_steps", int, cls.steps),
            temperature=_setting(callbacks, "inference.temperature", float, cls.temperature),
            length_scale=_setting(callbacks, "inference.length_scale", float, cls.length_scale),
            cfg_scale=_setting(callbacks, "inference.cfg_scale", float, cls.cfg_scale), audio_format=fmt)
        if not 1 <= settings.steps <= 1000 or settings.length_scale <= 0 or settings.temperature < 0:
            raise JobSettingError("inference.diffusion_steps must be 1-1000, length_scale > 0 and temperature >= 0")
        return settings


def synthesise_cells(callbacks, notebooks, voice: TTSVoice, reference: Reference,
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
    logger.info("Synthesising %d verse(s) with %s (%s); vocoder %s; %d step(s), cfg %.1f, temperature %.2f, "
                "length scale %.2f, %s", len(cells), reference.description, voice.frontend.kind,
                voice.vocoder_name, settings.steps, settings.cfg_scale, settings.temperature,
                settings.length_scale, settings.audio_format)
    unsaid = Unspeakable.find(voice.frontend, cells)
    note = f" · {unsaid.note()}" if unsaid.cells else ""
    if unsaid.cells:
        logger.warning("%s (the verses are spoken without them)", unsaid.note())
        for entry in unsaid.cells[:UNSPEAKABLE_LISTED]:
            logger.info("  %s (%s): %s", entry["reference"], entry["cell_id"], entry["what"])
    callbacks.heartbeat(message=f"synthesising 0/{len(cells)} verses{note}")
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
            callbacks.heartbeat(message=f"synthesising {done}/{len(cells)} verses{note}")
            last = time.monotonic()
    if review is not None:
        takes = review(takes)
    written = write_generated_takes(callbacks, takes, model_name=MODEL_NAME, audio_format=settings.audio_format)
    skipped.extend(written.skipped)
    skipped.log("while synthesising")
    if unknown:
        logger.warning("%d character(s) could not be spoken by the %s front end and were left out: %s",
                       sum(unknown.values()), voice.frontend.kind, describe_counts(unknown))
    result = {**written.as_result(), "skipped_count": len(skipped), "skipped_reasons": skipped.counts(),
              "skipped_recorded": selection.skipped.counts().get(codex.ALREADY_RECORDED, 0),
              "vocoder": voice.vocoder_name, "voice": reference.description,
              "unspoken_characters": sum(unknown.values()), "unspeakable_count": len(unsaid.cells)}
    if unknown:
        result["unspoken_characters_detail"] = describe_counts(unknown)
    if unsaid.cells:
        result["unspeakable_cells"] = unsaid.listed()
        result["unspeakable_summary"] = unsaid.note()
    return result


def failure(message: str) -> dict[str, Any]:
    """A failed result with a message for translators (the details are in logs.txt)."""
    logger.error("%s", message)
    return {"success": False, "error_message": message}
