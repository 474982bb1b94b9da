"""A TTS training job on a project whose language tag is wrong: Tigrinya verses in Ge'ez script, metadata.json
saying French, no ``model.language`` (exactly what the Codex plugin writes).

It used to fail with "none of the N recording(s) can be used for training (N audio too short for its text)":
espeak's French voice spelled every Ge'ez letter by name. Now the front end is chosen from the texts, says why
(log, status, result, sidecar), and when clips are still too short the message says what to do.
Audio is made here: a voiced, syllable-paced tone of a plausible length for each verse.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import yaml

from conftest import LocalEnv, fast_config, run_worker
from skips import TOO_SHORT, SkipReport
from StableTTS.text import espeak_available
from tts import NoTrainingData, TrainConfig, TrainHooks, Utterance, skip_summary, train

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng (phonemizer + espeakng-loader) missing")

VERSES = [  # Tigrinya, written for this test
    "ሰባት ካብታ ከተማ ወጺኦም ማይ ክቐድሑ ናብቲ ሩባ ከዱ።",
    "ድሕሪኡ ናብ ገዝኦም ተመልሱ፣ ንደቆም ድማ እንጌራ ሃቡ።",
    "ኣቦ ንውሉዱ ብፍቕሪ ይምህሮም፣ ኣብ ቅኑዕ መገዲ ኸኣ ይመርሖም።",
    "ሓረስታይ ዘርኢ ዘሪኡ፣ ዝናም ድማ መጺኡ ምድሪ ኣጽገበ።",
    "ኣብታ መዓልቲ እቲኣ ህዝቢ ተኣኪቡ ብሓጎስ ዘመረ።",
    "ንሳ ድማ ኣብ ጥቓ ዓይኒ ማይ ኮፍ ኢላ ኣዕረፈት።",
]


def verse_audio(path: Path, seconds: float, seed: int) -> Path:
    """44.1 kHz mono: a 120-200 Hz voice with harmonics, loudness rising and falling four times a second."""
    rate = 44_100
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    pitch = 120 + 80 * rng.random()
    voice = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    samples = 0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples.astype(np.float32), rate, subtype="PCM_16")
    return path


pytestmark = pytest.mark.usefixtures("hub_offline")  # no hub downloads


def utterances(tmp_path: Path, seconds: float = 5.0) -> list[Utterance]:
    return [Utterance(f"v{i}", text, verse_audio(tmp_path / f"v{i}.wav", seconds, i), f"v{i}.wav")
            for i, text in enumerate(VERSES)]


# -- the message when clips are too short for their text ---------------------------------------------
def too_short(count: int, frontend: str, kind: str, symbols: int = 500) -> SkipReport:
    report = SkipReport(noun="clip")
    for i in range(count):
        report.add(f"v{i}", TOO_SHORT, symbols=symbols, frames=400, frontend=frontend, frontend_kind=kind)
    return report


def test_many_too_short_clips_name_the_front_end_the_figure_and_the_way_out():
    short = too_short(42, "espeak phonemes (fr-fr)", "phonemes", symbols=2400)
    message = skip_summary(short, total=42)
    assert message.startswith("42 audio too short for its text; with espeak phonemes (fr-fr)")
    assert "6.0 symbols per audio frame" in message
    assert "model.language" in message and "model.frontend: characters" in message
    romanised = skip_summary(too_short(1, "uroman romanisation", "romanized"), total=1)
    assert "model.frontend: characters" in romanised and "model.language" not in romanised
    own = too_short(1, "the project's own characters (9 new symbols)", "characters")
    assert "check that each recording speaks its whole text" in skip_summary(own, total=1)
    # One slip among many good clips is a recording problem, not the front end's: the count alone.
    assert skip_summary(too_short(1, "espeak phonemes (fr-fr)", "phonemes"), total=100) == \
        "1 audio too short for its text"


@needs_espeak
def test_no_usable_clip_message_says_what_to_do(tmp_path):
    config = TrainConfig(preset="tiny", epochs=1, language="fra", frontend="phonemes")  # the old choice, forced
    with pytest.raises(NoTrainingData) as failure:
        train(utterances(tmp_path), config, tmp_path / "run", cache_dir=tmp_path / "cache")
    message = str(failure.value)
    assert message.startswith("none of the 6 recording(s) can be used for training (6 audio too short for its text")
    assert "espeak phonemes (fr-fr)" in message and "symbols per audio frame" in message
    assert "set model.language" in message and "model.frontend: characters" in message
    assert "\n" not in message and str(tmp_path) not in message


@needs_espeak
def test_training_reads_the_ge_ez_text_despite_the_french_tag_and_says_why_first(tmp_path):
    statuses: list[str] = []
    config = TrainConfig(preset="tiny", epochs=1, language="fra", batch_size=3)
    result = train(utterances(tmp_path), config, tmp_path / "run", cache_dir=tmp_path / "cache",
                   hooks=TrainHooks(progress=statuses.append))
    assert result.frontend["kind"] == "romanized" and not result.skipped
    assert "fr-fr cannot read this Ethiopic text" in result.frontend_reason
    assert statuses[0] == f"text front end romanized: {result.frontend_reason}"  # before any clip is prepared
    sidecar = json.loads(result.checkpoint.with_suffix(".json").read_text())
    assert sidecar["frontend"]["reason"] == result.frontend_reason


# -- the job, as the plugin writes it --------------------------------------------------------------------
def geez_project(root: Path) -> LocalEnv:
    env = LocalEnv(root)
    env.write_file("metadata.json", json.dumps({"projectName": "tigrinya", "languages": [
        {"tag": "eng", "name": {"en": "English"}, "projectStatus": "source"},
        {"tag": "fra", "name": {"en": "French"}, "projectStatus": "target"}]}))
    cells = []
    for i, text in enumerate(VERSES, 1):
        audio_id = f"audio-gen-1-{i}-1763655321982-take{i}"
        url = f".project/attachments/files/GEN/{audio_id}.wav"
        verse_audio(root / url, 4.0 + 0.5 * (i % 3), i)
        cells.append({"kind": 2, "languageId": "html", "value": f"<span>{text}</span>", "metadata": {
            "id": f"GEN 1:{i}", "type": "text", "cellLabel": str(i), "data": {"globalReferences": [f"GEN 1:{i}"]},
            "edits": [{"editMap": ["value"], "value": f"<span>{text}</span>", "timestamp": 1757098950282,
                       "type": "user-edit", "author": "translator", "validatedBy": []}],
            "attachments": {audio_id: {
                "url": url, "type": "audio", "createdAt": 1763655321982, "updatedAt": 1763655321982,
                "isDeleted": False, "createdBy": "translator",
                "metadata": {"mimeType": "audio/wav", "sizeBytes": (root / url).stat().st_size, "sampleRate": 44100,
                             "channels": 1, "durationSec": 4.0 + 0.5 * (i % 3), "bitrateKbps": 705}}},
            "selectedAudioId": audio_id, "selectionTimestamp": 1763655321982}})
    env.write_file("files/target/GEN.codex", json.dumps(
        {"cells": cells, "metadata": {"id": "GEN", "originalName": "GEN", "textDirection": "ltr"}},
        ensure_ascii=False, indent=2))
    return env


@needs_espeak
def test_a_training_job_on_ge_ez_verses_tagged_french_completes_and_reports_its_front_end(tmp_path,
                                                                                          heartbeat_messages):
    statuses = heartbeat_messages  # the job runs in this process
    env = geez_project(tmp_path / "project")
    submitted = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    env.write_file("gpu_jobs/manifest.yaml", yaml.safe_dump({"version": 1, "jobs": [
        {"job_id": "tir", "job_type": "tts", "mode": "training", "submitted_at": submitted, "epochs": 1,
         "model": {"type": "StableTTS", "preset": "tiny"}, "canceled": False}]}, allow_unicode=True))
    run_worker(env.source(), fast_config(tmp_path, handler_paths=(), in_process=True))

    response = env.response("tir")
    assert response["state"] == "completed", response.get("error_message")
    result = response["result"]
    assert result["train_clips"] + result["val_clips"] == len(VERSES) and result["skipped_clips"] == 0
    assert result["text_frontend"] == "romanized"
    assert "fr-fr cannot read this Ethiopic text" in result["frontend_reason"]
    assert "letter names" in result["frontend_reason"]
    sidecar = json.loads(env.read_file("gpu_jobs/job_tir/checkpoint/best_model.json"))
    assert sidecar["frontend"]["kind"] == "romanized" and sidecar["frontend"]["reason"] == result["frontend_reason"]
    logs = env.read_file("gpu_jobs/job_tir/logs.txt").decode()
    assert "fr-fr cannot read this Ethiopic text" in logs
    assert f"text front end romanized: {result['frontend_reason']}" in statuses  # the status while preparing


# -- the job settings that steer the front end -----------------------------------------------------------
class Project:
    """What the handler reads of the project for the language hint: its metadata.json."""

    def __init__(self, metadata: dict | None):
        self.metadata = metadata
        self.scanner = SimpleNamespace(read=self._read)

    def _read(self, path: str):
        if path == "metadata.json" and self.metadata is not None:
            return SimpleNamespace(content=json.dumps(self.metadata).encode())
        return None


FRENCH = {"languages": [{"tag": "fra", "projectStatus": "target"}, {"tag": "eng", "projectStatus": "source"}]}


def test_job_settings_for_the_front_end():
    from handlers.tts.stabletts.job_inputs import project_language_tag
    from job_settings import JobSettingError
    from tts.job_settings import training_config

    french = project_language_tag(Project(FRENCH))
    assert french == "fra" and project_language_tag(Project(None)) is None
    assert project_language_tag(Project({"languages": [{"tag": "eng", "projectStatus": "source"}]})) is None
    config = training_config({"model": {"frontend": " Characters "}}, project_tag=french)
    assert config.frontend == "characters" and config.language == "fra"  # the tag is only a hint to the choice
    assert training_config({"model": {"language": " tir "}}, project_tag=french).language == "tir"
    assert training_config({}).frontend == "auto" and training_config({}).language is None
    assert training_config({"model": {"use_uroman": "true"}}).frontend == "romanized"  # the earlier worker's key
    with pytest.raises(JobSettingError, match="'model.frontend' must be one of auto, phonemes, romanized, characters"):
        training_config({"model": {"frontend": "letters"}})
