"""`make rehearse`: the default, full-size jobs end to end on a CPU, offline, before a GPU is rented for them.

No test reaches the Hugging Face hub, so the default path -- ``facebook/w2v-bert-2.0``, the published
StableTTS v1.1 weights and their Vocos -- would otherwise first run on a rented GPU. This seeds a temporary
hub cache with RANDOM weights in those repositories' own file layout and architectures, then runs a TTS
training, TTS inference, ASR training and ASR inference job (no ``model.preset``, no base checkpoint for
training) through the worker with ``HF_HUB_OFFLINE=1``. Config keys, recipe overrides, processor files,
tensor shapes and memory fail here. The random models babble and transcribe noise: only the path is rehearsed.

It prints, per job, its state, wall time, peak memory (RSS of the worker and its job process) and the time
per training step its logs show, and exits 1 when a job did not complete or did not start from the hub's
weights. About 17 minutes on 2 CPU cores; it needs ~15 GB of memory (the 580M-parameter ASR fine-tune).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from asr.config import DEFAULT_BASE_MODEL as W2V_BERT_REPO  # noqa: E402  (light: no transformers)
from jobs import job_paths  # noqa: E402

TTS_LAYOUT = ROOT / "tests" / "data" / "stabletts_v1.1_state_dict.json"
VOCOS_LAYOUT = ROOT / "tests" / "data" / "stabletts_vocos_state_dict.json"

# facebook/w2v-bert-2.0's config.json: the converted Seamless w2v-BERT 2.0 encoder (580M parameters), whose
# values transformers' Wav2Vec2BertConfig defaults also follow. `vocab_size: null` is the trap docs/asr.md
# names; the pretraining-only keys (codevectors, masking, layerdrop) are what the recipe overrides.
W2V_BERT_CONFIG: dict[str, Any] = {
    "activation_dropout": 0.0,
    "adapter_act": "relu",
    "adapter_kernel_size": 3,
    "adapter_stride": 2,
    "add_adapter": False,
    "architectures": ["Wav2Vec2BertModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "classifier_proj_size": 768,
    "codevector_dim": 768,
    "conformer_conv_dropout": 0.1,
    "contrastive_logits_temperature": 0.1,
    "conv_depthwise_kernel_size": 31,
    "ctc_loss_reduction": "sum",
    "ctc_zero_infinity": False,
    "diversity_loss_weight": 0.1,
    "eos_token_id": 2,
    "feat_proj_dropout": 0.0,
    "feat_quantizer_dropout": 0.0,
    "feature_projection_input_dim": 160,
    "final_dropout": 0.1,
    "hidden_act": "swish",
    "hidden_dropout": 0.0,
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "layerdrop": 0.1,
    "left_max_position_embeddings": 64,
    "mask_feature_length": 10,
    "mask_feature_min_masks": 0,
    "mask_feature_prob": 0.0,
    "mask_time_length": 10,
    "mask_time_min_masks": 2,
    "mask_time_prob": 0.05,
    "max_source_positions": 5000,
    "model_type": "wav2vec2-bert",
    "num_adapter_layers": 1,
    "num_attention_heads": 16,
    "num_codevector_groups": 2,
    "num_codevectors_per_group": 320,
    "num_hidden_layers": 24,
    "num_negatives": 100,
    "output_hidden_size": 1024,
    "pad_token_id": 0,
    "position_embeddings_type": "relative_key",
    "proj_codevector_dim": 768,
    "right_max_position_embeddings": 8,
    "rotary_embedding_base": 10000,
    "tdnn_dilation": [1, 2, 3, 1, 1],
    "tdnn_dim": [512, 512, 512, 512, 1500],
    "tdnn_kernel": [5, 3, 3, 1, 1],
    "torch_dtype": "float32",
    "transformers_version": "4.37.0.dev0",
    "use_intermediate_ffn_before_adapter": False,
    "use_weighted_layer_sum": False,
    "vocab_size": None,
    "xvector_output_dim": 512,
}

# Its preprocessor_config.json: 80 log-mel bins stacked by 2 (160 features a 20 ms frame), padded with 1.
W2V_BERT_PREPROCESSOR: dict[str, Any] = {
    "feature_extractor_type": "SeamlessM4TFeatureExtractor",
    "feature_size": 80,
    "num_mel_bins": 80,
    "padding_side": "right",
    "padding_value": 1,
    "processor_class": "Wav2Vec2BertProcessor",
    "return_attention_mask": True,
    "sampling_rate": 16000,
    "stride": 2,
}


# -- the hub cache ---------------------------------------------------------------------------------------
def _commit_of(repo_id: str) -> str:
    """A stable, made-up commit hash for the seeded snapshot (refs/main points at it)."""
    return hashlib.sha1(f"rehearsal:{repo_id}".encode()).hexdigest()


def _blob_name(path: Path) -> str:
    # The hub names LFS blobs by their sha256 and plain files by their git blob sha1; loaders never look.
    if path.stat().st_size >= 10 * 1024 * 1024:
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_hub_snapshot(cache: Path, repo_id: str, files: Mapping[str, Callable[[Path], None]]) -> Path:
    """One repository in huggingface_hub's cache layout: ``models--org--name/{blobs,refs/main,snapshots/<commit>}``,
    each snapshot file a relative link to its blob, as ``hf_hub_download`` leaves them. ``files`` maps a
    file name in the repository to a function that writes it. Returns the snapshot folder."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    commit = _commit_of(repo_id)
    snapshot = repo_dir / "snapshots" / commit
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for name, write in files.items():
        scratch = blobs / f"incoming-{os.getpid()}.tmp"
        write(scratch)
        blob = blobs / _blob_name(scratch)
        os.replace(scratch, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)  # no newline, as the hub writes it
    return snapshot


