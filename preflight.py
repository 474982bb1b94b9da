"""Preflight: is this machine able to run jobs? (``worker_entry.py --check``)

A broken machine that claims a job fails it, or holds it until its lease runs out; checked first, it claims
nothing. Each check is one small function returning a ``CheckResult``; FAIL means jobs would fail here,
warn means they run but something is worse than it should be. Nothing here prints, and no result ever
holds the token.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Callable, Sequence

from jobs import MANIFEST_PATH
from storage import AccessDenied, ProjectSource, StorageError

logger = logging.getLogger(__name__)

DEFAULT_MIN_FREE_GB = 20.0
# The weights a default job loads; the StableTTS files are read from StableTTS/vocoder.py at check time.
ASR_BASE_FILES = ("config.json", "model.safetensors")
AUDIO_FORMATS = ("webm", "ogg", "mp3", "m4a", "wav")
TOKEN_EXPIRY_WARNING = timedelta(days=7)


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    detail: str  # one line


def failed(results: Sequence[CheckResult]) -> bool:
    return any(r.status is Status.FAIL for r in results)


def _ok(check: str, detail: str) -> CheckResult:
    return CheckResult(check, Status.OK, detail)


def _warn(check: str, detail: str) -> CheckResult:
    return CheckResult(check, Status.WARN, detail)


def _fail(check: str, detail: str) -> CheckResult:
    return CheckResult(check, Status.FAIL, detail)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


# -- GitLab --------------------------------------------------------------------------------------------
def check_token(source) -> CheckResult:
    """The token works and has the ``api`` scope: the worker claims, renews and writes results through
    GitLab's REST API, which GitLab opens to ``api`` only (``read_api`` reads; ``write_repository`` is git
    over HTTP, "not using the API")."""
    try:
        user = source.current_user()
        info = source.token_info()
    except AccessDenied as exc:
        return _fail("token", str(exc))
    except StorageError as exc:
        return _fail("token", f"GitLab cannot be asked: {exc}")
    who = f"user {user.get('username') or user.get('id')}"
    if info is None:
        return _warn("token", f"{who}; this GitLab does not tell a token's scopes (no GET "
                              "/personal_access_tokens/self: before 15.5, or not an access token); it needs api")
    scopes = sorted(str(s) for s in info.get("scopes") or [])
    if info.get("revoked") or info.get("active") is False:
        return _fail("token", f"{who}; the token is revoked or expired")
    if "api" not in scopes:
        return _fail("token", f"{who}; scopes {', '.join(scopes) or 'none'}: needs api (results are "
                              "written through the REST API, which read_api and write_repository do not allow)")
    detail = f"{who}; scopes {', '.join(scopes)}"
    expires = _expiry(info.get("expires_at"))
    if expires is not None:
        detail += f"; expires {expires.isoformat()}"
        if expires - date.today() <= TOKEN_EXPIRY_WARNING:
            return _warn("token", detail + ": renew it soon")
    return _ok("token", detail)


def _expiry(value) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def check_projects(source: ProjectSource) -> CheckResult:
    """How many projects the worker can see, and how many of them have a manifest."""
    try:
        stores = source.visible_stores() if hasattr(source, "visible_stores") else source.poll()
    except AccessDenied as exc:
        return _fail("projects", str(exc))
    except StorageError as exc:
        return _fail("projects", f"cannot list projects: {exc}")
    with_manifest = unreadable = 0
    for store in stores:
        try:
            with_manifest += store.exists(MANIFEST_PATH)
        except StorageError:
            unreadable += 1
    if not stores:
        return _warn("projects", "no project visible: share the teams' projects with the worker user")
    detail = f"{len(stores)} visible, {with_manifest} with {MANIFEST_PATH}"
    if unreadable:
        return _warn("projects", f"{detail}, {unreadable} could not be read")
    return _ok("projects", detail)


# -- this machine --------------------------------------------------------------------------------------
def check_gpu(device: str = "auto", gpu_ids: Sequence[str] = ()) -> CheckResult:
    """Every GPU jobs may use runs a small bf16 matmul (fp32 where it lacks bf16) with the right result.
    No GPU is a warning, or a failure when the worker was told to use one (``--device cuda``, ``--gpus``)."""
    import torch

    if device == "cpu":
        return _ok("gpu", "not used (--device cpu)")
    if not torch.cuda.is_available():
        detail = (f"CPU only: torch {torch.__version__} sees no CUDA GPU "
                  f"(built for CUDA {torch.version.cuda or 'none'})")
        return _fail("gpu", detail) if device == "cuda" or gpu_ids else _warn("gpu", detail)
    count = torch.cuda.device_count()
    wanted = [int(i) for i in gpu_ids] or list(range(count))
    missing = [i for i in wanted if i >= count]
    if missing:
        return _fail("gpu", f"--gpus names GPU {', '.join(map(str, missing))} but torch sees {count}")
    seen, warnings = [], []
    for index in wanted:
        try:
            name, dtype = _matmul_on(index)
        except Exception as exc:  # any failure of the device or its driver means jobs fail here
            return _fail("gpu", f"GPU {index} failed a matmul: {_one_line(exc)}")
        seen.append(f"{index}: {name}")
        if dtype != "bf16":
            warnings.append(f"GPU {index} has no bf16: training runs in fp32")
    detail = f"{'; '.join(seen)}; bf16 matmul ok" if not warnings else f"{'; '.join(seen)}; {'; '.join(warnings)}"
    detail += f" (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return _warn("gpu", detail) if warnings else _ok("gpu", detail)


def _matmul_on(index: int) -> tuple[str, str]:
    """(the GPU's name and memory, the dtype tried); raises when the result is wrong."""
    import torch

    target = torch.device("cuda", index)
    with torch.cuda.device(target):
        bf16 = torch.cuda.is_bf16_supported()
        generator = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(256, 256, generator=generator)
        b = torch.randn(256, 256, generator=generator)
        dtype = torch.bfloat16 if bf16 else torch.float32
        product = (a.to(target, dtype) @ b.to(target, dtype)).float().cpu()
        torch.cuda.synchronize(target)
        expected = a @ b
        error = float((product - expected).abs().max() / expected.abs().max())
        if not math.isfinite(error) or error > 0.05:
            raise ArithmeticError(f"wrong result (relative error {error:.3g})")
        props = torch.cuda.get_device_properties(target)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)", "bf16" if bf16 else "fp32"


