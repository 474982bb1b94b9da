"""Test handler (job_type test, model PublishProbe): a training loop as the TTS and ASR handlers run it.

Each epoch adds a row to the metrics CSV, keeps a resumable state in ``get_resume_dir()`` (uploaded by
``save_resume_state``) and sends a heartbeat carrying the CSV. ``probe.after`` says how it ends once
``epochs`` epochs are done: ``succeed``, ``fail`` (a failed result), or ``loop`` (more epochs until stopped).
``probe.log_bytes`` writes that much to the job log first (for tests of oversized commits).
"""

import logging
import time
from pathlib import Path

from handlers.common import TTS_METRICS_COLUMNS, MetricsLog, job_paths

logger = logging.getLogger(__name__)


def run(job_context, callbacks):
    seconds = float(callbacks.get_job_config("probe.seconds", 0.05))
    epochs = int(callbacks.get_job_config("epochs", 3))
    after = callbacks.get_job_config("probe.after", "succeed")
    for number in range(int(callbacks.get_job_config("probe.log_bytes", 0)) // 100):
        logger.info("filler line %06d %s", number, "x" * 80)
    paths = job_paths(job_context)
    metrics = MetricsLog(Path(callbacks.get_work_dir()) / "training_metrics.csv", TTS_METRICS_COLUMNS)
    state = Path(callbacks.get_resume_dir()) / "state.bin"
    epoch = 0
    try:
        while epoch < epochs or after == "loop":
            time.sleep(seconds)
            epoch += 1
            metrics.append(epoch, train_total_loss=1.0 / epoch, val_total_loss=2.0 / epoch)
            state.write_bytes(epoch.to_bytes(4, "big") * 256)
            callbacks.save_resume_state()
            callbacks.heartbeat(epochs_completed=epoch, message=f"epoch {epoch}",
                                files={paths.metrics: metrics.path})
    except BaseException:
        callbacks.save_resume_state(force=True)
        raise
    if after == "fail":
        return {"success": False, "error_message": "the probe failed after training"}
    return {"success": True, "epochs": epoch}
