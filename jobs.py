"""The GPU job protocol, written once: manifest, states, ``response.yaml``, claims and leases.

Everything here runs over a ``storage.ProjectStore``; the local folder and GitLab backends only store files.
The plugin (codex_worker_frontend) writes ``gpu_jobs/manifest.yaml`` and reads ``gpu_jobs/job_<id>/``;
the facts are in docs/job_protocol.md. In short:

* a claim is ONE commit creating ``response.yaml`` (create-only-if-absent: exactly one worker wins);
* a claim is a lease, renewed by rewriting ``response.yaml`` against the version last written, so a worker
  that lost its lease can never overwrite the new owner's file;
* an expired (or released) lease may be taken over with the same conditional update.
"""

from __future__ import annotations

import enum
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import yaml

from bounded_yaml import YamlRefused, describe_value
from bounded_yaml import load as load_yaml
from codex.layout import attachment_project_path
from job_settings import (BASE_CHECKPOINT, EXCLUDE_VERSES, FILTER_SECTIONS, INCLUDE_VERSES, VOICE_REFERENCE,
                          lookup)
from storage import (
    FileAction,
    FileAlreadyExists,
    FileMissing,
    FileVersion,
    ProjectStore,
    StorageError,
    UnsafePath,
    VersionConflict,
    confine_path,
)
from training_metrics import METRICS_FILE
from worker_logging import redacted_data

logger = logging.getLogger(__name__)

MANIFEST_PATH = "gpu_jobs/manifest.yaml"
JOBS_DIR = MANIFEST_PATH.partition("/")[0]  # gpu_jobs: the manifest and every job folder
JOB_FOLDER_PREFIX = "job_"          # gpu_jobs/job_<id>/
RESPONSE_FILE = "response.yaml"     # in the job folder: state and lease, written by the worker only
LOGS_FILE = "logs.txt"              # in the job folder, and the local log file of a running job
RESULT_SUMMARY = "summary"          # result key: one line, a completed job's status_message ("completed" without)
MAX_SUMMARY_CHARS = 300
# The earlier worker (codex-job-worker) writes no lease expiry and no heartbeat while it trains a voice:
# its claim holds for this long after its last write.
LEGACY_CLAIM_HOURS = 24.0
SUPPORTED_MANIFEST_VERSIONS = (1,)
MODES = ("training", "inference", "training_and_inference")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Aliases of model names, compared after normalise_model_name().
MODEL_ALIASES = {"wav2vec2bert": "w2v2bert", "w2vbert": "w2v2bert"}


class JobState(str, enum.Enum):
    """The states the plugin knows, with exactly its strings."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELED)


# -- errors ----------------------------------------------------------------------------------------
class ManifestError(ValueError):
    """The manifest as a whole cannot be used (unreadable, unsupported version, no job list). The message
    names the file; ``version`` is the storage version of the manifest that was read."""

    def __init__(self, message: str, version: str = ""):
        super().__init__(message)
        self.version = version


class ResponseError(ValueError):
    """A ``response.yaml`` that cannot be parsed."""


class ClaimLost(Exception):
    """Another worker claimed or took over the job first."""


class LeaseLost(Exception):
    """Our lease now belongs to another worker: stop and write nothing more for this job."""


# -- time ------------------------------------------------------------------------------------------
def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and ``Z``, as the plugin writes ``submitted_at``."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any, *, field_name: str) -> datetime | None:
    """Parse an ISO time (string, or a datetime YAML already parsed); naive times are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{field_name} {describe_value(value)} is not an ISO 8601 time") from None
    else:
        raise ValueError(f"{field_name} must be an ISO 8601 time, not {describe_value(value)}")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# -- manifest --------------------------------------------------------------------------------------
def normalise_model_name(name: str) -> str:
    """``StableTTS`` → ``stabletts``; ``W2V2-BERT``/``wav2vec2_bert`` → ``w2v2bert``."""
    key = re.sub(r"[-_\s]", "", str(name)).lower()
    return MODEL_ALIASES.get(key, key)


