"""Codex notebooks: round trips, ids and filters, text cleaning, takes, selections and write-back merges."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codex  # noqa: E402
import import_graph  # noqa: E402
import skips  # noqa: E402
from codex import (  # noqa: E402
    AttachmentIndex,
    ChangeOp,
    CellChange,
    NotebookError,
    Transcription,
    VerseFilter,
    apply_changes,
    audio_take_change,
    commit_cell_changes,
    html_to_text,
    make_cell_ref,
    parse_notebook,
    select_take,
    transcription_change,
)
from local_store import LocalProjectStore  # noqa: E402
from storage import UnsafePath, VersionConflict  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo_project"
NOW = 1_800_000_000_000
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


# -- builders -----------------------------------------------------------------------------------------------------

def cell(cid: str, value: str = "", *, type_: str = "text", kind: int = 2, refs: list[str] | None = None,
         attachments: dict | None = None, selected: str = "", edits: list | None = None, **meta) -> dict:
    """A cell shaped like the editor's."""
    metadata = {"id": cid, "type": type_, "cellLabel": "1"}
    if refs is not None:
        metadata["data"] = {"globalReferences": refs}
    metadata["edits"] = edits if edits is not None else []
    metadata["attachments"] = attachments or {}
    metadata["selectedAudioId"] = selected
    metadata["selectionTimestamp"] = 0
    metadata.update(meta)
    return {"kind": kind, "languageId": "html", "value": value, "metadata": metadata}


def take(created: int, *, deleted: bool = False, missing: bool = False, generated: bool = False,
         seg: str = "MAT", aid: str | None = None, url: str | None = None) -> tuple[str, dict]:
    aid = aid or f"audio-{created}-abc123xyz"
    att = {"url": url or f".project/attachments/files/{seg}/{aid}.webm", "type": "audio", "createdAt": created,
           "updatedAt": created, "isDeleted": deleted, "createdBy": "translator",
           "metadata": {"mimeType": "audio/webm", "sizeBytes": 10, "sampleRate": 48000, "channels": 1,
                        "durationSec": 1.0, "bitrateKbps": 64}}
    if missing:
        att["isMissing"] = True
    if generated:
        att["isGenerated"] = True
    return aid, att


def notebook_text(cells: list[dict], trailing: str = "") -> str:
    """What the editor writes (JSON.stringify(data, null, 2) == json.dumps(indent=2) for these values)."""
    data = {"cells": cells, "metadata": {"id": "MAT", "originalName": "MAT", "textDirection": "ltr",
                                         "navigation": [], "customKey": {"kept": True}}}
    return json.dumps(data, ensure_ascii=False, indent=2) + trailing


def nb(cells: list[dict], path: str = "files/target/MAT.codex") -> codex.Notebook:
    return parse_notebook(notebook_text(cells), path)


def find(text: str, cid: str) -> dict:
    return next(c for c in json.loads(text)["cells"] if c["metadata"]["id"] == cid)


# -- reading and writing ------------------------------------------------------------------------------------------

ROUND_TRIP_CASES = {
    "editor, no trailing newline": notebook_text([cell("MAT 1:1", "<span>Hi</span>")]),
    "trailing newline": notebook_text([cell("MAT 1:1", "x")], "\n"),
    "crlf": notebook_text([cell("MAT 1:1", "x")], "\r\n").replace("\n", "\r\n").replace("\r\r\n", "\r\n"),
    "bom": "\ufeff" + notebook_text([cell("MAT 1:1", "x")]),
    "four spaces": json.dumps({"cells": [cell("a", "b")], "metadata": {}}, indent=4),
    "compact (JSON.stringify without indent)": json.dumps({"cells": [cell("a", "b")], "metadata": {}},
                                                          separators=(",", ":"), ensure_ascii=False),
    "numbers spelled by JS and by Python": '{\n  "cells": [],\n  "metadata": {\n    "a": 3,\n    "b": 3.0,\n'
                                           '    "c": 1e-7,\n    "d": 2.5e-05,\n    "e": -0.0,\n    "f": 1E+21\n  }\n}',
    "scripts, escapes and a lone surrogate": notebook_text([
        cell("GEN 1:1", "ሰላም፡ዓለም። नमस्ते दुनिया السلام عليكم \"q\" \\ \t \u2028"),
        cell("GEN 1:2", "\ud800 lone")]).replace("\ud800", "\\ud800"),   # JS escapes lone surrogates
    "empty containers": '{\n  "cells": [],\n  "metadata": {\n    "edits": [],\n    "x": {}\n  }\n}',
}


