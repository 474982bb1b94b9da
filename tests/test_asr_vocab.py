"""Text normalisation and vocabulary of the CTC model, and the processor saved next to it."""

import json
import unicodedata

import pytest
from transformers import Wav2Vec2BertProcessor

from asr.text import TextNormalization, normalize_text
from asr.vocab import PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER, Vocabulary, build_vocabulary, load_vocabulary, make_processor, save_processor


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# -- normalisation ----------------------------------------------------------------------------------


def test_latin_diacritics_are_composed_and_lowercased():
    decomposed = "E\u0301glise, cafe\u0301!"  # É and é as base letter + combining acute
    assert normalize_text(decomposed) == "\u00e9glise caf\u00e9"


def test_devanagari_keeps_every_combining_mark():
    text = "नमस्ते, दुनिया। क्या हाल है?"
    out = normalize_text(text)
    assert out == "नमस्ते दुनिया क्या हाल है"
    marks_in = [c for c in text if unicodedata.category(c).startswith("M")]
    marks_out = [c for c in out if unicodedata.category(c).startswith("M")]
    assert marks_out == marks_in


def test_geez_punctuation_separates_words():
    # ፡ (wordspace) and ። (full stop) are punctuation by category, not by an ASCII list
    assert normalize_text("ሰላም፡ዓለም። እንዴት፣ ነህ፧") == "ሰላም ዓለም እንዴት ነህ"


def test_cyrillic_and_typographic_punctuation():
    assert normalize_text("«Привет», — сказал Мир… (и ушёл)") == "привет сказал мир и ушёл"


def test_apostrophes_join_words_and_symbols_go():
    assert normalize_text("Peter’s house isn't $5 + 3") == "peters house isnt 5 3"
    assert normalize_text("Haʻaheo naʼa!") == "haʻaheo naʼa"  # glottal-stop letters are letters


def test_options_keep_case_punctuation_and_drop_numbers():
    keep = TextNormalization(lowercase=False, remove_punctuation=False)
    assert normalize_text("Hello, World!", keep) == "Hello, World!"
    assert normalize_text("Chapter 12 verse 3b", TextNormalization(remove_numbers=True)) == "chapter verse b"
    assert normalize_text("٣ and ३", TextNormalization(remove_numbers=True)) == "and"  # non-ASCII digits too


def test_invisible_format_characters_go_but_joiners_and_private_use_letters_stay():
    assert normalize_text("\ufeffa\u00adb\u200fc") == "abc"
    assert normalize_text("a\ue000b, \U000f0001") == "a\ue000b \U000f0001"  # SIL-style private-use letters
    assert normalize_text("می\u200cخواهم") == "می\u200cخواهم"


def test_options_from_manifest_mapping():
    opts = TextNormalization.from_mapping({"lowercase": False, "remove_numbers": True, "unknown": 1})
    assert opts == TextNormalization(lowercase=False, remove_punctuation=True, remove_numbers=True)
    assert TextNormalization.from_mapping(None) == TextNormalization()


# -- vocabulary -------------------------------------------------------------------------------------


def test_vocabulary_specials_sorted_characters_and_rare_ones_folded():
    texts = ["abc ab", "ba c", "q"]  # q seen once
    report = build_vocabulary(texts, min_char_count=2)
    vocab = report.vocabulary
    assert vocab.token_to_id == {PAD_TOKEN: 0, UNK_TOKEN: 1, WORD_DELIMITER: 2, "a": 3, "b": 4, "c": 5}
    assert report.rare_chars == {"q": 1}
    assert "q" in report.summary() and "[UNK]" in report.summary()
    assert vocab.encode("ab q") == [3, 4, 2, vocab.unk_id]
    assert vocab.pad_id == 0 and vocab.size == 6


def test_vocabulary_of_several_scripts_holds_code_points_and_marks():
    texts = [normalize_text(t) for t in ["ሰላም ዓለም", "नमस्ते नमस्ते", "мир мир", "ሰላም", "ça ça"]]
    vocab = build_vocabulary(texts, min_char_count=1).vocabulary
    for ch in "ሰላምनमस्तेмирç":
        assert ch in vocab.token_to_id, ch
    assert "\u094d" in vocab.token_to_id  # virama: a combining mark is a token of its own
    assert all(len(t) == 1 for t in vocab.characters())


def test_ctc_decoding_merges_repeats_and_drops_blanks():
    vocab = build_vocabulary(["ab ba"], min_char_count=1).vocabulary
    a, b, sp, blank, unk = 3, 4, vocab.delimiter_id, vocab.pad_id, vocab.unk_id
    assert vocab.decode_ctc([a, a, blank, a, b, b, sp, sp, b, blank, blank, a]) == "aab ba"
    assert vocab.decode_ctc([sp, a, unk, b, sp]) == "a[UNK]b"
    assert vocab.decode_ctc([a, unk, b], unk_replacement="") == "ab"
    assert vocab.decode_labels([a, a, sp, b, -100, -100]) == "aa b"


def test_extending_a_base_vocabulary_keeps_every_old_id():
    old = build_vocabulary(["abc abc"], min_char_count=1).vocabulary
    report = build_vocabulary(["abd dd éé", "x"], min_char_count=2, base=old)
    new = report.vocabulary
    for token, idx in old.token_to_id.items():
        assert new.token_to_id[token] == idx
    assert report.new_chars == ["d", "é"]
    assert new.token_to_id["d"] == old.size and new.token_to_id["é"] == old.size + 1
    assert report.rare_chars == {"x": 1}
    assert "c" in new.token_to_id  # kept although absent from the new texts


def test_processor_saved_and_reloaded_with_same_ids(tmp_path):
    texts = [normalize_text(t) for t in ["Ṣe àlàáfíà ni", "ni àlàáfíà", "नमस्ते दुनिया", "नमस्ते"]]
    vocab = build_vocabulary(texts, min_char_count=1).vocabulary
    save_processor(make_processor(vocab), tmp_path)
    for name in ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json", "vocab.json"):
        assert (tmp_path / name).is_file(), name
    processor = Wav2Vec2BertProcessor.from_pretrained(str(tmp_path))
    assert processor.feature_extractor.sampling_rate == 16000
    assert len(processor.tokenizer) == vocab.size  # no <s>/</s> sneaked in
    for text in texts:
        assert processor.tokenizer(text).input_ids == vocab.encode(text)
    reloaded = load_vocabulary(tmp_path)
    assert reloaded.token_to_id == vocab.token_to_id
    assert reloaded.pad_id == vocab.pad_id and reloaded.unk_id == vocab.unk_id


def test_foreign_vocab_file_with_other_specials(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "<s>": 4}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>", "unk_token": "<unk>"}))
    vocab = load_vocabulary(tmp_path)
    assert (vocab.pad_id, vocab.unk_id, vocab.delimiter_id) == (0, 1, 2)
    assert vocab.decode_ctc([3, 4, 0, 3, 1]) == "aa<unk>"
    with pytest.raises(ValueError):
        Vocabulary({"a": 0})