# -- the job folder ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobPaths:
    """Project paths of one job's folder, as the plugin reads them (docs/job_protocol.md)."""

    folder: str                 # gpu_jobs/job_<id>
    response: str               # response.yaml (written by the worker, never by handlers)
    logs: str                   # logs.txt (written by the worker)
    resume: str                 # resume/ -- resumable training state when no --checkpoint-dir is shared
    checkpoint_dir: str
    checkpoint: str             # checkpoint/best_model.pt -- TTS training, offered via result.checkpoint_path
    metrics: str                # checkpoint/training_metrics.csv -- the plugin's loss chart
    tensorboard: str            # checkpoint/tensorboard_events.zip -- optional
    model_dir: str
    asr_model: str              # model/asr_model.pth.tar -- ASR training, offered via result.checkpoint_path

    def inside(self, *parts: str) -> str:
        """Another path in the job folder (``paths.inside("checkpoint", "vocab.json")``)."""
        return confine_path("/".join((self.folder, *parts)), what="job file")


def job_folder_name(job_id: str) -> str:
    """``job_<id>``: the job's folder under ``gpu_jobs/`` and under a worker's local folders alike."""
    return f"{JOB_FOLDER_PREFIX}{job_id}"


def job_paths(job_id: str) -> JobPaths:
    """The project paths of job ``job_id``'s folder."""
    folder = confine_path(f"{JOBS_DIR}/{job_folder_name(job_id)}", what="job folder")
    return JobPaths(
        folder=folder, response=f"{folder}/{RESPONSE_FILE}", logs=f"{folder}/{LOGS_FILE}", resume=f"{folder}/resume",
        checkpoint_dir=f"{folder}/checkpoint", checkpoint=f"{folder}/checkpoint/best_model.pt",
        metrics=f"{folder}/checkpoint/{METRICS_FILE}",
        tensorboard=f"{folder}/checkpoint/tensorboard_events.zip",
        model_dir=f"{folder}/model", asr_model=f"{folder}/model/asr_model.pth.tar",
    )


def local_job_dir(root: str | Path, project_name: str, job_id: str) -> Path:
    """``<root>/<project slug>/job_<id>``: a job's folder on this machine -- its work folder under
    ``--work-dir``, its resumable state under a shared ``--checkpoint-dir`` (the same layout in both)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", project_name).strip("_")[-80:] or "project"
    return Path(root) / slug / job_folder_name(job_id)


def resume_cleanup(store: ProjectStore, job_id: str) -> list[FileAction]:
    """Deletes of the job's resumable state: a job that ended for good leaves none behind."""
    return [FileAction.delete(path) for path in store.list_files(job_paths(job_id).resume)]


@dataclass(frozen=True)
class JobSpec:
    """One validated manifest job. ``raw`` keeps every key the plugin wrote, for handlers."""

    job_id: str
    job_type: str
    mode: str
    model_type: str
    submitted_at: datetime | None
    canceled: bool
    timeout: datetime | None
    raw: dict[str, Any]

    @property
    def model_key(self) -> str:
        return normalise_model_name(self.model_type)

    @property
    def sort_key(self) -> tuple:
        # Oldest first; jobs without a submission time go last, ties broken by id for a stable order.
        return (self.submitted_at or datetime.max.replace(tzinfo=timezone.utc), self.job_id)

    def describe(self) -> str:
        return f"{self.job_type}/{self.model_type}/{self.mode}"


@dataclass(frozen=True)
class JobProblem:
    """A manifest job that cannot run. ``job_id`` is set only when it is safe to write a job folder for it."""

    index: int
    job_id: str | None
    message: str


@dataclass(frozen=True)
class Manifest:
    jobs: list[JobSpec]
    problems: list[JobProblem]
    version: str  # storage version of manifest.yaml

    def find(self, job_id: str) -> JobSpec | None:
        return next((job for job in self.jobs if job.job_id == job_id), None)

    def lists(self, job_id: str) -> bool:
        return self.find(job_id) is not None or any(p.job_id == job_id for p in self.problems)


_PATH_FIELDS = (BASE_CHECKPOINT, VOICE_REFERENCE)  # manifest paths confined to the project here


def _project_path(value: Any, field_name: str) -> str:
    """A manifest path field as a project path; raises ``ValueError`` with a message naming no field."""
    if not isinstance(value, str):
        raise ValueError(f"must be a path in the project, not {describe_value(value)}")
    try:
        if field_name == VOICE_REFERENCE:
            # On an old-layout project, and on Windows, the plugin writes the take's absolute path.
            return attachment_project_path(value) or confine_path(value, what="path")
        return confine_path(value, what="path")
    except UnsafePath as exc:
        reason = str(exc).replace(repr(value), describe_value(value))
        raise ValueError(reason.replace("path ", "", 1)) from None