@pytest.mark.parametrize("text", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_round_trip_is_byte_for_byte(text):
    assert parse_notebook(text).to_text() == text
    assert parse_notebook(text.encode("utf-8")).to_text() == text
    unchanged, report = apply_changes(text, [])
    assert unchanged == text and not report.applied


@pytest.mark.skipif(not DEMO.is_dir(), reason="examples/demo_project not generated")
def test_demo_project_notebooks_round_trip():
    paths = list(DEMO.glob("files/target/*.codex")) + list(DEMO.glob(".project/sourceTexts/*.source"))
    assert paths
    for path in paths:
        raw = path.read_bytes()
        assert parse_notebook(raw, str(path)).to_text().encode("utf-8") == raw, path


def test_rewrite_changes_only_the_changed_cell_and_keeps_unknown_keys():
    cells = [cell("MAT 1:1", "one", refs=["MAT 1:1"], extraKey={"z": 1}), cell("MAT 1:2", "")]
    cells[0]["unknownTop"] = [1, 2.5]
    text = notebook_text(cells, "\n")
    ref = make_cell_ref("files/target/MAT.codex", parse_notebook(text).cells[1])
    new_text, report = apply_changes(text, [transcription_change(ref, "two", model_name="w2v2")], now_ms=NOW)
    assert len(report.applied) == 1
    expected = json.loads(text)
    expected["cells"][1]["value"] = "two"
    expected["cells"][1]["metadata"]["edits"] = [{"editMap": ["value"], "value": "two", "timestamp": NOW,
                                                  "type": "llm-generation", "author": "ASR w2v2", "validatedBy": []}]
    assert new_text == json.dumps(expected, ensure_ascii=False, indent=2) + "\n"


@pytest.mark.parametrize("bad", [
    '{"cells": [], "metadata": {"id": 1, "id": 2}}',        # duplicate key: a rewrite would drop one
    '{"cells": [], "metadata": {"x": NaN}}',
    '{"cells": {}}',
    '{"cells": ["not a cell"]}',
    '{"cells": [], "metadata": {',                          # truncated
    '[1, 2]',
    b'\xff\xfe{"cells": []}',                                # not UTF-8
])
def test_unparsable_notebooks_are_refused(bad):
    with pytest.raises(NotebookError):
        parse_notebook(bad)


def test_deep_long_or_huge_notebooks_are_refused_by_name(monkeypatch):
    deep = '{"cells": [{"metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + '}}]}'
    with pytest.raises(NotebookError, match=r"^files/target/DEEP\.codex is nested too deeply to read$"):
        parse_notebook(deep, "files/target/DEEP.codex")
    with pytest.raises(NotebookError, match=r"^files/target/LONG\.codex is not valid notebook JSON: .*4300"):
        parse_notebook('{"cells": [], "metadata": {"n": ' + "7" * 5000 + "}}", "files/target/LONG.codex")
    monkeypatch.setattr(codex.notebook, "MAX_NOTEBOOK_BYTES", 2 * 2**20)
    with pytest.raises(NotebookError, match=r"^files/target/BIG\.codex is 3 MB, more than the 2 MB"):
        parse_notebook(b" " * (3 * 2**20) + b'{"cells": []}', "files/target/BIG.codex")


def test_nesting_the_parser_accepts_is_written_back_on_any_stack():
    """The writer keeps its own stack: a file as deep as json.loads reads (a recursive writer needs two
    frames per level) is written back, even from a call already deep in the stack."""
    depth = 700
    text = notebook_text([cell("MAT 1:1", "", attachments=dict([take(100)]), deep=[])])
    text = text.replace('"deep": []', '"deep": ' + "[" * depth + "]" * depth)
    change = transcribe(text, "MAT 1:1", "heard")

    def nested(levels: int) -> tuple[str, object]:
        return nested(levels - 1) if levels else apply_changes(text, [change], now_ms=NOW)

    new_text, report = nested(100)
    assert report.applied == [change]
    written, read = parse_notebook(new_text).cells[0], parse_notebook(text).cells[0]
    assert written["value"] == "heard" and written["metadata"]["deep"] == read["metadata"]["deep"]


# -- ids, references and verse filters ----------------------------------------------------------------------------

def test_hash_ids_match_the_editor():
    assert codex.hash_cell_id("MAT 1:1") == "5e7dadd4-9879-026e-82d9-80337922faad"


def test_references_of_each_id_form():
    assert codex.cell_reference(cell("GEN 1:1")) == "GEN 1:1"                               # old style
    assert codex.cell_reference(cell(codex.hash_cell_id("GEN 1:1"), refs=["GEN 1:1"])) == "GEN 1:1"
    assert codex.cell_reference(cell("8a4c5bd2-4a8e-4b51-9e3c-1f2d3c4b5a69")) is None      # random v4
    child = cell("8a4c5bd2-4a8e-4b51-9e3c-000000000001", parentId="GEN 1:1")
    assert codex.cell_reference(child) is None and codex.cell_id(child).endswith("0001")


HASHED = codex.hash_cell_id("JHN 1:1")
FILTER_CASES = [
    # (filter item, cell, matches)
    ("JHN 1:1", cell("JHN 1:1"), True),                                   # old-style id
    ("JHN 1:1", cell(HASHED, refs=["JHN 1:1"]), True),                    # globalReferences[0]
    ("JHN 1:1", cell(HASHED), True),                                      # hash UUID of the reference
    ("jhn  1:1", cell("JHN 1:1"), True),                                  # case and spacing
    ("JHN 1:1", cell("JHN 1:10"), False),
    ("JHN 1:1", cell("x-1", refs=["JHN 1:10"]), False),
    (HASHED, cell(HASHED, refs=["JHN 1:1"]), True),                       # a cell id
    (HASHED.upper(), cell(HASHED), True),
    ("8a4c5bd2-4a8e-4b51-9e3c-1f2d3c4b5a69", cell("8a4c5bd2-4a8e-4b51-9e3c-1f2d3c4b5a69"), True),
    ("8a4c5bd2-4a8e-4b51-9e3c-1f2d3c4b5a69", cell(HASHED), False),
]


@pytest.mark.parametrize("item,the_cell,matches", FILTER_CASES)
def test_verse_filter_forms(item, the_cell, matches):
    assert VerseFilter.from_lists(include=[item]).allows(the_cell) is matches
    assert VerseFilter.from_lists(include=[item]).is_listed(the_cell) is matches
    assert VerseFilter.from_lists(exclude=[item]).allows(the_cell) is not matches


def test_verse_filter_exclusion_wins_and_empty_include_means_all():
    c = cell("JHN 1:1")
    assert VerseFilter().allows(c) and VerseFilter.from_lists([], None).allows(c)
    assert not VerseFilter.from_lists(["JHN 1:1"], ["JHN 1:1"]).allows(c)
    assert VerseFilter.from_section({"include_verses": ["JHN 1:1"]}).is_listed(c)
    assert not VerseFilter.from_section({"exclude_verses": ["JHN 1:1"]}).allows(c)


