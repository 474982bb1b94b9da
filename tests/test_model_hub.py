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
    monkeypatch.setattr(model_hub, "cached", lambda repo, files: True)
    monkeypatch.setattr(model_hub, "hub_reachable", lambda: asked.append(True) or False)

    class Callbacks:
        job_context = {"job_id": "j1", "job_type": "asr", "mode": "training"}

    job_inputs.require_hub_model(Callbacks(), None)      # cached: the job may start
    assert asked == [True]


def seed(cache, repo, names):
    """Files laid out as huggingface_hub caches them: refs/main names a snapshot holding the files."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)
    for name in names:
        target = folder / "snapshots" / ("0" * 40) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")


def test_cached_wants_every_entry_and_any_one_of_alternatives(tmp_path):
    seed(tmp_path, "org/model", ["config.json", "model.safetensors.index.json"])
    weights = ("model.safetensors", "model.safetensors.index.json")
    assert model_hub.cached("org/model", ["config.json", weights], cache_dir=tmp_path)
    assert not model_hub.cached("org/model", ["config.json", "model.safetensors"], cache_dir=tmp_path)
    assert model_hub.not_cached("org/model", ["vocab.json", ("a.bin", "b.bin"), weights], cache_dir=tmp_path) == [
        "vocab.json", "a.bin or b.bin"]
    assert not model_hub.cached("org/other", ["config.json"], cache_dir=tmp_path)


def test_an_invalid_repo_id_is_just_not_cached(tmp_path):
    assert model_hub.not_cached("not a/valid//repo id", ["config.json"], cache_dir=tmp_path) == ["config.json"]


def test_asr_counts_a_sharded_base_model_as_cached(online, monkeypatch, tmp_path):
    """The one list of weight names (asr.archive.WEIGHT_FILES) decides: a shard index is weights too."""
    from handlers.asr.w2v2bert import job_inputs

    seed(tmp_path, "org/encoder", ["config.json", "pytorch_model.bin.index.json"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(model_hub, "hub_reachable", lambda: False)

    class Callbacks:
        job_context = {"job_id": "j1", "job_type": "asr", "mode": "training", "model": {"base_model": "org/encoder"}}

    job_inputs.require_hub_model(Callbacks(), "org/encoder")      # cached: no error
    with pytest.raises(job_inputs.JobInputError, match="model.base_model org/missing"):
        job_inputs.require_hub_model(Callbacks(), "org/missing")
