"""The TTS text front end is chosen from the texts as well as the language tag.

A script matrix: verse-like text in many scripts, each with its right language tag, a wrong one (French, the
tag of the project that failed) and none. Whatever is chosen must represent the letters, write a plausible
number of symbols per letter and never speak letter names: espeak-ng's French voice reads Ge'ez (and most
other scripts) as "lettre éthiopienne 1260 ...", some 25 symbols a letter, for which no recording is long enough.
The measures here are the test's own (letters by Unicode category, words read one by one), not the module's.
"""
from __future__ import annotations

import re
import unicodedata

import pytest

from StableTTS.text import (
    CharacterFrontend,
    PhonemeFrontend,
    RomanizedFrontend,
    espeak_available,
    espeak_voice_for,
    frontend_from_dict,
    normalize_text,
    select_frontend,
)
from StableTTS.text.espeak import read_words
from StableTTS.text.scripts import script_of, script_profile
from StableTTS.text.selection import check_voice

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng (phonemizer + espeakng-loader) missing")

# (case, right tag, letters are syllables, espeak reads it with the right tag, text written for these tests).
# Han with cmn: espeak writes tone numbers and retroflex dots, 4.6 symbols a character, outside the band.
# Cherokee syllabary with chr: that espeak voice is for Latin-script Cherokee and skips the syllables.
MATRIX = [
    ("latin-vi", "vi", False, True, "Người cha thương yêu các con mình, và ông dạy họ đi theo con đường ngay thẳng."),
    ("latin-yo", "yo", False, False, "Àwọn ènìyàn náà jáde lọ sí odò láti pọn omi, wọ́n sì padà wá sí ilé."),
    ("latin-sw", "sw", False, True, "Watu walitoka mjini wakaenda mtoni kuchota maji, kisha wakarudi nyumbani."),
    ("latin-en", "en", False, True, "Then the people went out of the city to the river to draw water, and came home."),
    ("cyrillic", "ru", False, True, "Люди вышли из города и пошли к реке, чтобы набрать воды."),
    ("greek", "el", False, True, "Οι άνθρωποι βγήκαν από την πόλη και πήγαν στο ποτάμι για να πάρουν νερό."),
    ("geez-am", "am", True, True, "ሰዎቹ ከከተማው ወጥተው ውሃ ለመቅዳት ወደ ወንዙ ሄዱ። ከዚያም ወደ ቤታቸው ተመለሱ።"),
    ("geez-ti", "ti", True, True, "ሰባት ካብታ ከተማ ወጺኦም ማይ ክቐድሑ ናብቲ ሩባ ከዱ። ድሕሪኡ ናብ ገዝኦም ተመልሱ።"),
    ("arabic", "ar", False, True, "خرج الناس من المدينة وذهبوا إلى النهر ليستقوا ماء، ثم رجعوا إلى بيوتهم."),
    ("hebrew", "he", False, True, "האנשים יצאו מן העיר והלכו אל הנהר לשאוב מים, ואחר כך שבו לבתיהם."),
    ("devanagari", "hi", False, True,
     "लोग नगर से बाहर निकले और पानी भरने के लिए नदी के पास गए। फिर वे अपने घर लौट आए।"),
    ("bengali", "bn", False, True, "লোকেরা শহর থেকে বের হয়ে জল আনতে নদীর কাছে গেল। তারপর তারা বাড়ি ফিরে এল।"),
    ("tamil", "ta", False, True, "மக்கள் நகரத்திலிருந்து வெளியே வந்து தண்ணீர் எடுக்க ஆற்றுக்குச் சென்றார்கள்."),
    ("thai", "th", False, True, "ผู้คนออกจากเมืองและไปที่แม่น้ำเพื่อตักน้ำ แล้วพวกเขาก็กลับบ้าน"),
    ("myanmar", "my", False, True, "လူများသည် မြို့ထဲမှ ထွက်၍ ရေခပ်ရန် မြစ်သို့ သွားကြ၏။"),
    ("khmer", "km", False, False, "មនុស្សទាំងនោះបានចេញពីទីក្រុង ហើយទៅកាន់ទន្លេដើម្បីដងទឹក។"),
    ("tibetan", "bo", False, False, "མི་རྣམས་གྲོང་ཁྱེར་ནས་ཕྱིར་ཐོན་ནས་ཆུ་ལེན་པར་གཙང་པོའི་འགྲམ་དུ་སོང་།"),
    ("georgian", "ka", False, True, "ხალხი ქალაქიდან გამოვიდა და მდინარეზე წავიდა წყლის ამოსაღებად."),
    ("armenian", "hy", False, True, "Մարդիկ դուրս եկան քաղաքից և գնացին գետը՝ ջուր հանելու։"),
    ("han", "cmn", True, False, "众人从城里出来，到河边去打水。然后他们回家去了。"),
    ("hangul", "ko", True, True, "사람들이 성에서 나와 물을 길으려고 강으로 갔다. 그리고 집으로 돌아왔다."),
    ("syllabics", "iu", True, False, "ᐃᓄᐃᑦ ᓄᓇᓕᒃᒥᑦ ᓄᐃᑦᑐᑦ ᑕᕐᕆᐅᒧᑦ ᐃᒪᖅᑐᖅᑐᕆᐊᖅᖢᑎᒃ."),
    ("gurmukhi", "pa", False, True, "ਲੋਕ ਸ਼ਹਿਰ ਤੋਂ ਬਾਹਰ ਨਿਕਲੇ ਅਤੇ ਪਾਣੀ ਭਰਨ ਲਈ ਨਦੀ ਕੋਲ ਗਏ।"),
    ("telugu", "te", False, True, "ప్రజలు పట్టణం నుండి బయటకు వచ్చి నీళ్ళు తోడటానికి నదికి వెళ్ళారు."),
    ("lao", "lo", False, False, "ຜູ້ຄົນອອກຈາກເມືອງ ແລະ ໄປທີ່ແມ່ນ້ຳເພື່ອຕັກນ້ຳ"),
    ("sinhala", "si", False, True, "මිනිසුන් නගරයෙන් පිටතට ගොස් වතුර ගැනීමට ගඟට ගියහ."),
    ("hiragana", "ja", True, True, "ひとびとは まちを でて、みずを くみに かわへ いった。"),
    ("cherokee", "chr", True, False, "ᎠᏂᏴᏫ ᎦᏚᎲ ᎤᎾᏄᎪᏨ ᎠᎹ ᎤᏂᏁᏍᏔᏅ."),
]
TAGS = ["right", "fra", "none"]
# What espeak says for "letter" when it spells a character it has no rule for (stress marks removed).
LETTER_WORDS = ("lɛtʁ", "lɛɾɚ", "lɛtə", "lɛtɚ")