# -- text ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("<span>In the <b><i>beginning</i></b></span>", "In the beginning"),
    ("God&nbsp;said,&nbsp;&nbsp;&quot;Let there be&quot;", 'God said, "Let there be"'),
    ("caf&#233; &#x1F600; &#8212; &amp; &lt;tag&gt; &hellip;", "café 😀 — & <tag> …"),
    ("line one<br>line two<br/>three<p>para</p><div>block</div>", "line one line two three para block"),
    ("word<sup class=\"footnote-marker\" data-footnote=\"a note\">1</sup> next", "word next"),
    ("<script>alert(1)</script>kept<style>p{}</style>", "kept"),
    ("  \n\t spaced \u00a0 out \n ", "spaced out"),
    ("a < b and c > d", "a < b and c > d"),
    ("<span>ሰላም፡ዓለም። በመጀመሪያ</span>", "ሰላም፡ዓለም። በመጀመሪያ"),                             # Ge'ez
    ("<span>आदि में परमेश्वर ने</span>", "आदि में परमेश्वर ने"),                          # Devanagari + marks
    ("<span dir=\"rtl\">فِي الْبَدْءِ خَلَقَ اللهُ</span>", "فِي الْبَدْءِ خَلَقَ اللهُ"),   # Arabic with harakat
    ("e\u0301te\u0301", "\u00e9t\u00e9"),                                                # NFC composes
    ("", ""),
    (None, ""),
])
def test_html_to_text(value, expected):
    assert html_to_text(value) == expected


def test_devanagari_combining_marks_survive():
    text = html_to_text("<p>क्षत्रिय हिन्दी</p>")
    assert "\u094d" in text and "\u093f" in text      # virama and vowel sign kept


# -- audio takes --------------------------------------------------------------------------------------------------

def test_take_selection_rules():
    old, new, newest_deleted, newest_missing = take(100), take(200), take(300, deleted=True), take(400, missing=True)
    atts = dict([old, new, newest_deleted, newest_missing])
    assert select_take(cell("a", attachments=atts, selected=old[0])).audio_id == old[0]          # selected wins
    assert select_take(cell("a", attachments=atts)).audio_id == new[0]                           # newest live
    assert select_take(cell("a", attachments=atts, selected=newest_deleted[0])).audio_id == new[0]
    assert select_take(cell("a", attachments=atts, selected=newest_missing[0])).audio_id == new[0]
    assert select_take(cell("a", attachments=atts, selected="audio-gone")).audio_id == new[0]
    assert select_take(cell("a", attachments=dict([newest_deleted, newest_missing]))) is None
    image = {"img-1": {"url": "x.png", "type": "image", "createdAt": 999}}
    assert select_take(cell("a", attachments=image)) is None
    assert select_take(cell("a")) is None


@pytest.mark.parametrize("data,pointer", [
    (LFS_POINTER, True),
    (LFS_POINTER.replace(b"\n", b"\r\n"), True),
    (LFS_POINTER[:60], False),                       # cut before oid
    (b"version https://example.com/spec\noid sha256:" + b"a" * 64 + b"\nsize 1\n", False),
    (b"\x1aE\xdf\xa3" + bytes(2000), False),         # webm header
    (b"RIFF....WAVEfmt ", False),
    (b"", False),
])
def test_lfs_pointer_detection(data, pointer):
    assert codex.is_lfs_pointer(data) is pointer


def test_lfs_pointer_parse_and_make():
    parsed = codex.parse_lfs_pointer(LFS_POINTER)
    assert parsed.size == 12345 and parsed.oid.startswith("4d7a2146")
    made = codex.lfs_pointer_for(b"hello")
    assert codex.parse_lfs_pointer(made).size == 5


def test_candidate_paths_in_preference_order():
    t = codex.AudioTake("audio-1-x", ".project/attachments/files/MAT/audio-1-x.webm", 1, 1)
    assert codex.take_candidate_paths("files/target/MAT.codex", t) == [
        ".project/attachments/files/MAT/audio-1-x.webm", ".project/attachments/pointers/MAT/audio-1-x.webm",
        ".project/attachments/MAT/audio-1-x.webm"]
    absolute = codex.AudioTake("a", "/home/u/proj/.project/attachments/files/MRK/a.wav", 1, 1)
    assert codex.take_candidate_paths("files/target/MAT.codex", absolute)[:2] == [
        ".project/attachments/files/MRK/a.wav", ".project/attachments/pointers/MRK/a.wav"]
    hostile = codex.AudioTake("a", "../../etc/passwd", 1, 1)
    assert all(".." not in p for p in codex.take_candidate_paths("files/target/MAT.codex", hostile))
    assert codex.attachment_paths("MAT", "a.webm") == (".project/attachments/files/MAT/a.webm",
                                                       ".project/attachments/pointers/MAT/a.webm")


# A project kept inside another project's attachments folder: its own .project is the innermost one.
NESTED = "C:/x/.project/attachments/old/.project/attachments/files/GEN/a.webm"


@pytest.mark.parametrize("named, project_path", [
    (NESTED, ".project/attachments/files/GEN/a.webm"),
    (NESTED.replace("/", "\\"), ".project/attachments/files/GEN/a.webm"),
    (r"C:\Users\ana\proj\.project\attachments\JHN\a.webm", ".project/attachments/JHN/a.webm"),
    ("./.project/attachments/pointers/JHN/a.webm", ".project/attachments/pointers/JHN/a.webm"),
    (".project/attachments/JHN/a.webm", ".project/attachments/JHN/a.webm"),
    ("files/target/JHN.codex", None),
    ("/home/ana/proj/attachments/JHN/a.webm", None),
])
def test_attachment_project_path_cuts_at_the_innermost_attachments_folder(named, project_path):
    assert codex.attachment_project_path(named) == project_path


