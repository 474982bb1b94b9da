"""Generated takes checked by listening: the project's ASR model transcribes each take TTS just made, and a
take it cannot hear as its verse is attached without being selected.

The model: ``inference.check_with`` (a project path to an ``asr_model.pth.tar``), else the ``checkpoint_path``
of the project's newest completed ASR job. Without one the check is skipped, and the log and the result
(``generated_check_skipped``) say why; a model named by ``inference.check_with`` that is not in the project
fails the job before anything is spoken. A take whose CER against its text is above
``inference.max_check_cer`` (0.6) is attached with ``select=False``: where another take plays today it keeps
playing, and the result lists the take (``generated_not_selected``). The editor's newest-take fallback still
plays such a take where the cell has no other one; the list says which cells those are.

Every take checked is a row of ``gpu_jobs/job_<id>/generated_check.csv`` (cell_id, reference, cer,
asr_text, verse_text, over_max_cer: yes for a take attached without selecting it). Untrusted model archives are extracted and checked as ASR jobs do.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

from asr.recording_check import character_error_rate, model_text_normalization, write_check_csv
from handlers.common import (GeneratedTake, ProjectFileMissing, count, fetch_project_file, job_paths,
                             upload_job_files)
from job_settings import JobSettingError
from jobs import JobState, describe_jobs
from storage import UnsafePath, confine_path
from tts.job_settings import CHECK_WITH, ListenCheckSettings

logger = logging.getLogger(__name__)

GENERATED_CSV = "generated_check.csv"
CSV_COLUMNS = ("cell_id", "reference", "cer", "asr_text", "verse_text", "over_max_cer")
CHECK_DIR = "listen_check"          # under the work dir
LISTED = 50                         # takes the result names one by one
BATCH = 16


class ListenCheck:
    """Built before synthesis (bad settings fail the job at once); called with the generated takes just before
    they are written back, it returns them with ``select=False`` for those over the threshold. ``result``
    then holds the result keys."""

    def __init__(self, callbacks, job_context):
        self.callbacks = callbacks
        self.job_context = job_context
        self.field = CHECK_WITH
        settings = ListenCheckSettings.from_job(job_context)
        self.max_cer = settings.max_cer
        self.model_path = self._named_model(settings.check_with)
        self.why_not = ""
        self.result: dict[str, Any] = {}

    def _named_model(self, named: str | None) -> str | None:
        if not named:
            return None
        try:
            path = confine_path(named, what=CHECK_WITH)
        except UnsafePath as exc:
            raise JobSettingError(f"{CHECK_WITH} cannot be used: {exc}") from None
        if not self.callbacks.scanner.exists(path):
            raise JobSettingError(f"{CHECK_WITH} names {path}, which is not in the project")
        return path

    def _newest_model(self) -> tuple[str | None, str]:
        """The newest completed ASR job's model, looked up when the takes are ready (training may take hours)."""
        self.field = "the newest ASR job's checkpoint_path"
        rows = [row for row in describe_jobs(self.callbacks.scanner)
                if row.kind.startswith("asr/") and row.state == JobState.COMPLETED.value
                and isinstance((row.result or {}).get("checkpoint_path"), str)]
        if not rows:
            return None, "no completed ASR model in the project: generated takes were not checked by listening"
        newest = max(rows, key=lambda row: (row.ended is not None, row.ended or 0))
        return str(newest.result["checkpoint_path"]), ""

    def __call__(self, takes: Sequence[GeneratedTake]) -> list[GeneratedTake]:
        takes = [GeneratedTake(*take) for take in takes]
        if not takes:
            return takes
        if self.model_path is None:
            self.model_path, self.why_not = self._newest_model()
        model_dir = self._load_model() if self.model_path else None
        if model_dir is None:
            logger.warning("%s", self.why_not)
            self.result = {"generated_check_skipped": self.why_not}
            return takes
        from asr.inference import transcribe  # torch is loaded already; transformers only now

        normalization = model_text_normalization(model_dir)
        texts: list[str] = []
        errors: dict[int, Exception] = {}
        for start in range(0, len(takes), BATCH):
            self.callbacks.heartbeat(message=f"listening to generated takes {start}/{len(takes)}")
            part = takes[start:start + BATCH]
            texts += transcribe(model_dir, [t.audio_path for t in part], batch_size=BATCH,
                                device=self.callbacks.get_device(),
                                on_error=lambda i, exc, s=start: errors.__setitem__(s + i, exc))
        checked: list[GeneratedTake] = []
        rows: list[dict[str, str]] = []
        unselected: list[str] = []
        still_played: list[str] = []
        for index, (take, heard) in enumerate(zip(takes, texts)):
            cer = None if index in errors else character_error_rate(take.cell.text, heard, normalization)
            over = cer is not None and cer > self.max_cer
            name = take.cell.reference or take.cell.cell_id
            if over:
                unselected.append(name)
                if take.cell.audio_take is None:    # no other take: the editor's fallback plays ours anyway
                    still_played.append(name)
            checked.append(take._replace(select=take.select and not over))
            rows.append({"cell_id": take.cell.cell_id, "reference": take.cell.reference or "",
                         "cer": "" if cer is None else f"{cer:.4f}", "asr_text": heard, "verse_text": take.cell.text,
                         "over_max_cer": "yes" if over else "no"})
        for index, exc in errors.items():
            logger.warning("Could not listen to the generated take of %s: %s", takes[index].cell.cell_id, exc)
        self._upload(rows)
        scored = sum(1 for r in rows if r["cer"])
        self.result = {"generated_checked": scored, "generated_over_max_cer": len(unselected),
                       "max_check_cer": self.max_cer, "generated_check_model": self.model_path,
                       "generated_check_report": job_paths(self.job_context).inside(GENERATED_CSV)}
        if unselected:
            self.result["generated_not_selected"] = unselected[:LISTED]
        if still_played:
            self.result["generated_not_selected_but_only_take"] = still_played[:LISTED]
        logger.info("Listened to %d generated take(s) with %s: %d over CER %.2f attached without selecting them",
                    scored, self.model_path, len(unselected), self.max_cer)
        return checked

    @property
    def phrase(self) -> str:
        """The status line's part for the check: ``2 of 6 takes not selected (ASR heard another text)``."""
        checked = self.result.get("generated_checked")
        if not checked:
            return ""
        over = self.result["generated_over_max_cer"]
        if not over:
            return f"ASR heard all {count(checked, 'take')} as their verses"
        return f"{over} of {count(checked, 'take')} not selected (ASR heard another text)"

    def _load_model(self) -> Path | None:
        """The checking model's folder, extracted and checked; None (with ``why_not``) when it is unusable."""
        from asr.model import ModelFolderError, model_folder

        work = Path(self.callbacks.get_work_dir()) / CHECK_DIR
        shutil.rmtree(work, ignore_errors=True)
        what = f"the ASR model {self.model_path}"
        try:
            archive = fetch_project_file(self.callbacks, self.model_path, work / "archive" / Path(self.model_path).name,
                                         field=self.field)
            folder = model_folder(archive, work / "model")
        except (ProjectFileMissing, UnsafePath, ModelFolderError, ValueError, OSError) as exc:
            self.why_not = f"{what} cannot be used, so generated takes were not checked by listening: {exc}"
            logger.warning("%s", self.why_not, exc_info=True)
            return None
        return folder

    def _upload(self, rows: list[dict[str, str]]) -> None:
        ordered = sorted(rows, key=lambda r: -float(r["cer"] or -1))      # worst first, unheard last
        local = write_check_csv(ordered, Path(self.callbacks.get_work_dir()) / CHECK_DIR / GENERATED_CSV, CSV_COLUMNS)
        upload_job_files(self.callbacks, {job_paths(self.job_context).inside(GENERATED_CSV): local},
                         "StableTTS: generated takes checked by listening")
