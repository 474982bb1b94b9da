"""The TTS handlers' voice_reference as the real plugin writes it: an absolute path (Windows or POSIX) on the
translator's machine, in the old (``.project/attachments/<BOOK>/``) or the current layout, found wherever
the project keeps that take now."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from handlers.common import ProjectFileMissing
from handlers.tts.stabletts.job_inputs import voice_reference
from jobs import parse_manifest
from local_store import LocalProjectStore
from conftest import make_job
from storage import UnsafePath


class Callbacks:
    """What voice_reference uses of JobCallbacks: the job's settings and the project's files."""

    def __init__(self, root: Path, job: dict):
        self.scanner = LocalProjectStore(root)
        self._job = job

    def get_job_config(self, key, default=None):
        return self._job.get(key, default)


def project_with_take(tmp_path: Path, path: str) -> Path:
    root = tmp_path / "project"
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
    soundfile.write(target, tone.astype(np.float32), 16000, format="WAV")
    return root


def job_as_the_worker_reads_it(written: str) -> dict:
    """The manifest job after parse_manifest, exactly as the handler receives it."""
    manifest = parse_manifest(yaml.safe_dump({"version": 1, "jobs": [make_job("tts1", voice_reference=written)]}))
    assert not manifest.problems, manifest.problems
    return manifest.jobs[0].raw


@pytest.mark.parametrize("written, stored", [
    # old layout, named by the plugin on Windows, still in the old folder
    (r"C:\Users\ana\Projects\myproj\.project\attachments\JHN\audio-1.wav", ".project/attachments/JHN/audio-1.wav"),
    # old layout named, but the editor has since migrated the take (a local checkout: bytes in files/)
    ("/home/ana/myproj/.project/attachments/JHN/audio-1.wav", ".project/attachments/files/JHN/audio-1.wav"),
    # ... or the GitLab side of it: pointers/
    (r"C:\p\.project\attachments\JHN\audio-1.wav", ".project/attachments/pointers/JHN/audio-1.wav"),
    # current layout on Windows (the plugin's files/ -> pointers/ rewrite only matches forward slashes)
    (r"C:\Users\ana\myproj\.project\attachments\files\JHN\audio-1.wav", ".project/attachments/files/JHN/audio-1.wav"),
    # current layout named, the take only in the old folder
    (".project/attachments/pointers/JHN/audio-1.wav", ".project/attachments/JHN/audio-1.wav"),
])
def test_voice_reference_resolves_to_the_take_wherever_the_project_keeps_it(tmp_path, written, stored):
    root = project_with_take(tmp_path, stored)
    job = job_as_the_worker_reads_it(written)
    reference = voice_reference(Callbacks(root, job), [], None, tmp_path / "work")
    assert reference.samples is not None and reference.samples.size > 0
    assert reference.description == f"voice_reference {job['voice_reference']}"


def test_a_take_that_is_nowhere_names_the_field_and_every_place_looked(tmp_path):
    root = project_with_take(tmp_path, ".project/attachments/JHN/other.wav")
    job = job_as_the_worker_reads_it(r"C:\Users\ana\p\.project\attachments\JHN\audio-9.wav")
    with pytest.raises(ProjectFileMissing) as caught:
        voice_reference(Callbacks(root, job), [], None, tmp_path / "work")
    message = str(caught.value)
    assert message.startswith("voice_reference names .project/attachments/JHN/audio-9.wav")
    assert ".project/attachments/pointers/JHN/audio-9.wav" in message and "\n" not in message


def test_a_path_outside_the_project_is_still_refused_by_the_handler(tmp_path):
    root = project_with_take(tmp_path, ".project/attachments/JHN/audio-1.wav")
    with pytest.raises(UnsafePath, match="voice_reference"):
        voice_reference(Callbacks(root, {"voice_reference": "../../outside.wav"}), [], None, tmp_path / "work")