def test_attachment_project_path_refuses_what_leaves_the_project():
    with pytest.raises(UnsafePath):
        codex.attachment_project_path("/home/ana/p/.project/attachments/../../../etc/passwd")


def test_attachment_twin_pairs_files_and_pointers_only():
    files, pointers = codex.attachment_paths("GEN", "a.webm")
    assert codex.attachment_twin(files) == pointers and codex.attachment_twin(pointers) == files
    assert codex.attachment_twin(".project/attachments/GEN/a.webm") is None
    assert codex.attachment_twin(".project/attachments/filesX/GEN/a.webm") is None


@pytest.mark.parametrize("url", [NESTED, NESTED.replace("/", "\\")])
def test_candidate_paths_of_a_nested_or_windows_url_start_at_the_innermost_attachments(url):
    take = codex.AudioTake("a", url, 1, 1)
    assert codex.take_candidate_paths("files/target/MAT.codex", take)[:3] == [
        ".project/attachments/files/GEN/a.webm", ".project/attachments/pointers/GEN/a.webm",
        ".project/attachments/files/MAT/a.webm"]


def test_the_attachments_folder_is_named_in_codex_layout_only():
    """jobs.py and codex/takes.py once each cut attachment paths with their own literal and rule."""
    homes = [name for name, path in import_graph.project_modules().items()
             if any(".project/attachments" in value for value in import_graph.string_constants(path))]
    assert homes == ["codex.layout"]


def test_fetch_take_skips_pointers_and_finds_old_layout(tmp_path):
    root = tmp_path / "proj"
    files = root / ".project/attachments/files/MAT/audio-1-x.webm"
    pointer = root / ".project/attachments/pointers/MAT/audio-1-x.webm"
    old = root / ".project/attachments/MAT/audio-1-x.webm"
    for p in (files, pointer, old):
        p.parent.mkdir(parents=True, exist_ok=True)
    files.write_bytes(LFS_POINTER)
    pointer.write_bytes(LFS_POINTER)
    old.write_bytes(b"\x1aE\xdf\xa3 real audio bytes")
    store = LocalProjectStore(root)
    t = codex.AudioTake("audio-1-x", ".project/attachments/files/MAT/audio-1-x.webm", 1, 1)
    for index in (None, AttachmentIndex.of(store)):
        got = codex.fetch_take(store, "files/target/MAT.codex", t, tmp_path / "dl", index=index)
        assert got.project_path == ".project/attachments/MAT/audio-1-x.webm"
        assert got.local_path.read_bytes().startswith(b"\x1aE\xdf\xa3")
    old.unlink()
    assert codex.fetch_take(store, "files/target/MAT.codex", t, tmp_path / "dl") is None
    # A take whose url is wrong is still found by its id through the index.
    moved = root / ".project/attachments/pointers/OTHER/audio-1-x.webm"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"OggS real")
    got = codex.fetch_take(store, "files/target/MAT.codex", t, tmp_path / "dl", index=AttachmentIndex.of(store))
    assert got.project_path.endswith("OTHER/audio-1-x.webm")


# -- selections ---------------------------------------------------------------------------------------------------

def selection_notebook() -> codex.Notebook:
    live = take(100)
    return nb([
        cell("MAT 1:1", "has text, no audio", kind=1),                                 # kind does not matter
        cell("MAT 1:2", "has text and audio", attachments=dict([live]), selected=live[0]),
        cell("MAT 1:3", "", attachments=dict([take(200)])),                           # audio, no text
        cell("MAT 1:4", "text, only a deleted take", attachments=dict([take(300, deleted=True)])),
        cell("MAT 1:5", ""),                                                           # nothing
        cell("p-1", "Heading", type_="paratext", kind=1),
        cell("m-1", "Matthew 1", type_="milestone"),
        cell("s-1", "style", type_="style"),
        cell("MAT 1:6", "deleted cell", data={"deleted": True}),
        cell("p-2", "", type_="paratext", attachments=dict([take(400)])),
    ])


def ids(selection) -> list[str]:
    return [c.cell_id for c in selection.cells]


def test_cells_needing_audio():
    book = selection_notebook()
    assert ids(codex.select_cells_needing_audio([book])) == ["MAT 1:1", "MAT 1:4"]
    include = VerseFilter.from_lists(["MAT 1:2", "p-1", "MAT 1:5"])
    listed = codex.select_cells_needing_audio([book], include)
    assert ids(listed) == ["p-1"]                                  # listed paratext too; a recorded verse not
    assert [(s.id, s.reason) for s in listed.skipped] == [("MAT 1:2", "already recorded"),
                                                               ("MAT 1:5", "no text to speak")]
    assert ids(codex.select_cells_needing_audio([book], include, replace_recorded=True)) == ["MAT 1:2", "p-1"]
    assert ids(codex.select_cells_needing_audio([book], VerseFilter.from_lists(None, ["MAT 1:1"]))) == ["MAT 1:4"]


