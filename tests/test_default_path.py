"""The default start of training (no preset, no base checkpoint): the hub's files, and jobs without them.

The seeded cache is scripts/rehearse_full_size.py's: random weights in the hub's own layout, the StableTTS files
at their published sizes, the W2V-BERT encoder shrunk (its file names and kinds kept). ``make rehearse`` runs the
full-size jobs on it. Everything here is offline: an empty cache means the pretrained start cannot be had.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

import rehearse_full_size as rehearse  # noqa: E402
from asr.config import SCRATCH_PRESET  # noqa: E402
from asr.job_settings import initialised_from, train_config_from_job  # noqa: E402
from conftest import block_network, fast_config, run_worker  # noqa: E402
from demo_env import DemoProject  # noqa: E402
from handlers.asr.w2v2bert.job_inputs import resolve_base_model  # noqa: E402
from job_settings import JobInputError, JobSettingError  # noqa: E402
from model_hub import hub_reachable  # noqa: E402
from StableTTS.vocoder import HUB_REPO, HUB_TTS_FILE  # noqa: E402
from tts import PretrainedUnavailable, TrainConfig, initial_model  # noqa: E402
from tts.job_settings import training_config  # noqa: E402

W2V_BERT = rehearse.W2V_BERT_REPO
TINY_W2V_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                 "conv_depthwise_kernel_size": 3, "output_hidden_size": 32}
TEXTS = ["In the beginning, God created the heavens and the earth."]
OFFLINE_TTS = (f"The pretrained StableTTS v1.1 weights ({HUB_REPO}, {HUB_TTS_FILE}) cannot be had: not in this "
               "worker's Hugging Face cache, and the hub cannot be reached (offline: HF_HUB_OFFLINE is set)")
OFFLINE_ASR = (f"The pretrained base model {W2V_BERT} (config.json and its weights) cannot be had: not in this "
               "worker's Hugging Face cache, and the hub cannot be reached (offline: HF_HUB_OFFLINE is set); "
               "set model.from_scratch: true to train from scratch instead")


def use_cache(monkeypatch, cache: Path) -> None:
    """Point this process and the job processes it starts at ``cache``, offline."""
    cache.mkdir(parents=True, exist_ok=True)
    for var, value in {"HF_HOME": cache.parent / "hf_home", "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(var, str(value))
    import huggingface_hub.constants as constants

    # huggingface_hub read both at import, before this test could set them
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache), raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    block_network(monkeypatch)
    hub_reachable.cache_clear()


@pytest.fixture(autouse=True)
def fresh_reachability():
    yield
    hub_reachable.cache_clear()  # no answer computed under a test's environment outlives it


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("seeded") / "hub"
    rehearse.seed_hub_cache(cache, w2v_bert_overrides=TINY_W2V_BERT)
    return cache


@pytest.fixture
def empty(tmp_path, monkeypatch) -> Path:
    use_cache(monkeypatch, tmp_path / "empty_hub")
    return tmp_path / "empty_hub"


class JobConfig:
    """The ``get_job_config`` and ``job_context`` of handler callbacks, over a manifest job."""

    def __init__(self, job: dict, scanner=None):
        self.job_context, self.scanner = job, scanner

    def get_job_config(self, key: str, default=None):
        value = self.job_context
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        return default if value is None else value


# -- the seeded cache ------------------------------------------------------------------------------------
def test_seeded_cache_holds_every_file_the_defaults_load_in_the_hub_layout(seeded, monkeypatch):
    from huggingface_hub import try_to_load_from_cache

    import preflight

    wanted = [(repo, file) for repo, files in preflight.default_models() for file in files]
    wanted.append((W2V_BERT, "preprocessor_config.json"))
    for repo, file in wanted:
        found = try_to_load_from_cache(repo, file, cache_dir=seeded)
        assert isinstance(found, str) and Path(found).is_file(), (repo, file)
        repo_dir = seeded / ("models--" + repo.replace("/", "--"))
        snapshot = repo_dir / "snapshots" / (repo_dir / "refs" / "main").read_text()
        assert Path(found) == snapshot / file
        assert (snapshot / file).is_symlink() and (snapshot / file).resolve().parent == (repo_dir / "blobs").resolve()
    use_cache(monkeypatch, seeded)
    assert [r.status.value for r in preflight.check_models()] == ["ok", "ok"]


def test_seeded_files_load_the_way_default_jobs_load_them(seeded, monkeypatch):
    """The hub's config keys (vocab_size null), its feature extractor file, the recipe's overrides on top, the
    published TTS and Vocos tensors: each read from the cache as a default job reads it."""
    from asr.model import model_from_base
    from asr.vocab import build_vocabulary, load_feature_extractor
    from StableTTS.vocoder import load_vocoder
    from tts import pretrained_weights

    use_cache(monkeypatch, seeded)
    extractor = load_feature_extractor(W2V_BERT)
    assert (extractor.padding_value, extractor.stride, extractor.num_mel_bins) == (1, 2, 80)  # the hub's, not ours
    vocabulary = build_vocabulary(["in the beginning"], min_char_count=1).vocabulary
    model = model_from_base(W2V_BERT, vocabulary)
    assert model.lm_head.out_features == vocabulary.size == model.config.vocab_size
    assert (model.config.add_adapter, model.config.ctc_loss_reduction, model.config.layerdrop) == (True, "mean", 0.0)

    assert pretrained_weights(TrainConfig()) is not None
    start = initial_model(TrainConfig(), TEXTS)
    assert (start.origin, start.trained_weights) == (HUB_REPO, True)
    assert load_vocoder().vocoder_name == "vocos"


def test_the_full_asr_preset_is_the_published_encoder():
    """``model.from_scratch`` without a preset builds w2v-bert-2.0's own architecture (shapes only, on meta)."""
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    from asr.model import model_from_preset
    from asr.vocab import build_vocabulary

    vocabulary = build_vocabulary(["in the beginning"], min_char_count=1).vocabulary
    with torch.device("meta"):
        scratch = model_from_preset(SCRATCH_PRESET, vocabulary).wav2vec2_bert.state_dict()
        published = Wav2Vec2BertModel(Wav2Vec2BertConfig.from_dict(rehearse.W2V_BERT_CONFIG)).state_dict()
    assert sum(v.numel() for v in published.values()) == 580_493_120  # "580M parameters"
    published.pop("masked_spec_embed")  # pretraining only: the recipe turns masking off
    assert {k: v.shape for k, v in scratch.items() if not k.startswith("adapter.")} == \
        {k: v.shape for k, v in published.items()}


