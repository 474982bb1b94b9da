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
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

_TRUE = {"1", "ON", "YES", "TRUE"}

__all__ = ["cached", "hub_reachable", "not_cached", "offline_mode", "unavailable_reason"]


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


def not_cached(repo: str, files: Sequence[str | Sequence[str]], *, cache_dir: str | Path | None = None) -> list[str]:
    """The entries of ``files`` that are not in the local Hugging Face cache of ``repo``; never downloads.

    An entry may be a tuple of alternatives (any one of them will do: ``model.safetensors`` or a shard
    index...), named ``a or b`` in the answer. An invalid repo id is just not cached."""
    from huggingface_hub import try_to_load_from_cache

    def found(name: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str)
        except ValueError:  # HFValidationError: not a hub id, so nothing of it can be cached
            return False

    missing = []
    for entry in files:
        names = (entry,) if isinstance(entry, str) else tuple(entry)
        if not any(found(name) for name in names):
            missing.append(" or ".join(names))
    return missing


def cached(repo: str, files: Sequence[str | Sequence[str]], *, cache_dir: str | Path | None = None) -> bool:
    """Every entry of ``files`` (a name, or a tuple of alternatives) is in the local cache of ``repo``."""
    return not not_cached(repo, files, cache_dir=cache_dir)


def unavailable_reason() -> str:
    """Why a hub file that is not cached here cannot be had, for a one-line job message."""
    if offline_mode():
        return "not in this worker's Hugging Face cache, and the hub cannot be reached (offline: HF_HUB_OFFLINE is set)"
    if not hub_reachable():
        return "not in this worker's Hugging Face cache, and the hub cannot be reached from here"
    return "not in this worker's Hugging Face cache, and downloading failed (see logs.txt)"