def test_a_take_the_editor_plays_by_its_fallback_counts_as_recorded():
    """The plugin counts only selectedAudioId; the editor also plays the newest take of a cell without one."""
    human, generated = take(100), take(200, generated=True, aid="audio-200-generated")
    book = nb([cell("MAT 1:1", "recorded, nothing selected", attachments=dict([human])),
               cell("MAT 1:2", "a generated take plays", attachments=dict([human, generated])),
               cell("MAT 1:3", "only a recording whose bytes are missing here",
                    attachments=dict([take(300, missing=True)]))])
    assert ids(codex.select_cells_needing_audio([book])) == []
    listed = codex.select_cells_needing_audio([book], VerseFilter.from_lists(["MAT 1:1", "MAT 1:2", "MAT 1:3"]))
    assert ids(listed) == ["MAT 1:2"]
    assert [(s.id, s.reason) for s in listed.skipped] == [("MAT 1:1", skips.ALREADY_RECORDED),
                                                          ("MAT 1:3", skips.ALREADY_RECORDED)]


@pytest.mark.parametrize("takes, selected, human_plays", [      # selected "": none; "d": deleted; "g": generated
    ([take(100)], "", True),                                               # the fallback plays it
    ([], "", False),
    ([take(100), take(200, generated=True, aid="g")], "", False),          # the newest is generated
    ([take(100, generated=True, aid="g"), take(200)], "", True),
    ([take(100), take(200, generated=True, aid="g")], "g", False),          # a generated take chosen
    ([take(100, generated=True, aid="g"), take(200)], "g", False),
    ([take(100), take(200, deleted=True, aid="d")], "d", True),              # deleted selection: fallback
    ([take(100, generated=True, aid="g"), take(200, deleted=True, aid="d")], "d", False),
    ([take(100, deleted=True)], "", False),
    ([take(100, generated=True, aid="g")], "audio-syncing", True),           # unknown selection: doubt
])
def test_plays_human_take_follows_the_editor(takes, selected, human_plays):
    assert codex.plays_human_take(cell("MAT 1:1", "x", attachments=dict(takes), selected=selected)) is human_plays


def test_cells_needing_text():
    book = selection_notebook()
    assert ids(codex.select_cells_needing_text([book])) == ["MAT 1:3"]
    listed = codex.select_cells_needing_text([book], VerseFilter.from_lists(["MAT 1:2", "p-2", "MAT 1:1"]))
    assert ids(listed) == ["MAT 1:2", "p-2"]
    assert [(s.id, s.reason) for s in listed.skipped] == [("MAT 1:1", "no audio to transcribe")]


def test_training_pairs_and_text_sources():
    book = selection_notebook()
    pairs = codex.select_training_pairs([book])
    assert ids(pairs) == ["MAT 1:2"]
    assert pairs.cells[0].text == "has text and audio" and pairs.cells[0].audio_take.created_at == 100
    assert [(s.id, s.reason) for s in pairs.skipped] == [("MAT 1:3", "empty text")]
    assert ids(codex.select_training_pairs([book], VerseFilter.from_lists(None, ["MAT 1:2"]))) == []
    history = [{"editMap": ["value"], "value": "<b>imported</b>", "timestamp": 1, "type": "initial-import"},
               {"editMap": ["value"], "value": "edited", "timestamp": 2, "type": "user-edit"}]
    t = take(5)
    t[1]["transcription"] = {"content": "heard text", "language": None, "timestamp": 1}
    book2 = nb([cell("MAT 2:1", "edited", edits=history, attachments=dict([t]))])
    texts = {src: codex.select_training_pairs([book2], text_source=src, edit_history_selection=sel).cells[0].text
             for src, sel in [("value", "first"), ("transcription", "first"), ("edit_history", "initial_import")]}
    assert texts == {"value": "edited", "transcription": "heard text", "edit_history": "imported"}
    last = codex.select_training_pairs([book2], text_source="edit_history", edit_history_selection="last")
    assert last.cells[0].text == "edited"


def test_source_target_pairing():
    target = nb([cell("MAT 1:1", ""), cell("MAT 1:2", "")])
    source = nb([cell("MAT 1:2", "Greek"), cell("MAT 1:9", "x")], ".project/sourceTexts/MAT.source")
    assert codex.source_path_for("files/target/MAT.codex") == ".project/sourceTexts/MAT.source"
    assert codex.target_path_for(".project/sourceTexts/MAT.source") == "files/target/MAT.codex"
    assert {k: codex.cell_text(v) for k, v in codex.pair_source_cells(target, source).items()} == {"MAT 1:2": "Greek"}


# -- write-back ---------------------------------------------------------------------------------------------------

META = {"mimeType": "audio/webm", "sizeBytes": 1234, "sampleRate": 48000, "channels": 1, "durationSec": 2.5,
        "bitrateKbps": 4}


def generated_change(text: str, cid: str) -> CellChange:
    ref = make_cell_ref("files/target/MAT.codex", next(c for c in parse_notebook(text).cells
                                                       if c["metadata"]["id"] == cid))
    return audio_take_change(ref, audio_id=codex.new_audio_id(NOW), extension="webm", metadata=META,
                             created_by="StableTTS worker", now_ms=NOW)


def test_generated_take_is_attached_and_selected_without_a_human_selection():
    text = notebook_text([cell("MAT 1:1", "text")])
    change = generated_change(text, "MAT 1:1")
    new_text, report = apply_changes(text, [change], now_ms=NOW)
    meta = find(new_text, "MAT 1:1")["metadata"]
    aid = change.payload.audio_id
    assert aid.startswith(f"audio-{NOW}-") and len(aid.rsplit("-", 1)[1]) == 9
    assert meta["attachments"][aid] == {
        "url": f".project/attachments/files/MAT/{aid}.webm", "type": "audio", "createdAt": NOW, "updatedAt": NOW,
        "isDeleted": False, "isGenerated": True, "createdBy": "StableTTS worker", "metadata": META}
    assert meta["selectedAudioId"] == aid and meta["selectionTimestamp"] == NOW
    assert report.applied == [change] and not report.kept_selection
    again, report2 = apply_changes(new_text, [change], now_ms=NOW)      # re-applying is harmless
    assert again == new_text and report2.skipped[0][1] == "a take with this id is already attached"


