"""Checks on the committed demo project (examples/demo_project/).

The project is generated once by scripts/make_demo_project.py (which needs espeak-ng);
these tests only read the committed files, so they need neither espeak-ng nor a GPU.
"""
from __future__ import annotations

import hashlib
import html
import json
import re
import uuid
from pathlib import Path

import av
import pytest
import yaml

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo_project"
BOOKS = ("GEN", "JHN")
MAX_BYTES = 5 * 1024 * 1024
LFS_POINTER = re.compile(r"\Aversion https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n\Z")
AUDIO_ID = re.compile(r"\Aaudio-([0-9a-z-]+)-(\d{13})-([0-9a-z]{9})\Z")

pytestmark = pytest.mark.skipif(not DEMO.is_dir(), reason="examples/demo_project not generated")


def load_json(rel: str):
    """Parse one JSON file of the demo project."""
    return json.loads((DEMO / rel).read_text(encoding="utf-8"))


def target(book: str) -> dict:
    """The .codex notebook of a book."""
    return load_json(f"files/target/{book}.codex")


def verse_cells(book: str) -> list[dict]:
    """The verse (type text) cells of a target notebook."""
    return [c for c in target(book)["cells"] if c["metadata"].get("type") == "text"]


def plain_text(value: str) -> str:
    """Cell HTML to the text a model sees: tags stripped, entities decoded, spaces folded."""
    text = html.unescape(re.sub(r"<[^>]*>", " ", value))
    return " ".join(text.replace("\xa0", " ").split())


def current_take(meta: dict) -> str | None:
    """The editor's rule: selectedAudioId when set and live, else the newest live take."""
    live = {k: a for k, a in (meta.get("attachments") or {}).items()
            if a.get("type") == "audio" and not a.get("isDeleted")}
    selected = meta.get("selectedAudioId")
    if selected and selected in live:
        return selected
    if not live:
        return None
    return max(live, key=lambda k: live[k]["createdAt"])


def hash_uuid(old_id: str) -> str:
    """The editor's id migration (SHA-256 of the old id, 8-4-4-4-12)."""
    h = hashlib.sha256(old_id.encode()).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def all_attachments():
    """(book, cell metadata, attachment id, attachment) for every attachment."""
    for book in BOOKS:
        for cell in verse_cells(book):
            for aid, att in (cell["metadata"].get("attachments") or {}).items():
                yield book, cell["metadata"], aid, att


def test_hash_uuid_matches_the_documented_example():
    assert hash_uuid("MAT 1:1") == "5e7dadd4-9879-026e-82d9-80337922faad"


@pytest.mark.parametrize("book", BOOKS)
def test_notebooks_parse_and_pair(book):
    tgt = target(book)
    src = load_json(f".project/sourceTexts/{book}.source")
    for nb in (tgt, src):
        assert isinstance(nb["cells"], list) and isinstance(nb["metadata"], dict)
        first = nb["cells"][0]
        assert first["metadata"]["type"] == "milestone"
        assert first["value"] == {"GEN": "Genesis 1", "JHN": "John 1"}[book]
        assert any(c["metadata"]["type"] == "paratext" and c["kind"] == 1 for c in nb["cells"])
    assert [c["metadata"]["id"] for c in tgt["cells"]] == [c["metadata"]["id"] for c in src["cells"]]
    assert all(plain_text(c["value"]) for c in src["cells"])   # the source is complete


@pytest.mark.parametrize("book", BOOKS)
def test_verse_cells_shape_and_history(book):
    cells = verse_cells(book)
    assert len(cells) == 20
    for n, cell in enumerate(cells, start=1):
        meta = cell["metadata"]
        assert (cell["kind"], cell["languageId"], meta["cellLabel"]) == (2, "html", str(n))
        assert meta["data"]["globalReferences"] == [f"{book} 1:{n}"]
        if cell["value"]:
            assert cell["value"].startswith(("<span>", "<p>"))
            assert meta["edits"][0]["type"] == "initial-import"
            assert meta["edits"][-1]["value"] == cell["value"]
            assert all(e["editMap"] == ["value"] for e in meta["edits"])
        else:
            assert meta["edits"] == []


