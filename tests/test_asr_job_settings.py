"""ASR settings from a manifest job (asr.job_settings), and the shape of the asr package: light to import,
never the worker, its names exported, one sample rate."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import asr
from asr.config import DEFAULT_BASE_MODEL, SCRATCH_PRESET
from asr.job_settings import (CheckSettings, TranscriptionSettings, initialised_from, starts_from_pretrained,
                              text_normalization_from_job, train_config_from_job)
from asr.text import TextNormalization
from job_settings import JobSettingError

ROOT = Path(__file__).resolve().parents[1]


def test_training_settings_take_the_manifest_names():
    job = {"epochs": "7", "batch_size": 4, "gradient_accumulation_steps": 3, "learning_rate": "1e-4",
           "warmup_steps": 50, "val_split": 0.2, "test_split": 0, "save_steps": 100, "seed": 5,
           "max_duration_seconds": 20, "transmorgrifier": {"enabled": "yes"},
           "text_normalization": {"lowercase": "false", "remove_numbers": True}, "unknown": {"x": 1}}
    config = train_config_from_job(job)
    assert (config.epochs, config.batch_size, config.gradient_accumulation_steps) == (7, 4, 3)
    assert (config.learning_rate, config.warmup_steps, config.save_steps, config.seed) == (1e-4, 50.0, 100, 5)
    assert (config.val_split, config.test_split, config.max_duration_seconds) == (0.2, 0.0, 20.0)
    assert config.post_correction is True
    # "false" written as text means false (a plain bool() of the string said true)
    assert config.text_normalization == TextNormalization(lowercase=False, remove_punctuation=True,
                                                          remove_numbers=True)
    defaults = train_config_from_job({})
    assert (defaults.epochs, defaults.batch_size, defaults.base_model, defaults.post_correction) == (
        10, 16, DEFAULT_BASE_MODEL, False)
    assert text_normalization_from_job({"text_normalization": None}) == TextNormalization()


def test_the_models_a_training_job_names():
    tiny = {"model": {"preset": " tiny "}}
    assert train_config_from_job(tiny).preset == "tiny"
    continued = train_config_from_job(tiny, base_checkpoint=Path("/work/inputs/base_checkpoint"))
    assert (continued.preset, continued.base_checkpoint) == (None, "/work/inputs/base_checkpoint")
    named = {"model": {"base_model": "org/encoder"}}
    assert train_config_from_job(named).base_model == "org/encoder"
    assert train_config_from_job(named, base_model="/work/inputs/base_model").base_model == "/work/inputs/base_model"
    assert train_config_from_job({"model": {"from_scratch": "true"}}).preset == SCRATCH_PRESET
    fetched = train_config_from_job(named, base_model="/work/inputs/base_model")
    assert initialised_from(named, fetched) == "org/encoder"        # the manifest's name, not the local copy
    assert initialised_from({}, train_config_from_job({})) == DEFAULT_BASE_MODEL


@pytest.mark.parametrize("job, named", [
    ({"epochs": "many"}, "job setting 'epochs' must be a whole number, not 'many'"),
    ({"learning_rate": [1]}, "job setting 'learning_rate' must be a number"),
    ({"transmorgrifier": {"enabled": "perhaps"}}, "job setting 'transmorgrifier.enabled' must be true or false"),
    ({"text_normalization": {"remove_numbers": "often"}},
     "job setting 'text_normalization.remove_numbers' must be true or false"),
    ({"epochs": 0}, "The job's settings cannot be used: epochs must be between 1 and 9999, got 0"),
    ({"val_split": 0.6, "test_split": 0.5}, "The job's settings cannot be used: val_split + test_split"),
])
def test_training_settings_that_cannot_be_used_name_the_key(job, named):
    with pytest.raises(JobSettingError) as caught:
        train_config_from_job(job)
    assert str(caught.value).startswith(named) and "\n" not in str(caught.value)


def test_the_pretrained_encoder_is_loaded_only_by_a_default_start():
    assert starts_from_pretrained({}) and starts_from_pretrained({"model": {"base_model": "org/encoder"}})
    for model in ({"from_scratch": "yes"}, {"preset": "tiny"}, {"base_checkpoint": "gpu_jobs/job_1/model/a.tar"}):
        assert not starts_from_pretrained({"model": model}), model
    assert starts_from_pretrained({"model": {"from_scratch": False, "preset": ""}})
    with pytest.raises(JobSettingError, match="'model.from_scratch' must be true or false"):
        starts_from_pretrained({"model": {"from_scratch": "perhaps"}})


def test_transcription_settings_and_the_batch_size_they_fall_back_to():
    assert TranscriptionSettings.from_job({}) == TranscriptionSettings(16, True, "", None)
    job = {"batch_size": 4, "inference": {"batch_size": "8", "suppress_unk": "false", "unk_replacement": " "},
           "model": {"language": " am "}}
    assert TranscriptionSettings.from_job(job) == TranscriptionSettings(8, False, " ", "am")
    assert TranscriptionSettings.from_job({"batch_size": 4}).batch_size == 4      # the training key, without
    with pytest.raises(JobSettingError, match=r"^job setting 'batch_size' must be at least 1, not 0$"):
        TranscriptionSettings.from_job({"batch_size": 0})                         # names the key it read
    with pytest.raises(JobSettingError, match=r"^job setting 'inference.batch_size' must be a whole number"):
        TranscriptionSettings.from_job({"batch_size": 4, "inference": {"batch_size": "lots"}})
    with pytest.raises(JobSettingError, match="'inference.suppress_unk' must be true or false"):
        TranscriptionSettings.from_job({"inference": {"suppress_unk": "sometimes"}})


def test_recording_check_settings():
    assert CheckSettings.from_job({}) == CheckSettings(True, 0.5)
    assert CheckSettings.from_job({"inference": {"check_recordings": "no", "check_threshold": "0.3"}}) == \
        CheckSettings(False, 0.3)
    with pytest.raises(JobSettingError) as caught:
        CheckSettings.from_job({"inference": {"check_threshold": "half"}})
    assert str(caught.value) == "job setting 'inference.check_threshold' must be a number, not 'half'"
    with pytest.raises(JobSettingError, match="^job setting 'inference.check_threshold' must be between 0 and 1, "
                                              "not 1.5$"):
        CheckSettings.from_job({"inference": {"check_threshold": 1.5}})


def test_the_package_exports_its_main_names():
    from asr.config import AsrTrainConfig
    from asr.inference import transcribe
    from asr.trainer import train_asr

    assert (asr.AsrTrainConfig, asr.train_asr, asr.transcribe) == (AsrTrainConfig, train_asr, transcribe)
    assert all(getattr(asr, name) is not None for name in asr.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        asr.nothing  # noqa: B018


def test_settings_load_without_torch_and_the_library_without_the_worker():
    """A handler refuses a bad job before torch and transformers load (seconds); the library, its CLIs
    included, never imports the worker."""
    light = ("import sys, asr, asr.job_settings, handlers.asr.w2v2bert.inference; "
             "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    worker = ("import sys, asr, asr.trainer, asr.inference, train_w2v2bert_asr, inference_w2v2bert_asr; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in {'handlers', 'handler_api', 'worker', "
              "'jobs', 'job_process', 'storage', 'stores', 'local_store', 'gitlab_jobs', 'codex'}))")
    for code in (light, worker):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]", (code, out.stdout)


def test_one_sample_rate_for_the_feature_extractor():
    """16 kHz, what the feature extractor expects, is defined once (asr/audio.py) and imported elsewhere."""
    defined = []
    for path in sorted([*(ROOT / "asr").glob("*.py"), *(ROOT / "handlers" / "asr").rglob("*.py"),
                        ROOT / "train_w2v2bert_asr.py", ROOT / "inference_w2v2bert_asr.py",
                        ROOT / "gradio_demo_w2v2bert_asr.py"]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SAMPLE_RATE" for t in node.targets):
                defined.append(path.relative_to(ROOT).as_posix())
    assert defined == ["asr/audio.py"]