def test_generated_take_never_displaces_a_take_the_editor_plays_by_fallback():
    """Ours would be the newest take, which the editor's fallback plays: the recording it plays today is
    selected, stamped newer only than the selection as it stood (a translator's later choice still wins)."""
    older, human = take(50, aid="audio-50-older"), take(100)
    text = notebook_text([cell("MAT 1:1", "text", attachments=dict([older, human]), selectionTimestamp=7)])
    change = generated_change(text, "MAT 1:1")
    new_text, report = apply_changes(text, [change], now_ms=NOW)
    meta = find(new_text, "MAT 1:1")["metadata"]
    assert meta["attachments"][change.payload.audio_id]["createdAt"] == NOW       # the newest take now
    assert (meta["selectedAudioId"], meta["selectionTimestamp"]) == (human[0], 8)
    assert report.kept_selection == [change]


def test_generated_take_never_replaces_a_human_selection():
    human = take(100)
    text = notebook_text([cell("MAT 1:1", "text", attachments=dict([human]), selected=human[0],
                               selectionTimestamp=NOW + 50)])
    change = generated_change(text, "MAT 1:1")
    new_text, report = apply_changes(text, [change], now_ms=NOW)
    meta = find(new_text, "MAT 1:1")["metadata"]
    assert change.payload.audio_id in meta["attachments"]
    assert meta["selectedAudioId"] == human[0] and meta["selectionTimestamp"] == NOW + 50
    assert report.kept_selection == [change]


@pytest.mark.parametrize("selected,attachments", [
    ("audio-not-in-this-file", {}),                                  # unknown: may be a take still syncing
    ("audio-1-missing", dict([take(1, missing=True, aid="audio-1-missing")])),   # chosen, bytes not here yet
])
def test_doubtful_selections_count_as_human(selected, attachments):
    text = notebook_text([cell("MAT 1:1", "text", attachments=attachments, selected=selected)])
    meta = find(apply_changes(text, [generated_change(text, "MAT 1:1")], now_ms=NOW)[0], "MAT 1:1")["metadata"]
    assert meta["selectedAudioId"] == selected


def test_generated_take_replaces_an_earlier_generated_selection_with_a_newer_timestamp():
    earlier = take(100, generated=True)
    text = notebook_text([cell("MAT 1:1", "text", attachments=dict([earlier]), selected=earlier[0],
                               selectionTimestamp=NOW + 10)])
    change = generated_change(text, "MAT 1:1")
    meta = find(apply_changes(text, [change], now_ms=NOW)[0], "MAT 1:1")["metadata"]
    assert meta["selectedAudioId"] == change.payload.audio_id
    assert meta["selectionTimestamp"] == NOW + 11          # newer than the old one, or the editor's merge drops it


def transcribe(text: str, cid: str, words: str) -> CellChange:
    c = next(c for c in parse_notebook(text).cells if c["metadata"]["id"] == cid)
    return transcription_change(make_cell_ref("files/target/MAT.codex", c), words, model_name="w2v2-bert")


def test_transcription_backfills_initial_import_when_text_had_no_history():
    t = take(100)
    text = notebook_text([cell("MAT 1:1", "<span>old text</span>", attachments=dict([t]))])
    change = transcribe(text, "MAT 1:1", "new <words> & more")
    new_cell = find(apply_changes(text, [change], now_ms=NOW)[0], "MAT 1:1")
    edits = new_cell["metadata"]["edits"]
    assert new_cell["value"] == "new &lt;words&gt; &amp; more"
    assert [(e["type"], e["value"], e["author"]) for e in edits] == [
        ("initial-import", "<span>old text</span>", "unknown"),        # the notebook does not say; not the model
        ("llm-generation", "new &lt;words&gt; &amp; more", "ASR w2v2-bert")]
    assert edits[0]["timestamp"] < edits[1]["timestamp"] == NOW
    assert all(e["editMap"] == ["value"] and e["validatedBy"] == [] for e in edits)
    assert new_cell["metadata"]["attachments"][t[0]]["transcription"] == {
        "content": "new <words> & more", "language": None, "timestamp": NOW}
    assert new_cell["metadata"]["attachments"][t[0]]["updatedAt"] == 100


def test_transcription_without_backfill_when_history_exists_or_text_empty():
    history = [{"editMap": ["value"], "value": "x", "timestamp": NOW + 5, "type": "user-edit", "author": "a",
                "validatedBy": []}]
    text = notebook_text([cell("MAT 1:1", "x", edits=history), cell("MAT 1:2", "")])
    new_text, report = apply_changes(text, [transcribe(text, "MAT 1:1", "y"), transcribe(text, "MAT 1:2", "z")],
                                     now_ms=NOW)
    assert len(report.applied) == 2
    one, two = find(new_text, "MAT 1:1")["metadata"]["edits"], find(new_text, "MAT 1:2")["metadata"]["edits"]
    assert [e["type"] for e in one] == ["user-edit", "llm-generation"] and one[1]["timestamp"] == NOW + 6
    assert [e["type"] for e in two] == ["llm-generation"]


def value_edit(value: str, timestamp: int, kind: str = "user-edit", author: str = "ana") -> dict:
    return {"editMap": ["value"], "value": value, "timestamp": timestamp, "type": kind, "author": author,
            "validatedBy": []}


