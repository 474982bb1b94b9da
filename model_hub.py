"""Whether the Hugging Face hub can be had from this machine, for every model family.

Models come from the local Hugging Face cache, or are downloaded when the hub can be reached and offline
mode (``HF_HUB_OFFLINE=1``) is not set. Nothing here fails a job: callers ask ``hub_reachable`` before they
load a hub model, and say ``unavailable_reason`` in the message of a job that cannot start without one.

A process that finds the hub unreachable switches to offline mode (and so do the processes it starts):
otherwise every ``from_pretrained`` of a cached model first retries the host for about 20 seconds.
"""
from __future__ import annotations

import functools
import logging
import os
import socket
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

_TRUE = {"1", "ON", "YES", "TRUE"}

__all__ = ["hub_reachable", "offline_mode", "unavailable_reason"]


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` is set, now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a caller (or a test) may set it later.
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """False in offline mode or when the hub's host does not answer within ``timeout`` seconds.

    Checked once per process, because huggingface_hub itself retries an unreachable host for ~30 s.
    """
    from huggingface_hub import constants

    if offline_mode():
        logger.info("Hugging Face offline mode: using cached files only")
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        logger.info("The Hugging Face hub (%s) cannot be reached (%s): offline mode, cached files only", host, exc)
        _go_offline()
        return False
    return True


def _go_offline() -> None:
    from huggingface_hub import constants

    # is_offline_mode() reads this module global, which transformers asks before every download; the
    # variable carries the answer to child processes, whose huggingface_hub reads it at import.
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"


def unavailable_reason() -> str:
    """Why a hub file that is not cached here cannot be had, for a one-line job message."""
    if offline_mode():
        return "not in this worker's Hugging Face cache, and the hub cannot be reached (offline: HF_HUB_OFFLINE is set)"
    if not hub_reachable():
        return "not in this worker's Hugging Face cache, and the hub cannot be reached from here"
    return "not in this worker's Hugging Face cache, and downloading failed (see logs.txt)"
