"""Text front ends on the scripts of Bible translation projects: no character disappears without a count,
ids stay inside the model's vocabulary, and a checkpoint's sidecar rebuilds the same front end."""
from __future__ import annotations

import unicodedata

import pytest
import torch

from StableTTS import build_model, load_model, resize_text_embedding, save_checkpoint
from StableTTS.text import (
    SYMBOL_TO_ID,
    SYMBOLS,
    CharacterFrontend,
    FrontendUnavailable,
    PhonemeFrontend,
    RomanizedFrontend,
    espeak_available,
    frontend_from_dict,
    intersperse,
    normalize_text,
    select_frontend,
)
from StableTTS.text import frontends as frontends_module
from StableTTS.text import selection as selection_module
from StableTTS.text.mapping import EMITTABLE

LATIN = "Hapo mwanzo Mungu aliziumba mbingu na nchi; Ŋgɔ̀ ɛ́ kpɔ́ ñaña façade."
GEEZ = "በመጀመሪያ እግዚአብሔር ሰማይንና ምድርን ፈጠረ።"
DEVANAGARI = "आदि में परमेश्वर ने आकाश और पृथ्वी की सृष्टि की।"
CYRILLIC = "В начале сотворил Бог небо и землю."

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng (phonemizer + espeakng-loader) missing")


def assert_well_formed(encoded, n_vocab=401):
    assert len(encoded.ids) == 2 * len(encoded.symbols) + 1
    assert encoded.ids[0::2] == [0] * (len(encoded.symbols) + 1)  # blanks around every symbol
    assert all(0 < i < n_vocab for i in encoded.ids[1::2])


def test_symbol_table_matches_published_layout():
    assert len(SYMBOLS) == 401 and SYMBOLS[0] == "_" and SYMBOL_TO_ID[" "] == 68
    assert "".join(SYMBOLS[1:9]) == ",.!?-~…'"
    assert "".join(SYMBOLS[9:34]) == "NQabdefghijklmnopstuvwxyz"
    assert SYMBOLS[399:] == ["<sil>", "<asp>"]
    assert not {"c", "q", "r"} & set(SYMBOLS)
    assert intersperse([5, 6]) == [0, 5, 0, 6, 0]


def test_normalize_nfc_punctuation_and_counts():
    decomposed = "cre\u0301a\u0301 « oui » ። ፣ । ؟"
    text, removed = normalize_text(decomposed)
    assert text == unicodedata.normalize("NFC", "créá oui.,.?")
    assert removed == {"«": 1, "»": 1}


def test_latin_with_diacritics_romanized_without_uroman():
    frontend = RomanizedFrontend("swh", romanizer="latin")
    encoded = frontend.encode(LATIN + " 😀 ©")
    assert_well_formed(encoded)
    assert set(encoded.symbols) <= EMITTABLE
    spoken = "".join(encoded.symbols)
    assert "ŋgɔ" in spoken and "ɛ" in spoken and "kpɔ" in spoken and "njanja" in spoken
    assert encoded.unknown == {"😀": 1, "©": 1}  # reported with counts, not dropped quietly
    assert encoded.approximated["ç"] == 1 and encoded.approximated["ñ"] == 2 and encoded.approximated["̀"] == 1


@pytest.mark.parametrize("text", [GEEZ, DEVANAGARI, CYRILLIC])
def test_latin_romanizer_reports_every_other_script_letter(text):
    encoded = RomanizedFrontend("xyz", romanizer="latin").encode(text)
    normalised, _ = normalize_text(text)
    letters = [ch for ch in normalised if not ch.isspace() and ch not in ",.?"]
    assert sum(encoded.unknown.values()) == len(letters)
    assert encoded.symbols == [] or set(encoded.symbols) <= set(" ,.?")


@pytest.mark.parametrize("text,language", [(GEEZ, "amh"), (DEVANAGARI, "hin"), (CYRILLIC, "rus"), (LATIN, "swh")])
def test_uroman_romanizes_any_script(text, language):
    pytest.importorskip("uroman")
    frontend = RomanizedFrontend(language, romanizer="uroman")
    encoded = frontend.encode(text + " ☺")
    assert_well_formed(encoded)
    assert encoded.unknown == {"☺": 1}
    assert len(encoded.symbols) > len(text) // 2  # it spoke the text, not only punctuation