@pytest.mark.parametrize("history, author", [
    ([value_edit("<span>earlier</span>", NOW + 5)], "ana"),                        # its latest value edit's
    ([value_edit("a", 1, author="ana"), value_edit("b", 2, "llm-generation", "ASR m")], "unknown"),
    ([{"editMap": ["metadata", "cellLabel"], "value": "2", "timestamp": 3, "type": "user-edit",
       "author": "ben", "validatedBy": []}], "unknown"),                          # only a label edit
])
def test_text_no_edit_records_is_kept_under_its_writer_before_asr_replaces_it(history, author):
    text = notebook_text([cell("MAT 1:1", "<span>typed, never recorded</span>", edits=history,
                               attachments=dict([take(100)]))])
    edits = find(apply_changes(text, [transcribe(text, "MAT 1:1", "heard")], now_ms=NOW)[0],
                 "MAT 1:1")["metadata"]["edits"]
    assert edits[:-2] == history
    kept, asr = edits[-2:]
    assert (kept["type"], kept["value"], kept["author"]) == ("initial-import", "<span>typed, never recorded</span>",
                                                             author)
    assert (asr["type"], asr["value"], asr["author"]) == ("llm-generation", "heard", "ASR w2v2-bert")
    assert max(e["timestamp"] for e in history) < kept["timestamp"] < asr["timestamp"]


@pytest.mark.parametrize("value, kind", [(12345, "a number"), ([1, "x"], "a list"), ({"text": "y"}, "an object"),
                                         (True, "true/false")])
def test_a_value_that_is_not_text_is_never_read_as_empty_nor_overwritten(value, kind):
    t = take(100)
    cells = [cell("MAT 1:1", "", attachments=dict([t])), cell("MAT 1:2", "", attachments=dict([t]))]
    cells[0]["value"], cells[1]["value"] = value, None          # null: the editor shows an empty cell
    text = notebook_text(cells)
    book = parse_notebook(text, "files/target/MAT.codex")
    for listed in (VerseFilter(), VerseFilter.from_lists(["MAT 1:1", "MAT 1:2"])):
        selection = codex.select_cells_needing_text([book], listed)
        assert ids(selection) == ["MAT 1:2"]
        (skip,) = selection.skipped
        assert (skip.id, skip.reason) == ("MAT 1:1", skips.VALUE_NOT_TEXT)
        assert skip.detail == f"files/target/MAT.codex cell MAT 1:1: the value is {kind}, not text"
    assert [s.reason for s in codex.select_training_pairs([book]).skipped] == [skips.VALUE_NOT_TEXT, skips.EMPTY_TEXT]
    # Should such a cell reach write-back anyway (its value changed after the job read it), it stays as it is.
    change = CellChange("files/target/MAT.codex", "MAT 1:1", ChangeOp.SET_TRANSCRIPTION,
                        Transcription("heard", "ASR m"), base_value="")
    new_text, report = apply_changes(text, [change], now_ms=NOW)
    assert new_text == text and report.skipped == [(change, f"the cell's value is {kind}, not text")]


def test_validated_text_is_never_replaced():
    history = [{"editMap": ["value"], "value": "approved", "timestamp": 1, "type": "user-edit", "author": "a",
                "validatedBy": [{"username": "reviewer", "isDeleted": False}]}]
    text = notebook_text([cell("MAT 1:1", "approved", edits=history)])
    new_text, report = apply_changes(text, [transcribe(text, "MAT 1:1", "asr")], now_ms=NOW)
    assert new_text == text and report.skipped[0][1] == "the current text is validated"


def test_merge_onto_a_file_a_translator_changed_meanwhile():
    t2, t3 = take(100), take(200)
    job_saw = notebook_text([cell("MAT 1:1", "", attachments=dict([t2])), cell("MAT 1:2", "", attachments=dict([t3])),
                             cell("MAT 1:3", "needs audio")])
    changes = [transcribe(job_saw, "MAT 1:1", "asr one"), transcribe(job_saw, "MAT 1:2", "asr two"),
               generated_change(job_saw, "MAT 1:3")]
    # Meanwhile a translator typed into MAT 1:2, picked a recording for MAT 1:3, and added a new cell.
    newer = json.loads(job_saw)
    newer["cells"][1]["value"] = "typed by hand"
    newer["cells"][1]["metadata"]["edits"] = [{"editMap": ["value"], "value": "typed by hand", "timestamp": NOW - 5,
                                               "type": "user-edit", "author": "ana", "validatedBy": []}]
    human = take(300)
    newer["cells"][2]["metadata"]["attachments"] = dict([human])
    newer["cells"][2]["metadata"]["selectedAudioId"] = human[0]
    newer["cells"].append(cell("MAT 1:4", "brand new cell"))
    newer_text = json.dumps(newer, ensure_ascii=False, indent=2)

    merged, report = apply_changes(newer_text, changes, now_ms=NOW)
    result = json.loads(merged)
    by_id = {c["metadata"]["id"]: c for c in result["cells"]}
    assert by_id["MAT 1:1"]["value"] == "asr one"
    assert by_id["MAT 1:2"]["value"] == "typed by hand"                              # the translator wins
    assert by_id["MAT 1:2"]["metadata"]["edits"][-1]["author"] == "ana"
    assert by_id["MAT 1:3"]["metadata"]["selectedAudioId"] == human[0]                # their selection stays
    assert changes[2].payload.audio_id in by_id["MAT 1:3"]["metadata"]["attachments"]
    assert by_id["MAT 1:4"]["value"] == "brand new cell"
    assert [(c.cell_id, why) for c, why in report.skipped] == [
        ("MAT 1:2", "a translator changed the text since the job read it")]
    assert report.kept_selection == [changes[2]]