def _json_writer(data: Mapping[str, Any]) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def random_state_dict(layout: Path, seed: int = 0) -> dict:
    """Random tensors with the names, shapes and dtypes of a published state_dict (a tests/data layout):
    norms start at 1/0, a window buffer is a Hann window, everything else is small noise."""
    import torch

    spec = json.loads(layout.read_text(encoding="utf-8"))
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for tensor in spec["tensors"]:
        name, shape = tensor["name"], tuple(tensor["shape"])
        dtype = getattr(torch, tensor["dtype"].removeprefix("torch."))
        if name.endswith(".window"):
            value = torch.hann_window(shape[0])
        elif len(shape) == 1 and name.endswith(".weight"):
            value = torch.ones(shape)
        elif len(shape) == 1 and name.endswith(".bias"):
            value = torch.zeros(shape)
        else:
            value = torch.randn(shape, generator=generator) * 0.02
        state[name] = value.to(dtype)
    return state


def _torch_writer(layout: Path, seed: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import torch

        torch.save(random_state_dict(layout, seed), path)  # a plain state_dict, as upstream saves its files
    return write


def _w2v_bert_weights(config: Mapping[str, Any]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import torch
        from safetensors.torch import save_file
        from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

        torch.manual_seed(0)
        model = Wav2Vec2BertModel(Wav2Vec2BertConfig.from_dict(dict(config)))  # the hub's architecture
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"format": "pt"})
    return write


