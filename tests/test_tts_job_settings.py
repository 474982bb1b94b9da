"""TTS job settings in one layer: ``tts.job_settings`` turns a manifest job entry (a plain mapping, no
callbacks) into settings, refusing what it cannot use with a message naming the key."""

from __future__ import annotations

import inspect
import logging
from types import MappingProxyType

import pytest

import import_graph
from job_settings import JobInputError, JobSettingError
from tts.inference import synthesize
from tts.job_settings import ListenCheckSettings, SynthesisSettings, text_language, training_config


def test_synthesis_settings_default_to_what_the_library_does():
    defaults = inspect.signature(synthesize).parameters
    settings = SynthesisSettings.from_job({})
    assert (settings.steps, settings.temperature, settings.length_scale, settings.cfg_scale) == (
        defaults["steps"].default, defaults["temperature"].default, defaults["length_scale"].default,
        defaults["cfg_scale"].default)
    assert settings.audio_format == "webm"


def test_synthesis_settings_read_the_inference_keys_of_a_plain_mapping():
    job = MappingProxyType({"inference": {"diffusion_steps": "20", "temperature": 0, "length_scale": "1.2",
                                          "cfg_scale": 2, "audio_format": " .WAV"}})
    assert SynthesisSettings.from_job(job) == SynthesisSettings(steps=20, temperature=0.0, length_scale=1.2,
                                                                cfg_scale=2.0, audio_format="wav")


@pytest.mark.parametrize("inference, named", [
    ({"diffusion_steps": 0}, "'inference.diffusion_steps' must be between 1 and 1000, not 0"),
    ({"diffusion_steps": 2.5}, "'inference.diffusion_steps' must be a whole number"),
    ({"length_scale": 0}, "'inference.length_scale' must be above 0, not 0"),
    ({"temperature": -1}, "'inference.temperature' must be at least 0"),
    ({"cfg_scale": "strong"}, "'inference.cfg_scale' must be a number, not 'strong'"),
    ({"audio_format": "mp9"}, "'inference.audio_format' must be one of webm, .*, not 'mp9'"),
])
def test_unusable_synthesis_settings_are_refused_naming_the_key(inference, named):
    with pytest.raises(JobSettingError, match=named):
        SynthesisSettings.from_job({"inference": inference})


def test_listen_check_settings():
    assert ListenCheckSettings.from_job({}) == ListenCheckSettings(max_cer=0.6, check_with=None)
    job = {"inference": {"max_check_cer": "0.3", "check_with": " gpu_jobs/job_1/model/asr_model.pth.tar "}}
    assert ListenCheckSettings.from_job(job) == ListenCheckSettings(0.3, "gpu_jobs/job_1/model/asr_model.pth.tar")
    for bad in (1.5, "half", True):
        with pytest.raises(JobSettingError, match="'inference.max_check_cer' must be"):
            ListenCheckSettings.from_job({"inference": {"max_check_cer": bad}})


def test_training_config_reads_the_earlier_workers_keys(caplog):
    job = {"epochs": "3", "learning_rate": "2e-4", "batch_size": 4, "val_split": 0.2, "warmup_steps": 10,
           "gradient_accumulation_steps": 2, "max_duration_seconds": "12.5", "seed": 7, "save_steps": 100,
           "model": {"preset": "tiny", "from_scratch": "yes"}}
    with caplog.at_level(logging.INFO, logger="tts.job_settings"):
        config = training_config(job, base_checkpoint="/work/base.pt")
    assert (config.epochs, config.learning_rate, config.batch_size, config.val_split, config.warmup_steps,
            config.gradient_accumulation_steps, config.seed) == (3, 2e-4, 4, 0.2, 10, 2, 7)
    assert config.max_clip_seconds == 12.5  # the one alias: the manifest's max_duration_seconds
    assert (config.preset, config.pretrained, config.base_checkpoint) == ("tiny", False, "/work/base.pt")
    assert "'save_steps' is not used by StableTTS training" in caplog.text


@pytest.mark.parametrize("job, named", [
    ({"batch_size": 0}, "'batch_size' must be at least 1"),
    ({"max_duration_seconds": -1}, "'max_duration_seconds' must be above 0"),
    ({"model": {"preset": "huge"}}, "'model.preset' must be one of v1.1, tiny"),
    ({"val_split": 1.0}, "val_split must be in"),  # what only the whole config checks, still a setting error
])
def test_unusable_training_settings_are_job_setting_errors(job, named):
    with pytest.raises(JobSettingError, match=named) as caught:
        training_config(job)
    assert isinstance(caught.value, JobInputError)


def test_the_language_hint_is_the_manifests_else_the_projects():
    assert text_language({"model": {"language": " am "}}, "fra") == "am"
    assert text_language({"model": {"language": ""}}, "fra") == "fra"
    assert text_language({}, None) is None


def test_asr_code_never_imports_the_tts_package():
    """The hub helpers both families use are model_hub's, not tts's: ASR needs nothing of TTS to run."""
    graph = import_graph.import_graph()
    asr_modules = [name for name in graph if name == "asr" or name.startswith(("asr.", "handlers.asr"))]
    assert asr_modules
    reaching_tts = {name: edge.target for name in asr_modules for edge in graph[name]
                    if edge.target == "tts" or edge.target.startswith("tts.")}
    assert reaching_tts == {}
