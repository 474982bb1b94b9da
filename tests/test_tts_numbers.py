"""Numbers and abbreviations in the texts a TTS voice reads (issue 16).

Numbers become words of the project's language (num2words) in ``normalize``, before phonemes or
romanisation, when the tag is shown to be the texts' language; the choice is saved with the front end, and a
sidecar without it keeps digits as they always were. What the voice cannot speak (digits without a num2words
reading, Ethiopic numerals espeak skips, likely abbreviations) is listed before synthesis and after training.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from conftest import LocalEnv, fast_config, run_worker
from StableTTS import build_model, save_checkpoint
from StableTTS.text import (
    CharacterFrontend,
    FrontendUnavailable,
    PhonemeFrontend,
    RomanizedFrontend,
    espeak_available,
    frontend_from_dict,
    normalize_text,
    select_frontend,
)
from StableTTS.text import frontends as frontends_module
from StableTTS.text import selection as selection_module
from StableTTS.text.normalize import MAX_NUMBER, ethiopic_value, expand_numbers, find_unspeakable, number_language
from test_tts_wrong_language_tag import verse_audio
from tts import Utterance
from tts.data import prepare_clips

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng (phonemizer + espeakng-loader) missing")

TIGRINYA = "ሰባት ካብታ ከተማ ወጺኦም ማይ ክቐድሑ ናብቲ ሩባ ከዱ።"
SWAHILI = "Watu walitoka mjini wakaenda mtoni kuchota maji, kisha wakarudi nyumbani."


pytestmark = pytest.mark.usefixtures("hub_offline")  # no hub downloads


@pytest.fixture
def no_espeak(monkeypatch):
    """Selection as on a machine without espeak-ng: the same choice whether or not this one has it."""
    for module in (frontends_module, selection_module):
        monkeypatch.setattr(module, "espeak_voice_for", lambda language: None)


# -- numbers as words ------------------------------------------------------------------------------
@pytest.mark.parametrize("language,text,spoken", [
    ("en", "John 3:16 says 1,000 men came on the 2nd day, and 12 stayed.",
     "John three, sixteen says one thousand men came on the second day, and twelve stayed."),
    ("fr", "Le 1er jour, 12 hommes; Jean 3:16 et la 2e fois 10\u00a0000 soldats.",
     "Le premier jour, douze hommes, Jean trois, seize et la deuxième fois dix mille soldats."),
    ("ru", "На 2-й день пришли 12 человек и 1 000 воинов.",
     "На второй день пришли двенадцать человек и одна тысяча воинов."),
    ("es", "El 2º día vinieron 1.000 hombres y 144000 más.",
     "El segundo día vinieron mil hombres y ciento cuarenta y cuatro mil más."),
    ("ar", "جاء ١٢ رجلا", "جاء اثنا عشر رجلا"),  # Arabic-Indic digits are digits too
])
def test_numbers_are_written_out_in_the_language(language, text, spoken):
    assert normalize_text(text, numbers=language)[0] == normalize_text(spoken)[0]


def test_without_a_number_language_digits_stay_as_they_always_were():
    text = "Jean 3:16 dit 12 mots."
    assert normalize_text(text) == normalize_text(text, numbers=None)
    assert normalize_text(text)[0] == "Jean 3,16 dit 12 mots."


def test_ethiopic_numerals_are_numbers_and_amharic_reads_the_ones_num2words_can_write():
    assert [ethiopic_value(n) for n in ("፲፪", "፻", "፲፪፻፴፬", "፼", "፻፵፬፼")] == [12, 100, 1234, 10000, 1440000]
    assert expand_numbers("ሰባት ፲፪ ሐዋርያት", "am").split() == ["ሰባት", "አሥራ", "ሁለት", "ሐዋርያት"]
    # num2words' Amharic fails from 1100 on (and loops forever on some millions): left as written, reported.
    assert expand_numbers("ሰዎች 1234567 ፲፪፻", "am") == "ሰዎች 1234567 ፲፪፻"
    assert find_unspeakable(["ሰዎች 1234567 ፲፪፻"], "am") == [["digits 1234567", "digits ፲፪፻"]]


def test_a_text_in_another_script_never_gets_the_tags_number_words():
    assert expand_numbers(f"{TIGRINYA} 12", "fr") == f"{TIGRINYA} 12"  # no "douze" in a Ge'ez verse
    assert expand_numbers("12.", "fr") == " douze ."  # nothing but digits: nothing says otherwise


def test_numbers_num2words_cannot_write_are_left_and_reported():
    huge = str(MAX_NUMBER * 10)
    assert huge in expand_numbers(f"count {huge} stars", "en")
    assert find_unspeakable([f"count {huge} stars"], "en") == [[f"digits {huge}"]]


@pytest.mark.parametrize("tag,code", [("fra", "fr"), ("fr-CA", "fr"), ("en", "en"), ("eng", "en"), ("rus", "ru"),
                                      ("spa", "es"), ("pt-BR", "pt_BR"), ("amh", "am"), ("kk", "kz"),
                                      ("tir", None), ("swh", None), ("hin", None), (None, None), ("", None)])
def test_language_tags_map_onto_num2words_codes(tag, code):
    assert number_language(tag) == code


# -- what cannot be spoken -------------------------------------------------------------------------
def test_digits_without_a_number_language_are_reported_for_romanised_and_character_voices():
    texts = [f"{TIGRINYA} ፲፪ 12", "आदि में १२ लोग आए।", f"{SWAHILI} Yohana 3:16 na 1,000."]
    expected = [["digits 12", "digits ፲፪"], ["digits १२"], ["digits 3:16", "digits 1,000"]]
    assert number_language("tir") is None and number_language("hin") is None and number_language("swh") is None
    assert RomanizedFrontend("tir", romanizer="latin").unspeakable(texts) == expected
    assert CharacterFrontend.from_texts(texts, language="tir").unspeakable(texts) == expected


@needs_espeak
def test_espeak_reads_digits_itself_but_not_ethiopic_numerals():
    encoded = PhonemeFrontend("tir").encode(f"{TIGRINYA} ፲፪")
    assert encoded.unknown == {}  # espeak drops the numeral without a word: why it is reported beforehand
    assert PhonemeFrontend("tir").unspeakable([f"{TIGRINYA} ፲፪ 12"]) == [["digits ፲፪"]]
    assert PhonemeFrontend("swh").unspeakable([f"{SWAHILI} 12"]) == [[]]


def test_likely_abbreviations_are_reported_never_expanded():
    texts = ["They came to Mt. Sinai with St. Paul and Dr. Luke.", "Go. Tell them.", "Go to the city now.",
             "He said it at the end of the Mt.", "see v. 3 there", "the LORD GOD. Then he spoke"]
    found = find_unspeakable(texts, "en", reads_digits=True)
    assert found[0] == ["abbreviation Mt.", "abbreviation St.", "abbreviation Dr."]
    assert found[1] == []  # "Go" is a word these texts use without a full stop
    assert found[3:] == [[], [], []]  # the end of a text, lower case, all capitals: not abbreviations
    assert find_unspeakable(["Go. Tell them."])[0] == ["abbreviation Go."]  # alone, it cannot be told apart
    assert "Mt." in normalize_text(texts[0], numbers="en")[0]  # only the team knows what it stands for


# -- choosing and saving the number language -------------------------------------------------------
def test_selection_reads_numbers_only_in_the_tags_own_script(no_espeak):
    french = ["Au commencement, Dieu créa les cieux et la terre, et 12 hommes vinrent."]
    chosen = select_frontend("fra", french)
    assert chosen.numbers == "fr" and "numbers read as fr words" in chosen.reason
    assert "douze" in "".join(chosen.encode(french[0]).symbols)
    assert select_frontend("fra", [f"{TIGRINYA} ፲፪"]).numbers is None  # a French tag on Ge'ez text
    assert select_frontend("tir", [f"{TIGRINYA} ፲፪"]).numbers is None  # num2words has no Tigrinya
    assert select_frontend("fra").numbers is None  # nothing to check the tag on
    assert select_frontend("fra", french, kind="characters").numbers == "fr"
    assert select_frontend("swh", [SWAHILI], kind="romanized").reason == "asked for (romanized)"


@needs_espeak
def test_a_tag_whose_voice_cannot_read_the_texts_gives_no_number_words_even_in_the_same_script():
    chosen = select_frontend("fra", [f"{SWAHILI} Watu 12 walikuja."] * 3)  # French reading Swahili
    assert not isinstance(chosen, PhonemeFrontend) and chosen.numbers is None, chosen.reason
    english = select_frontend("eng", ["Then 12 men went out of the city to the river to draw water."])
    assert isinstance(english, PhonemeFrontend) and english.numbers == "en", english.reason


def test_the_number_language_survives_the_sidecar_and_an_old_sidecar_keeps_digits():
    text = "Yesu aliwachagua 12 wanafunzi."
    frontend = RomanizedFrontend("eng", romanizer="latin", numbers="en")
    saved = frontend.to_dict()
    assert saved["numbers"] == "en"
    restored = frontend_from_dict(json.loads(json.dumps(saved)))
    assert restored.numbers == "en" and restored.encode(text).ids == frontend.encode(text).ids
    assert "twelve" in "".join(restored.encode(text).symbols)
    old = {k: v for k, v in saved.items() if k != "numbers"}  # a checkpoint from before this key
    before = frontend_from_dict(old)
    assert before.numbers is None and before.encode(text).unknown == {"1": 1, "2": 1}
    assert before.to_dict() == old  # re-saved unchanged: same cache keys, same sidecar
    others = [CharacterFrontend.from_texts([text], numbers="en"), RomanizedFrontend(numbers="en")]
    others += [PhonemeFrontend("eng", numbers="en")] if espeak_available() else []
    for other in others:
        assert frontend_from_dict(other.to_dict()).numbers == "en"
    with pytest.raises(FrontendUnavailable, match="num2words"):
        frontend_from_dict({**saved, "numbers": "tlh"})
    with pytest.raises(ValueError, match="numbers"):
        frontend_from_dict({**saved, "numbers": ["en"]})


def test_a_character_vocabulary_holds_the_number_words_not_the_digits():
    frontend = CharacterFrontend.from_texts(["Ils étaient 12."], language="fra", numbers="fr")
    assert not any(s.isdigit() for s in frontend.extra_symbols)
    assert frontend.encode("Ils étaient 12.").unknown == {}


# -- training: counted, kept, said -----------------------------------------------------------------
def test_training_texts_with_unspoken_numbers_are_kept_counted_and_logged(tmp_path, caplog):
    utterances = [Utterance(f"GEN 1:{i}", text, verse_audio(tmp_path / f"{i}.wav", 3.0, i))
                  for i, text in enumerate(["Watu 12 walikuja mjini.", "Walikwenda Mt. Sinai kuomba.",
                                            "Watu walitoka mjini wakaenda mtoni."], 1)]
    with caplog.at_level(logging.WARNING, logger="tts.data"):
        data = prepare_clips(utterances, RomanizedFrontend("swh", romanizer="latin"), tmp_path / "cache")
    assert len(data.clips) == 3 and not data.skipped  # kept: the recordings are still the reader's voice
    assert data.unspeakable == [("GEN 1:1", "digits 12"), ("GEN 1:2", "abbreviation Mt.")]
    assert "2 training text(s) have numbers or abbreviations" in caplog.text and "GEN 1:1 (digits 12)" in caplog.text


# -- the jobs, as the plugin writes them -----------------------------------------------------------
RECORDED = ["Watu walitoka mjini wakaenda mtoni kuchota maji.", "Siku ya 12 walirudi nyumbani kwao.",
            "Baba aliwafundisha watoto wake njia njema.", "Mkulima alipanda mbegu, mvua ikanyesha."]
UNRECORDED = {"GEN 1:5": "Walikaa siku 40 jangwani.", "GEN 1:6": "Walipanda Mt. Sinai asubuhi.",
              "GEN 1:7": "Maji yalitoka mwambani."}


def swahili_project(root: Path) -> LocalEnv:
    env = LocalEnv(root)
    env.write_file("metadata.json", json.dumps({"projectName": "swahili", "languages": [
        {"tag": "swh", "name": {"en": "Swahili"}, "projectStatus": "target"}]}))
    cells = []
    for i, text in enumerate(RECORDED + list(UNRECORDED.values()), 1):
        metadata = {"id": f"GEN 1:{i}", "type": "text", "cellLabel": str(i),
                    "data": {"globalReferences": [f"GEN 1:{i}"]},
                    "edits": [{"editMap": ["value"], "value": text, "timestamp": 1757098950282, "type": "user-edit",
                               "author": "translator", "validatedBy": []}]}
        if i <= len(RECORDED):
            audio_id = f"audio-gen-1-{i}-1763655321982-take{i}"
            url = f".project/attachments/files/GEN/{audio_id}.wav"
            verse_audio(root / url, 3.5 + 0.5 * (i % 2), i)
            metadata["attachments"] = {audio_id: {
                "url": url, "type": "audio", "createdAt": 1763655321982, "updatedAt": 1763655321982,
                "isDeleted": False, "createdBy": "translator",
                "metadata": {"mimeType": "audio/wav", "sizeBytes": (root / url).stat().st_size, "sampleRate": 44100,
                             "channels": 1, "durationSec": 3.5 + 0.5 * (i % 2), "bitrateKbps": 705}}}
            metadata.update(selectedAudioId=audio_id, selectionTimestamp=1763655321982)
        cells.append({"kind": 2, "languageId": "html", "value": f"<span>{text}</span>", "metadata": metadata})
    env.write_file("files/target/GEN.codex", json.dumps(
        {"cells": cells, "metadata": {"id": "GEN", "originalName": "GEN", "textDirection": "ltr"}}, indent=2))
    return env


def submit(env: LocalEnv, *jobs: dict) -> None:
    submitted = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    env.write_file("gpu_jobs/manifest.yaml", yaml.safe_dump({"version": 1, "jobs": [
        {"job_type": "tts", "submitted_at": submitted, "canceled": False, **job} for job in jobs]}))


@pytest.fixture
def statuses(heartbeat_messages) -> list[str]:
    return heartbeat_messages  # the job runs in this process


def test_a_job_lists_the_verses_with_unspeakable_numbers_before_speaking_them(tmp_path, statuses):
    env = swahili_project(tmp_path / "project")
    submit(env, {"job_id": "sw", "mode": "training_and_inference", "epochs": 1,
                 "model": {"type": "StableTTS", "preset": "tiny", "frontend": "romanized"},
                 "inference": {"diffusion_steps": 2}})
    run_worker(env.source(), fast_config(tmp_path, handler_paths=(), in_process=True))

    response = env.response("sw")
    assert response["state"] == "completed", response.get("error_message")
    result = response["result"]
    assert result["train_clips"] + result["val_clips"] == len(RECORDED)  # nothing skipped for its digits
    assert result["unspeakable_training_texts"] == 1
    assert result["unspeakable_training_cells"] == [{"cell_id": "GEN 1:2", "reference": "GEN 1:2",
                                                     "what": "digits 12"}]
    assert result["unspeakable_count"] == 2 and result["uploaded_count"] == len(UNRECORDED)
    assert result["unspeakable_cells"] == [{"cell_id": "GEN 1:5", "reference": "GEN 1:5", "what": "digits 40"},
                                           {"cell_id": "GEN 1:6", "reference": "GEN 1:6",
                                            "what": "abbreviation Mt."}]
    note = "2 verses have numbers or abbreviations this voice cannot speak: GEN 1:5, GEN 1:6"
    assert result["unspeakable_summary"] == note
    assert f"synthesizing 0/{len(UNRECORDED)} verses · {note}" in statuses  # said before the first verse
    logs = env.read_file("gpu_jobs/job_sw/logs.txt").decode()
    assert "GEN 1:5 (GEN 1:5): digits 40" in logs


def test_a_voice_that_reads_numbers_lists_only_what_it_cannot_say(tmp_path, statuses):
    env = swahili_project(tmp_path / "project")
    frontend = RomanizedFrontend("eng", romanizer="latin", numbers="en")  # as if trained on English numbers
    save_checkpoint(build_model("tiny", n_vocab=frontend.n_vocab), env.root / "voices/best_model.pt",
                    frontend=frontend.to_dict())
    submit(env, {"job_id": "en", "mode": "inference", "inference": {"diffusion_steps": 2},
                 "model": {"type": "StableTTS", "base_checkpoint": "voices/best_model.pt"}})
    run_worker(env.source(), fast_config(tmp_path, handler_paths=(), in_process=True))

    result = env.response("en")["result"]
    assert result["unspeakable_count"] == 1
    assert result["unspeakable_cells"] == [{"cell_id": "GEN 1:6", "reference": "GEN 1:6", "what": "abbreviation Mt."}]
    assert "1 verse has abbreviations this voice cannot speak: GEN 1:6" in result["unspeakable_summary"]
