"""The published StableTTS v1.1 files on the Hugging Face hub (weights, Vocos): from the local cache, or
downloaded when ``model_hub`` says the hub can be reached. A file that cannot be had is ``None``, and the
caller decides (``model_hub.unavailable_reason`` says why, for its message)."""
from __future__ import annotations

import logging
from pathlib import Path

from model_hub import hub_reachable
from StableTTS.vocoder import HUB_REPO, HUB_TTS_FILE, HUB_VOCOS_FILE, cached_hub_file

logger = logging.getLogger(__name__)

__all__ = ["HUB_REPO", "HUB_TTS_FILE", "HUB_VOCOS_FILE", "hub_file"]


def hub_file(filename: str, repo_id: str = HUB_REPO) -> Path | None:
    """A file of ``repo_id``: cached, else downloaded when possible; None when it cannot be had."""
    cached = cached_hub_file(filename, repo_id)
    if cached is not None or not hub_reachable():
        return cached
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as exc:  # network, auth, disk: any of them means "not available here"
        logger.warning("Could not download %s/%s: %s", repo_id, filename, exc)
        return None