def test_html_exercises_entities():
    values = " ".join(c["value"] for b in BOOKS for c in target(b)["cells"])
    for entity in ("&nbsp;", "&amp;", "&#39;", "&quot;", "<p>", "<span>"):
        assert entity in values


def test_id_styles():
    assert all(c["metadata"]["id"] == f"GEN 1:{n}" for n, c in enumerate(verse_cells("GEN"), start=1))
    randoms = 0
    for n, cell in enumerate(verse_cells("JHN"), start=1):
        cid = cell["metadata"]["id"]
        if cid != hash_uuid(f"JHN 1:{n}"):
            assert uuid.UUID(cid).version == 4
            randoms += 1
    assert 1 <= randoms <= 2


def test_attachments_decode_as_editor_recordings():
    seen = 0
    for book, meta, aid, att in all_attachments():
        match = AUDIO_ID.match(aid)
        slug = meta["id"].lower().replace(" ", "-").replace(":", "-")
        assert match and match.group(1) == slug and int(match.group(2)) == att["createdAt"], aid
        assert att["url"] == f".project/attachments/files/{book}/{aid}.webm"
        assert att["type"] == "audio" and isinstance(att["isDeleted"], bool)
        assert att["updatedAt"] >= att["createdAt"]
        md = att["metadata"]
        path = DEMO / att["url"]
        assert md["mimeType"] == "audio/webm" and md["sizeBytes"] == path.stat().st_size
        assert (md["sampleRate"], md["channels"], att["validatedBy"]) == (48000, 1, [])
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            ctx = stream.codec_context
            assert (ctx.name, ctx.sample_rate, ctx.channels) == ("opus", 48000, 1)
            samples = sum(frame.samples for frame in container.decode(stream))
        assert abs(samples / 48000 - md["durationSec"]) < 0.1
        assert md["bitrateKbps"] == pytest.approx(md["sizeBytes"] * 8 / md["durationSec"] / 1000, abs=1)
        seen += 1
    assert seen >= 30


def test_lfs_pointers_match_files():
    files = {p.relative_to(DEMO / ".project/attachments/files") for p in (DEMO / ".project/attachments/files").rglob("*") if p.is_file()}
    pointers = {p.relative_to(DEMO / ".project/attachments/pointers") for p in (DEMO / ".project/attachments/pointers").rglob("*") if p.is_file()}
    assert files and files == pointers
    for rel in pointers:
        match = LFS_POINTER.match((DEMO / ".project/attachments/pointers" / rel).read_text())
        assert match, rel
        data = (DEMO / ".project/attachments/files" / rel).read_bytes()
        assert match.group(1) == hashlib.sha256(data).hexdigest() and int(match.group(2)) == len(data)
    urls = {Path(att["url"]).relative_to(".project/attachments/files") for _, _, _, att in all_attachments()}
    assert urls == files   # no orphan recordings, no missing ones


def test_take_variety_per_book():
    for book in BOOKS:
        cells = [c["metadata"] for c in verse_cells(book)]
        selected = [m for m in cells if m.get("selectedAudioId")]
        unselected = [m for m in cells if m.get("attachments") and not m.get("selectedAudioId")]
        assert selected and unselected
        deleted = [m for m in cells if any(a["isDeleted"] for a in m["attachments"].values())]
        assert len(deleted) == 1 and current_take(deleted[0]) is not None
        old, new = sorted(deleted[0]["attachments"].values(), key=lambda a: a["createdAt"])
        assert old["isDeleted"] and not new["isDeleted"]
        # a cell whose selection is not simply the newest take
        multi = [m for m in cells if len([a for a in m["attachments"].values() if not a["isDeleted"]]) == 2]
        newest = [max(m["attachments"], key=lambda k: m["attachments"][k]["createdAt"]) for m in multi]
        assert any(m["selectedAudioId"] != n for m, n in zip(multi, newest))
        assert any(m["selectedAudioId"] == n for m, n in zip(multi, newest))