def letters_of(text: str) -> list[str]:
    return [ch for ch in normalize_text(text)[0] if unicodedata.category(ch)[0] in "LM"]


def spoken(symbols) -> int:
    return sum(1 for s in symbols if s not in " ,.!?-~…'")


def words_of(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^\w'-]", "", t) for t in normalize_text(text)[0].split()) if letters_of(w)]


@pytest.mark.parametrize("tag_kind", TAGS)
@pytest.mark.parametrize("case,tag,syllabic,espeak_reads,text", MATRIX, ids=[m[0] for m in MATRIX])
def test_every_script_gets_a_front_end_that_reads_its_letters(case, tag, syllabic, espeak_reads, text, tag_kind):
    language = {"right": tag, "fra": "fra", "none": None}[tag_kind]
    frontend = select_frontend(language, [text])
    assert frontend.reason  # the choice says why

    letters = letters_of(text)
    # Represented: neither reported unknown nor inside a word that came out silent.
    lost = 0
    for word, encoded in zip(words_of(text), frontend.encode_batch(words_of(text))):
        word_letters = letters_of(word)
        lost += len(word_letters) if spoken(encoded.symbols) == 0 else \
            sum(n for ch, n in encoded.unknown.items() if ch in word_letters)
    assert lost <= 0.02 * len(letters), (frontend, lost)
    per_letter = spoken(frontend.encode(text).symbols) / len(letters)
    assert 0.5 <= per_letter <= 4.0, (frontend, per_letter)

    if isinstance(frontend, PhonemeFrontend):  # no letter names, no other voice reading this script for it
        limit = 9.0 if syllabic else 5.0
        for word, ipa in zip(words_of(text), read_words(words_of(text), frontend.voice)):
            bare = ipa.replace("ˈ", "").replace("ˌ", "")
            assert not any(name in bare for name in LETTER_WORDS), (word, ipa)
            assert "(" not in ipa, (word, ipa)  # espeak marks a switch of language as "(en)"
            assert spoken(frontend.encode(word).symbols) <= limit * len(letters_of(word)), (word, ipa)

    if tag_kind == "none" or (tag_kind == "fra" and not case.startswith("latin-en")):
        assert not isinstance(frontend, PhonemeFrontend), frontend.reason  # the text is not French
    if tag_kind == "right" and espeak_available():
        assert isinstance(frontend, PhonemeFrontend) == espeak_reads, frontend.reason


@needs_espeak
def test_the_failed_project_ge_ez_text_under_a_french_tag_is_romanised_and_says_why():
    geez = next(m[4] for m in MATRIX if m[0] == "geez-ti")
    check = check_voice("fr-fr", [geez])
    assert not check.ok and check.symbols_per_letter > 10  # the letter names, measured
    frontend = select_frontend("fra", [geez] * 3)
    assert isinstance(frontend, RomanizedFrontend)
    assert "fr-fr" in frontend.reason and "Ethiopic" in frontend.reason and "letter names" in frontend.reason
    assert frontend.status().startswith("text front end romanized: espeak voice fr-fr cannot read")
    saved = frontend.to_dict()
    assert saved["reason"] == frontend.reason  # goes into the checkpoint sidecar with the front end
    assert frontend_from_dict(saved).reason == frontend.reason
    assert frontend_from_dict(saved).encode(geez).ids == frontend.encode(geez).ids


@needs_espeak
@pytest.mark.parametrize("language,text", [("rus", "В начале было Слово, и Слово было у Бога."),
                                           ("en", "In the beginning God created the heavens and the earth."),
                                           ("amh", "ሰዎቹ ከከተማው ወጥተው ውሃ ለመቅዳት ወደ ወንዙ ሄዱ።"),
                                           ("tir", "ሰባት ካብታ ከተማ ወጺኦም ማይ ክቐድሑ ናብቲ ሩባ ከዱ።")])
def test_a_right_tag_for_a_script_its_voice_reads_still_gets_phonemes(language, text):
    frontend = select_frontend(language, [text])
    assert isinstance(frontend, PhonemeFrontend) and frontend.reason.startswith(f"espeak voice {frontend.voice} reads")


@needs_espeak
def test_a_second_script_espeak_hands_to_its_own_voice_is_fine_a_voice_guessing_per_word_is_not():
    # The demo project: Russian John (tag rus) and English Genesis. espeak's ru voice reads the Cyrillic itself
    # and switches to English for every Latin word: both are read, so phonemes.
    mixed = ["В начале было Слово, и Слово было у Бога.", "In the beginning God created the heavens and the earth."]
    frontend = select_frontend("rus", mixed)
    assert isinstance(frontend, PhonemeFrontend)
    assert "Cyrillic" in frontend.reason and "switches to en for the Latin text" in frontend.reason
    # French reading Swahili switches to English for some words and not others: the wrong language.
    swahili = next(m[4] for m in MATRIX if m[0] == "latin-sw")
    check = check_voice("fr-fr", [swahili])
    assert not check.ok and "switches to en" in check.reason
    # French reading Korean hands all of it to the Korean voice: it reads none of it itself.
    hangul = next(m[4] for m in MATRIX if m[0] == "hangul")
    check = check_voice("fr-fr", [hangul])
    assert not check.ok and "for all of it" in check.reason


def test_romanisation_that_cannot_represent_the_text_falls_back_to_its_characters(monkeypatch):
    from StableTTS.text import frontends

    monkeypatch.setattr(frontends, "uroman_available", lambda: False)  # Latin-only romanisation
    tibetan = next(m[4] for m in MATRIX if m[0] == "tibetan")
    frontend = select_frontend("bo", [tibetan])
    assert isinstance(frontend, CharacterFrontend)
    assert "represents only" in frontend.reason and "own characters" in frontend.reason


def test_forced_front_ends_say_they_were_asked_for():
    text = "Watu walitoka mjini."
    assert select_frontend("swh", [text], kind="characters").reason == "asked for (characters)"
    assert select_frontend("swh", [text], kind="romanized").reason == "asked for (romanized)"


@needs_espeak
def test_voice_lookup_finds_regional_only_voices():
    assert espeak_voice_for("fr") == espeak_voice_for("fra") == espeak_voice_for("fr-CA") == "fr-fr"
    assert espeak_voice_for("zh") == "cmn" and espeak_voice_for("en") == "en-us"
    assert espeak_voice_for("km") is None and espeak_voice_for(None) is None


@pytest.mark.parametrize("ch,script", [("ሰ", "Ethiopic"), ("é", "Latin"), ("ŋ", "Latin"), ("한", "Hangul"),
                                       ("中", "Han"), ("ᐃ", "Canadian Syllabics"), ("ｆ", "Latin"),
                                       ("\u0301", None), ("5", None), (" ", None), ("ʼ", None), ("ᱚ", "Ol Chiki")])
def test_script_of_a_character(ch, script):
    assert script_of(ch) == script


def test_script_profile_counts_letters_per_script():
    assert script_profile(["ሰላም hello 12!"]) == {"Ethiopic": 3, "Latin": 5}


@needs_espeak
def test_phonetic_detail_espeak_writes_is_not_reported_as_characters_of_the_text():
    vietnamese = next(m[4] for m in MATRIX if m[0] == "latin-vi")
    encoded = PhonemeFrontend("vi").encode(vietnamese)
    assert encoded.unknown == {} and encoded.approximated["2"] > 0  # tone numbers: dropped detail, counted
    assert PhonemeFrontend("ja").encode(next(m[4] for m in MATRIX if m[0] == "hiragana")).unknown == {}


def test_uroman_tsheg_between_tibetan_syllables_is_not_reported_as_unknown():
    pytest.importorskip("uroman")
    tibetan = next(m[4] for m in MATRIX if m[0] == "tibetan")
    assert RomanizedFrontend("bod", romanizer="uroman").encode(tibetan).unknown == {}
