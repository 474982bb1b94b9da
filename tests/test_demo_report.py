"""The demo's HTML report (scripts/demo_report.py) on a small finished project built with the repo's own APIs.

The project is a copy of examples/demo_project in which finished jobs, their metrics, a generated take and
cells written by ASR are put through ``jobs``, ``handlers.common.MetricsLog`` and ``codex`` -- no training.
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DEMO = ROOT / "examples" / "demo_project"
for path in (ROOT, SCRIPTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import codex  # noqa: E402
import demo_report  # noqa: E402
import make_demo_project  # noqa: E402
from handlers.common import ASR_METRICS_COLUMNS, TTS_METRICS_COLUMNS, MetricsLog, job_paths  # noqa: E402
from jobs import JobState, claim_job, finish_job, read_manifest  # noqa: E402
from local_store import LocalProjectStore  # noqa: E402
from storage import FileAction  # noqa: E402

pytestmark = pytest.mark.skipif(not DEMO.is_dir(), reason="examples/demo_project not generated")

HOSTILE = "<script>alert(1)</script>"
# GEN 1:13 reads "There was evening and there was morning, a third day."; normalised (lower case, no
# punctuation) that is the 51 characters below, and the transcript drops one of them.
GEN_1_13_NORMALISED = "there was evening and there was morning a third day"
GEN_1_13_HEARD = "there was evening and there was morning a third dy"
# TTS training: 4 epochs, val_dur_loss missing in epoch 3 (a gap in its line).
TTS_ROWS = [dict(train_total_loss=60 - 10 * e, train_diff_loss=40 - 5 * e, train_dur_loss=1.0 / e,
                 train_prior_loss=20 - e, val_total_loss=62 - 9 * e, val_diff_loss=41 - 5 * e,
                 val_dur_loss=None if e == 3 else 0.5, val_prior_loss=21 - e) for e in range(1, 5)]


@dataclass(frozen=True)
class Finished:
    """The finished test project and what was put into it."""

    project: Path
    job_ids: dict[str, str]       # "tts/training" -> job id
    take_bytes: bytes
    take_path: str                # pointers/ path of the generated take


def _finish(store: LocalProjectStore, job, work: Path, rows: list[dict] | None, columns) -> None:
    """Claim and complete a job the way the worker does, with a metrics CSV when ``rows`` is given."""
    lease = claim_job(store, job, worker_id="test-worker", lease_seconds=600)
    extra = []
    if rows is not None:
        metrics = MetricsLog(work / f"{job.job_id}.csv", columns)
        for epoch, values in enumerate(rows, 1):
            metrics.append(epoch, **values)
        extra.append(FileAction.create(job_paths({"job_id": job.job_id}).metrics, metrics.path.read_bytes()))
    finish_job(lease, JobState.COMPLETED, result={"epochs": len(rows or [])}, extra=extra)


def _add_generated_take(store: LocalProjectStore, data: bytes) -> str:
    """Attach ``data`` to GEN 1:4 (text, no recording) as a TTS take, as write_generated_takes does."""
    notebook = codex.load_notebook(store, "files/target/GEN.codex")
    cell = next(c for c in codex.select_cells_needing_audio([notebook]).cells if c.reference == "GEN 1:4")
    audio_id = codex.new_audio_id()
    change = codex.audio_take_change(cell, audio_id=audio_id, extension="webm", created_by="TTS StableTTS",
                                     metadata={"mimeType": "audio/webm", "sizeBytes": len(data), "durationSec": 1.5})
    files_path, pointers_path = codex.attachment_paths("GEN", f"{audio_id}.webm")
    files = [FileAction.create(pointers_path, data), FileAction.create(files_path, data)]
    codex.commit_cell_changes(store, codex.group_changes([change]), "TTS: generated audio", extra_actions=files)
    return pointers_path


def _transcribe(store: LocalProjectStore, texts: dict[str, str]) -> None:
    """Write ``texts`` (reference -> text) into GEN cells that have a recording and no text, as ASR does."""
    notebook = codex.load_notebook(store, "files/target/GEN.codex")
    cells = {c.reference: c for c in codex.select_cells_needing_text([notebook]).cells}
    changes = [codex.transcription_change(cells[ref], text, model_name="W2V2BERT") for ref, text in texts.items()]
    report = codex.commit_cell_changes(store, codex.group_changes(changes), "ASR W2V2BERT: transcriptions")
    assert len(report.applied) == len(texts)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    base = tmp_path_factory.mktemp("report")
    project = base / "project"
    shutil.copytree(DEMO, project)
    store = LocalProjectStore(project)
    jobs = {f"{j.job_type}/{j.mode}": j for j in read_manifest(store).jobs}
    _finish(store, jobs["tts/training"], base, TTS_ROWS, TTS_METRICS_COLUMNS)
    _finish(store, jobs["asr/training"], base, None, ASR_METRICS_COLUMNS)          # its metrics got lost
    _finish(store, jobs["asr/training_and_inference"], base,                        # one epoch only
            [dict(train_total_loss=9.5, val_total_loss=5.25, val_wer=1.0, val_cer=0.75)], ASR_METRICS_COLUMNS)
    take_bytes = next((project / ".project/attachments/files/GEN").glob("*.webm")).read_bytes()
    take_path = _add_generated_take(store, take_bytes)
    _transcribe(store, {"GEN 1:6": HOSTILE, "GEN 1:13": GEN_1_13_HEARD, "GEN 1:19": "a fourth day"})
    return Finished(project, {kind: job.job_id for kind, job in jobs.items()}, take_bytes, take_path)


def _references() -> dict[str, str]:
    references = make_demo_project.spoken_verses()
    del references["GEN 1:19"]                  # a verse without a reference shows "—"
    return references


@pytest.fixture(scope="module")
def report(finished, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("out") / "report.html"
    assert demo_report.write_report(finished.project, out, references=_references()) == out
    return out.read_text(encoding="utf-8")


def _job_section(page: str, job_id: str) -> str:
    """The part of the training curves that belongs to one job."""
    start = page.index(f"<h3>{job_id} ")
    end = min((i for i in (page.find("<h3>", start + 4), page.find("<h2>", start)) if i >= 0), default=len(page))
    return page[start:end]


def _series(section: str, name: str) -> tuple[list[int], int]:
    """Points per polyline and the number of dots of one series of a chart section."""
    group = re.search(rf'<g class="series" data-series="{name}">(.*?)</g>', section, re.S).group(1)
    polylines = [len(p.split()) for p in re.findall(r'<polyline points="([^"]*)"', group)]
    return polylines, group.count("<circle")


def _asr_rows(page: str) -> dict[str, list[str]]:
    """verse -> the cells of its row in the transcription table (unescaped)."""
    table = page[page.index('<table class="asr">'):]
    rows = re.findall(r"<tr><td>(.*?)</td></tr>", table[:table.index("</table>")], re.S)
    return {cells[0]: cells for cells in (list(map(html.unescape, row.split("</td><td>"))) for row in rows)}


def test_a_loss_line_has_a_point_per_epoch_row(report, finished):
    section = _job_section(report, finished.job_ids["tts/training"])
    assert "<svg" in section and "lowest val_total_loss 26 at epoch 4" in section
    for name in ("train_total_loss", "val_total_loss", "train_dur_loss", "val_prior_loss"):
        assert _series(section, name) == ([len(TTS_ROWS)], len(TTS_ROWS))
    # epoch 3 has no val_dur_loss: the line stops there and the last epoch is a lone dot
    assert _series(section, "val_dur_loss") == ([2], 3)
    for tick in ("1", "2", "3", "4"):
        assert f'text-anchor="middle">{tick}</text>' in section
    assert ">epoch</text>" in section and ">loss</text>" in section


def test_a_single_epoch_is_a_dot_with_ticks(report, finished):
    section = _job_section(report, finished.job_ids["asr/training_and_inference"])
    assert "1 epoch(s)" in section
    assert _series(section, "val_cer") == ([], 1)
    assert "error rates" in section and 'text-anchor="middle">1</text>' in section


def test_a_missing_metrics_file_says_so(report, finished):
    section = _job_section(report, finished.job_ids["asr/training"])
    assert "no metrics" in section and "training_metrics.csv not found" in section and "<svg" not in section


def test_jobs_table_lists_every_job(report, finished):
    for job_id in finished.job_ids.values():
        assert f"<td>{job_id}</td>" in report
    assert report.count('class="state-completed"') == 3


def test_the_player_embeds_the_generated_take(report, finished):
    sources = re.findall(r'<audio controls[^>]* src="([^"]+)"', report)
    assert len(sources) == 1
    mime, _, payload = html.unescape(sources[0]).partition(";base64,")
    assert mime == "data:audio/webm"
    assert base64.b64decode(payload, validate=True) == finished.take_bytes
    caption = re.search(r"<figcaption>(.*?)</figcaption>", report).group(1)
    assert caption.startswith("<b>GEN 1:4</b> ")
    assert html.unescape(caption).endswith(make_demo_project.GEN_WEB[4])


def test_takes_over_the_cap_are_linked(finished, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_report, "MAX_EMBEDDED_BYTES", 100)
    out = tmp_path / "deep" / "report.html"
    page = demo_report.write_report(finished.project, out).read_text(encoding="utf-8")
    assert "base64," not in page and "linked, not embedded" in page
    link = html.unescape(re.search(r'<audio controls[^>]* src="([^"]+)"', page).group(1))
    assert (out.parent / urllib.parse.unquote(link)).read_bytes() == finished.take_bytes


def test_asr_text_is_paired_with_its_reference_and_scored(report):
    rows = _asr_rows(report)
    assert set(rows) == {"GEN 1:6", "GEN 1:13", "GEN 1:19"}
    verse, notebook, heard, spoken, cer = rows["GEN 1:13"]
    assert (notebook, heard, spoken) == ("files/target/GEN.codex", GEN_1_13_HEARD, make_demo_project.GEN_WEB[13])
    assert len(GEN_1_13_NORMALISED) == 51 and cer == f"{1 / 51:.3f}"
    assert rows["GEN 1:19"][3:] == ["—", "—"]
    assert rows["GEN 1:6"][3] == make_demo_project.GEN_WEB[6]


def test_project_text_is_escaped(report):
    assert "<script" not in report.lower()
    assert html.escape(HOSTILE) in report


def test_without_references_nothing_is_scored(finished, tmp_path):
    page = demo_report.write_report(finished.project, tmp_path / "report.html").read_text(encoding="utf-8")
    rows = _asr_rows(page)
    assert len(rows) == 3 and all(cells[3:] == ["—", "—"] for cells in rows.values())
    assert '<tr class="total">' not in page


def test_character_error_rate_ignores_case_and_punctuation():
    assert demo_report.normalize_text(make_demo_project.GEN_WEB[13]) == GEN_1_13_NORMALISED
    assert demo_report.character_error_rate("There was evening, a day.", "there was evening a day") == 0.0
    assert demo_report.character_error_rate("!!!", "anything") is None


def test_nice_axis_rounds_ticks():
    axis = demo_report.nice_axis(26.02, 65.45)
    assert axis.ticks == (20, 30, 40, 50, 60, 70) and axis.label(30) == "30"
    flat = demo_report.nice_axis(1.0, 1.0)
    assert flat.low < 1.0 < flat.high and flat.decimals >= 1


def test_spoken_verses_need_no_espeak():
    code = "import make_demo_project as m; v = m.spoken_verses(); print(len(v), v['JHN 1:1'])"
    env = {**os.environ, "PATH": "/nonexistent"}     # no espeak-ng to be found
    out = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == f"40 {make_demo_project.JHN_SYNODAL[1]}"


def test_run_demo_prints_the_table_even_when_the_report_fails(finished, tmp_path, monkeypatch, capsys):
    import run_demo

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    print(run_demo.job_table(finished.project))
    monkeypatch.setattr(run_demo, "write_report", broken)
    run_demo.write_demo_report(finished.project, tmp_path / "report.html")
    captured = capsys.readouterr()
    assert finished.job_ids["tts/training"] in captured.out
    assert "Could not write the HTML report" in captured.err and "disk full" in captured.err


def test_the_check_says_how_well_the_model_knows_the_verses_it_was_trained_on():
    rows = [{"cer": "0.1000", "trained_on": "yes"}, {"cer": "0.3000", "trained_on": "yes"},
            {"cer": "0.9000", "trained_on": "no"}, {"cer": "", "trained_on": "yes"},
            {"cer": "0.5", "trained_on": "unknown"}]
    rows[0].update(reference="GEN 1:1", verse_text="In the beginning", asr_text="in the begining")
    line = demo_report.learnt_line(rows)
    assert line.startswith("<p>Mean CER on the verses it was trained on (2): 0.200; on the others (1): 0.900.</p>")
    assert "<tr><td>GEN 1:1</td><td>0.1000</td><td>In the beginning</td><td>in the begining</td></tr>" in line
    assert line.count("<tr><td>") == 3   # the trained takes only
    assert demo_report.learnt_line([{"cer": "0.5", "trained_on": "unknown"}]) == ""


def test_timing_summary_gives_the_mean_ratio_its_range_and_the_correlation():
    timings = [demo_report.VerseTiming("GEN 1:1", 2.0, 2.2), demo_report.VerseTiming("GEN 1:2", 4.0, 3.6),
               demo_report.VerseTiming("GEN 1:3", 6.0, 6.0)]
    assert demo_report.timing_summary(timings) == ("3 verse(s): predicted / recorded length 1.00 on average "
                                                   "(0.90-1.10), correlation 0.99")
    assert demo_report.timing_summary(timings[:1]) == \
        "1 verse(s): predicted / recorded length 1.10 on average (1.10-1.10)"
    assert demo_report.timing_summary([]) == "no recorded verse to compare"


def test_the_voice_timing_compares_each_recorded_verse_with_the_trained_voice(finished, tmp_path, monkeypatch):
    """A random tiny voice in the TTS training job's folder: every verse with text and a recording is timed."""
    import torch

    from StableTTS import build_model, save_checkpoint
    from StableTTS.text import RomanizedFrontend

    project = tmp_path / "project"
    shutil.copytree(finished.project, project)
    torch.manual_seed(0)
    checkpoint = project / job_paths({"job_id": finished.job_ids["tts/training"]}).inside("checkpoint", "best_model.pt")
    save_checkpoint(build_model("tiny", n_vocab=401), checkpoint,
                    frontend=RomanizedFrontend("eng", romanizer="latin").to_dict())
    recorded = {ref for ref, _ in make_demo_project.spoken_verses().items()}
    timings = demo_report.voice_timings(project, checkpoint)
    refs = [t.reference for t in timings]
    assert len(refs) == len(set(refs)) and set(refs) < recorded and len(refs) >= 20   # verses with text and a take
    assert not {"GEN 1:6", "GEN 1:13", "GEN 1:19", "GEN 1:4"} & set(refs)               # no text, or no take
    assert all(1.0 < t.recorded < 20.0 and t.predicted > 0 for t in timings)
    monkeypatch.setattr(demo_report, "voice_timings", lambda *args: timings)   # measured once: mels cost seconds
    page = (demo_report.write_report(project, tmp_path / "report.html")).read_text(encoding="utf-8")
    section = page[page.index("<h2>Voice timing</h2>"):page.index("<h2>Transcriptions</h2>")]
    assert f"<h3>{finished.job_ids['tts/training']}</h3>" in section
    assert f"{len(timings)} verse(s): predicted / recorded length" in section
    assert section.count("<tr><td>") == len(timings)