def parse_manifest(text: str | bytes, *, version: str = "", source: str = MANIFEST_PATH) -> Manifest:
    """Parse and validate a manifest. Whole-file problems raise ``ManifestError`` (and nothing else:
    a hostile file is refused, never a crash); a bad job becomes a ``JobProblem`` (so the other jobs are
    still served). Messages name the file, the job and the field, and quote values short."""
    try:
        data = load_yaml(text)
    except YamlRefused as exc:
        raise ManifestError(f"{source}: {exc}", version) from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a mapping with 'version' and 'jobs'", version)
    if isinstance(data.get("version"), bool) or data.get("version") not in SUPPORTED_MANIFEST_VERSIONS:
        raise ManifestError(f"{source}: version {describe_value(data.get('version'))} is not supported "
                            "(this worker reads version 1)", version)
    raw_jobs = data.get("jobs") or []
    if not isinstance(raw_jobs, list):
        raise ManifestError(f"{source}: 'jobs' must be a list, not {describe_value(raw_jobs)}", version)
    jobs: list[JobSpec] = []
    problems: list[JobProblem] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_jobs):
        try:
            job = _parse_job(raw, index, source)
        except _JobInvalid as exc:
            problems.append(JobProblem(index, exc.job_id, str(exc)))
            continue
        if job.job_id in seen:
            problems.append(JobProblem(index, None, f"{source}: jobs[{index}] repeats job_id {job.job_id!r}"))
            continue
        seen.add(job.job_id)
        jobs.append(job)
    return Manifest(jobs, problems, version)


class _JobInvalid(ValueError):
    def __init__(self, message: str, job_id: str | None):
        super().__init__(message)
        self.job_id = job_id