def test_inference_work_exists():
    text_no_take = take_no_text = 0
    for book in BOOKS:
        for cell in verse_cells(book):
            has_text = bool(plain_text(cell["value"]))
            has_take = current_take(cell["metadata"]) is not None
            text_no_take += has_text and not has_take
            take_no_text += has_take and not has_text
    assert text_no_take >= 4 and take_no_text >= 4


def test_manifest_has_one_pending_job_per_kind():
    manifest = yaml.safe_load((DEMO / "gpu_jobs/manifest.yaml").read_text())
    assert manifest["version"] == 1
    jobs = manifest["jobs"]
    assert len(jobs) == 6 and len({j["job_id"] for j in jobs}) == 6
    kinds = {(j["job_type"], j["mode"]) for j in jobs}
    assert kinds == {(t, m) for t in ("tts", "asr") for m in ("training", "inference", "training_and_inference")}
    by_kind = {(j["job_type"], j["mode"]): j for j in jobs}
    order = [j["job_id"] for j in jobs]
    for job in jobs:
        assert re.fullmatch(r"[0-9a-z]+_[0-9a-z]+", job["job_id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", job["submitted_at"])
        assert job["model"]["type"] == {"tts": "StableTTS", "asr": "W2V2BERT"}[job["job_type"]]
        assert job["model"]["preset"] == {"tts": "tiny", "asr": "demo"}[job["job_type"]] and job["canceled"] is False
        assert ("epochs" in job) == (job["mode"] != "inference")
        if job["mode"] != "inference":  # a schedule that learns the demo in minutes (issue 17), not 1 step an epoch
            assert {k: job[k] for k in ("epochs", "batch_size", "learning_rate")} == \
                {"tts": {"epochs": 30, "batch_size": 4, "learning_rate": 0.002},
                 "asr": {"epochs": 40, "batch_size": 4, "learning_rate": 0.004}}[job["job_type"]]
    assert [j["submitted_at"] for j in jobs] == sorted(j["submitted_at"] for j in jobs)
    for job_type, path in (("tts", "checkpoint/best_model.pt"), ("asr", "model/asr_model.pth.tar")):
        trainer = by_kind[(job_type, "training")]
        user = by_kind[(job_type, "inference")]
        assert user["model"]["base_checkpoint"] == f"gpu_jobs/job_{trainer['job_id']}/{path}"
        assert order.index(trainer["job_id"]) < order.index(user["job_id"])
    refs = [j["voice_reference"] for j in jobs if "voice_reference" in j]
    assert len(refs) == 1 and (DEMO / refs[0]).is_file() and "/pointers/" in refs[0]
    assert any(j["job_type"] == "tts" and "voice_reference" not in j for j in jobs)
    assert not list((DEMO / "gpu_jobs").glob("job_*"))   # all pending


def test_project_files():
    assert load_json(".project/comments.json") == []
    meta = load_json("metadata.json")
    assert meta["format"] == "scripture burrito" and meta["projectName"]
    assert {lang["projectStatus"] for lang in meta["languages"]} == {"source", "target"}
    attrs = (DEMO / ".gitattributes").read_text()
    for ext in ("wav", "mp3", "m4a", "ogg", "webm"):
        assert f"*.{ext} filter=lfs diff=lfs merge=lfs -text" in attrs.splitlines()
    assert ".project/attachments/files/**" in (DEMO / ".gitignore").read_text().splitlines()


def test_demo_is_small():
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < MAX_BYTES


def test_the_demo_asr_preset_sits_between_tiny_and_small():
    """The demo's transcriber: big enough to learn the demo in minutes; `tiny` stays what the unit tests use."""
    from asr.model import PRESETS

    width = {name: PRESETS[name]["hidden_size"] for name in ("tiny", "demo", "small")}
    assert width == {"tiny": 32, "demo": 64, "small": 256}
    assert PRESETS["tiny"]["num_hidden_layers"] == PRESETS["demo"]["num_hidden_layers"] == 2
