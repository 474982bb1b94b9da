"""The steps every model handler shares: select cells -> build data -> hand results back.

A handler stays thin::

    from handlers.common import (GeneratedTake, MetricsLog, TTS_METRICS_COLUMNS, cells_needing_audio, completed,
                                 collect_training_pairs, job_paths, load_notebooks, upload_job_files,
                                 write_generated_takes)
    from training_metrics import METRICS_FILE

    def run(job_context, callbacks):
        work, paths = Path(callbacks.get_work_dir()), job_paths(job_context)
        notebooks = load_notebooks(callbacks.scanner)
        pairs = collect_training_pairs(callbacks, notebooks, work, sample_rate=16000)   # .items, .skipped
        metrics = MetricsLog(work / METRICS_FILE, TTS_METRICS_COLUMNS)
        ...  # per epoch: metrics.append(epoch, train_total_loss=...); callbacks.heartbeat(epochs_completed=epoch)
        upload_job_files(callbacks, {paths.checkpoint: best, paths.metrics: metrics.path}, "checkpoint")
        takes = [GeneratedTake(cell, synthesize(cell.text)) for cell in cells_needing_audio(callbacks, notebooks)]
        written = write_generated_takes(callbacks, takes, model_name="StableTTS", audio_format="webm")
        return completed([f"{written.uploaded} verses spoken"], written.as_result())

Bad items are logged, counted and skipped (``SkipReport``), never fatal. Long loops send readable heartbeats
("fetching audio 120/480") at most every few seconds, which is also where a cancel surfaces (``JobInterrupted``).
"""
from .audio import CellAudio, CollectedAudio, cells_needing_text, collect_training_pairs, fetch_cell_audio
from .cells import CellSelection, ProjectNotebooks, cells_needing_audio, job_filter, load_notebooks
from .job_files import JobPaths, ProjectFileMissing, fetch_project_file, job_paths, upload_job_files
from training_metrics import ASR_METRICS_COLUMNS, TTS_METRICS_COLUMNS, MetricsLog
from .reports import Progress, completed, count, failure
# Handlers report skipped cells in skips' words (the reasons every layer shares).
from skips import (
    ALREADY_RECORDED,
    EMPTY_TEXT,
    EMPTY_TRANSCRIPTION,
    MISSING_AUDIO,
    TOO_LONG,
    UNDECODABLE_AUDIO,
    UNSAFE_LINK,
    VALUE_NOT_TEXT,
    WRONG_AUDIO_FORMAT,
    SkippedItem,
    SkipReport,
)
from .write_back import (
    GeneratedTake,
    TakesWritten,
    Transcript,
    TranscriptionsWritten,
    write_generated_takes,
    write_transcriptions,
)

__all__ = [
    "ASR_METRICS_COLUMNS", "TTS_METRICS_COLUMNS", "ALREADY_RECORDED", "EMPTY_TEXT", "EMPTY_TRANSCRIPTION",
    "MISSING_AUDIO", "TOO_LONG", "UNDECODABLE_AUDIO", "UNSAFE_LINK", "VALUE_NOT_TEXT", "WRONG_AUDIO_FORMAT",
    "CellAudio", "CellSelection", "CollectedAudio", "GeneratedTake", "JobPaths", "MetricsLog", "ProjectFileMissing",
    "ProjectNotebooks", "Progress", "SkippedItem", "SkipReport", "TakesWritten", "Transcript",
    "TranscriptionsWritten",
    "cells_needing_audio", "cells_needing_text", "collect_training_pairs", "completed", "count", "failure", "fetch_cell_audio",
    "fetch_project_file",
    "job_filter", "job_paths", "load_notebooks", "upload_job_files", "write_generated_takes", "write_transcriptions",
]