# -- TTS without the pretrained weights ------------------------------------------------------------------
def test_default_tts_start_fails_offline_without_the_weights(empty):
    with pytest.raises(PretrainedUnavailable) as caught:
        initial_model(TrainConfig(), TEXTS)
    assert str(caught.value) == OFFLINE_TTS
    assert initial_model(TrainConfig(preset="tiny"), TEXTS).origin == "scratch (tiny)"  # never wanted the hub


def test_tts_from_scratch_trains_a_new_model_and_says_so(empty):
    start = initial_model(TrainConfig(pretrained=False), TEXTS)
    assert (start.origin, start.trained_weights) == ("scratch (v1.1)", False)


def test_model_from_scratch_in_the_manifest_turns_the_pretrained_start_off():
    def config(model: dict) -> TrainConfig:
        return training_config({"model": {"language": "en", **model}})

    assert config({}).pretrained is True
    assert config({"from_scratch": True}).pretrained is False
    with pytest.raises(JobSettingError, match="'model.from_scratch' must be true or false"):
        config({"from_scratch": "perhaps"})


# -- ASR without the pretrained encoder ------------------------------------------------------------------
def test_asr_from_scratch_settings():
    assert train_config_from_job({"model": {}}).preset is None
    scratch = train_config_from_job({"model": {"from_scratch": True}})
    assert (scratch.preset, scratch.peak_learning_rate) == (SCRATCH_PRESET, 2e-3)
    named = train_config_from_job({"model": {"from_scratch": "true", "preset": "tiny"}})
    assert (named.preset, named.from_scratch) == ("tiny", True)
    with pytest.raises(JobSettingError, match="'model.from_scratch' must be true or false"):
        train_config_from_job({"model": {"from_scratch": "perhaps"}})


def test_default_asr_base_model_missing_offline_fails_with_what_is_missing(empty, tmp_path):
    no_files = SimpleNamespace(list_files=lambda path: [], exists=lambda path: False)
    with pytest.raises(JobInputError) as caught:
        resolve_base_model(JobConfig({"model": {}}), tmp_path)
    assert str(caught.value).startswith(OFFLINE_ASR) and "\n" not in str(caught.value)
    assert str(empty) not in str(caught.value)
    with pytest.raises(JobInputError, match=r"^model\.base_model org/encoder \(config.json and its weights\) "):
        resolve_base_model(JobConfig({"model": {"base_model": "org/encoder"}}, no_files), tmp_path)
    for model in ({"from_scratch": True}, {"preset": "tiny"}, {"base_checkpoint": "gpu_jobs/job_1/model/a.tar"}):
        assert resolve_base_model(JobConfig({"model": model}), tmp_path) is None  # the hub model is not used


def test_cached_asr_base_model_passes(seeded, monkeypatch, tmp_path):
    use_cache(monkeypatch, seeded)
    assert resolve_base_model(JobConfig({"model": {}}), tmp_path) is None


