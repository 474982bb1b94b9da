"""An unreachable hub switches the process to offline mode, so cached models load without waiting out retries."""

import os
import socket

import pytest
from huggingface_hub import constants

import model_hub


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    forget = model_hub.hub_reachable.cache_clear  # kept: a test may replace hub_reachable itself
    forget()
    yield
    forget()


def test_an_unreachable_hub_turns_on_offline_mode_for_this_process_and_its_children(online, monkeypatch):
    def refused(address, timeout=None):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refused)
    assert model_hub.hub_reachable() is False
    assert constants.is_offline_mode() is True          # what transformers asks before each download
    assert os.environ["HF_HUB_OFFLINE"] == "1"          # what a job's child process reads at import
    assert "offline" in model_hub.unavailable_reason()


def test_a_reachable_hub_leaves_downloads_on(online, monkeypatch):
    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: Connection())
    assert model_hub.hub_reachable() is True
    assert constants.is_offline_mode() is False and "HF_HUB_OFFLINE" not in os.environ


def test_asr_asks_the_hub_even_when_the_base_model_is_cached(online, monkeypatch):
    """Without asking, a cached model would be loaded online and wait out the host's retries."""
    from handlers.asr.w2v2bert import job_inputs

    asked = []
    monkeypatch.setattr(job_inputs, "_hub_model_cached", lambda repo: True)
    monkeypatch.setattr(model_hub, "hub_reachable", lambda: asked.append(True) or False)

    class Callbacks:
        job_context = {"job_id": "j1", "job_type": "asr", "mode": "training"}

    job_inputs.require_hub_model(Callbacks(), None)      # cached: the job may start
    assert asked == [True]