def test_changes_to_missing_duplicate_or_deleted_cells_are_reported():
    text = notebook_text([cell("MAT 1:1", ""), cell("MAT 1:1", ""), cell("MAT 1:2", "", data={"deleted": True})])
    tr = Transcription("x", "ASR m")
    changes = [CellChange("files/target/MAT.codex", cid, ChangeOp.SET_TRANSCRIPTION, tr, base_value="")
               for cid in ("MAT 1:1", "MAT 1:2", "MAT 9:9")]
    new_text, report = apply_changes(text, changes, now_ms=NOW)
    assert new_text == text
    assert [why for _, why in report.skipped] == [
        "several cells share this id", "the cell no longer exists", "the cell no longer exists"]
    with pytest.raises(ValueError):
        CellChange("p", "c", ChangeOp.SET_TRANSCRIPTION, tr)              # no base value: refused
    with pytest.raises(TypeError):
        CellChange("p", "c", ChangeOp.ADD_AUDIO, tr, base_value="")


class RacingStore(LocalProjectStore):
    """A local store where a translator saves the notebook just before each of our first ``races`` commits."""

    def __init__(self, root, path: str, edit, races: int = 1):
        super().__init__(root)
        self.path, self.edit, self.races, self.commits = path, edit, races, 0

    def commit(self, actions, message):
        self.commits += 1
        if self.commits <= self.races:
            target = self.root / self.path
            target.write_text(self.edit(target.read_text(encoding="utf-8"), self.commits), encoding="utf-8")
        return super().commit(actions, message)


def translator_edit(text: str, n: int) -> str:
    data = json.loads(text)
    data["cells"][0]["value"] = f"translator edit {n}"
    data["cells"][0]["metadata"]["edits"].append({"editMap": ["value"], "value": f"translator edit {n}",
                                                  "timestamp": NOW + n, "type": "user-edit", "author": "ana",
                                                  "validatedBy": []})
    return json.dumps(data, ensure_ascii=False, indent=2)


def test_commit_retries_on_conflict_and_keeps_the_concurrent_edit(tmp_path):
    path = "files/target/MAT.codex"
    t = take(100)
    start = notebook_text([cell("MAT 1:1", "first"), cell("MAT 1:2", "", attachments=dict([t]))])
    (tmp_path / "files/target").mkdir(parents=True)
    (tmp_path / path).write_text(start, encoding="utf-8")
    store = RacingStore(tmp_path, path, translator_edit)
    change = transcribe(start, "MAT 1:2", "heard")
    report = commit_cell_changes(store, codex.group_changes([change]), "ASR results", retry_delay=0, now_ms=NOW)
    assert report.attempts == 2 and report.commit_id and report.applied == [change]
    final = (tmp_path / path).read_text(encoding="utf-8")
    assert find(final, "MAT 1:1")["value"] == "translator edit 1"
    assert find(final, "MAT 1:2")["value"] == "heard"


def test_commit_gives_up_after_bounded_attempts(tmp_path):
    path = "files/target/MAT.codex"
    start = notebook_text([cell("MAT 1:1", "first"), cell("MAT 1:2", "")])
    (tmp_path / "files/target").mkdir(parents=True)
    (tmp_path / path).write_text(start, encoding="utf-8")
    store = RacingStore(tmp_path, path, translator_edit, races=99)
    with pytest.raises(VersionConflict):
        commit_cell_changes(store, {path: [transcribe(start, "MAT 1:2", "x")]}, "m", max_attempts=3, retry_delay=0)
    assert store.commits == 3
    assert find((tmp_path / path).read_text(encoding="utf-8"), "MAT 1:2")["value"] == ""


def test_commit_leaves_unparsable_and_vanished_notebooks_alone(tmp_path):
    broken = "files/target/BAD.codex"
    (tmp_path / "files/target").mkdir(parents=True)
    (tmp_path / broken).write_text('{"cells": [], "cells": []}', encoding="utf-8")
    store = LocalProjectStore(tmp_path)
    tr = Transcription("x", "ASR m")
    changes = {broken: [CellChange(broken, "a", ChangeOp.SET_TRANSCRIPTION, tr, base_value="")],
               "files/target/GONE.codex": [CellChange("files/target/GONE.codex", "a", ChangeOp.SET_TRANSCRIPTION,
                                                      tr, base_value="")]}
    report = commit_cell_changes(store, changes, "m", retry_delay=0)
    assert report.commit_id is None and not report.applied
    assert sorted(why for _, why in report.skipped) == ["the notebook could not be parsed",
                                                       "the notebook no longer exists"]
    assert (tmp_path / broken).read_text(encoding="utf-8") == '{"cells": [], "cells": []}'


def test_training_pairs_never_include_our_own_output():
    """A generated take, or text a model wrote and nobody validated, is not ground truth."""
    human_take = dict([take(100)])
    generated = {"audio-gen": {**take(200)[1], "isGenerated": True}}
    asr_text = cell("MAT 1:3", "heard", attachments=human_take)
    asr_text["metadata"]["edits"] = [{"editMap": ["value"], "value": "heard", "timestamp": NOW, "type":
                                      "llm-generation", "author": "ASR m", "validatedBy": []}]
    validated = json.loads(json.dumps(asr_text))
    validated["metadata"]["id"] = "MAT 1:4"
    validated["metadata"]["edits"][-1]["validatedBy"] = [{"username": "ana"}]
    nb = codex.parse_notebook(notebook_text([cell("MAT 1:1", "spoken", attachments=human_take),
                                             cell("MAT 1:2", "synthesized", attachments=generated),
                                             asr_text, validated]), "files/target/MAT.codex")
    selection = codex.select_training_pairs([nb])
    assert [c.cell_id for c in selection.cells] == ["MAT 1:1", "MAT 1:4"]
    assert sorted(s.reason for s in selection.skipped) == ["machine-generated text", "only a machine-generated take"]
