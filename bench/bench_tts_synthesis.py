"""Benchmark: our batched fixed-step synthesis vs. the upstream-style path, on the same weights.

ours:            texts sorted by length, padded batches, guidance as one stacked pass, Euler (or midpoint).
upstream-style:  one text at a time, adaptive dopri5 (torchdiffeq), the two guidance passes run separately.

Both produce mels only (the vocoder is the same for both and not timed). Also reported:
  * the mel difference between the two paths at matched settings (same solver, steps and noise): it shows
    batching and stacked guidance change nothing beyond float rounding;
  * the mel difference between our fixed-step result and dopri5 (the solver's approximation error).
Random v1.1 weights are used (no download); note that random weights give a rougher vector field than a
trained model, so dopri5 needs more function evaluations (NFE) here than it would on real weights.

    .venv/bin/python bench/bench_tts_synthesis.py            # 200 verses (slow on CPU)
    .venv/bin/python bench/bench_tts_synthesis.py --n 20 --upstream-n 2
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from StableTTS import build_model, mel_spectrogram, synthesize_mel  # noqa: E402
from StableTTS.mel import MEL  # noqa: E402
from StableTTS.text import RomanizedFrontend  # noqa: E402
from tts.inference import vocode  # noqa: E402

WORDS = ("na mungu akasema iwe nuru ikawa akaona kwamba ni njema akatenga kati ya giza mwanzo aliziumba mbingu "
         "nchi ilikuwa ukiwa tena utupu roho yake ikatulia juu maji bwana watu wake israeli mfalme nyumba siku "
         "baba mwana neno uzima haki amani upendo imani").split()


def verse_texts(n: int, seed: int) -> list[str]:
    """Verse-length pseudo-Swahili: 12–40 words (≈ 70–250 characters), a clause break every few words."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(12, 40))]
        for i in range(5, len(words) - 1, rng.randint(5, 9)):
            words[i] += ","
        texts.append(" ".join(words).capitalize() + ".")
    return texts


def random_v11(seed: int, preset: str = "v1.1") -> torch.nn.Module:
    """Random weights that do work: v1.1 by default, or another preset of the same architecture."""
    torch.manual_seed(seed)
    model = build_model(preset)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation.2" in name or name.startswith("fake_"):
                p.normal_(0.0, 0.02)  # wake the zero-initialised gates so every block does work
        model.dp.proj.bias.fill_(0.3)  # ≈ 2 frames per symbol: verse-length audio (≈ 5–10 s)
    return model.eval()


def pad(encoded: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(e) for e in encoded], device=device)
    ids = torch.zeros(len(encoded), int(lengths.max()), dtype=torch.long, device=device)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e, device=device)
    return ids, lengths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(model, encoded, ref, args, device, solver, steps, precision, indices=None, *, vocoder=None,
             compile=False):
    """Batched path; returns ({index: mel}, seconds, nfe per batch).

    vocoder: also turn each batch's mels into audio (timed, as a job does). compile: `synthesize_mel`'s flag.
    """
    indices = list(range(len(encoded))) if indices is None else indices
    order = sorted(indices, key=lambda i: len(encoded[i]), reverse=True)
    mels, nfes = {}, []
    sync(device)
    start = time.perf_counter()
    for s in range(0, len(order), args.batch_size):
        chunk = order[s : s + args.batch_size]
        ids, lengths = pad([encoded[i] for i in chunk], device)
        stats: dict = {}
        mel, mel_len = synthesize_mel(
            model, ids, lengths, ref, steps=steps, cfg_scale=args.cfg_scale, solver=solver, precision=precision,
            generator=[torch.Generator().manual_seed(args.seed + i) for i in chunk], stats=stats, compile=compile,
        )
        nfes.append(stats["nfe"])
        if vocoder is not None:
            vocode(vocoder, mel, mel_len)
        for row, i in enumerate(chunk):
            mels[i] = mel[row, :, : int(mel_len[row])].float().cpu()
    sync(device)
    return mels, time.perf_counter() - start, nfes


def run_upstream_style(model, encoded, ref, args, device, solver, steps, indices, *, deadline=None):
    """One text at a time, two guidance passes, fp32. deadline (a time.monotonic() value): start no text
    after it (one text at least is done); the results then cover the texts done."""
    mels, nfes = {}, []
    sync(device)
    start = time.perf_counter()
    for i in indices:
        if deadline is not None and mels and time.monotonic() > deadline:
            break
        ids, lengths = pad([encoded[i]], device)
        stats: dict = {}
        mel, _ = synthesize_mel(
            model, ids, lengths, ref, steps=steps, cfg_scale=args.cfg_scale, solver=solver, precision="fp32",
            generator=[torch.Generator().manual_seed(args.seed + i)], batched_cfg=False, stats=stats,
        )
        nfes.append(stats["nfe"])
        mels[i] = mel[0].cpu()
    sync(device)
    return mels, time.perf_counter() - start, nfes