def test_asr_result_names_where_training_started():
    def origin(model: dict, **overrides) -> str:
        job = {"model": model}
        return initialised_from(job, train_config_from_job(job, **overrides))

    assert origin({}) == W2V_BERT
    assert origin({"from_scratch": True}) == "scratch (full)"
    assert origin({"preset": "tiny"}) == "scratch (tiny)"
    assert origin({"base_model": "org/encoder"}, base_model="/srv/work/inputs/base_model") == "org/encoder"
    assert origin({"base_checkpoint": "gpu_jobs/job_1/model/asr_model.pth.tar"},
                  base_checkpoint="/srv/work/inputs/base_checkpoint") == "gpu_jobs/job_1/model/asr_model.pth.tar"


# -- through the worker ----------------------------------------------------------------------------------
@pytest.mark.slow  # it trains a tiny ASR model
def test_default_training_jobs_fail_offline_without_the_hub_files(empty, tmp_path):
    """Both default training jobs fail at once with the one-line reason (no audio is fetched first); a job
    asking for a from-scratch start trains and says so."""
    demo = DemoProject(tmp_path / "project")
    few = {"include_verses": ["JHN 1:2", "JHN 1:11", "GEN 1:1", "GEN 1:3"]}
    jobs = [
        {"job_id": "tts_default", "job_type": "tts", "model": {"type": "StableTTS"}},
        {"job_id": "asr_default", "job_type": "asr", "model": {"type": "W2V2BERT"}},
        {"job_id": "asr_scratch", "job_type": "asr", "model": {"type": "W2V2BERT", "preset": "tiny",
                                                                "from_scratch": True}},
    ]
    for minute, job in enumerate(jobs):
        job.update(mode="training", epochs=1, training=few, canceled=False,
                   submitted_at=f"2025-10-15T19:{10 + minute}:00.000Z")
    demo.write_manifest(jobs)

    run_worker(demo.source(), fast_config(tmp_path, handler_paths=()))

    for job_id, message in (("tts_default", OFFLINE_TTS), ("asr_default", OFFLINE_ASR)):
        response = demo.response(job_id)
        assert response["state"] == "failed", response
        assert response["error_message"].startswith(message + ";" if job_id == "tts_default" else message)
        assert "model.from_scratch: true" in response["error_message"] and "\n" not in response["error_message"]
        assert "fetching audio" not in demo.read_file(f"gpu_jobs/job_{job_id}/logs.txt").decode()
    scratch = demo.response("asr_scratch")
    assert scratch["state"] == "completed", scratch
    assert scratch["result"]["initialised_from"] == "scratch (tiny)"


# -- the rehearsal script's own pieces -------------------------------------------------------------------
def test_rehearsal_manifest_is_four_valid_default_jobs():
    import yaml

    from jobs import parse_manifest

    manifest = parse_manifest(yaml.safe_dump(rehearse.rehearsal_manifest()))
    assert manifest.problems == []
    assert [(job.job_type, job.mode) for job in manifest.jobs] == [
        ("tts", "training"), ("tts", "inference"), ("asr", "training"), ("asr", "inference")]
    for raw in rehearse.rehearsal_manifest()["jobs"]:
        assert "preset" not in raw["model"] and "from_scratch" not in raw["model"]  # the defaults decide
        assert ("base_checkpoint" in raw["model"]) == (raw["mode"] == "inference")


def test_step_time_reads_the_jobs_log_lines():
    tts = ("2026-01-01 10:00:00 INFO    tts.loop: Training on 5 clip(s), validating on 1; 3 batch(es) "
           "per epoch on cpu (fp32)\n2026-01-01 10:01:30 INFO    tts.loop: epoch 1/1 · train loss 68.2 "
           "(diff 44.6, dur 1.0, prior 22.6) · val loss 61.2 · best · 82.5 s\n")
    assert rehearse.step_time(tts) == "27.5 s (TTS, 3 batch(es))"
    asr = ("2026-01-01 10:00:00 INFO    asr.data: Split 6 clip(s): 4 train, 1 validation, 1 test\n"
           "2026-01-01 10:00:10 INFO    asr.model: Loading base model facebook/w2v-bert-2.0 with a 24-token CTC head\n"
           "2026-01-01 10:08:10 INFO    asr.callbacks: Epoch 1: train loss 4.25, val loss 4.86, WER 1, CER 1\n")
    assert rehearse.step_time(asr, batch_size=2) == "240 s (ASR, 2 step(s); load and eval included)"
    assert rehearse.step_time("no training here") == "-"


def test_keep_refuses_a_folder_that_holds_files(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        rehearse.main(["--keep", str(tmp_path)])
    assert "choose a new or empty folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