def check_disk(work_dir: Path, min_free_gb: float = DEFAULT_MIN_FREE_GB) -> CheckResult:
    """The work folder can be written, and has at least ``min_free_gb`` GB free (models, audio, job files)."""
    work_dir = Path(work_dir)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work_dir, prefix=".preflight-"):
            pass
        free_gb = shutil.disk_usage(work_dir).free / 1e9
    except OSError as exc:
        return _fail("disk", f"the work folder cannot be written: {exc.strerror or exc}")
    detail = f"{free_gb:.1f} GB free in the work folder"
    if free_gb < min_free_gb:
        return _fail("disk", f"{detail}; jobs need at least {min_free_gb:g} GB (--min-free-gb)")
    return _ok("disk", detail)


def default_models() -> list[tuple[str, tuple[str, ...]]]:
    """(hub repository, files) of what default jobs load: the W2V-BERT encoder and StableTTS v1.1."""
    from asr.config import DEFAULT_BASE_MODEL
    from StableTTS.vocoder import HUB_REPO, HUB_TTS_FILE, HUB_VOCOS_FILE

    return [(DEFAULT_BASE_MODEL, ASR_BASE_FILES), (HUB_REPO, (HUB_TTS_FILE, HUB_VOCOS_FILE))]


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment names it now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def check_models(models: Sequence[tuple[str, Sequence[str]]] | None = None, *,
                 hub_reachable: Callable[[], bool] | None = None) -> list[CheckResult]:
    """Each default model is in the Hugging Face cache, or the hub can be reached to download it."""
    from model_hub import not_cached

    if hub_reachable is None:
        from model_hub import hub_reachable as cached_check

        hub_reachable = cached_check.__wrapped__  # ask now, not what an earlier call in this process found
    cache = hub_cache_dir()
    reachable: bool | None = None
    results = []
    for repo, files in models if models is not None else default_models():
        missing = not_cached(repo, files, cache_dir=cache)
        check = f"model {repo}"
        if not missing:
            results.append(_ok(check, "in the Hugging Face cache"))
            continue
        if reachable is None:
            reachable = hub_reachable()
        names = ", ".join(missing)
        if reachable:
            results.append(_ok(check, f"{names} not cached; the hub is reachable, so the first job downloads them"))
        else:
            results.append(_fail(check, f"{names} not in the Hugging Face cache ({cache}), and the hub cannot be "
                                        "reached (or HF_HUB_OFFLINE is set)"))
    return results


