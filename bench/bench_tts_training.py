"""Benchmark: StableTTS training throughput, fp32 vs bf16 autocast, and the share of monotonic alignment search.

Each configuration runs full optimizer steps (forward with MAS, backward, clipping, AdamW) on the same
length-bucketed batches of verse-length clips and reports clips/s, mel frames/s, and the time spent inside
``maximum_path`` (MAS) as a share of the step. The data are the demo project's recordings (28 verses, 1.6-10 s)
when present, else random mels of verse lengths. Random weights: the speed of a step does not depend on them.

    .venv/bin/python bench/bench_tts_training.py                       # tiny model, CPU
    .venv/bin/python bench/bench_tts_training.py --preset v1.1 --device cuda --batch-frames 20000
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import StableTTS.model as stabletts_model  # noqa: E402
from StableTTS import build_model  # noqa: E402
from tts.alignment import cpu_alignment, maximum_path_threaded  # noqa: E402
from tts.data import ClipDataset, Utterance, collate, length_batches, prepare_clips  # noqa: E402

DEMO = ROOT / "examples" / "demo_project"


class MasTimer:
    """Wraps the ``maximum_path`` that ``StableTTS.forward`` calls, summing its wall time."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.original = device, 0.0, stabletts_model.maximum_path

    def __call__(self, value, mask):
        sync(self.device)
        started = time.perf_counter()
        path = self.original(value, mask)
        sync(self.device)
        self.seconds += time.perf_counter() - started
        return path

    def __enter__(self):
        stabletts_model.maximum_path = self
        return self

    def __exit__(self, *exc):
        stabletts_model.maximum_path = self.original


@contextlib.contextmanager
def swapped_alignment():
    builtin, stabletts_model.maximum_path = stabletts_model.maximum_path, maximum_path_threaded
    try:
        yield
    finally:
        stabletts_model.maximum_path = builtin


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def demo_batches(batch_frames: int, cache: Path) -> list:
    """Padded batches of the demo's recorded verses (phoneme ids from espeak when available)."""
    import codex
    from StableTTS.text import select_frontend

    utterances = []
    for book in ("GEN", "JHN"):
        path = f"files/target/{book}.codex"
        notebook = codex.parse_notebook((DEMO / path).read_bytes(), path)
        for cell in codex.select_training_pairs([notebook]).cells:
            audio = DEMO / ".project/attachments/files" / book / Path(cell.audio_take.url).name
            utterances.append(Utterance(cell.cell_id, cell.text, audio))
    frontend = select_frontend("rus", [u.text for u in utterances])
    clips = prepare_clips(utterances, frontend, cache).clips
    dataset = ClipDataset(clips)
    return [collate([dataset[i] for i in batch])
            for batch in length_batches([c.frames for c in clips], batch_frames, 32)]


def random_batches(batch_frames: int, n_clips: int = 28, seed: int = 0) -> list:
    """Verse-length random clips: 250-900 frames (3-10 s), ~1 symbol per 6 frames."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(250, 900, (n_clips,), generator=g).tolist()
    items = [(torch.randint(1, 68, (f // 6 * 2 + 1,), generator=g), torch.randn(128, f, generator=g) * 2 - 5)
             for f in frames]
    return [collate([items[i] for i in batch]) for batch in length_batches(frames, batch_frames, 32)]


def run(preset: str, precision: str, batches: list, device: torch.device, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = build_model(preset).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    clips = frames = 0
    with MasTimer(device) as mas:
        for number in range(warmup + steps):
            if number == warmup:
                sync(device)
                mas.seconds, started, clips, frames = 0.0, time.perf_counter(), 0, 0
            batch = batches[number % len(batches)].to(device)
            with autocast:
                losses = model(batch.ids, batch.id_lengths, batch.mels, batch.mel_lengths)
            losses.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            clips += len(batch)
            frames += int(batch.mel_lengths.sum())
        sync(device)
        seconds = time.perf_counter() - started
    return {"clips_per_s": clips / seconds, "frames_per_s": frames / seconds, "step_s": seconds / steps,
            "mas_share": mas.seconds / seconds, "mas_s_per_step": mas.seconds / steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="model size: tiny (CPU) or v1.1")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-frames", type=int, default=6000, help="mel frames per batch (padding included)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (numba / CUDA warm-up)")
    parser.add_argument("--data", choices=("demo", "random"), default="demo" if DEMO.is_dir() else "random")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--mas", choices=("auto", "builtin", "threaded"), default="auto",
                        help="auto: as training does (threaded numba on the CPU when on CUDA); builtin: StableTTS's "
                             "dispatch (torch loop on CUDA); threaded: force the threaded CPU path")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as cache:
        batches = demo_batches(args.batch_frames, Path(cache)) if args.data == "demo" else random_batches(args.batch_frames)
    n_clips = sum(len(b) for b in batches)
    print(f"StableTTS training benchmark: preset {args.preset}, {args.data} data ({n_clips} clips in {len(batches)} "
          f"batches of <= {args.batch_frames} frames), device {device}, {torch.get_num_threads()} CPU thread(s), "
          f"torch {torch.__version__}")
    alignment = {"auto": cpu_alignment(device), "builtin": contextlib.nullcontext(),
                 "threaded": swapped_alignment()}[args.mas]
    with alignment:
        print(f"MAS: {stabletts_model.maximum_path.__module__}.{stabletts_model.maximum_path.__name__}")
        results = [(precision, run(args.preset, precision, batches, device, args.steps, args.warmup))
                   for precision in args.precisions.split(",")]
    print(f"{'precision':<10}{'clips/s':>10}{'frames/s':>11}{'s/step':>9}{'MAS s/step':>12}{'MAS share':>11}")
    for precision, r in results:
        print(f"{precision:<10}{r['clips_per_s']:>10.2f}{r['frames_per_s']:>11.0f}{r['step_s']:>9.3f}"
              f"{r['mas_s_per_step']:>12.4f}{100 * r['mas_share']:>10.1f}%")
    by_precision = dict(results)
    if {"fp32", "bf16"} <= set(by_precision):
        ratio = by_precision["bf16"]["clips_per_s"] / by_precision["fp32"]["clips_per_s"]
        print(f"bf16 / fp32 training throughput: {ratio:.2f}x (same batches, same run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
