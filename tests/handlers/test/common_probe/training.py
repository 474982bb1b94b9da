"""Test handler (job_type test, model CommonProbe, training): the shared training steps, as a TTS or ASR
training handler would use them, run in the worker's real child process.

It fetches ``model.base_checkpoint`` / ``voice_reference`` when the manifest names them, collects training
pairs, logs metrics for ``epochs`` epochs, uploads a checkpoint and the metrics CSV, and writes what it saw
to ``$CODEX_TEST_RECORD_DIR/<job_id>.json`` (outside the project) for the test to compare.
"""

import hashlib
import json
import os
from pathlib import Path

from handlers.common import (
    TTS_METRICS_COLUMNS,
    MetricsLog,
    collect_training_pairs,
    fetch_project_file,
    job_paths,
    load_notebooks,
    upload_job_files,
)


def _report(job_context, data):
    folder = Path(os.environ["CODEX_TEST_RECORD_DIR"])
    (folder / f"{job_context['job_id']}.json").write_text(json.dumps(data, indent=1, default=str))


def run(job_context, callbacks):
    work = Path(callbacks.get_work_dir())
    paths = job_paths(job_context)
    seen = {}
    for field in ("model.base_checkpoint", "voice_reference"):
        path = callbacks.get_job_config(field)
        if path:
            local = fetch_project_file(callbacks, path, work / "inputs" / field, field=field)
            seen[field] = hashlib.sha256(local.read_bytes()).hexdigest()
    notebooks = load_notebooks(callbacks.scanner)
    pairs = collect_training_pairs(callbacks, notebooks, work,
                                   sample_rate=callbacks.get_job_config("probe.sample_rate"))
    metrics = MetricsLog(work / "training_metrics.csv", TTS_METRICS_COLUMNS)
    for epoch in range(1, int(callbacks.get_job_config("epochs", 1)) + 1):
        metrics.append(epoch, train_total_loss=1.0 / epoch, val_total_loss=2.0 / epoch, val_dur_loss=None)
        callbacks.heartbeat(epochs_completed=epoch, message=f"epoch {epoch}")
    checkpoint = work / "best_model.pt"
    checkpoint.write_bytes(b"probe checkpoint " * 64)
    upload_job_files(callbacks, {paths.checkpoint: checkpoint, paths.metrics: metrics.path}, "checkpoint")
    _report(job_context, {
        "fetched": seen,
        "unreadable": notebooks.unreadable,
        "pairs": [{"notebook": p.cell.notebook_path, "cell_id": p.cell.cell_id, "audio_id": p.audio_id,
                   "text": p.text, "audio_path": str(p.audio_path), "source_path": p.source_path,
                   "duration_sec": p.duration_sec, "sample_rate": p.sample_rate} for p in pairs],
        "skipped": [item.__dict__ for item in pairs.skipped.items],
        "skipped_counts": pairs.skipped.counts(),
    })
    best = metrics.best()
    return {"success": True, "checkpoint_path": paths.checkpoint, "pairs": len(pairs),
            "best_epoch": best[0] if best else None}
