"""A job folder's paths come from one builder (``jobs.job_paths``): the project paths the plugin reads, the
handler's view of them, and the worker's local folders (work dir, shared checkpoint dir) all agree."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path, PurePosixPath

import pytest

import handlers.common
import jobs
from conftest import fast_config
from local_store import LocalProjectStore, LocalSource
from storage import UnsafePath
from worker import Worker

DOCS = Path(__file__).resolve().parent.parent / "docs" / "job_protocol.md"


def test_the_builder_gives_the_documented_paths():
    paths = jobs.job_paths("mx0abc_1")
    assert dataclasses.asdict(paths) == {
        "folder": "gpu_jobs/job_mx0abc_1",
        "response": "gpu_jobs/job_mx0abc_1/response.yaml",
        "logs": "gpu_jobs/job_mx0abc_1/logs.txt",
        "resume": "gpu_jobs/job_mx0abc_1/resume",
        "checkpoint_dir": "gpu_jobs/job_mx0abc_1/checkpoint",
        "checkpoint": "gpu_jobs/job_mx0abc_1/checkpoint/best_model.pt",
        "metrics": "gpu_jobs/job_mx0abc_1/checkpoint/training_metrics.csv",
        "tensorboard": "gpu_jobs/job_mx0abc_1/checkpoint/tensorboard_events.zip",
        "model_dir": "gpu_jobs/job_mx0abc_1/model",
        "asr_model": "gpu_jobs/job_mx0abc_1/model/asr_model.pth.tar",
    }
    assert paths.inside("checkpoint", "vocab.json") == "gpu_jobs/job_mx0abc_1/checkpoint/vocab.json"
    with pytest.raises(UnsafePath):
        paths.inside("..", "job_other", "response.yaml")


def test_every_file_of_the_documented_job_folder_is_a_path_the_builder_gives():
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## The job folder: `gpu_jobs/job_<job_id>/`", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([^`]+)`", section, flags=re.MULTILINE)
    assert len(documented) >= 6, section
    paths = jobs.job_paths("j1")
    built = {value.removeprefix(paths.folder + "/") for value in dataclasses.asdict(paths).values()}
    assert {name.removesuffix("/…") for name in documented} <= built


def test_the_handlers_view_is_the_same_builder():
    assert handlers.common.JobPaths is jobs.JobPaths
    assert handlers.common.job_paths({"job_id": "j7", "job_type": "tts"}) == jobs.job_paths("j7")


def test_the_workers_local_folders_are_named_like_the_job_folder(tmp_path):
    root = tmp_path / "Team Project: Gen"
    root.mkdir()
    (root / "metadata.json").write_text('{"projectName": "test"}\n')
    store = LocalProjectStore(root)
    config = dataclasses.replace(fast_config(tmp_path), checkpoint_dir=tmp_path / "bucket")
    worker = Worker(LocalSource([root]), config)

    work = worker._job_work_dir(store, "j7")
    shared = worker._shared_resume_dir(store, "j7")
    folder = PurePosixPath(handlers.common.job_paths({"job_id": "j7"}).folder)
    assert work.name == shared.name == folder.name == "job_j7"
    # One layout below both roots: <project slug>/job_<id>, the slug a safe single folder name.
    assert work.relative_to(config.work_dir) == shared.relative_to(config.checkpoint_dir)
    assert work == jobs.local_job_dir(config.work_dir, store.name, "j7")
    assert work.parent.parent == Path(config.work_dir) and re.fullmatch(r"[A-Za-z0-9._-]+", work.parent.name)
    # The worker's clean-up finds the folders it made.
    work.mkdir(parents=True)
    assert work in Path(config.work_dir).glob(f"*/{jobs.JOB_FOLDER_PREFIX}*")


def test_a_project_name_without_safe_characters_still_gets_its_own_folder(tmp_path):
    assert jobs.local_job_dir(tmp_path, "???", "j1") == tmp_path / "project" / "job_j1"
    long_name = "a" * 100 + "/tail"
    assert jobs.local_job_dir(tmp_path, long_name, "j1").parent.name == ("a" * 100 + "_tail")[-80:]


def test_the_parent_keeps_only_heartbeat_files_of_the_jobs_own_folder():
    from types import SimpleNamespace

    from job_process import JobExecution

    execution = SimpleNamespace(job_id="j7", log_extra={})
    paths = jobs.job_paths("j7")
    offered = {paths.metrics: b"epoch\n1\n", paths.inside("generated_check.csv"): b"a\n",
               paths.response: b"state: completed\n", paths.logs: b"forged\n",
               "gpu_jobs/job_j70/checkpoint/training_metrics.csv": b"x", "files/target/GEN.codex": b"{}"}
    assert JobExecution._job_files(execution, offered) == {paths.metrics: b"epoch\n1\n",
                                                            paths.inside("generated_check.csv"): b"a\n"}


def test_the_model_file_names_are_those_the_libraries_write():
    """The protocol names the files the plugin offers as base checkpoints; the libraries write them."""
    from asr.archive import MODEL_ARCHIVE_NAME
    from tts.state import BEST_FILE
    from training_metrics import METRICS_FILE

    paths = jobs.job_paths("j7")
    assert paths.checkpoint == f"{paths.checkpoint_dir}/{BEST_FILE}"
    assert paths.asr_model == f"{paths.model_dir}/{MODEL_ARCHIVE_NAME}"
    assert paths.metrics == f"{paths.checkpoint_dir}/{METRICS_FILE}"
