"""bench/gpu_run.py, the prepared GPU run: its dry run (tiny sizes, CPU, the same code paths) runs here in
`make test`, so the script a GPU machine gets for a few minutes cannot rot; its deadline and OOM handling
are checked with a fake clock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_run  # noqa: E402


@pytest.mark.slow  # about a minute on a loaded 2-core runner; `make test` runs it (it deselects nothing)
def test_dry_run_measures_every_section_and_prints_one_table(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_run.py"), "--dry-run", "--json-out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for section in gpu_run.SECTIONS:
        rows = [line for line in table if line.split("|")[1].strip() == section]
        assert len(rows) >= 2, f"no rows for {section}"  # its measurements and its line in the section summary
    assert "Goal: New Testament (7,950 verses)" in done.stdout

    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {r["section"] for r in rows} == set(gpu_run.SECTIONS)
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    assert all(r["rate"] > 0 for r in rows)
    configs = " / ".join(r["config"] for r in rows)
    for expected in ("upstream-style", "mel + Vocos", "fp32", "bf16", "per-file loop", "length-bucketed",
                     "gradient checkpointing on", "compiled"):
        assert expected in configs
    assert [s["status"] for s in report["sections"]] == ["ok"] * len(gpu_run.SECTIONS)
    assert report["env"]["torch"] == torch.__version__ and report["env"]["dry_run"] is True
    compiled = next(r for r in rows if r["section"] == "tts-compiled")
    assert "|mel - eager| mean 0.0e+00, max 0.0e+00" in compiled["note"]  # the tracing-only backend changes nothing
    assert report["goals"]["nt_goal_met"] in (True, False)


class FakeTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def section_under(clock: gpu_run.Clock, name: str = "tts-synthesis") -> gpu_run.Section:
    report = gpu_run.Report({})
    record = gpu_run.SectionRecord(name)
    report.sections.append(record)
    return gpu_run.Section(report, record, clock, torch.device("cpu"))


def test_clock_shares_the_time_left_and_unused_time_goes_to_later_sections():
    now = FakeTime()
    clock = gpu_run.Clock(100.0, gpu_run.SECTIONS, now=now)
    weights = gpu_run.WEIGHTS
    first = clock.start_section("tts-synthesis")
    assert first == pytest.approx(100.0 * weights["tts-synthesis"] / sum(weights.values()))
    now.t = 5.0  # the first section used 5 s of its share
    second = clock.start_section("tts-training")
    rest = sum(weights.values()) - weights["tts-synthesis"]
    assert second == pytest.approx(95.0 * weights["tts-training"] / rest)
    assert clock.left() == pytest.approx(second)
    now.t = 1_000.0
    assert clock.left() < 0 and clock.global_left() < 0


def test_a_configuration_that_runs_out_of_memory_or_time_is_marked_and_the_run_goes_on():
    now = FakeTime()
    clock = gpu_run.Clock(100.0, gpu_run.SECTIONS, now=now)
    clock.start_section("tts-synthesis")
    section = section_under(clock)

    def oom() -> dict:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    def broken() -> dict:
        raise RuntimeError("first line\nsecond line")

    assert section.measure("batch 128", oom) is None
    assert section.measure("batch 256", broken) is None
    row = section.measure("batch 64", lambda: {"rate": 30.0, "unit": "verses/s"})
    assert row is not None and row.rate == 30.0
    assert section.measure("batch 512", lambda: {"rate": 1.0}, need_s=clock.left() + 1) is None
    now.t = 99.0  # past the section's share
    assert section.measure("fp32", lambda: {"rate": 1.0}) is None
    statuses = [(r.config, r.status) for r in section.report.rows]
    assert statuses == [("batch 128", "OOM"), ("batch 256", "error"), ("batch 64", "ok"), ("batch 512", "cut"),
                        ("fp32", "cut")]
    assert section.report.rows[1].note == "RuntimeError: first line"
    oom_line = next(line for line in section.report.table().splitlines() if "batch 128" in line)
    assert [c.strip() for c in oom_line.split("|")][1:3] == ["tts-synthesis", "batch 128"] and "| OOM " in oom_line


def test_full_size_asr_model_is_the_w2v_bert_2_0_architecture():
    import bench_asr
    from asr.vocab import build_vocabulary

    vocabulary = build_vocabulary(["abc def"], min_char_count=1).vocabulary
    model = bench_asr.random_model("full", vocabulary, "meta")  # shapes only: no memory, no initialisation
    encoder = sum(p.numel() for n, p in model.wav2vec2_bert.named_parameters() if not n.startswith("adapter"))
    assert encoder == 580_492_096  # facebook/w2v-bert-2.0: 580 M parameters
    assert model.config.add_adapter and model.config.ctc_loss_reduction == "mean"
    assert model.lm_head.out_features == vocabulary.size


def test_past_the_deadline_a_section_is_cut_and_a_hung_call_still_gets_the_table_printed(tmp_path, monkeypatch,
                                                                                         capsys):
    import threading
    from types import SimpleNamespace

    now = FakeTime()
    clock = gpu_run.Clock(10.0, gpu_run.SECTIONS, now=now)
    report = gpu_run.Report({"device": "cpu"})
    ctx = SimpleNamespace(device=torch.device("cpu"), current=None)
    now.t = 11.0
    gpu_run.run_section(report, clock, ctx, "asr-training")  # never started: its row says so
    assert [(r.section, r.status) for r in report.rows] == [("asr-training", "cut")]

    hung = gpu_run.SectionRecord("tts-compiled", status="running")  # a call that never returned
    report.sections.append(hung)
    ctx.current = hung
    exited = threading.Event()
    codes = []
    monkeypatch.setattr(gpu_run.os, "_exit", lambda code: (codes.append(code), exited.set()))
    out = tmp_path / "gpu.json"
    gpu_run.start_watchdog(report, clock, ctx, out, grace_s=0.0)
    assert exited.wait(30)
    assert codes == [3]
    printed = capsys.readouterr().out
    assert "still running at the deadline" in printed and "Stopped by the watchdog" in printed
    saved = json.loads(out.read_text())
    assert [(r["section"], r["status"]) for r in saved["rows"]] == [("asr-training", "cut"), ("tts-compiled", "cut")]
    assert not report.emit(out)  # printed once: the main thread, arriving late, prints nothing more
