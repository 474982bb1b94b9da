"""Manifest keys have one home each, and the handlers refuse a bad setting before the long work."""

from __future__ import annotations

import pytest

import import_graph
import job_settings
from demo_env import DemoProject
from storage import UnsafePath
from test_handler_common import inline_callbacks

HOMES = {
    job_settings.BASE_CHECKPOINT: "job_settings", job_settings.FROM_SCRATCH: "job_settings",
    job_settings.LANGUAGE: "job_settings", job_settings.PRESET: "job_settings",
    job_settings.VOICE_REFERENCE: "job_settings", job_settings.INCLUDE_VERSES: "job_settings",
    job_settings.EXCLUDE_VERSES: "job_settings",
    "model.base_model": "asr.job_settings", "model.frontend": "tts.job_settings",
    "inference.replace_recorded": "handlers.common.cells",
}


@pytest.mark.parametrize("key", sorted(HOMES))
def test_each_manifest_key_is_written_once(key):
    """Every other module (jobs.py, both families, their handlers) imports the key from its home."""
    homes = [name for name, path in import_graph.project_modules().items()
             if key in import_graph.string_constants(path)]
    assert homes == [HOMES[key]]


def test_asr_modes_fail_on_the_user_errors_of_their_job_inputs():
    from handlers.asr.w2v2bert import job_inputs
    from handlers.common import ProjectFileMissing

    assert set(job_inputs.USER_ERRORS) == {job_settings.JobInputError, ProjectFileMissing, UnsafePath}
    for mode in ("training", "inference", "training_and_inference"):
        source = (import_graph.ROOT / "handlers/asr/w2v2bert" / f"{mode}.py").read_text()
        assert "except USER_ERRORS as exc:" in source and "except (" not in source, mode


def test_tts_inference_refuses_a_bad_replace_recorded_before_fetching_the_voice(tmp_path):
    from handlers.tts.stabletts import inference

    job = {"model": {"base_checkpoint": "gpu_jobs/job_x/checkpoint/best_model.pt"},
           "inference": {"replace_recorded": "maybe"}}
    callbacks, _ = inline_callbacks(DemoProject(tmp_path / "project").store, tmp_path, job)
    result = inference.run(callbacks.job_context, callbacks)
    # Not "model.base_checkpoint names ..., which is not in the project": the setting is read first.
    assert result == {"success": False, "error_message": "job setting 'inference.replace_recorded' must be true "
                                                         "or false, not 'maybe'"}


def test_tts_training_and_inference_refuses_a_bad_replace_recorded_before_training(tmp_path, monkeypatch):
    from handlers.tts.stabletts import training_and_inference

    def train_voice(*args, **kwargs):
        raise AssertionError("training started despite a setting that fails the job after it")

    monkeypatch.setattr(training_and_inference, "train_voice", train_voice)
    callbacks, _ = inline_callbacks(DemoProject(tmp_path / "project").store, tmp_path,
                                    {"inference": {"replace_recorded": 2}})
    result = training_and_inference.run(callbacks.job_context, callbacks)
    assert result == {"success": False,
                      "error_message": "job setting 'inference.replace_recorded' must be true or false, not 2"}