def check_audio_codecs(formats: Sequence[str] = AUDIO_FORMATS) -> CheckResult:
    """A second of tone survives encoding to and decoding from every format translators record in."""
    import numpy as np

    from preprocess_audio import encode_audio, load_audio

    rate = 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    broken = []
    with tempfile.TemporaryDirectory(prefix="preflight-audio-") as scratch:
        for fmt in formats:
            try:
                encode_audio(tone, rate, Path(scratch) / f"tone.{fmt}")
                samples = load_audio(Path(scratch) / f"tone.{fmt}", 16000)
                rms = float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0
                if not 0.9 * 16000 <= samples.shape[-1] <= 1.2 * 16000 or rms < 0.05:
                    raise ValueError(f"decoded {samples.shape[-1]} samples, rms {rms:.3f}")
            except Exception as exc:  # a missing codec shows up as many kinds of errors
                broken.append(f"{fmt} ({_one_line(exc)})")
    if broken:
        return _fail("audio codecs", "cannot encode and decode " + "; ".join(broken))
    return _ok("audio codecs", f"{', '.join(formats)} encode and decode")


def check_espeak() -> CheckResult:
    """espeak-ng loads and phonemises; without it TTS still runs, on romanised text or characters."""
    from StableTTS.text import espeak

    if not espeak.espeak_available():
        return _warn("espeak-ng", "cannot be loaded: TTS reads text romanised or as characters, not as phonemes")
    try:
        phones = espeak.phonemize(["hello"], "en-us")
    except Exception as exc:  # phonemizer's errors vary with the library's state
        return _warn("espeak-ng", f"loads but cannot phonemise: {_one_line(exc)}")
    if not phones or not phones[0].strip():
        return _warn("espeak-ng", "loads but phonemised nothing")
    return _ok("espeak-ng", f"{len(espeak.espeak_voices())} voices")


# -- all of them ---------------------------------------------------------------------------------------
def run_checks(source: ProjectSource | None, *, work_dir: Path, device: str = "auto",
               gpu_ids: Sequence[str] = (), min_free_gb: float = DEFAULT_MIN_FREE_GB,
               gitlab: bool = False) -> list[CheckResult]:
    """Every check, in the order a person reads them; a check that crashes is a FAIL row, not a crash."""
    steps: list[tuple[str, Callable[[], CheckResult | list[CheckResult]]]] = []
    if gitlab:
        steps.append(("token", lambda: check_token(source)))
    if source is not None:
        steps.append(("projects", lambda: check_projects(source)))
    steps += [
        ("gpu", lambda: check_gpu(device, gpu_ids)),
        ("disk", lambda: check_disk(work_dir, min_free_gb)),
        ("models", check_models),
        ("audio codecs", check_audio_codecs),
        ("espeak-ng", check_espeak),
    ]
    results: list[CheckResult] = []
    for name, step in steps:
        try:
            outcome = step()
        except Exception as exc:  # the edge of one check: report it and go on with the others
            logger.debug("check %s crashed", name, exc_info=True)
            outcome = _fail(name, f"the check itself failed: {_one_line(exc)}")
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def summary(results: Sequence[CheckResult]) -> str:
    counts = {status: sum(r.status is status for r in results) for status in Status}
    verdict = "jobs would fail on this machine" if counts[Status.FAIL] else "ready for jobs"
    return f"{counts[Status.OK]} ok, {counts[Status.WARN]} warning(s), {counts[Status.FAIL]} failed: {verdict}"