def seed_hub_cache(cache: Path, *, w2v_bert_overrides: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Seed ``cache`` (an ``HF_HUB_CACHE`` folder) with every file the default jobs load, random weights in the
    published layouts. ``w2v_bert_overrides`` shrinks the encoder for tests (the files keep their names and
    kinds). Returns {repository: [file names]}."""
    from StableTTS.vocoder import HUB_REPO, HUB_TTS_FILE, HUB_VOCOS_FILE

    config = {**W2V_BERT_CONFIG, **(w2v_bert_overrides or {})}
    seeded = {
        W2V_BERT_REPO: {
            "config.json": _json_writer(config),
            "preprocessor_config.json": _json_writer(W2V_BERT_PREPROCESSOR),
            "model.safetensors": _w2v_bert_weights(config),
        },
        HUB_REPO: {
            HUB_TTS_FILE: _torch_writer(TTS_LAYOUT, seed=1),
            HUB_VOCOS_FILE: _torch_writer(VOCOS_LAYOUT, seed=2),
        },
    }
    for repo_id, files in seeded.items():
        write_hub_snapshot(Path(cache), repo_id, files)
    return {repo_id: list(files) for repo_id, files in seeded.items()}


# -- the jobs --------------------------------------------------------------------------------------------
TRAIN_VERSES = ["GEN 1:1", "GEN 1:2", "GEN 1:3", "GEN 1:5", "GEN 1:7", "GEN 1:8"]  # recorded, with text
TTS_INFER_VERSES = ["GEN 1:4"]  # text, no recording
ASR_INFER_VERSES = ["GEN 1:6"]  # a recording, no text


def rehearsal_manifest(epochs: int = 1, batch_size: int = 2) -> dict[str, Any]:
    """Four jobs as the plugin writes them, with nothing but the type of model: the defaults decide the rest."""
    submitted = "2025-01-01T00:00:0%dZ"
    train = {"include_verses": TRAIN_VERSES}
    return {"version": 1, "jobs": [
        {"job_id": "rehearse_tts_train", "name": "Rehearsal: default voice", "job_type": "tts",
         "mode": "training", "submitted_at": submitted % 1, "model": {"type": "StableTTS"},
         "epochs": epochs, "batch_size": batch_size, "training": train, "canceled": False},
        {"job_id": "rehearse_tts_infer", "job_type": "tts", "mode": "inference", "submitted_at": submitted % 2,
         "model": {"type": "StableTTS",
                   "base_checkpoint": "gpu_jobs/job_rehearse_tts_train/checkpoint/best_model.pt"},
         "inference": {"include_verses": TTS_INFER_VERSES}, "canceled": False},
        {"job_id": "rehearse_asr_train", "name": "Rehearsal: default transcriber", "job_type": "asr",
         "mode": "training", "submitted_at": submitted % 3, "model": {"type": "W2V2BERT"},
         "epochs": epochs, "batch_size": batch_size, "gradient_accumulation_steps": 1, "training": train,
         "transmorgrifier": {"enabled": False}, "canceled": False},
        {"job_id": "rehearse_asr_infer", "job_type": "asr", "mode": "inference", "submitted_at": submitted % 4,
         "model": {"type": "W2V2BERT",
                   "base_checkpoint": "gpu_jobs/job_rehearse_asr_train/model/asr_model.pth.tar"},
         "inference": {"include_verses": ASR_INFER_VERSES}, "canceled": False},
    ]}


def expected_results() -> dict[str, tuple[str, str]]:
    """What shows that a job took the default path rather than a fallback: job id -> (result key, value)."""
    from StableTTS.vocoder import HUB_REPO

    return {"rehearse_tts_train": ("initialised_from", HUB_REPO), "rehearse_tts_infer": ("vocoder", "vocos"),
            "rehearse_asr_train": ("initialised_from", W2V_BERT_REPO)}


# Log lines of a fallback that leaves the job completed but off the default path.
FALLBACK_LINES = ("No feature extractor config in", "falling back to Griffin-Lim")


@dataclass
class JobRun:
    job_id: str
    kind: str
    state: str = "not run"
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    step: str = "-"
    message: str = ""
    result: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def offline_env(hf_home: Path) -> dict[str, str]:
    """The job processes' environment: the seeded cache, and no network for the hub."""
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1"}


def run_job(project: Path, job: Mapping[str, Any], env: Mapping[str, str], work: Path, device: str,
            timeout: float) -> JobRun:
    """Run one job through the worker (``--job``) and measure it: wall time, and peak RSS from ``wait4``,
    which covers the worker and every process it waited for (the job's process). Linux counts the parent's
    own peak in a child's too (the memory it replaced at exec), so this process never imports torch."""
    run = JobRun(job["job_id"], f"{job['job_type']} {job['mode']}")
    log = work / f"{run.job_id}.worker.log"
    command = [sys.executable, str(ROOT / "worker_entry.py"), "--local", str(project), "--work-dir", str(work),
               "--device", device, "--job", f"{project.name}:{run.job_id}"]
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # a timeout ends the job's process too
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(process.pid, 9)
                pid, status, usage = os.wait4(process.pid, 0)
                run.problems.append(f"killed after {timeout:.0f} s")
                break
            time.sleep(0.5)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    run.seconds = time.monotonic() - started
    run.peak_rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
    paths = job_paths(run.job_id)
    response = _read_yaml(project / paths.response)
    run.state = str(response.get("state", "no response"))
    run.result = response.get("result") or {}
    run.message = str(response.get("error_message") or response.get("status_message") or "")
    logs = project / paths.logs
    text = logs.read_text(encoding="utf-8", errors="replace") if logs.is_file() else ""
    run.step = step_time(text, int(job.get("batch_size") or 1) * int(job.get("gradient_accumulation_steps") or 1))
    console = log.read_text(encoding="utf-8", errors="replace")
    if run.state != "completed":
        run.problems.append(f"state {run.state}: {run.message}")
        tail = (text or console).splitlines()[-25:]
        print("\n".join(f"    | {line}" for line in tail), flush=True)
    run.problems += [f"its log says {line!r}" for line in FALLBACK_LINES if line in text or line in console]
    return run


def check_default_path(run: JobRun) -> None:
    """Add a problem when a completed job's result shows a fallback instead of the default path."""
    expected = expected_results().get(run.job_id)
    if expected and run.state == "completed" and run.result.get(expected[0]) != expected[1]:
        run.problems.append(f"{expected[0]} is {run.result.get(expected[0])!r}, not {expected[1]!r}: "
                            "the default path fell back")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


_STAMP = r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?)"


