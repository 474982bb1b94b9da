"""The model a run starts from, and the text front end it reads with.

In order of preference: a checkpoint the caller names (an earlier job's voice: its sidecar's front end is
kept, because symbol ids must keep their meaning), the published v1.1 weights (fine-tuning, the default),
or a new model of the configured preset (``tiny`` for tests and the demo, or v1.1 with ``pretrained`` off).
A default run whose published weights cannot be had fails (``PretrainedUnavailable``) instead of quietly
training from scratch: a voice trained from scratch on a few hundred verses is poor, and nobody asked for one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from model_hub import unavailable_reason
from StableTTS import CheckpointError, StableTTS, build_model, load_model, resize_text_embedding
from StableTTS.text import CharacterFrontend, TextFrontend, frontend_from_dict, select_frontend
from StableTTS.text.symbols import SYMBOLS

from .config import TrainConfig
from .hub import HUB_REPO, HUB_TTS_FILE, hub_file

logger = logging.getLogger(__name__)


class PretrainedUnavailable(CheckpointError):
    """The published weights a default run fine-tunes cannot be had here; the message says which and why."""


@dataclass
class InitialModel:
    model: StableTTS
    frontend: TextFrontend
    origin: str  # for people: where the weights came from
    trained_weights: bool  # False = random initialisation (decides the default learning rate)


def initial_model(config: TrainConfig, texts: Sequence[str]) -> InitialModel:
    """Build the starting model and its front end. Raises CheckpointError for an unusable base checkpoint."""
    if config.base_checkpoint:
        path = Path(config.base_checkpoint)
        model, sidecar = load_model(path)
        frontend = _checkpoint_frontend(path, model, sidecar, config, texts)
        start = InitialModel(model, frontend, f"checkpoint {path.name}", True)
    else:
        frontend = select_frontend(config.language, texts, kind=config.frontend)
        pretrained = pretrained_weights(config)
        if pretrained is not None:
            model, _ = load_model(pretrained)
            start = InitialModel(model, frontend, HUB_REPO, True)
        else:
            model = build_model(config.preset, n_vocab=frontend.n_vocab)
            start = InitialModel(model, frontend, f"scratch ({config.preset})", False)
    if start.model.config.n_vocab != start.frontend.n_vocab:
        resize_text_embedding(start.model, start.frontend.n_vocab)
    start.model.train()
    logger.info("Starting from %s: %.2fM parameters, text front end %s", start.origin,
                sum(p.numel() for p in start.model.parameters()) / 1e6, start.frontend.to_dict())
    return start


def pretrained_weights(config: TrainConfig) -> Path | None:
    """The published v1.1 checkpoint the run fine-tunes (cached, or downloaded now); None when the run starts
    elsewhere (a base checkpoint, another preset, ``pretrained`` off). Raises PretrainedUnavailable."""
    if config.base_checkpoint or config.preset != "v1.1" or not config.pretrained:
        return None
    path = hub_file(HUB_TTS_FILE)
    if path is None:
        raise PretrainedUnavailable(f"The pretrained StableTTS v1.1 weights ({HUB_REPO}, {HUB_TTS_FILE}) cannot be "
                                    f"had: {unavailable_reason()}")
    return path


def _checkpoint_frontend(path: Path, model: StableTTS, sidecar: dict | None, config: TrainConfig,
                         texts: Sequence[str]) -> TextFrontend:
    if sidecar and "frontend" in sidecar:
        frontend = frontend_from_dict(sidecar["frontend"])
        if config.language and frontend.language and config.language != frontend.language:
            logger.warning("%s was trained with the %s front end for %r; keeping it for language %r (symbol ids "
                           "must keep their meaning)", path.name, frontend.kind, frontend.language, config.language)
        if isinstance(frontend, CharacterFrontend):
            # New characters in this project's texts get new rows; the old ones keep their ids and training.
            new = [s for s in CharacterFrontend.from_texts(texts, lowercase=frontend.lowercase,
                                                           numbers=frontend.numbers).extra_symbols
                   if s not in frontend.extra_symbols]
            if new:
                logger.info("Adding %d new character(s) to the vocabulary of %s: %s", len(new), path.name,
                            "".join(new))
                frontend = CharacterFrontend(frontend.extra_symbols + new, language=frontend.language,
                                             lowercase=frontend.lowercase, numbers=frontend.numbers)
        return frontend
    if model.config.n_vocab != len(SYMBOLS):
        raise CheckpointError(f"{path.name} embeds {model.config.n_vocab} symbols but has no sidecar (.json) "
                              "saying what they are; only the published 401-symbol layout can be used without one")
    return select_frontend(config.language, texts, kind=config.frontend)
