#!/usr/bin/env python3
"""Generate the bundled demo project: a small, real Codex Editor project.

    python scripts/make_demo_project.py [--out examples/demo_project] [--force]

The output is laid out exactly as the Codex Editor writes a project (see
docs/codex_format.md): ``metadata.json``, ``.gitattributes``,
``.gitignore``, ``files/target/{JHN,GEN}.codex``, ``.project/sourceTexts/*.source``,
``.project/comments.json``, audio takes under ``.project/attachments/files/<BOOK>/``
with Git LFS pointer text under ``.project/attachments/pointers/<BOOK>/``, and a
``gpu_jobs/manifest.yaml`` holding six pending jobs (one per job type and mode).
``make demo`` copies the folder to scratch space and runs the worker on the copy.

Texts are public domain: John 1:1-20 of the Russian Synodal translation (1876) is
the target text of JHN (Cyrillic), Genesis 1:1-20 of the World English Bible is the
target text of GEN (Latin script); both source notebooks hold the World English
Bible. The WEB text is kept in its plain-ASCII punctuation (straight quotes) so that
the cell HTML can carry ``&quot;`` and ``&#39;`` entities the way an editor would.

Recordings are synthesized with espeak-ng and stored as mono Opus in WebM at
48 kHz, the format of the editor's MediaRecorder takes (at a low bitrate, to keep
the repository small). espeak-ng (``apt-get install espeak-ng``) is needed only
when running THIS script; the worker and the tests never need it. PyAV, soundfile
and numpy come from the project's virtual environment.

Everything is derived from one seeded ``random.Random``, so two runs write
identical JSON and YAML. The Opus bytes are identical too on the same
libopus/FFmpeg build (the muxer runs in bitexact mode); another libopus version may
encode slightly different bytes, which changes sizes and LFS oids in the JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import yaml

logger = logging.getLogger(__name__)

# --- knobs -------------------------------------------------------------------------------
SEED = 20250905
# The demo runs on a 2-core CPU in a few minutes. With small batches (many optimizer steps) its models learn
# the ~30 recorded verses (issue 17): the tiny voice's mel loss falls 65 -> ~5; the "demo" transcriber (tiny
# ASR stays near CER 1 that fast) reaches train CER ~0.03.
TTS_PRESET = "tiny"
ASR_PRESET = "demo"
TTS_EPOCHS = 30
ASR_EPOCHS = 40
TTS_SCHEDULE = {"batch_size": 4, "learning_rate": 0.002, "warmup_steps": 20}                # 7 steps an epoch
ASR_SCHEDULE = {"batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 0.004}  # 6 steps an epoch
OPUS_BITRATE = 24_000          # low on purpose: the editor records ~256 kbps, we need a small repo
SAMPLE_RATE = 48_000           # Opus always decodes at 48 kHz; the editor's metadata says 48000
ESPEAK_RATE = 150              # words per minute: a modest, clear reading speed
RETAKE_RATE = 135              # a second take of the same verse, read a little slower
# A fixed "import" moment (2025-09-05) so timestamps and attachment ids are stable.
BASE_MS = 1_757_098_950_282
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
EDITOR_VERSION = "0.32.0"
PROJECT_NAME = "Codex GPU Worker Demo"
BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"

# --- texts (public domain) -----------------------------------------------------------------
# World English Bible, Genesis 1:1-20.
GEN_WEB = {
    1: "In the beginning, God created the heavens and the earth.",
    2: "The earth was formless and empty. Darkness was on the surface of the deep and God's Spirit "
       "was hovering over the surface of the waters.",
    3: 'God said, "Let there be light," and there was light.',
    4: "God saw the light, and saw that it was good. God divided the light from the darkness.",
    5: 'God called the light "day", and the darkness he called "night". There was evening and there '
       "was morning, the first day.",
    6: 'God said, "Let there be an expanse in the middle of the waters, and let it divide the waters '
       'from the waters."',
    7: "God made the expanse, and divided the waters which were under the expanse from the waters "
       "which were above the expanse; and it was so.",
    8: 'God called the expanse "sky". There was evening and there was morning, a second day.',
    9: 'God said, "Let the waters under the sky be gathered together to one place, and let the dry '
       'land appear;" and it was so.',
    10: 'God called the dry land "earth", and the gathering together of the waters he called "seas". '
        "God saw that it was good.",
    11: 'God said, "Let the earth yield grass, herbs yielding seeds, and fruit trees bearing fruit '
        'after their kind, with their seeds in it, on the earth;" and it was so.',
    12: "The earth yielded grass, herbs yielding seed after their kind, and trees bearing fruit, with "
        "their seeds in it, after their kind; and God saw that it was good.",
    13: "There was evening and there was morning, a third day.",
    14: 'God said, "Let there be lights in the expanse of the sky to divide the day from the night; '
        "and let them be for signs to mark seasons, days, and years;",
    15: "and let them be for lights in the expanse of the sky to give light on the earth;\" and it "
        "was so.",
    16: "God made the two great lights: the greater light to rule the day, and the lesser light to "
        "rule the night. He also made the stars.",
    17: "God set them in the expanse of the sky to give light to the earth,",
    18: "and to rule over the day and over the night, and to divide the light from the darkness. God "
        "saw that it was good.",
    19: "There was evening and there was morning, a fourth day.",
    20: 'God said, "Let the waters abound with living creatures, and let birds fly above the earth in '
        'the open expanse of the sky."',
}

# World English Bible, John 1:1-20 (source text of JHN).
JHN_WEB = {
    1: "In the beginning was the Word, and the Word was with God, and the Word was God.",
    2: "The same was in the beginning with God.",
    3: "All things were made through him. Without him, nothing was made that has been made.",
    4: "In him was life, and the life was the light of men.",
    5: "The light shines in the darkness, and the darkness hasn't overcome it.",
    6: "There came a man, sent from God, whose name was John.",
    7: "The same came as a witness, that he might testify about the light, that all might believe "
       "through him.",
    8: "He was not the light, but was sent that he might testify about the light.",
    9: "The true light that enlightens everyone was coming into the world.",
    10: "He was in the world, and the world was made through him, and the world didn't recognize him.",
    11: "He came to his own, and those who were his own didn't receive him.",
    12: "But as many as received him, to them he gave the right to become God's children, to those "
        "who believe in his name:",
    13: "who were born not of blood, nor of the will of the flesh, nor of the will of man, but of God.",
    14: "The Word became flesh and lived among us. We saw his glory, such glory as of the one and "
        "only Son of the Father, full of grace and truth.",
    15: 'John testified about him. He cried out, saying, "This was he of whom I said, \'He who comes '
        "after me has surpassed me, for he was before me.'\"",
    16: "From his fullness we all received grace upon grace.",
    17: "For the law was given through Moses. Grace and truth were realized through Jesus Christ.",
    18: "No one has seen God at any time. The one and only Son, who is in the bosom of the Father, "
        "has declared him.",
    19: "This is John's testimony, when the Jews sent priests and Levites from Jerusalem to ask him, "
        '"Who are you?"',
    20: 'He declared, and didn\'t deny, but he declared, "I am not the Christ."',
}

# Russian Synodal translation (1876), John 1:1-20 (target text of JHN).
JHN_SYNODAL = {
    1: "В начале было Слово, и Слово было у Бога, и Слово было Бог.",
    2: "Оно было в начале у Бога.",
    3: "Все чрез Него начало быть, и без Него ничто не начало быть, что начало быть.",
    4: "В Нем была жизнь, и жизнь была свет человеков.",
    5: "И свет во тьме светит, и тьма не объяла его.",
    6: "Был человек, посланный от Бога; имя ему Иоанн.",
    7: "Он пришел для свидетельства, чтобы свидетельствовать о Свете, дабы все уверовали чрез него.",
    8: "Он не был свет, но был послан, чтобы свидетельствовать о Свете.",
    9: "Был Свет истинный, Который просвещает всякого человека, приходящего в мир.",
    10: "В мире был, и мир чрез Него начал быть, и мир Его не познал.",
    11: "Пришел к своим, и свои Его не приняли.",
    12: "А тем, которые приняли Его, верующим во имя Его, дал власть быть чадами Божиими,",
    13: "которые ни от крови, ни от хотения плоти, ни от хотения мужа, но от Бога родились.",
    14: "И Слово стало плотию, и обитало с нами, полное благодати и истины; и мы видели славу Его, "
        "славу, как Единородного от Отца.",
    15: "Иоанн свидетельствует о Нем и, восклицая, говорит: Сей был Тот, о Котором я сказал, что "
        "Идущий за мною стал впереди меня, потому что был прежде меня.",
    16: "И от полноты Его все мы приняли и благодать на благодать,",
    17: "ибо закон дан чрез Моисея; благодать же и истина произошли чрез Иисуса Христа.",
    18: "Бога не видел никто никогда; Единородный Сын, сущий в недре Отчем, Он явил.",
    19: "И вот свидетельство Иоанна, когда Иудеи прислали из Иерусалима священников и левитов "
        "спросить его: кто ты?",
    20: "Он объявил, и не отрекся, и объявил, что я не Христос.",
}

# --- what each verse cell looks like -----------------------------------------------------
# take             text + one take, no selection (the worker must fall back to the newest take)
# take_selected    text + one take, selectedAudioId set
# no_take          text, no recording (TTS inference speaks it)
# no_text          recording, empty value (ASR inference transcribes it), no selection
# no_text_selected recording selected, empty value
# deleted_older    two takes: the older isDeleted (selection cleared by the delete), newer live
# selected_newer   two live takes, the newer one selected
# selected_older   two live takes, the OLDER one selected (selection beats "newest")
SCENARIOS_WITH_TAKES = {"take", "take_selected", "no_text", "no_text_selected",
                        "deleted_older", "selected_newer", "selected_older"}
EMPTY_TEXT_SCENARIOS = {"no_text", "no_text_selected"}

GEN_PLAN = {
    1: "take_selected", 2: "take", 3: "take_selected", 4: "no_take", 5: "take",
    6: "no_text", 7: "take", 8: "deleted_older", 9: "take_selected", 10: "selected_newer",
    11: "no_take", 12: "selected_older", 13: "no_text_selected", 14: "take", 15: "take_selected",
    16: "take", 17: "no_take", 18: "take", 19: "no_text", 20: "take_selected",
}
JHN_PLAN = {
    1: "take_selected", 2: "selected_older", 3: "no_take", 4: "take", 5: "no_text",
    6: "take_selected", 7: "take", 8: "take", 9: "deleted_older", 10: "no_text_selected",
    11: "take", 12: "no_take", 13: "take_selected", 14: "selected_newer", 15: "take",
    16: "no_text", 17: "take", 18: "no_take", 19: "take_selected", 20: "take",
}


@dataclass(frozen=True)
class BookSpec:
    """Everything that differs between the two demo notebooks."""

    code: str                      # notebook base name = attachment segment (<SEG>)
    display_name: str
    corpus_marker: str
    espeak_voice: str
    target: dict[int, str]
    source: dict[int, str]
    plan: dict[int, str]
    id_style: str                  # "reference" (old "GEN 1:1" ids) or "hash" (migrated UUIDs)
    random_uuid_verses: frozenset[int]
    typo_fix_verses: frozenset[int]   # initial import lost the last word; a user-edit fixed it
    milestone: str
    paratext_html: str
    author: str


BOOKS = (
    BookSpec(
        code="JHN", display_name="John", corpus_marker="NT", espeak_voice="ru",
        target=JHN_SYNODAL, source=JHN_WEB, plan=JHN_PLAN, id_style="hash",
        random_uuid_verses=frozenset({7, 16}), typo_fix_verses=frozenset({11}),
        milestone="John 1", paratext_html="<span>От Иоанна святое благовествование</span>",
        author="anna.k",
    ),
    BookSpec(
        code="GEN", display_name="Genesis", corpus_marker="OT", espeak_voice="en-us",
        target=GEN_WEB, source=GEN_WEB, plan=GEN_PLAN, id_style="reference",
        random_uuid_verses=frozenset(), typo_fix_verses=frozenset({7}),
        milestone="Genesis 1",
        paratext_html="<span>Genesis 1: Creation &amp; the First Days</span>",
        author="mark.t",
    ),
)


@dataclass
class Take:
    """One recorded take of a verse: what it says and when it was made."""

    audio_id: str
    spoken_text: str
    rate: int
    created_ms: int
    updated_ms: int
    is_deleted: bool = False


@dataclass
class VerseCell:
    """The target cell of one verse, before serialisation."""

    verse: int
    ref: str
    cell_id: str
    scenario: str
    value: str
    edits: list[dict]
    takes: list[Take] = field(default_factory=list)
    selected_audio_id: str | None = None     # None: the keys are left out of the cell
    selection_ms: int = 0


@dataclass(frozen=True)
class AudioInfo:
    """Facts about an encoded take, as the attachment metadata reports them."""

    size_bytes: int
    duration_sec: float
    bitrate_kbps: int
    sha256: str


# --- ids -------------------------------------------------------------------------------------
def hash_uuid(old_id: str) -> str:
    """The editor's id migration: first 32 hex chars of SHA-256(old id), as 8-4-4-4-12."""
    h = hashlib.sha256(old_id.encode("utf-8")).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def random_uuid4(rng: random.Random) -> str:
    """A v4 UUID drawn from the seeded generator (uuid.uuid4 would break determinism)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def base36(n: int) -> str:
    """Integer to base36, like JavaScript's Number.prototype.toString(36)."""
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = BASE36[r] + out
        if n == 0:
            return out