def step_time(logs: str, batch_size: int = 1) -> str:
    """Seconds per training step from a job's logs.txt: the TTS loop's epoch line over its batch count, or,
    for ASR, the time from loading the base model to the first epoch's line over the steps its training
    split makes in batches of ``batch_size`` (so model loading and one evaluation are in it too)."""
    batches = re.search(r"(\d+) batch\(es\) per epoch", logs)
    epoch = re.search(r"epoch 1/\d+ · .* · ([\d.]+) s", logs)
    if batches and epoch:
        return f"{float(epoch.group(1)) / max(1, int(batches.group(1))):.1f} s (TTS, {batches.group(1)} batch(es))"
    start = re.search(_STAMP + r".*Loading base model", logs)
    end = re.search(_STAMP + r".*Epoch 1: train loss", logs)
    split = re.search(r"Split \d+ clip\(s\): (\d+) train", logs)
    if start and end and split:
        steps = max(1, math.ceil(int(split.group(1)) / batch_size))
        seconds = _seconds(end.group(1)) - _seconds(start.group(1))
        return f"{seconds / steps:.0f} s (ASR, {steps} step(s); load and eval included)"
    return "-"


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace(",", ".")).timestamp()


def preflight_models(project: Path, env: Mapping[str, str], work: Path) -> list[str]:
    """The worker's own ``--check`` rows for the default models: they must be found in the seeded cache."""
    done = subprocess.run([sys.executable, str(ROOT / "worker_entry.py"), "--check", "--local", str(project),
                           "--work-dir", str(work), "--device", "cpu", "--min-free-gb", "1"], cwd=ROOT,
                          env=dict(env), capture_output=True, text=True, timeout=600)
    return [line.rstrip() for line in done.stdout.splitlines() if "model " in line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT / "examples" / "demo_project",
                        help="The Codex project whose recordings the jobs use (copied, never changed).")
    parser.add_argument("--keep", type=Path,
                        help="Work in this new folder and keep it (default: a temporary one, removed at the end).")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda.")
    parser.add_argument("--epochs", type=int, default=1, help="Epochs of each training job.")
    parser.add_argument("--batch-size", type=int, default=2, help="batch_size of each training job.")
    parser.add_argument("--job-timeout", type=float, default=3600, help="Seconds one job may take.")
    parser.add_argument("--seed-only", type=Path, metavar="CACHE", help="Only seed this HF_HUB_CACHE folder.")
    args = parser.parse_args(argv)
    if args.seed_only:
        for repo_id, files in seed_hub_cache(args.seed_only).items():
            print(f"  {repo_id}: {', '.join(files)}")
        return 0

    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: choose a new or empty folder")
    base = args.keep or Path(tempfile.mkdtemp(prefix="rehearse-"))
    hf_home, project, work = base / "hf", base / args.source.name, base / "work"
    work.mkdir(parents=True)
    try:
        started = time.monotonic()
        print(f"Memory available: {_available_mb():.0f} MB (the ASR fine-tune needs ~15 GB)", flush=True)
        print(f"Seeding a Hugging Face cache with random weights in {hf_home / 'hub'} ...", flush=True)
        # In a child process: building the 580M-parameter encoder would otherwise hold its memory all run long.
        seeding = subprocess.run([sys.executable, __file__, "--seed-only", str(hf_home / "hub")], cwd=ROOT)
        if seeding.returncode:
            print("Seeding the cache failed (see above)")
            return 1
        print(f"  ({time.monotonic() - started:.0f} s, {_folder_mb(hf_home):.0f} MB, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB)", flush=True)
        shutil.copytree(args.source, project)
        manifest = rehearsal_manifest(args.epochs, args.batch_size)
        (project / "gpu_jobs" / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False),
                                                             encoding="utf-8")
        env = offline_env(hf_home)
        rows = preflight_models(project, env, work)
        print("Preflight (worker_entry.py --check):\n" + "\n".join(f"  {row}" for row in rows), flush=True)
        problems = [f"preflight: {row}" for row in rows if "FAIL" in row]
        runs = []
        for job in manifest["jobs"]:
            print(f"Running {job['job_id']} ({job['job_type']} {job['mode']}) ...", flush=True)
            run = run_job(project, job, env, work, args.device, args.job_timeout)
            print(f"  {run.state} in {run.seconds:.0f} s, peak RSS {run.peak_rss_mb:.0f} MB, step {run.step}",
                  flush=True)
            runs.append(run)
        for run in runs:  # only now: the checks import torch, whose memory would count in every job's peak
            check_default_path(run)
        print(_table(runs))
        for run in runs:
            print(f"{run.job_id} result: {json.dumps(run.result, default=str, ensure_ascii=False)[:600]}")
        problems += [f"{run.job_id}: {p}" for run in runs for p in run.problems]
        print(f"Total {time.monotonic() - started:.0f} s. Files: {base}" if args.keep else
              f"Total {time.monotonic() - started:.0f} s.")
        if problems:
            print("PROBLEMS:\n" + "\n".join(f"  {p}" for p in problems))
            return 1
        print("All four default jobs completed from the hub's (seeded) weights.")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def _available_mb() -> float:
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return float("nan")
    found = re.search(r"MemAvailable:\s+(\d+) kB", meminfo)
    return int(found.group(1)) / 1024 if found else float("nan")


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def _table(runs: list[JobRun]) -> str:
    header = ("job", "kind", "state", "wall s", "peak RSS MB", "time per step")
    rows = [(r.job_id, r.kind, r.state, f"{r.seconds:.0f}", f"{r.peak_rss_mb:.0f}", r.step) for r in runs]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in (header, *rows))


if __name__ == "__main__":
    sys.exit(main())