@needs_espeak
@pytest.mark.parametrize("text,language", [(GEEZ, "amh"), (DEVANAGARI, "hin"), (CYRILLIC, "rus"), (LATIN, "swh"),
                                           ("Au commencement, Dieu créa les cieux.", "fra")])
def test_espeak_phonemes_on_several_scripts(text, language):
    frontend = select_frontend(language)
    assert isinstance(frontend, PhonemeFrontend)
    encoded = frontend.encode(text + " 😀")
    assert_well_formed(encoded)
    assert encoded.unknown == {"😀": 1}
    assert "ˈ" in encoded.symbols  # stress marks survive
    assert encoded.symbols[-1] == "."  # the script's full stop became a pause


@needs_espeak
def test_espeak_batch_keeps_alignment_with_empty_texts():
    frontend = PhonemeFrontend("rus")
    first, empty, last = frontend.encode_batch([CYRILLIC, "  ", "Бог"])
    assert empty.symbols == [] and empty.ids == [0]
    assert "b" in last.symbols and len(first.symbols) > len(last.symbols)


@pytest.mark.parametrize("text", [GEEZ, DEVANAGARI, CYRILLIC, LATIN])
def test_character_vocabulary_extends_published_symbols(text):
    frontend = CharacterFrontend.from_texts([text])
    assert frontend.n_vocab == 401 + len(frontend.extra_symbols)
    encoded = frontend.encode(text + " ☺")
    assert_well_formed(encoded, frontend.n_vocab)
    assert encoded.unknown == {"☺": 1}
    for symbol, i in zip(encoded.symbols, encoded.ids[1::2]):
        assert i == SYMBOL_TO_ID.get(symbol, i) and (i >= 401) == (symbol not in SYMBOL_TO_ID)


def test_selection_rules(monkeypatch):
    for module in (frontends_module, selection_module):  # as if espeak were absent
        monkeypatch.setattr(module, "espeak_voice_for", lambda language: None)
    monkeypatch.setattr(frontends_module, "uroman_available", lambda: False)
    chosen = select_frontend("swh", [LATIN])
    assert isinstance(chosen, RomanizedFrontend) and chosen.romanizer == "latin"
    # Romanisation cannot represent Ge'ez here -> falls back to a character vocabulary built from the texts.
    chosen = select_frontend("tir", [GEEZ])
    assert isinstance(chosen, CharacterFrontend) and "ሰ" in chosen.extra_symbols
    with pytest.raises(FrontendUnavailable):
        select_frontend("amh", kind="phonemes")
    with pytest.raises(ValueError, match="texts"):
        select_frontend("amh", kind="characters")


def test_sidecar_restores_the_same_frontend_and_embedding(tmp_path):
    frontend = CharacterFrontend.from_texts([GEEZ], language="amh")
    model = build_model("tiny")
    pretrained_rows = model.encoder.emb.weight[:401].detach().clone()
    resize_text_embedding(model, frontend.n_vocab)
    assert torch.equal(model.encoder.emb.weight[:401], pretrained_rows)
    path = save_checkpoint(model, tmp_path / "best_model.pt", frontend=frontend.to_dict())
    loaded, sidecar = load_model(path)
    restored = frontend_from_dict(sidecar["frontend"])
    assert loaded.config.n_vocab == restored.n_vocab == frontend.n_vocab
    assert restored.encode(GEEZ).ids == frontend.encode(GEEZ).ids
    for data in (RomanizedFrontend("swh", romanizer="latin").to_dict(), {"kind": "romanized", "romanizer": "latin"}):
        assert frontend_from_dict(data).encode(LATIN).ids == RomanizedFrontend("swh", romanizer="latin").encode(LATIN).ids
    with pytest.raises(ValueError, match="unknown text front end"):
        frontend_from_dict({"kind": "telepathy"})
