"""The synthesis defaults have one home, ``StableTTS.synthesis.SAMPLING``: the library, a job's settings, the
command lines and the demo page all read it, and the TTS command lines share their options through a library
module (``tts.cli_options``) rather than importing each other."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

import batch_tts_inference
import import_graph
import inference_stabletts
from StableTTS.synthesis import SAMPLING, synthesize_mel
from tts.inference import synthesize, synthesize_iter
from tts.job_settings import SynthesisSettings

FIELDS = [field.name for field in dataclasses.fields(SAMPLING)]
TTS_CLIS = ("inference_stabletts", "batch_tts_inference", "gradio_demo_stabletts")


@pytest.mark.parametrize("function", [synthesize_mel, synthesize_iter, synthesize],
                         ids=["synthesize_mel", "synthesize_iter", "synthesize"])
def test_the_library_defaults_are_sampling(function):
    parameters = inspect.signature(function).parameters
    assert {name: parameters[name].default for name in FIELDS} == dataclasses.asdict(SAMPLING)


@pytest.mark.parametrize("cli", [inference_stabletts.main, batch_tts_inference.main], ids=["one text", "csv"])
def test_the_command_line_defaults_are_sampling(cli):
    defaults = {param.name: param.default for param in cli.params}
    assert {name: defaults[name] for name in FIELDS} == dataclasses.asdict(SAMPLING)


def test_a_jobs_defaults_are_sampling():
    settings = SynthesisSettings()
    assert SynthesisSettings.from_job({}) == settings
    spoken = [name for name in FIELDS if hasattr(settings, name)]
    assert spoken == ["steps", "cfg_scale", "temperature", "length_scale"]  # jobs always use the default solver
    assert {name: getattr(settings, name) for name in spoken} == {name: getattr(SAMPLING, name) for name in spoken}


def test_the_demo_pages_defaults_are_sampling():
    tts_demo = pytest.importorskip("gradio_demo_stabletts")
    sliders = {"steps": tts_demo.STEPS, "cfg_scale": tts_demo.CFG_SCALE, "temperature": tts_demo.TEMPERATURE,
               "length_scale": tts_demo.LENGTH_SCALE}
    assert {name: slider["value"] for name, slider in sliders.items()} == {
        name: getattr(SAMPLING, name) for name in sliders}
    parameters = inspect.signature(tts_demo.speak).parameters
    assert {name: parameters[name].default for name in sliders} == {name: getattr(SAMPLING, name) for name in sliders}


def test_no_tts_command_line_imports_another():
    graph = import_graph.import_graph()
    imported = {(cli, edge.target) for cli in TTS_CLIS for edge in graph[cli] if edge.target in TTS_CLIS}
    assert imported == set()
    assert all(any(edge.target == "tts.cli_options" for edge in graph[cli]) for cli in TTS_CLIS)