def _parse_job(raw: Any, index: int, source: str) -> JobSpec:
    where = f"{source}: jobs[{index}]"
    if not isinstance(raw, dict):
        raise _JobInvalid(f"{where} is not a mapping", None)
    job_id = raw.get("job_id")
    job_id = str(job_id) if isinstance(job_id, (str, int)) and not isinstance(job_id, bool) else None
    if not job_id or not _JOB_ID.match(job_id) or ".." in job_id:
        raise _JobInvalid(f"{where}: job_id {describe_value(raw.get('job_id'))} is missing or not a safe name",
                          None)
    where = f"{source}: job {job_id}"

    def fail(field_name: str, message: str) -> _JobInvalid:
        return _JobInvalid(f"{where}: field '{field_name}' {message}", job_id)

    job_type = raw.get("job_type")
    if not isinstance(job_type, str) or not _IDENTIFIER.match(job_type):
        raise fail("job_type", f"must be a name such as tts or asr, not {describe_value(job_type)}")
    mode = raw.get("mode")
    if mode not in MODES:
        raise fail("mode", f"must be one of {', '.join(MODES)}, not {describe_value(mode)}")
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise fail("model", f"must be a mapping, not {describe_value(model)}")
    model_type = model.get("type")
    if not isinstance(model_type, str) or not _IDENTIFIER.match(normalise_model_name(model_type) or "-"):
        raise fail("model.type", f"must name a model such as StableTTS or W2V2BERT, not {describe_value(model_type)}")
    epochs = raw.get("epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 9999):
        raise fail("epochs", f"must be a whole number from 1 to 9999, not {describe_value(epochs)}")
    canceled = raw.get("canceled", False)
    if not isinstance(canceled, bool):
        raise fail("canceled", f"must be true or false, not {describe_value(canceled)}")
    times: dict[str, datetime | None] = {}
    for time_field in ("submitted_at", "timeout"):
        try:
            times[time_field] = parse_time(raw.get(time_field), field_name="value")
        except ValueError as exc:
            raise fail(time_field, f"is not valid: {exc}") from None
    submitted_at, timeout = times["submitted_at"], times["timeout"]
    for name in _PATH_FIELDS:
        value = lookup(raw, name)
        if value is None or value == "":
            continue
        try:
            resolved = _project_path(value, name)
        except ValueError as exc:
            raise fail(name, str(exc)) from None
        if name == VOICE_REFERENCE and resolved != value:
            raw = {**raw, VOICE_REFERENCE: resolved}  # handlers get the project path
    for section in FILTER_SECTIONS:
        block = raw.get(section)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise fail(section, f"must be a mapping, not {describe_value(block)}")
        for key in (INCLUDE_VERSES, EXCLUDE_VERSES):
            verses = block.get(key)
            if verses is not None and (not isinstance(verses, list) or not all(isinstance(v, str) for v in verses)):
                raise fail(f"{section}.{key}", "must be a list of cell ids or references")
    return JobSpec(job_id, job_type, mode, model_type, submitted_at, canceled, timeout, raw)


def read_manifest(store: ProjectStore) -> Manifest | None:
    """The project's manifest, or None when it has none. Raises ``ManifestError``."""
    file = store.read(MANIFEST_PATH)
    if file is None:
        return None
    return parse_manifest(file.content, version=file.version)


# -- response.yaml ---------------------------------------------------------------------------------
_RESPONSE_KEYS = (
    "worker_id", "state", "timestamp", "claimed_at", "lease_expires_at", "claim_id", "retry_count",
    "epochs_completed", "status_message", "error_message", "termination_reason", "result",
)


@dataclass
class JobResponse:
    """The contents of ``response.yaml``. Keys this worker does not know are kept in ``extra``."""

    worker_id: str
    state: JobState
    timestamp: datetime
    claimed_at: datetime | None = None
    lease_expires_at: datetime | None = None
    claim_id: str | None = None
    retry_count: int = 0
    epochs_completed: int = 0
    status_message: str = ""
    error_message: str | None = None
    termination_reason: str | None = None
    result: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | bytes) -> "JobResponse":
        try:
            data = load_yaml(text)
        except YamlRefused as exc:
            raise ResponseError(f"response.yaml: {exc}") from None
        if not isinstance(data, dict):
            raise ResponseError("response.yaml is not a mapping")
        try:
            state = data.get("state")
            if not isinstance(state, str) or state not in {s.value for s in JobState}:
                known = ", ".join(s.value for s in JobState)
                raise ValueError(f"state {describe_value(state)} is not one of {known}")
            timestamp = parse_time(data.get("timestamp"), field_name="timestamp")
            if timestamp is None:
                raise ValueError("timestamp is missing")
            return cls(
                worker_id=_text(data, "worker_id") or "",
                state=JobState(state),
                timestamp=timestamp,
                claimed_at=parse_time(data.get("claimed_at"), field_name="claimed_at"),
                lease_expires_at=parse_time(data.get("lease_expires_at"), field_name="lease_expires_at"),
                claim_id=_text(data, "claim_id"),
                retry_count=_whole(data, "retry_count"),
                epochs_completed=_whole(data, "epochs_completed"),
                status_message=_text(data, "status_message") or "",
                error_message=_text(data, "error_message"),
                termination_reason=_text(data, "termination_reason"),
                result=data.get("result"),
                extra={k: v for k, v in data.items() if k not in _RESPONSE_KEYS},
            )
        except (ValueError, TypeError) as exc:
            raise ResponseError(f"response.yaml: {exc}") from None

    def dump(self) -> str:
        data: dict[str, Any] = {
            "worker_id": self.worker_id,
            "state": self.state.value,
            "timestamp": format_time(self.timestamp),
            "claimed_at": format_time(self.claimed_at) if self.claimed_at else None,
            "lease_expires_at": format_time(self.lease_expires_at) if self.lease_expires_at else None,
            "claim_id": self.claim_id,
            "retry_count": self.retry_count,
            "epochs_completed": self.epochs_completed,
            "status_message": self.status_message,
        }
        for key in ("error_message", "termination_reason", "result"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        data.update(self.extra)
        # Whatever a handler or a library put into a message, a token never reaches the project.
        return yaml.safe_dump(redacted_data(data), sort_keys=False, allow_unicode=True, default_flow_style=False)

    def lease_expired(self, now: datetime, legacy_claim_hours: float = LEGACY_CLAIM_HOURS) -> bool:
        """A running job whose holder stopped renewing (or released it) may be taken over."""
        if self.lease_expires_at is not None:
            return now >= self.lease_expires_at
        # Written by the earlier worker: no expiry and no heartbeats while it trains, but it holds its
        # claim until its last write is ``legacy_claim_hours`` old, and so do we.
        return now >= self.timestamp + timedelta(hours=legacy_claim_hours)

    @property
    def released(self) -> bool:
        return bool(self.extra.get("released_at"))


def _text(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{key} must be text, not {describe_value(value)}")


def _whole(data: dict, key: str) -> int:
    value = data.get(key)
    if value is None or value == "":
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 9:
        return int(value)
    raise ValueError(f"{key} must be a whole number, not {describe_value(value)}")


# -- decisions -------------------------------------------------------------------------------------
class Action(str, enum.Enum):
    """What a worker may do about a job it found while scanning."""

    SKIP = "skip"                      # finished, or held under a live lease
    CLAIM = "claim"                    # pending: create response.yaml
    TAKE_OVER = "take_over"            # running but its lease expired or was released
    RESUME_OWN = "resume_own"          # our worker id from before a restart: resume at once
    FAIL_TIMED_OUT = "fail_timed_out"  # timeout passed before anyone ran it
    FAIL_RETRIES = "fail_retries"      # expired too often
    CANCEL = "cancel"                  # canceled before (or while nobody was) running it


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


def decide(
    job: JobSpec, response: JobResponse | None, *, worker_id: str, now: datetime, max_retries: int,
    predecessor_claims: frozenset[str] = frozenset(), legacy_claim_hours: float = LEGACY_CLAIM_HOURS,
) -> Decision:
    """Pure protocol rules: what this worker may do about ``job`` given its ``response.yaml``.

    ``predecessor_claims``: claim ids proven to be this worker's own from before a restart (see
    ``claim_records``), resumed at once. A claim under this worker's name that is not proven so is
    someone else's: two processes started with one name must not take jobs from each other. A lease
    carries its own expiry (``lease_expires_at``), so no lease length is needed here."""
    if response is not None and response.state.is_terminal:
        return Decision(Action.SKIP, f"already {response.state.value}")
    if response is None:
        if job.canceled:
            return Decision(Action.CANCEL, "canceled before it started")
        if job.timeout and now >= job.timeout:
            return Decision(Action.FAIL_TIMED_OUT, "timed out before start")
        return Decision(Action.CLAIM)
    # state is running
    if response.worker_id == worker_id and response.claim_id and response.claim_id in predecessor_claims:
        return Decision(Action.RESUME_OWN, "this worker held it before a restart")
    if not response.lease_expired(now, legacy_claim_hours):
        if response.worker_id == worker_id:
            return Decision(Action.SKIP, "held under this worker's name by another process")
        return Decision(Action.SKIP, f"running on {response.worker_id}")
    if job.canceled:
        return Decision(Action.CANCEL, "canceled while its worker was gone")
    if job.timeout and now >= job.timeout:
        return Decision(Action.FAIL_TIMED_OUT, "timed out")
    if not response.released and response.retry_count + 1 > max_retries:
        return Decision(Action.FAIL_RETRIES, f"its worker stopped answering {response.retry_count + 1} times")
    return Decision(Action.TAKE_OVER, "lease released" if response.released else "lease expired")


# -- leases ----------------------------------------------------------------------------------------
@dataclass
class Lease:
    """Our hold on a job: the response we last wrote and its storage version."""

    store: ProjectStore
    job: JobSpec
    worker_id: str
    response: JobResponse
    version: str
    lease_seconds: float

    @property
    def path(self) -> str:
        return job_paths(self.job.job_id).response


def read_response(store: ProjectStore, job_id: str) -> tuple[JobResponse | None, FileVersion | None]:
    """The job's response and its file (None, None when absent). Raises ``ResponseError``."""
    file = store.read(job_paths(job_id).response)
    if file is None:
        return None, None
    return JobResponse.parse(file.content), file


def _commit_message(job: JobSpec, what: str) -> str:
    return f"GPU job {job.job_id}: {what}"


def claim_job(
    store: ProjectStore, job: JobSpec, *, worker_id: str, lease_seconds: float, now: datetime | None = None,
    previous: FileVersion | None = None, previous_response: JobResponse | None = None, count_retry: bool = True,
) -> Lease:
    """Claim a pending job (``previous`` None) or take over an expired one. Raises ``ClaimLost``."""
    now = now or utc_now()
    retry = 0
    epochs = 0
    if previous_response is not None:
        retry = previous_response.retry_count + (1 if count_retry and not previous_response.released else 0)
        epochs = previous_response.epochs_completed
    response = JobResponse(
        worker_id=worker_id,
        state=JobState.RUNNING,
        timestamp=now,
        claimed_at=now,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        claim_id=secrets.token_hex(8),
        retry_count=retry,
        epochs_completed=epochs,
        status_message=_claim_message(previous, previous_response),
    )
    content = response.dump()
    if previous is None:
        action = FileAction.create(job_paths(job.job_id).response, content)
        what = "claimed by " + worker_id
    else:
        action = FileAction.update(job_paths(job.job_id).response, content, expected_version=previous.version)
        what = "taken over by " + worker_id
    try:
        store.commit([action], _commit_message(job, what))
    except (FileAlreadyExists, VersionConflict, FileMissing) as exc:
        raise ClaimLost(f"job {job.job_id}: another worker was first ({type(exc).__name__})") from None
    try:
        version = _version_of_our_write(store, job_paths(job.job_id).response, action.content or b"", job)
    except LeaseLost as exc:
        raise ClaimLost(str(exc)) from None
    return Lease(store, job, worker_id, response, version, lease_seconds)


def _claim_message(previous: FileVersion | None, previous_response: JobResponse | None) -> str:
    if previous is None:
        return "claimed"
    if previous_response is not None and previous_response.worker_id:
        return f"taken over from {previous_response.worker_id}"
    return "taken over"


def write_unclaimed_outcome(
    store: ProjectStore, job_id: str, state: JobState, message: str, *, worker_id: str,
    previous: FileVersion | None, previous_response: JobResponse | None = None,
) -> bool:
    """Finish a job nobody is running (timed out, canceled, gave up, invalid), with a line in its
    ``logs.txt`` saying why, so "View Logs" explains it too, and without the resumable state an earlier
    attempt left (nobody will resume it). False if someone beat us."""
    now = utc_now()
    response = JobResponse(
        worker_id=worker_id, state=state, timestamp=now,
        retry_count=previous_response.retry_count if previous_response else 0,
        epochs_completed=previous_response.epochs_completed if previous_response else 0,
        status_message=message,
    )
    if state is JobState.CANCELED:
        response.termination_reason = message
    else:
        response.error_message = message
    path = job_paths(job_id).response
    if previous is None:
        action = FileAction.create(path, response.dump())
    else:
        action = FileAction.update(path, response.dump(), expected_version=previous.version)
    line = f"{format_time(now)} {worker_id}: marked this job {state.value} without running it: {message}\n"
    try:
        store.commit([action, _appended_log(store, job_id, line), *resume_cleanup(store, job_id)],
                     f"GPU job {job_id}: {state.value} ({message})")
    except (FileAlreadyExists, VersionConflict, FileMissing):
        return False
    return True


def _appended_log(store: ProjectStore, job_id: str, line: str) -> FileAction:
    """``logs.txt`` with ``line`` added: the log of an earlier attempt (a crashed worker's) is kept."""
    path = job_paths(job_id).logs
    current = store.read(path)
    if current is None:
        return FileAction.create(path, line)
    before = current.content if not current.content or current.content.endswith(b"\n") else current.content + b"\n"
    return FileAction.update(path, before + line.encode("utf-8"), expected_version=current.version)


class LeaseCheck(enum.Enum):
    OK = "ok"
    CANCELED = "canceled"
    REMOVED = "removed"
    TIMED_OUT = "timed_out"
    # The job is still ours but the manifest cannot be read: keep running and renewing (a manifest broken
    # mid-edit is the plugin's to fix, and must not hand the job to a second worker), and say so.
    MANIFEST_UNREADABLE = "manifest_unreadable"


def _check_still_ours(lease: Lease) -> None:
    """Raise ``LeaseLost`` unless response.yaml still carries our claim; refresh ``lease.version``."""
    current = lease.store.read(lease.path)
    if current is None:
        raise LeaseLost(f"job {lease.job.job_id}: response.yaml was removed")
    if current.version == lease.version:
        return
    try:
        theirs = JobResponse.parse(current.content)
    except ResponseError:
        raise LeaseLost(f"job {lease.job.job_id}: response.yaml was replaced") from None
    if theirs.worker_id != lease.worker_id or theirs.claim_id != lease.response.claim_id:
        raise LeaseLost(f"job {lease.job.job_id}: now held by {theirs.worker_id or 'someone else'}")
    if theirs.state.is_terminal:
        raise LeaseLost(f"job {lease.job.job_id}: already {theirs.state.value}")
    lease.version = current.version  # rewritten by ourselves (e.g. a result commit): still ours


def check_lease(lease: Lease, now: datetime | None = None) -> tuple[LeaseCheck, str]:
    """Re-read the manifest and our response. Raises ``LeaseLost`` when the job is no longer ours."""
    now = now or utc_now()
    _check_still_ours(lease)
    try:
        manifest = read_manifest(lease.store)
    except ManifestError as exc:
        if lease.job.timeout and now >= lease.job.timeout:
            return LeaseCheck.TIMED_OUT, f"timed out (the job's timeout {format_time(lease.job.timeout)} passed)"
        return LeaseCheck.MANIFEST_UNREADABLE, str(exc)
    job = manifest.find(lease.job.job_id) if manifest else None
    if job is None and (manifest is None or not manifest.lists(lease.job.job_id)):
        return LeaseCheck.REMOVED, "the job was removed from the manifest"
    if job is not None and job.canceled:
        return LeaseCheck.CANCELED, "canceled by the user"
    timeout = job.timeout if job is not None else lease.job.timeout
    if timeout and now >= timeout:
        return LeaseCheck.TIMED_OUT, f"timed out (the job's timeout {format_time(timeout)} passed while it ran)"
    return LeaseCheck.OK, ""


def _conditional_write(lease: Lease, response: JobResponse, extra: Sequence[FileAction], message: str) -> None:
    """Write ``response`` (and ``extra`` files) only if our last version is still current."""
    actions = [FileAction.update(lease.path, response.dump(), expected_version=lease.version), *extra]
    try:
        lease.store.commit(actions, _commit_message(lease.job, message))
    except (VersionConflict, FileMissing, FileAlreadyExists) as exc:
        if exc.path is not None and exc.path != lease.path:
            raise  # a precondition of one of the caller's files: theirs to resolve (re-read, merge)
        before = lease.version
        _check_still_ours(lease)  # raises LeaseLost when it is no longer ours
        if lease.version == before:
            raise  # response.yaml is as we left it, so the conflict was in another file
        # Still ours (our own earlier write raced the version read): retry once with the fresh version.
        actions[0] = FileAction.update(lease.path, response.dump(), expected_version=lease.version)
        try:
            lease.store.commit(actions, _commit_message(lease.job, message))
        except (VersionConflict, FileMissing) as exc:
            raise LeaseLost(f"job {lease.job.job_id}: response.yaml keeps changing under us") from exc
    lease.response = response
    lease.version = _version_of_our_write(lease.store, lease.path, actions[0].content or b"", lease.job)


def _version_of_our_write(store: ProjectStore, path: str, written: bytes, job: JobSpec) -> str:
    """The version of what we just wrote — but only if it is still our bytes. Reading the version alone
    could adopt another worker's write that landed in between as our own."""
    current = store.read(path)
    if current is None or current.content != written:
        raise LeaseLost(f"job {job.job_id}: response.yaml changed right after our write")
    return current.version


def renew_lease(
    lease: Lease, *, epochs_completed: int | None = None, status_message: str | None = None,
    extra: Sequence[FileAction] = (), now: datetime | None = None,
) -> None:
    """Heartbeat: push the expiry forward and publish progress. Raises ``LeaseLost``."""
    now = now or utc_now()
    response = _copy(lease.response)
    response.timestamp = now
    response.lease_expires_at = now + timedelta(seconds=lease.lease_seconds)
    if epochs_completed is not None:
        # epochs_completed never goes backwards, whatever a resumed handler reports.
        response.epochs_completed = max(response.epochs_completed, int(epochs_completed))
    if status_message is not None:
        response.status_message = status_message
    _conditional_write(lease, response, extra, "heartbeat")


def commit_with_claim(lease: Lease, actions: Sequence[FileAction], message: str) -> None:
    """Commit job results together with a lease renewal, so a worker that lost the job writes nothing."""
    now = utc_now()
    response = _copy(lease.response)
    response.timestamp = now
    response.lease_expires_at = now + timedelta(seconds=lease.lease_seconds)
    _conditional_write(lease, response, actions, message)


def finish_job(
    lease: Lease, state: JobState, *, result: dict[str, Any] | None = None, error_message: str | None = None,
    termination_reason: str | None = None, status_message: str | None = None, extra: Sequence[FileAction] = (),
) -> None:
    """Write the terminal state (completed, failed or canceled). Raises ``LeaseLost``."""
    if not state.is_terminal:
        raise ValueError(f"{state.value} is not a terminal state")
    response = _copy(lease.response)
    response.state = state
    response.timestamp = utc_now()
    response.lease_expires_at = None
    response.result = result
    response.error_message = error_message
    response.termination_reason = termination_reason
    response.status_message = status_message or (state is JobState.COMPLETED and _summary(result)) or {
        JobState.COMPLETED: "completed", JobState.FAILED: "failed", JobState.CANCELED: "canceled",
    }[state]
    _conditional_write(lease, response, extra, state.value)


def _summary(result: dict[str, Any] | None) -> str:
    """A completed result's ``summary``: one line the plugin shows as the job's status."""
    text = (result or {}).get(RESULT_SUMMARY)
    return " ".join(text.split())[:MAX_SUMMARY_CHARS] if isinstance(text, str) else ""


def release_lease(lease: Lease, reason: str, *, extra: Sequence[FileAction] = ()) -> None:
    """Give the job back (preemption, shutdown): another worker may take over at once, and since it was
    not the job's fault, ``retry_count`` stays as it is."""
    now = utc_now()
    response = _copy(lease.response)
    response.timestamp = now
    response.lease_expires_at = now
    response.status_message = reason
    response.extra = {**response.extra, "released_at": format_time(now)}
    _conditional_write(lease, response, extra, "released")


def _copy(response: JobResponse) -> JobResponse:
    return JobResponse(**{**response.__dict__, "extra": {
        k: v for k, v in response.extra.items() if k != "released_at"}})


# -- the operator's view ---------------------------------------------------------------------------
@dataclass(frozen=True)
class JobRow:
    """One job as the plugin shows it to translators."""

    project: str
    job_id: str
    kind: str           # job_type/mode
    state: str
    worker_id: str
    epochs: str
    updated: str
    message: str
    started: datetime | None = None
    ended: datetime | None = None
    result: dict[str, Any] | None = None


def describe_jobs(store: ProjectStore) -> list[JobRow]:
    """Every job of a project's manifest with its state, read the way the plugin reads it. A project that
    cannot be read is one row saying why, so a listing of many projects still shows the others."""
    try:
        return _describe_jobs(store)
    except ManifestError as exc:
        return [JobRow(store.name, "-", "-", "invalid manifest", "", "", "", str(exc))]
    except StorageError as exc:
        return [JobRow(store.name, "-", "-", "unreadable", "", "", "", str(exc).strip().split("\n")[0][:200])]


def _describe_jobs(store: ProjectStore) -> list[JobRow]:
    manifest = read_manifest(store)
    if manifest is None:
        return []
    rows = [JobRow(store.name, p.job_id or f"jobs[{p.index}]", "-", "invalid", "", "", "", p.message)
            for p in manifest.problems]
    for job in sorted(manifest.jobs, key=lambda j: j.sort_key):
        kind = f"{job.job_type}/{job.mode}"
        epochs = str(job.raw.get("epochs") or "")
        try:
            response, _ = read_response(store, job.job_id)
        except ResponseError as exc:
            rows.append(JobRow(store.name, job.job_id, kind, "running", "", "", "", f"unreadable: {exc}"))
            continue
        if response is None:
            note = "canceled before it started" if job.canceled else ""
            rows.append(JobRow(store.name, job.job_id, kind, JobState.PENDING.value, "",
                               f"0/{epochs}" if epochs else "", "", note))
            continue
        message = response.error_message or response.termination_reason or response.status_message or ""
        done = f"{response.epochs_completed}/{epochs}" if epochs else str(response.epochs_completed or "")
        rows.append(JobRow(store.name, job.job_id, kind, response.state.value, response.worker_id, done,
                           format_time(response.timestamp), message, response.claimed_at, response.timestamp,
                           response.result))
    return rows
