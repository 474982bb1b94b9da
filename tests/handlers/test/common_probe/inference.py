"""Test handler (job_type test, model CommonProbe, inference): the shared inference steps in the worker's
real child process.

``probe.scenario``:
* ``speak`` -- a tone for every cell needing audio (plus the cells ``probe.also_speak`` names), attached with
  ``write_generated_takes``;
* ``transcribe`` -- "heard <reference>" for every cell needing text, written with ``write_transcriptions``.

With ``probe.wait`` the handler selects and prepares everything, then writes ``<job_id>.ready`` into
``$CODEX_TEST_RECORD_DIR`` and waits for ``<job_id>.go`` before writing back, so a test can play a translator
who edits the project while the job runs. What it did goes to ``<job_id>.json`` there.
"""

import json
import os
import time
from pathlib import Path

import numpy as np

import codex
from handlers.common import (
    cells_needing_audio,
    cells_needing_text,
    load_notebooks,
    write_generated_takes,
    write_transcriptions,
)
from preprocess_audio import encode_audio


def _records() -> Path:
    return Path(os.environ["CODEX_TEST_RECORD_DIR"])


def _report(job_context, data):
    (_records() / f"{job_context['job_id']}.json").write_text(json.dumps(data, indent=1, default=str))


def _wait_for_go(job_context, callbacks):
    if not callbacks.get_job_config("probe.wait"):
        return
    job_id = job_context["job_id"]
    (_records() / f"{job_id}.ready").write_text("ready")
    deadline = time.monotonic() + 30
    while not (_records() / f"{job_id}.go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        callbacks.heartbeat(message="waiting for the test")
        time.sleep(0.05)


def _speak(job_context, callbacks, notebooks, work):
    cells = list(cells_needing_audio(callbacks, notebooks))
    also = set(callbacks.get_job_config("probe.also_speak", []))
    for notebook in notebooks:
        for cell in notebook.cells:
            if codex.cell_id(cell) in also:
                cells.append(codex.make_cell_ref(notebook.path, cell))
    takes = []
    for number, cell in enumerate(cells):
        seconds = 0.4 + 0.05 * number
        tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(16000 * seconds)) / 16000).astype(np.float32)
        path = work / "generated" / f"take{number}.webm"
        encode_audio(tone, 16000, path, "webm")
        takes.append((cell, path))
    _wait_for_go(job_context, callbacks)
    written = write_generated_takes(callbacks, takes, model_name="CommonProbe", audio_format="webm")
    _report(job_context, {"cells": [c.cell_id for c in cells], "skipped": [i.__dict__ for i in written.skipped.items]})
    return {"success": True, **written.as_result()}


def _transcribe(job_context, callbacks, notebooks, work):
    needing = cells_needing_text(callbacks, notebooks, work, sample_rate=16000)
    transcripts = [(item.cell, f"heard {item.cell.reference}") for item in needing]
    _wait_for_go(job_context, callbacks)
    written = write_transcriptions(callbacks, transcripts, model_name="probe")
    _report(job_context, {"cells": [item.cell.cell_id for item in needing],
                          "skipped": [i.__dict__ for i in written.skipped.items]})
    return {"success": True, **written.as_result()}


def run(job_context, callbacks):
    work = Path(callbacks.get_work_dir())
    notebooks = load_notebooks(callbacks.scanner)
    scenario = callbacks.get_job_config("probe.scenario")
    if scenario == "speak":
        return _speak(job_context, callbacks, notebooks, work)
    if scenario == "transcribe":
        return _transcribe(job_context, callbacks, notebooks, work)
    raise ValueError(f"unknown probe.scenario {scenario!r}")
