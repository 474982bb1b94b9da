"""The AudioFolder exporter on a small project built here: layout, skips with reasons, options, CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codex  # noqa: E402
from gitlab_to_hf_dataset import ExportOptions, cli, explore_project, export_dataset  # noqa: E402
from local_store import LocalProjectStore  # noqa: E402
from preprocess_audio import encode_audio, load_audio, probe_audio  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo_project"
POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 999\n"


def write_audio(root: Path, rel: str, seconds: float = 0.6, freq: float = 330.0) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    encode_audio((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, root / rel)


def att(aid: str, created: int, url: str, deleted: bool = False) -> dict:
    return {"url": url, "type": "audio", "createdAt": created, "updatedAt": created, "isDeleted": deleted,
            "createdBy": "ana", "metadata": {}}


def cell(cid: str, value: str, takes: dict | None = None, selected: str = "", type_: str = "text",
         refs: list[str] | None = None) -> dict:
    meta = {"id": cid, "type": type_, "edits": [], "attachments": takes or {}, "selectedAudioId": selected}
    if refs:
        meta["data"] = {"globalReferences": refs}
    return {"kind": 2, "languageId": "html", "value": value, "metadata": meta}


FILES, POINTERS = ".project/attachments/files/MAT", ".project/attachments/pointers/MAT"
# cell id -> what the export must do with it
EXPECTED_ROWS = {
    "MAT 1:1": ("MAT 1:1", "First & verse"),                              # selected take in files/
    codex.hash_cell_id("MAT 1:2"): ("MAT 1:2", "Second verse"),           # fallback take, bytes only in pointers/
    "MAT 1:6": ("MAT 1:6", "Old layout"),                                 # .project/attachments/MAT/
    "child-a": ("MAT 1:7", "Part one"),                                   # two cells, one reference:
    "child-b": ("MAT 1:7", "Part two"),                                   #   two clips, no overwrite
    "MAT 1:8": ("MAT 1:8", "Deleted selection"),                          # selected take deleted -> older one
}
EXPECTED_SKIPS = {
    ("MAT 1:3", "missing audio"),                                         # only LFS pointers
    ("MAT 1:4", "empty text"),
    ("MAT 1:5", "undecodable audio"),                                     # corrupt bytes
    ("", "the notebook could not be parsed"),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    write_audio(root, f"{FILES}/a1.webm")
    write_audio(root, f"{POINTERS}/a2.mp3", freq=440)
    (root / FILES).mkdir(parents=True, exist_ok=True)
    (root / f"{FILES}/a3.webm").write_bytes(POINTER)
    (root / f"{POINTERS}/a3.webm").write_bytes(POINTER)
    write_audio(root, f"{FILES}/a4.webm")
    (root / f"{FILES}/a5.ogg").write_bytes(b"OggS" + b"\x00" * 300)
    write_audio(root, ".project/attachments/MAT/a6.wav")
    write_audio(root, f"{FILES}/a7.flac")
    write_audio(root, f"{FILES}/a8.m4a")
    write_audio(root, f"{FILES}/a8-old.m4a")
    write_audio(root, f"{FILES}/p1.webm")
    cells = [
        cell("m1", "Matthew 1", type_="milestone"),
        cell("MAT 1:1", "<span>First &amp; verse</span>", {"a1": att("a1", 1, f"{FILES}/a1.webm")}, "a1"),
        cell(codex.hash_cell_id("MAT 1:2"), "Second<br>verse", {"a2": att("a2", 2, f"{FILES}/a2.mp3")},
             refs=["MAT 1:2"]),
        cell("MAT 1:3", "Third", {"a3": att("a3", 3, f"{FILES}/a3.webm")}, "a3"),
        cell("MAT 1:4", "", {"a4": att("a4", 4, f"{FILES}/a4.webm")}),
        cell("MAT 1:5", "Fifth", {"a5": att("a5", 5, f"{FILES}/a5.ogg")}),
        cell("MAT 1:6", "Old layout", {"a6": att("a6", 6, ".project/attachments/MAT/a6.wav")}),
        cell("child-a", "Part one", {"a7": att("a7", 7, f"{FILES}/a7.flac")}, refs=["MAT 1:7"]),
        cell("child-b", "Part two", {"a8": att("a8", 8, f"{FILES}/a8.m4a")}, refs=["MAT 1:7"]),
        cell("MAT 1:8", "Deleted selection", {"a8-old": att("a8-old", 1, f"{FILES}/a8-old.m4a"),
                                              "gone": att("gone", 9, f"{FILES}/gone.webm", deleted=True)}, "gone"),
        cell("p1", "Heading", {"p1": att("p1", 10, f"{FILES}/p1.webm")}, "p1", type_="paratext"),
    ]
    (root / "files/target").mkdir(parents=True)
    (root / "files/target/MAT.codex").write_text(json.dumps({"cells": cells, "metadata": {}}, indent=2))
    (root / "files/target/BAD.codex").write_text('{"cells": [')
    (root / ".project/sourceTexts").mkdir(parents=True)
    (root / ".project/sourceTexts/MAT.source").write_text(json.dumps({"cells": [], "metadata": {}}))
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def check_dataset(out: Path, expected_ids: set[str]) -> list[dict[str, str]]:
    """Read the AudioFolder back with csv and our own decoder, as a trainer would."""
    rows = read_csv(out / "metadata.csv")
    assert list(rows[0]) == ["file_name", "transcription", "cell_id", "reference", "notebook"]
    assert {r["cell_id"] for r in rows} == expected_ids
    assert len({r["file_name"] for r in rows}) == len(rows)
    for row in rows:
        assert row["file_name"].startswith("audio/")
        clip = load_audio(out / row["file_name"], 16000)
        assert clip.shape[0] > 0.3 * 16000
    assert sorted(p.name for p in (out / "audio").iterdir()) == sorted(Path(r["file_name"]).name for r in rows)
    return rows


def test_process_cli_writes_a_standard_audiofolder(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)             # no config.yaml here: the default path is optional
    out = tmp_path / "ds"
    result = CliRunner().invoke(cli, ["process", "--local", str(project), "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Exported 6 clip(s); skipped 4 cell(s)" in result.output
    rows = check_dataset(out, set(EXPECTED_ROWS))
    for row in rows:
        assert (row["reference"], row["transcription"]) == EXPECTED_ROWS[row["cell_id"]]
        assert row["notebook"] == "files/target/MAT.codex"
    by_id = {r["cell_id"]: r["file_name"] for r in rows}
    assert by_id["MAT 1:1"] == "audio/a1.webm" and by_id["MAT 1:8"] == "audio/a8-old.m4a"   # copied as is
    skipped = read_csv(out / "skipped.csv")
    assert {(s["cell_id"], s["reason"]) for s in skipped} == EXPECTED_SKIPS
    assert all(s["notebook"] for s in skipped)
    assert next(s for s in skipped if s["reason"] == "undecodable audio")["detail"].endswith("a5.ogg: "
                                                                                         "is truncated: the Ogg stream "
                                                                                         "has no end-of-stream page")


def test_process_converts_and_limits(project, tmp_path):
    store = LocalProjectStore(project)
    summary = export_dataset(store, ExportOptions(tmp_path / "ds", audio_format="wav", sample_rate=22050,
                                                  max_records=3), progress=False)
    assert summary.records == 3
    rows = read_csv(tmp_path / "ds/metadata.csv")
    assert len(rows) == 3
    for row in rows:
        info = probe_audio(tmp_path / "ds" / row["file_name"])
        assert (info.format, info.sample_rate, info.channels) == ("wav", 22050, 1)


def test_process_refuses_to_mix_with_an_old_dataset(project, tmp_path):
    args = ["process", "--local", str(project), "--output", str(tmp_path / "ds"), "--no-progress"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    second = CliRunner().invoke(cli, args + ["--max-records", "1"])
    assert second.exit_code == 1 and "already holds a dataset" in second.output
    third = CliRunner().invoke(cli, args + ["--max-records", "1", "--overwrite"])
    assert third.exit_code == 0, third.output
    assert len(read_csv(tmp_path / "ds/metadata.csv")) == 1
    assert len(list((tmp_path / "ds/audio").iterdir())) == 1           # the old clips are gone


def test_process_from_the_earlier_workers_config(project, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"source_mode: local\nlocal_repo_path: {project}\n"
                      f"dataset:\n  output_dir: {tmp_path / 'from-config'}\n  audio_dir: clips\n"
                      f"  text_source: value\n  max_records: 0\n")
    result = CliRunner().invoke(cli, ["process", "--config_path", str(config), "--dataset.max_records=2",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "from-config/metadata.csv")
    assert len(rows) == 2 and all(r["file_name"].startswith("clips/") for r in rows)


def test_cli_errors_are_plain_messages(project, tmp_path, monkeypatch):
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text("gitlab:\n  project_id: team/project\ndataset:\n  output_dir: out\n")
    result = CliRunner().invoke(cli, ["process", "--config_path", str(config)])
    assert result.exit_code == 1 and "no GitLab token" in result.output
    result = CliRunner().invoke(cli, ["process", "--local", str(project)])
    assert result.exit_code == 1 and "no output folder" in result.output
    result = CliRunner().invoke(cli, ["explore", "--local", str(project), "stray"])
    assert result.exit_code == 1 and "unexpected argument 'stray'" in result.output
    result = CliRunner().invoke(cli, ["explore", "--config_path", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "missing.yaml" in result.output


def test_explore(project, tmp_path):
    result = CliRunner().invoke(cli, ["explore", "--local", str(project)])
    assert result.exit_code == 0, result.output
    assert "Notebooks: 2 target, 1 source" in result.output
    assert "Cells: 11 (1 milestone, 1 paratext, 9 text); 10 with text" in result.output
    assert "Verse cells with text and audio (dataset pairs): 8" in result.output   # 6 exported + 2 bad audio
    assert "Problems (1):\n  - files/target/BAD.codex is not valid notebook JSON" in result.output
    survey = explore_project(LocalProjectStore(project))
    assert survey.cells_with_take == 10 and survey.selected_takes == 3 and survey.fallback_takes == 7
    assert survey.files_by_format["webm"] == 5 and survey.files_by_location["pointers/"] == 2
    assert survey.takes_without_file == 0         # a3 has files, they are just pointers (found on download)


@pytest.mark.skipif(not DEMO.is_dir(), reason="examples/demo_project not generated")
def test_demo_project_exports_every_recorded_verse(tmp_path):
    notebooks = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(DEMO.glob("files/target/*.codex"))]
    expected = set()
    for nb in notebooks:
        for c in nb["cells"]:
            live = [k for k, a in (c["metadata"].get("attachments") or {}).items()
                    if a.get("type") == "audio" and not a.get("isDeleted") and not a.get("isMissing")]
            if c["metadata"].get("type") == "text" and codex.cell_text(c) and live:
                expected.add(c["metadata"]["id"])
    assert expected
    summary = export_dataset(LocalProjectStore(DEMO), ExportOptions(tmp_path / "ds"), progress=False)
    assert summary.records == len(expected)
    check_dataset(tmp_path / "ds", expected)


try:        # the fake GitLab of tests/gitlab_fake (another module's fixtures); skip only this test without it
    from gitlab_fixtures import gitlab_server, gitlab_token  # noqa: F401 - fixtures
except ImportError:
    gitlab_server = None


@pytest.mark.skipif(gitlab_server is None, reason="tests/gitlab_fixtures.py not available")
def test_process_from_gitlab(gitlab_server, tmp_path, monkeypatch):  # noqa: F811 - fixture
    """On GitLab files/ never exists (git-ignored) and pointers/ are LFS: the same code must find the audio."""
    root = tmp_path / "codex"
    (root / ".project").mkdir(parents=True)
    (root / ".gitattributes").write_text("".join(f"*.{e} filter=lfs diff=lfs merge=lfs -text\n"
                                                 for e in ("webm", "wav", "mp3", "m4a", "ogg")))
    (root / ".gitignore").write_text(".project/attachments/files/**\n")
    write_audio(root, f"{FILES}/g1.webm")
    (root / POINTERS).mkdir(parents=True)
    (root / f"{POINTERS}/g1.webm").write_bytes(codex.lfs_pointer_for((root / f"{FILES}/g1.webm").read_bytes()))
    write_audio(root, f"{POINTERS}/g2.wav", freq=500)                    # real bytes in pointers/: stored as LFS
    (root / f"{POINTERS}/g3.webm").write_bytes(POINTER)                 # a pointer whose object never arrived
    cells = [cell("MAT 1:1", "One", {"g1": att("g1", 1, f"{FILES}/g1.webm")}, "g1"),
             cell("MAT 1:2", "Two", {"g2": att("g2", 2, f"{FILES}/g2.wav")}),
             cell("MAT 1:3", "Three", {"g3": att("g3", 3, f"{FILES}/g3.webm")})]
    (root / "files/target").mkdir(parents=True)
    (root / "files/target/MAT.codex").write_text(json.dumps({"cells": cells, "metadata": {}}, indent=2))
    gitlab_server.add_project("bible/export", folder=root)
    config = tmp_path / "config.yaml"
    config.write_text(f"gitlab:\n  server_url: {gitlab_server.url}\n  access_token: {gitlab_server.token}\n"
                      f"  project_id: bible/export\ndataset:\n  output_dir: {tmp_path / 'ds'}\n")
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["process", "--config_path", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert gitlab_server.token not in result.output
    rows = check_dataset(tmp_path / "ds", {"MAT 1:1", "MAT 1:2"})
    assert sorted(r["file_name"] for r in rows) == ["audio/g1.webm", "audio/g2.wav"]
    assert [(s["cell_id"], s["reason"]) for s in read_csv(tmp_path / "ds/skipped.csv")] == [
        ("MAT 1:3", "missing audio")]


def test_a_failed_download_skips_one_clip(project, tmp_path):
    class Flaky(LocalProjectStore):
        def download(self, path, dest):
            if "a1" in path:
                raise OSError("connection reset")
            return super().download(path, dest)

    summary = export_dataset(Flaky(project), ExportOptions(tmp_path / "ds"), progress=False)
    assert summary.records == len(EXPECTED_ROWS) - 1
    assert [(s.id, s.reason) for s in summary.skipped if s.reason == "download failed"] == [
        ("MAT 1:1", "download failed")]


def test_output_paths_must_stay_inside_the_output_folder(project, tmp_path):
    from gitlab_to_hf_dataset import ExportError

    with pytest.raises(ExportError, match="inside the output folder"):
        export_dataset(LocalProjectStore(project), ExportOptions(tmp_path / "ds", audio_dir="../.."), progress=False)
