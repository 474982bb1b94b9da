"""What a StableTTS job reads besides its notebooks and its settings: the files its manifest names.

* ``model.base_checkpoint`` -- a ``best_model.pt`` (+ its ``.json`` sidecar) of an earlier job, ours or the
  earlier worker's. It comes out of a translators' repository, so it is untrusted: only ever read as weights
  (``weights_only`` / safetensors), and loaded once on arrival, so that a hostile or mismatched file fails the
  job before any audio is fetched.
* The voice (``voice_reference``): the job's ``voice_reference`` recording when given, found in whichever
  attachment layout the project keeps it now. Without one ("Use Default Voice") it is the training data's
  median-length recording, silence-trimmed: a typical take of the team's own reader, neither a two-word verse
  nor a genealogy. The training run records which one in the checkpoint sidecar (``extra.default_voice``);
  when that file is gone (or the checkpoint has no sidecar), the project's current recordings are used the
  same way (median length by attachment metadata), and a project without any recording falls back to the
  model's learned average voice. The result says which was used.
* The project's language tag (metadata.json), a hint for the text front end (``tts.job_settings.text_language``).

What a translator can fix is one of ``USER_ERRORS``; the handlers turn it into the job's failure.
"""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import codex
from handlers.common import ProjectFileMissing, fetch_cell_audio, fetch_project_file
from job_settings import BASE_CHECKPOINT, VOICE_REFERENCE, JobInputError
from preprocess_audio import AudioError
from storage import UnsafePath
from StableTTS import CheckpointError, load_model, read_sidecar, sidecar_path
from StableTTS.text import FrontendUnavailable
from tts import NoTrainingData, load_reference

logger = logging.getLogger(__name__)

USER_ERRORS = (JobInputError, ProjectFileMissing, UnsafePath, CheckpointError, FrontendUnavailable,
               NoTrainingData, AudioError)  # failures a translator can act on: the message says what to fix


def project_language_tag(callbacks) -> str | None:
    """The target language tag of the project's metadata.json, or None (no file, no such entry)."""
    file = callbacks.scanner.read("metadata.json")
    try:
        languages = json.loads(file.content).get("languages") if file else None
    except (ValueError, AttributeError):
        logger.warning("metadata.json cannot be read; the text front end is chosen without a language")
        return None
    for entry in languages if isinstance(languages, list) else []:
        if isinstance(entry, dict) and entry.get("projectStatus") == "target" and entry.get("tag"):
            return str(entry["tag"])
    return None


def fetch_base_checkpoint(callbacks, work: Path) -> Path | None:
    """``model.base_checkpoint`` (+ its .json sidecar when the project has one) in ``work``, or None.

    Raises ProjectFileMissing / UnsafePath for a path that is absent or leaves the project, CheckpointError
    for a file that is not a usable StableTTS checkpoint.
    """
    path = callbacks.get_job_config(BASE_CHECKPOINT)
    if not path:
        return None
    path = str(path)
    suffix = ".safetensors" if path.lower().endswith(".safetensors") else ".pt"
    local = fetch_project_file(callbacks, path, work / "base_checkpoint" / f"base{suffix}", field=BASE_CHECKPOINT)
    sidecar = Path(path).with_suffix(".json").as_posix()
    if callbacks.scanner.exists(sidecar):
        fetch_project_file(callbacks, sidecar, sidecar_path(local), field=f"{BASE_CHECKPOINT} sidecar")
    else:
        sidecar_path(local).unlink(missing_ok=True)
        logger.info("%s has no sidecar (%s): sizes come from its tensors", path, sidecar)
    try:
        load_model(local)
    except CheckpointError as exc:
        raise CheckpointError(f"{BASE_CHECKPOINT} {path} cannot be used: {_problem(exc, local, path)}") from None
    return local


def _problem(exc: CheckpointError, local: Path, path: str) -> str:
    """The checkpoint error for translators: one line, naming the project's files instead of our copies."""
    side, project_side = str(sidecar_path(local)), Path(path).with_suffix(".json").as_posix()
    text = str(exc).replace(str(local) + ": ", "").replace(str(local), path).replace(side, project_side)
    return " ".join(text.split())


def checkpoint_sidecar(checkpoint: Path) -> dict | None:
    try:
        return read_sidecar(checkpoint)
    except ValueError as exc:
        logger.warning("Ignoring the checkpoint's sidecar: %s", exc)
        return None


@dataclass
class Reference:
    samples: np.ndarray | None  # 44.1 kHz mono, trimmed; None = the model's average voice
    description: str


def voice_reference(callbacks, notebooks, sidecar: dict | None, work: Path,
                    local_files: dict[str, Path] | None = None) -> Reference:
    """The voice to speak with (see the module docstring). Raises for a ``voice_reference`` that cannot be
    used: the job asked for that voice, and another one would be a silent substitution."""
    chosen = callbacks.get_job_config(VOICE_REFERENCE)
    if chosen:
        local = _fetch_voice_reference(callbacks, str(chosen), work / "voice" / Path(str(chosen)).name)
        return Reference(load_reference(local), f"{VOICE_REFERENCE} {chosen}")
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
        return fetch_project_file(callbacks, chosen, dest, field=VOICE_REFERENCE)
    except ProjectFileMissing as missing:
        alternatives = _other_attachment_layouts(chosen)
        for alternative in alternatives:
            try:
                return fetch_project_file(callbacks, alternative, dest, field=VOICE_REFERENCE)
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