def random_base36(rng: random.Random, length: int) -> str:
    """Random base36 characters, as Math.random().toString(36).slice(2) gives."""
    return "".join(rng.choice(BASE36) for _ in range(length))


def audio_id_for(cell_id: str, created_ms: int, rng: random.Random) -> str:
    """`audio-<cellid-lowercased-dashes>-<ms>-<random9>`, the editor's attachment id."""
    slug = cell_id.lower().replace(" ", "-").replace(":", "-")
    return f"audio-{slug}-{created_ms}-{random_base36(rng, 9)}"


def iso_ms(ms: int) -> str:
    """Epoch milliseconds to ISO 8601 UTC with milliseconds and Z (JS toISOString)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# --- cell HTML ----------------------------------------------------------------------------
def escape_text(text: str, quote_entities: bool) -> str:
    """HTML-escape text; optionally write quotes as &quot; / &#39; as some editors do."""
    out = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote_entities:
        out = out.replace('"', "&quot;").replace("'", "&#39;")
    return out


def final_html(text: str, verse: int) -> str:
    """The cell value a translator ends up with; the markup varies with the verse number
    so that the worker meets <span>, <p>, nested tags, &nbsp; and quote entities."""
    body = escape_text(text, quote_entities=verse % 2 == 0)
    if verse % 4 == 3:
        # a non-breaking space typed after the first comma (Quill keeps it as an entity)
        body = body.replace(", ", ",&nbsp;", 1)
    if verse % 10 == 0:
        return f"<p><span>{body}</span></p>"
    if verse % 5 == 0:
        return f"<p>{body}</p>"
    return f"<span>{body}</span>"


