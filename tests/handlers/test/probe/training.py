"""A test handler whose behaviour the manifest chooses (``probe.behaviour``).

Each execution is recorded as one line in ``$CODEX_TEST_RECORD_DIR/executions.log`` (outside the project),
so tests can prove that every job ran exactly once.
"""

import os
import signal
import time
from pathlib import Path

from storage import FileAction


def _record(job_context, event):
    folder = os.environ.get("CODEX_TEST_RECORD_DIR")
    if folder:
        line = f"{job_context['job_id']} {event} {os.getpid()}\n"
        fd = os.open(Path(folder) / "executions.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def run(job_context, callbacks):
    behaviour = callbacks.get_job_config("probe.behaviour", "succeed")
    seconds = float(callbacks.get_job_config("probe.seconds", 0.0))
    _record(job_context, "start")
    callbacks.heartbeat(message="starting")
    if behaviour == "succeed":
        deadline = time.monotonic() + seconds
        epoch = 0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            epoch += 1
            callbacks.heartbeat(epochs_completed=epoch, message=f"step {epoch}")
        _record(job_context, "done")
        return {"success": True, "checkpoint_path": "gpu_jobs/x.pt", "echo": job_context.get("name")}
    if behaviour == "gpu":  # which GPU the worker gave this job, and when it held it
        _record(job_context, "gpu=" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
            callbacks.heartbeat(message="holding the GPU")
        _record(job_context, "end")
        return {"success": True}
    if behaviour == "fail":
        return {"success": False, "error_message": "the data had no recordings"}
    if behaviour == "mark":
        callbacks.mark_complete({"marked": True})
        return None
    if behaviour == "raise":
        raise ValueError("cell JHN 1:1 has no text")
    if behaviour == "loop":  # runs until stopped; reports epochs
        epoch = int(job_context["response"].get("epochs_completed") or 0)
        try:
            while True:
                time.sleep(0.05)
                epoch += 1
                callbacks.heartbeat(epochs_completed=epoch, message=f"epoch {epoch}")
        except BaseException:
            _record(job_context, "stopping")
            raise
    if behaviour == "swallow":  # a careless handler: its except Exception must not swallow a stop
        while True:
            try:
                time.sleep(0.05)
                callbacks.heartbeat(message="working")
            except Exception:
                pass
    if behaviour == "hang":  # ignores heartbeats entirely
        callbacks.heartbeat(message="about to hang")
        while True:
            time.sleep(1)
    if behaviour == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if behaviour == "exit":
        os._exit(3)
    if behaviour == "write":
        work = Path(callbacks.get_work_dir())
        model = work / "model.bin"
        model.write_bytes(os.urandom(1024))
        callbacks.scanner.commit(
            [FileAction.create(f"gpu_jobs/job_{job_context['job_id']}/model.bin", source=model)], "model")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
            callbacks.heartbeat(message="after write")
        callbacks.scanner.commit(
            [FileAction.create(f"gpu_jobs/job_{job_context['job_id']}/late.txt", b"late")], "late")
        return {"success": True}
    if behaviour == "train":  # resumable epochs: each epoch is recorded once, whoever runs it
        epochs = int(job_context.get("epochs") or 3)
        state = Path(callbacks.get_resume_dir()) / "epoch.txt"
        start = int(state.read_text()) if state.exists() else 0
        try:
            for epoch in range(start, epochs):
                time.sleep(seconds)
                state.write_text(str(epoch + 1))
                _record(job_context, f"epoch{epoch + 1}")
                callbacks.save_resume_state()
                callbacks.heartbeat(epochs_completed=epoch + 1, message=f"epoch {epoch + 1}/{epochs}")
        except BaseException:
            callbacks.save_resume_state(force=True)
            raise
        callbacks.clear_resume_state()
        return {"success": True, "resumed_from": start}
    raise RuntimeError(f"unknown behaviour {behaviour}")
