"""Test handler shaped like a real TTS job (job_type test, model Shaped): reads the recordings, uploads a
20 MB "model" and attaches a generated take to every verse that needs one.

With ``shaped.wait`` it writes ``<job_id>.ready`` into ``$CODEX_TEST_RECORD_DIR`` before writing back and
waits for ``<job_id>.go``, so a test can edit the project (as a translator) while the job runs.
"""

import hashlib
import os
import shutil
import time
from pathlib import Path

from handlers.common import (
    GeneratedTake,
    cells_needing_audio,
    collect_training_pairs,
    job_paths,
    load_notebooks,
    upload_job_files,
    write_generated_takes,
)


def _wait_for_go(job_context, callbacks):
    records = Path(os.environ["CODEX_TEST_RECORD_DIR"])
    (records / f"{job_context['job_id']}.ready").write_text("ready")
    deadline = time.monotonic() + 120
    while not (records / f"{job_context['job_id']}.go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        callbacks.heartbeat(message="waiting for the test")
        time.sleep(0.05)


def run(job_context, callbacks):
    work = Path(callbacks.get_work_dir())
    paths = job_paths(job_context)
    notebooks = load_notebooks(callbacks.scanner)
    pairs = collect_training_pairs(callbacks, notebooks, work / "audio")
    if not pairs.items:
        return {"success": False, "error_message": "no recordings to learn from"}
    model = work / "best_model.pt"
    seed = hashlib.sha256(job_context["job_id"].encode()).digest()
    with model.open("wb") as handle:  # 20 MB of reproducible bytes
        for block in range(20 * 16):
            handle.write(hashlib.sha256(seed + block.to_bytes(4, "big")).digest() * 2048)
    upload_job_files(callbacks, {paths.checkpoint: model}, "model")
    takes = []
    for number, cell in enumerate(cells_needing_audio(callbacks, notebooks)):
        generated = work / "generated" / f"take{number}.webm"
        generated.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pairs.items[number % len(pairs.items)].audio_path, generated)
        takes.append(GeneratedTake(cell, generated))
    if callbacks.get_job_config("shaped.wait"):
        _wait_for_go(job_context, callbacks)
    written = write_generated_takes(callbacks, takes, model_name="Shaped", audio_format="webm")
    return {"success": True, "checkpoint_path": paths.checkpoint,
            "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(), "pairs": len(pairs.items),
            **written.as_result()}