def imported_html(text: str, verse: int, typo: bool) -> str:
    """The value written by the initial import: plain <span>, maybe missing the last word."""
    if typo:
        text = text.rsplit(" ", 1)[0]
    return f"<span>{escape_text(text, quote_entities=False)}</span>"


def edit_entry(value: str, ms: int, edit_type: str, author: str) -> dict:
    """One entry of a cell's edit history (editMap ["value"])."""
    return {"editMap": ["value"], "value": value, "timestamp": ms, "type": edit_type,
            "author": author, "validatedBy": []}


# --- planning ---------------------------------------------------------------------------------
def verse_cell_id(book: BookSpec, verse: int, ref: str, rng: random.Random) -> str:
    """The cell id in the book's id style (old reference, migrated hash, or a new random UUID)."""
    if verse in book.random_uuid_verses:
        return random_uuid4(rng)
    if book.id_style == "hash":
        return hash_uuid(ref)
    return ref


def plan_text(book: BookSpec, verse: int, scenario: str, rng: random.Random) -> tuple[str, list[dict]]:
    """Cell value and its edit history; empty-text cells have neither."""
    if scenario in EMPTY_TEXT_SCENARIOS:
        return "", []
    text = book.target[verse]
    import_ms = BASE_MS + verse * 37
    first = imported_html(text, verse, typo=verse in book.typo_fix_verses)
    last = final_html(text, verse)
    edits = [edit_entry(first, import_ms, "initial-import", book.author)]
    if last != first:
        edit_ms = BASE_MS + 2 * DAY_MS + verse * 7 * MINUTE_MS + rng.randrange(MINUTE_MS)
        edits.append(edit_entry(last, edit_ms, "user-edit", book.author))
    return last, edits