def mel_distance(a: dict, b: dict) -> tuple[float, float]:
    """(mean |Δ|, max |Δ|) in log-mel units over the items both have."""
    common = sorted(set(a) & set(b))
    diffs = torch.cat([(a[i] - b[i]).abs().flatten() for i in common])
    return float(diffs.mean()), float(diffs.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="verse-length texts for our batched path")
    parser.add_argument("--upstream-n", type=int, default=None, help="texts for the (slow) upstream-style path; default --n")
    parser.add_argument("--match-n", type=int, default=4, help="texts for the matched-settings mel comparison")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--solver", choices=("euler", "midpoint"), default="euler")
    parser.add_argument("--upstream-solver", choices=("dopri5", "euler", "midpoint"), default="dopri5",
                        help="solver of the upstream-style path (a fixed-step one isolates the batching gain)")
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    up_n = min(args.upstream_n or args.n, args.n)
    match_n = min(args.match_n, args.n)

    texts = verse_texts(args.n, args.seed)
    encoded = [e.ids for e in RomanizedFrontend("swh", romanizer="latin").encode_batch(texts)]
    model = random_v11(args.seed).to(device)
    g = torch.Generator().manual_seed(args.seed)
    ref = mel_spectrogram(0.1 * torch.randn(3 * MEL.sample_rate, generator=g)).unsqueeze(0).to(device)  # 3 s reference

    print(f"device {device} ({torch.get_num_threads()} CPU threads), {args.n} texts, "
          f"mean {sum(map(len, texts)) / len(texts):.0f} characters / {sum(map(len, encoded)) / len(encoded):.0f} ids, "
          f"load average {os.getloadavg()[0]:.1f}")
    run_ours(model, encoded, ref, args, device, args.solver, args.steps, args.precision, indices=[0])  # warm-up

    ours, t_ours, nfe_ours = run_ours(model, encoded, ref, args, device, args.solver, args.steps, args.precision)
    frames = sum(m.shape[-1] for m in ours.values())
    up_idx = list(range(up_n))
    upstream, t_up, nfe_up = run_upstream_style(model, encoded, ref, args, device, args.upstream_solver, args.steps,
                                                up_idx)
    match_idx = list(range(match_n))
    if args.upstream_solver == args.solver:
        up_fixed = upstream
    else:
        up_fixed, _, _ = run_upstream_style(model, encoded, ref, args, device, args.solver, args.steps, match_idx)
    ours_fp32, _, _ = run_ours(model, encoded, ref, args, device, args.solver, args.steps, "fp32", match_idx)

    audio_s = frames * MEL.hop_length / MEL.sample_rate
    rate_ours, rate_up = args.n / t_ours, up_n / t_up
    print()
    print("| path           | solver   | NFE/text | guidance | batch | texts | time (s) | verses/s | audio s / wall s |")
    print("|----------------|----------|----------|----------|-------|-------|----------|----------|------------------|")
    print(f"| ours           | {args.solver:<8} | {nfe_ours[0]:>8} | stacked  | {args.batch_size:>5} | {args.n:>5} "
          f"| {t_ours:>8.1f} | {rate_ours:>8.3f} | {audio_s / t_ours:>16.2f} |")
    up_audio = sum(upstream[i].shape[-1] for i in up_idx) * MEL.hop_length / MEL.sample_rate
    print(f"| upstream-style | {args.upstream_solver:<8} | {sum(nfe_up) / len(nfe_up):>8.0f} | 2 passes | {1:>5} | {up_n:>5} "
          f"| {t_up:>8.1f} | {rate_up:>8.3f} | {up_audio / t_up:>16.2f} |")
    print()
    print(f"speed-up (verses/s ratio): {rate_ours / rate_up:.1f}x")
    print(f"  of which fewer function evaluations: {sum(nfe_up) / len(nfe_up) / nfe_ours[0]:.1f}x "
          f"({args.upstream_solver} NFE {min(nfe_up)}–{max(nfe_up)}), batching + stacked guidance: "
          f"{rate_ours / rate_up / (sum(nfe_up) / len(nfe_up) / nfe_ours[0]):.2f}x per evaluation")
    mean_d, max_d = mel_distance(ours_fp32, up_fixed)
    print(f"mel |Δ| ours (batched, fp32) vs upstream-style, both {args.solver} {args.steps} steps, same noise, "
          f"{match_n} texts: mean {mean_d:.2e}, max {max_d:.2e}")
    if args.precision != "fp32" and device.type == "cuda":
        mean_d, max_d = mel_distance(ours, up_fixed)
        print(f"mel |Δ| ours ({args.precision}) vs upstream-style {args.solver}: mean {mean_d:.2e}, max {max_d:.2e}")
    if args.upstream_solver == "dopri5":
        mean_d, max_d = mel_distance(ours, upstream)
        print(f"mel |Δ| ours ({args.solver} {args.steps}) vs upstream-style dopri5 (solver error), {up_n} texts: "
              f"mean {mean_d:.3f}, max {max_d:.3f} (log-mel units)")


if __name__ == "__main__":
    main()