def first_words(text: str) -> str:
    """The opening half of a verse: what an abandoned (later deleted) take says."""
    words = text.split()
    return " ".join(words[: max(2, len(words) // 2)])


def plan_takes(cell: VerseCell, spoken: str, rng: random.Random) -> None:
    """Attach the takes and the selection the scenario asks for."""
    scenario = cell.scenario
    if scenario not in SCENARIOS_WITH_TAKES:
        return
    t0 = BASE_MS + 5 * DAY_MS + cell.verse * HOUR_MS + rng.randrange(30 * MINUTE_MS)
    if scenario in {"take", "take_selected", "no_text", "no_text_selected"}:
        take = Take(audio_id_for(cell.cell_id, t0, rng), spoken, ESPEAK_RATE, t0, t0)
        cell.takes = [take]
        if scenario.endswith("_selected"):
            cell.selected_audio_id, cell.selection_ms = take.audio_id, t0 + 1_500
        return
    if scenario == "deleted_older":
        deleted_ms = t0 + 10 * MINUTE_MS
        new_ms = t0 + 15 * MINUTE_MS
        old = Take(audio_id_for(cell.cell_id, t0, rng), first_words(spoken), ESPEAK_RATE, t0,
                   deleted_ms, is_deleted=True)
        new = Take(audio_id_for(cell.cell_id, new_ms, rng), spoken, ESPEAK_RATE, new_ms, new_ms)
        cell.takes = [old, new]
        # deleting a take clears the selection with a fresh timestamp (docs/codex_format.md)
        cell.selected_audio_id, cell.selection_ms = "", deleted_ms
        return
    new_ms = t0 + 2 * HOUR_MS
    old = Take(audio_id_for(cell.cell_id, t0, rng), spoken, ESPEAK_RATE, t0, t0)
    new = Take(audio_id_for(cell.cell_id, new_ms, rng), spoken, RETAKE_RATE, new_ms, new_ms)
    cell.takes = [old, new]
    chosen = new if scenario == "selected_newer" else old
    # chosen after both takes existed: the translator listened to both and picked one
    cell.selected_audio_id, cell.selection_ms = chosen.audio_id, new_ms + 5 * MINUTE_MS


def verse_reference(book: BookSpec, verse: int) -> str:
    """The verse reference of a cell (``"GEN 1:3"``): every demo verse is in chapter 1."""
    return f"{book.code} 1:{verse}"


def spoken_verses() -> dict[str, str]:
    """Verse reference -> what the verse's live recordings say (its target text), for scoring the text ASR
    writes into the demo's unwritten cells. Needs no espeak-ng: nothing is generated."""
    return {verse_reference(book, verse): text for book in BOOKS for verse, text in sorted(book.target.items())}


def plan_book(book: BookSpec, rng: random.Random) -> list[VerseCell]:
    """All verse cells of one notebook, in verse order."""
    cells = []
    for verse in sorted(book.target):
        ref = verse_reference(book, verse)
        scenario = book.plan[verse]
        cell_id = verse_cell_id(book, verse, ref, rng)
        value, edits = plan_text(book, verse, scenario, rng)
        cell = VerseCell(verse, ref, cell_id, scenario, value, edits)
        plan_takes(cell, book.target[verse], rng)
        cells.append(cell)
    return cells


# --- audio ------------------------------------------------------------------------------------
def synthesize(text: str, voice: str, rate: int, workdir: Path) -> tuple[np.ndarray, int]:
    """Speak text with espeak-ng; returns int16 mono samples and their sample rate."""
    wav = workdir / "take.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(wav), text],
                   check=True, capture_output=True)
    samples, sr = sf.read(wav, dtype="int16")
    if samples.ndim > 1:
        samples = samples[:, 0]
    return samples, sr


def encode_webm_opus(samples: np.ndarray, sr: int, path: Path) -> None:
    """Mono Opus at 48 kHz in a WebM container, muxed bitexact so reruns give equal bytes."""
    out = av.open(str(path), "w", format="webm", options={"fflags": "+bitexact"})
    try:
        stream = out.add_stream("libopus", rate=SAMPLE_RATE)
        stream.codec_context.bit_rate = OPUS_BITRATE
        stream.codec_context.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sr
        frame.pts = 0
        # libopus takes fixed 20 ms frames (960 samples at 48 kHz)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE, frame_size=960)
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    finally:
        out.close()


def probe_webm(path: Path) -> tuple[float, int, int, str]:
    """Decode a take fully; returns (duration seconds, sample rate, channels, codec name)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        channels = stream.codec_context.channels
        rate = stream.codec_context.sample_rate
        samples = sum(frame.samples for frame in container.decode(stream))
    return samples / rate, rate, channels, codec


def make_take_audio(take: Take, voice: str, path: Path, workdir: Path) -> AudioInfo:
    """Synthesize, encode and verify one take; returns its attachment metadata facts."""
    samples, sr = synthesize(take.spoken_text, voice, take.rate, workdir)
    encode_webm_opus(samples, sr, path)
    duration, rate, channels, codec = probe_webm(path)
    if (codec, rate, channels) != ("opus", SAMPLE_RATE, 1):
        raise RuntimeError(f"{path}: decoded as {codec} {rate} Hz x{channels}, expected opus mono 48k")
    data = path.read_bytes()
    return AudioInfo(size_bytes=len(data), duration_sec=round(duration, 3),
                     bitrate_kbps=round(len(data) * 8 / duration / 1000),
                     sha256=hashlib.sha256(data).hexdigest())


def lfs_pointer(info: AudioInfo) -> str:
    """Git LFS pointer text for a blob."""
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{info.sha256}\n"
            f"size {info.size_bytes}\n")


# --- JSON documents --------------------------------------------------------------------------
def attachment_json(book: BookSpec, take: Take, info: AudioInfo) -> dict:
    """The cell attachment entry exactly as docs/codex_format.md describes it."""
    return {
        "url": f".project/attachments/files/{book.code}/{take.audio_id}.webm",
        "type": "audio",
        "createdAt": take.created_ms,
        "updatedAt": take.updated_ms,
        "isDeleted": take.is_deleted,
        "createdBy": book.author,
        "metadata": {
            "mimeType": "audio/webm",
            "sizeBytes": info.size_bytes,
            "sampleRate": SAMPLE_RATE,
            "channels": 1,
            "durationSec": info.duration_sec,
            "bitrateKbps": info.bitrate_kbps,
        },
        "validatedBy": [],
    }


def verse_cell_json(cell: VerseCell, book: BookSpec, audio: dict[str, AudioInfo]) -> dict:
    """Serialise a target verse cell (key order as the editor writes it)."""
    meta = {
        "id": cell.cell_id,
        "type": "text",
        "cellLabel": str(cell.verse),
        "data": {"globalReferences": [cell.ref]},
        "edits": cell.edits,
        "attachments": {t.audio_id: attachment_json(book, t, audio[t.audio_id]) for t in cell.takes},
    }
    if cell.selected_audio_id is not None:
        meta["selectedAudioId"] = cell.selected_audio_id
        meta["selectionTimestamp"] = cell.selection_ms
    return {"kind": 2, "value": cell.value, "languageId": "html", "metadata": meta}


def heading_cells(book: BookSpec, milestone_id: str, paratext_id: str, author: str | None) -> list[dict]:
    """The chapter milestone and the paratext cell that open each notebook."""
    paratext_edits = [edit_entry(book.paratext_html, BASE_MS, "initial-import", author)] if author else []
    return [
        {"kind": 2, "value": book.milestone, "languageId": "html",
         "metadata": {"id": milestone_id, "type": "milestone", "edits": [], "data": {}}},
        {"kind": 1, "value": book.paratext_html, "languageId": "html",
         "metadata": {"id": paratext_id, "type": "paratext", "edits": paratext_edits, "data": {}}},
    ]


def notebook_metadata(book: BookSpec, project_dir_name: str, importer: str) -> dict:
    """File-level notebook metadata; the absolute paths mimic a translator's machine."""
    root = f"/home/{book.author}/.codex-projects/{project_dir_name}"
    return {
        "textDirection": "ltr",
        "videoUrl": "",
        "lineNumbersEnabled": True,
        "lineNumbersEnabledSource": "global",
        "edits": [],
        "id": book.code,
        "originalName": f"{book.code}.usfm",
        "sourceFsPath": f"{root}/.project/sourceTexts/{book.code}.source",
        "codexFsPath": f"{root}/files/target/{book.code}.codex",
        "navigation": [],
        "sourceCreatedAt": iso_ms(BASE_MS),
        "corpusMarker": book.corpus_marker,
        "fileDisplayName": book.display_name,
        "importerType": importer,
    }


def target_notebook(book: BookSpec, cells: list[VerseCell], heading_ids: tuple[str, str],
                    audio: dict[str, AudioInfo], project_dir_name: str) -> dict:
    """The .codex notebook of one book."""
    out = heading_cells(book, *heading_ids, author=book.author)
    out += [verse_cell_json(c, book, audio) for c in cells]
    return {"cells": out, "metadata": notebook_metadata(book, project_dir_name, "usfm")}


def source_notebook(book: BookSpec, cells: list[VerseCell], heading_ids: tuple[str, str],
                    project_dir_name: str) -> dict:
    """The .source notebook: English WEB text under the same cell ids as the target."""
    source_book = dataclasses.replace(book, paratext_html=source_paratext(book))
    out = heading_cells(source_book, *heading_ids, author=None)
    for c in cells:
        out.append({"kind": 2, "value": escape_text(book.source[c.verse], quote_entities=False),
                    "languageId": "html",
                    "metadata": {"id": c.cell_id, "type": "text", "cellLabel": str(c.verse),
                                 "edits": [], "data": {"globalReferences": [c.ref]}}})
    return {"cells": out, "metadata": notebook_metadata(book, project_dir_name, "ebible")}


def source_paratext(book: BookSpec) -> str:
    """English book titles of the World English Bible for the source notebooks."""
    titles = {"JHN": "The Good News According to John",
              "GEN": "The First Book of Moses, Commonly Called Genesis"}
    return f"<span>{titles[book.code]}</span>"


def project_metadata(project_id: str, author: str) -> dict:
    """metadata.json: Scripture Burrito fields plus the Codex extensions."""
    return {
        "format": "scripture burrito",
        "projectName": PROJECT_NAME,
        "projectId": project_id,
        "meta": {
            "version": "0.0.0",
            "category": "Translation",
            "generator": {"softwareName": "Codex Editor", "softwareVersion": EDITOR_VERSION,
                          "userName": author, "userEmail": ""},
            "defaultLocale": "en",
            "dateCreated": datetime.fromtimestamp(BASE_MS / 1000, tz=timezone.utc).strftime("%a %b %d %Y"),
            "normalization": "NFC",
            "comments": [],
            "validationCount": 1,
            "validationCountAudio": 1,
            "abbreviation": "DEMO",
        },
        "idAuthorities": {},
        "identification": {
            "primary": {},
            "name": {"en": PROJECT_NAME},
            "description": {"en": "Demo for the Codex GPU worker: John 1:1-20 (Russian Synodal, 1876) "
                                  "and Genesis 1:1-20 (World English Bible) with espeak-ng recordings. "
                                  "Public domain texts."},
            "abbreviation": {"en": "DEMO"},
        },
        "languages": [
            {"name": {"en": "English"}, "tag": "eng", "refName": "English", "projectStatus": "source"},
            {"name": {"en": "Russian"}, "tag": "rus", "refName": "Russian", "projectStatus": "target"},
        ],
        "type": {"flavorType": {
            "name": "scripture",
            "flavor": {"name": "textTranslation", "usfmVersion": "3.0", "translationType": "firstTranslation",
                       "audience": "common", "projectType": "standard"},
            "currentScope": {"GEN": [], "JHN": []},
        }},
        "confidential": False,
        "agencies": [],
        "targetAreas": [],
        "localizedNames": {},
        "ingredients": {},
        "copyright": {"shortStatements": [{
            "statement": "World English Bible and Russian Synodal translation (1876): public domain.",
            "mimetype": "text/plain", "lang": "en"}]},
        "edits": [],
    }


# --- manifest ----------------------------------------------------------------------------------
def job_id_at(ms: int, rng: random.Random) -> str:
    """The plugin's job id: Date.now() in base36, "_", random base36."""
    return f"{base36(ms)}_{random_base36(rng, 11)}"


def build_manifest(rng: random.Random, voice_reference: str) -> dict:
    """Six pending jobs, one per (job_type, mode); trainings precede the inferences using them."""
    t = BASE_MS + 40 * DAY_MS
    times = [t + i * 3 * MINUTE_MS + rng.randrange(MINUTE_MS) for i in range(6)]
    ids = [job_id_at(ms, rng) for ms in times]
    tts = {"type": "StableTTS", "preset": TTS_PRESET}
    asr = {"type": "W2V2BERT", "preset": ASR_PRESET}
    jobs = [
        {"job_id": ids[0], "name": "Demo voice", "job_type": "tts", "mode": "training",
         "model": dict(tts), "epochs": TTS_EPOCHS, **TTS_SCHEDULE},
        {"job_id": ids[1], "job_type": "tts", "mode": "inference",
         "model": {**tts, "base_checkpoint": f"gpu_jobs/job_{ids[0]}/checkpoint/best_model.pt"},
         "inference": {"audio_format": "webm"}},
        {"job_id": ids[2], "name": "Voice from a reference take", "job_type": "tts",
         "mode": "training_and_inference", "model": dict(tts), "epochs": TTS_EPOCHS, **TTS_SCHEDULE,
         "voice_reference": voice_reference},
        {"job_id": ids[3], "name": "Demo transcriber", "job_type": "asr", "mode": "training",
         "model": dict(asr), "epochs": ASR_EPOCHS, **ASR_SCHEDULE},
        {"job_id": ids[4], "job_type": "asr", "mode": "inference",
         "model": {**asr, "base_checkpoint": f"gpu_jobs/job_{ids[3]}/model/asr_model.pth.tar"}},
        {"job_id": ids[5], "job_type": "asr", "mode": "training_and_inference",
         "model": dict(asr), "epochs": ASR_EPOCHS, **ASR_SCHEDULE},
    ]
    ordered = []
    for job, ms in zip(jobs, times):
        # key order as the plugin writes it: identity, kind, time, model, knobs, canceled
        head = {k: job[k] for k in ("job_id", "name", "job_type", "mode") if k in job}
        head["submitted_at"] = iso_ms(ms)
        rest = {k: v for k, v in job.items() if k not in head}
        ordered.append({**head, **rest, "canceled": False})
    return {"version": 1, "jobs": ordered}


# --- writing ----------------------------------------------------------------------------------
GITATTRIBUTES = "\n".join([
    "# Audio files",
    "*.wav filter=lfs diff=lfs merge=lfs -text",
    "*.mp3 filter=lfs diff=lfs merge=lfs -text",
    "*.m4a filter=lfs diff=lfs merge=lfs -text",
    "*.ogg filter=lfs diff=lfs merge=lfs -text",
    "*.webm filter=lfs diff=lfs merge=lfs -text",
    "",
    "# Video files",
    "*.mp4 filter=lfs diff=lfs merge=lfs -text",
    "*.avi filter=lfs diff=lfs merge=lfs -text",
    "*.mov filter=lfs diff=lfs merge=lfs -text",
    "*.mkv filter=lfs diff=lfs merge=lfs -text",
    "",
    "# Image files over 1MB should use LFS",
    "*.jpg filter=lfs diff=lfs merge=lfs -text",
    "*.jpeg filter=lfs diff=lfs merge=lfs -text",
    "*.png filter=lfs diff=lfs merge=lfs -text",
])

GITIGNORE = "\n".join([
    "# Sync .project/sourceTexts/ folder (source text files)",
    "",
    "# Don't sync user-specific SQLite databases",
    ".project/*.sqlite",
    "",
    "# Don't sync SQLite auxiliary files",
    ".project/*.sqlite-wal",
    ".project/*.sqlite-shm",
    "",
    "# Don't sync user-specific files",
    ".project/complete_drafts.txt",
    ".project/localProjectSettings.json",
    ".project/localProjectSwap.json",
    "copilot-messages.log",
    "",
    "# System files",
    ".DS_Store",
    ".project/attachments/files/**",
])


def write_json(path: Path, obj, indent: int = 2) -> None:
    """JSON as the editor writes it (UTF-8, no ASCII escaping, JSON.stringify-style indent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent), encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    """A UTF-8 text file, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def render_audio(book: BookSpec, cells: list[VerseCell], root: Path, workdir: Path) -> dict[str, AudioInfo]:
    """Record every take of a book: bytes under files/, LFS pointers under pointers/."""
    infos: dict[str, AudioInfo] = {}
    for cell in cells:
        for take in cell.takes:
            rel = f"{book.code}/{take.audio_id}.webm"
            path = root / ".project/attachments/files" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            info = make_take_audio(take, book.espeak_voice, path, workdir)
            write_text(root / ".project/attachments/pointers" / rel, lfs_pointer(info))
            infos[take.audio_id] = info
            logger.debug("%s %s: %.2fs %d B", book.code, cell.ref, info.duration_sec, info.size_bytes)
    return infos


def summarize(book: BookSpec, cells: list[VerseCell]) -> str:
    """One log line: how many verses of each kind a book got."""
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.scenario] = counts.get(c.scenario, 0) + 1
    parts = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    return f"{book.code}: {len(cells)} verses ({parts})"


def generate(root: Path, seed: int = SEED) -> dict:
    """Write the whole demo project into root (which must exist and be empty)."""
    rng = random.Random(seed)
    project_id = random_base36(rng, 20)
    project_dir_name = f"codex-gpu-worker-demo-{project_id}"
    plans = []
    for book in BOOKS:
        heading_ids = (random_uuid4(rng), random_uuid4(rng))
        plans.append((book, heading_ids, plan_book(book, rng)))

    with tempfile.TemporaryDirectory(prefix="demo-tts-") as tmp:
        for book, heading_ids, cells in plans:
            audio = render_audio(book, cells, root, Path(tmp))
            write_json(root / f"files/target/{book.code}.codex",
                       target_notebook(book, cells, heading_ids, audio, project_dir_name))
            write_json(root / f".project/sourceTexts/{book.code}.source",
                       source_notebook(book, cells, heading_ids, project_dir_name))
            logger.info("%s", summarize(book, cells))

    gen_cells = next(cells for book, _, cells in plans if book.code == "GEN")
    reference_take = gen_cells[0].takes[0]   # GEN 1:1, a selected, live take
    voice_reference = f".project/attachments/pointers/GEN/{reference_take.audio_id}.webm"
    manifest = build_manifest(rng, voice_reference)

    # the editor writes metadata.json with a 4-space indent (JSON.stringify(metadata, null, 4))
    write_json(root / "metadata.json", project_metadata(project_id, BOOKS[0].author), indent=4)
    write_text(root / ".gitattributes", GITATTRIBUTES)
    write_text(root / ".gitignore", GITIGNORE)
    write_json(root / ".project/comments.json", [])
    write_text(root / "gpu_jobs/manifest.yaml",
               yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, default_flow_style=False))
    return manifest


def prepare_output(out: Path, force: bool) -> None:
    """Refuse to clobber a non-empty folder unless --force, and then only a Codex project."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SystemExit(f"{out} is not empty; pass --force to replace it")
        if not (out / "metadata.json").is_file():
            raise SystemExit(f"{out} does not look like a Codex project (no metadata.json); not deleting it")
        shutil.rmtree(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    repo = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=repo / "examples" / "demo_project",
                   help="output folder (default: examples/demo_project)")
    p.add_argument("--force", action="store_true", help="replace an existing demo project")
    p.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every take")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: build into a temporary sibling folder, then move it into place."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(message)s")
    if shutil.which("espeak-ng") is None:
        logger.error("espeak-ng not found: install it (apt-get install espeak-ng) to generate the demo")
        return 1
    out = args.out.resolve()
    prepare_output(out, args.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    # build next to the target so a failed run never leaves a half-written project behind
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)   # mkdtemp makes it private; the project folder should not be
    try:
        manifest = generate(staging, args.seed)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    for job in manifest["jobs"]:
        logger.info("job %s %s/%s", job["job_id"], job["job_type"], job["mode"])
    logger.info("wrote %s (%.1f KiB)", out, size / 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
