"""The GPU run, prepared: everything that needs a GPU, measured in one go under a deadline, one table.

On the device machine (the working tree travels without its venv; nothing is downloaded there):

    python bench/gpu_run.py --json-out $OUT/gpu.json

Here: tiny sizes on the CPU, the same code paths, well under a minute (tests/test_gpu_run.py runs it):

    .venv/bin/python bench/gpu_run.py --dry-run

Sections, riskiest last: TTS synthesis (ours batched vs the upstream-style path, a batch-size sweep, mel only
and with the Vocos vocoder), v1.1 training fp32 vs bf16, ASR transcription with the full-size w2v-bert-2.0
architecture (length-bucketed batches vs a per-file loop), its fine-tuning step, and TTS synthesis through
torch.compile (whose first call compiles for tens of seconds). All weights are random: speed does not depend
on them. Each section gets its share of the time left; a configuration that would overrun is cut and marked
so, CUDA OOM is caught per configuration, and should one call hang past the deadline a watchdog prints the
table and exits.
"""
from __future__ import annotations

import time

STARTED = time.monotonic()  # the deadline counts the imports too

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Callable  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the device machine has no network; nothing here needs one

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import bench_asr  # noqa: E402
import bench_tts_synthesis as tts_bench  # noqa: E402
import bench_tts_training as train_bench  # noqa: E402
from asr.audio import SAMPLE_RATE  # noqa: E402
from asr.decode import Transcriber  # noqa: E402
from asr.vocab import build_vocabulary, load_feature_extractor  # noqa: E402
from StableTTS import Vocos, mel_spectrogram  # noqa: E402
from StableTTS.mel import MEL  # noqa: E402
from StableTTS.synthesis import SAMPLING, bf16_supported  # noqa: E402
from StableTTS.text import RomanizedFrontend  # noqa: E402
from tts.alignment import cpu_alignment  # noqa: E402

logger = logging.getLogger("gpu_run")

NT_VERSES = 7_950  # the New Testament
NT_GOAL_S = 300  # ... spoken in under 5 minutes: >= 26.5 verses/s
ASR_RTFX_GOAL = 1_000
V100_SAMPLES_PER_S = 11.7  # the fine-tuning recipe's figure (HF blog, one V100-16GB; docs/asr.md)
SECONDS_PER_FRAME = MEL.hop_length / MEL.sample_rate  # seconds of audio per StableTTS mel frame

# Shares of the time left when a section starts (time a section leaves unused goes to the later ones).
WEIGHTS = {"tts-synthesis": 0.30, "tts-training": 0.12, "asr-transcription": 0.20, "asr-training": 0.14,
           "tts-compiled": 0.24}
SECTIONS = tuple(WEIGHTS)


@dataclass
class Sizes:
    tts_preset: str
    texts: int
    max_ids: int | None  # cut each text's symbols (the dry run: a CPU needs seconds per verse-length text)
    upstream_texts: int
    batch_sizes: tuple[int, ...]
    vocos: dict  # Vocos() arguments: the released size, or a small one for the dry run
    train_preset: str
    train_batch_frames: int
    train_clips: int
    train_steps: int
    train_warmup: int
    asr_size: str
    asr_clips: int
    asr_batch_sizes: tuple[int, ...]
    asr_train_clips: int
    asr_train_batch: int
    asr_train_steps: int
    gradient_checkpointing: tuple[bool, ...]
    compile_variants: tuple[tuple[str, object], ...]  # (label, synthesize_mel's compile=)


GPU = Sizes(
    tts_preset="v1.1", texts=200, max_ids=None, upstream_texts=16, batch_sizes=(8, 16, 32, 64, 128), vocos={},
    train_preset="v1.1", train_batch_frames=20_000, train_clips=96, train_steps=10, train_warmup=3,
    asr_size="full", asr_clips=256, asr_batch_sizes=(16, 32, 64),
    asr_train_clips=96, asr_train_batch=16, asr_train_steps=8, gradient_checkpointing=(True, False),
    compile_variants=(("inductor", True), ("inductor, CUDA graphs", {"mode": "reduce-overhead"})),
)
DRY = Sizes(
    tts_preset="tiny", texts=6, max_ids=32, upstream_texts=1, batch_sizes=(2, 4),
    vocos={"dim": 32, "intermediate_dim": 64, "num_layers": 1},
    train_preset="tiny", train_batch_frames=1_500, train_clips=4, train_steps=1, train_warmup=1,
    asr_size="tiny", asr_clips=4, asr_batch_sizes=(2, 4),
    asr_train_clips=4, asr_train_batch=2, asr_train_steps=1, gradient_checkpointing=(True, False),
    compile_variants=(("eager backend", {"backend": "eager"}),),
)


@dataclass
class Row:
    section: str
    config: str
    rate: float | None = None
    unit: str = ""
    realtime: float | None = None  # audio seconds per wall second (TTS: real-time factor; ASR: RTFx)
    goal: str = ""
    wall_s: float | None = None
    peak_gib: float | None = None
    status: str = "ok"  # ok, partial, OOM, cut, skipped, error
    note: str = ""


@dataclass
class SectionRecord:
    name: str
    budget_s: float = 0.0
    wall_s: float = 0.0
    peak_gib: float | None = None
    status: str = "not run"


class Clock:
    """The global deadline and the running section's share of what is left of it."""

    def __init__(self, total_s: float, sections: tuple[str, ...], now: Callable[[], float] = time.monotonic,
                 started: float | None = None):
        self.now = now
        self.deadline = (now() if started is None else started) + total_s
        self.pending = list(sections)
        self.section_end = self.deadline

    def start_section(self, name: str) -> float:
        """Begin ``name``; returns its budget: the time left × its weight / the weights of the sections to come."""
        weights = [WEIGHTS.get(s, 0.1) for s in self.pending]
        share = WEIGHTS.get(name, 0.1) / sum(weights) if name in self.pending else 1.0
        if name in self.pending:
            self.pending.remove(name)
        budget = max(0.0, self.global_left()) * share
        self.section_end = self.now() + budget
        return budget

    def left(self) -> float:
        return min(self.section_end, self.deadline) - self.now()

    def global_left(self) -> float:
        return self.deadline - self.now()


def cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def reset_peak(device: torch.device) -> None:
    if cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if cuda(device) else None


def free_memory(device: torch.device) -> None:
    gc.collect()
    if cuda(device):
        torch.cuda.empty_cache()


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:160]


class Section:
    """Rows of one section; ``measure`` runs one configuration under the section's budget."""

    def __init__(self, report: "Report", record: SectionRecord, clock: Clock, device: torch.device):
        self.report, self.record, self.clock, self.device = report, record, clock, device
        self.name = record.name
        self.peaks: list[float] = []

    def add(self, row: Row) -> Row:
        self.report.rows.append(row)
        return row

    def measure(self, config: str, fn: Callable[[], dict], *, need_s: float = 0.0) -> Row | None:
        """Run ``fn`` (it returns Row fields) unless less than ``need_s`` is left; a CUDA OOM or an error
        becomes the row's status. Returns the row when ``fn`` ran to the end."""
        if self.clock.left() <= need_s:
            self.add(Row(self.name, config, status="cut",
                         note=f"over budget: {max(0.0, self.clock.left()):.0f} s left, about {need_s:.0f} s needed"))
            return None
        reset_peak(self.device)
        started = time.perf_counter()
        failure = None
        try:
            fields = fn()
        except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError in newer releases: the same class
            failure = ("OOM", "CUDA out of memory")
        except Exception as exc:  # noqa: BLE001 - one configuration's failure must not cost the rest of the run
            logger.exception("%s / %s failed", self.name, config)
            failure = ("error", one_line(exc))
        wall = time.perf_counter() - started
        peak = peak_gib(self.device)
        if peak is not None:
            self.peaks.append(peak)
        if failure is not None:  # the traceback (and the tensors its frames hold) is gone by now
            free_memory(self.device)
            self.add(Row(self.name, config, wall_s=wall, peak_gib=peak, status=failure[0], note=failure[1]))
            return None
        return self.add(Row(self.name, config, wall_s=wall, peak_gib=peak, **fields))


class Report:
    def __init__(self, env: dict):
        self.env = env
        self.rows: list[Row] = []
        self.sections: list[SectionRecord] = []
        self.lock = threading.Lock()  # the watchdog and the main thread may both want to print
        self.printed = False

    def table(self) -> str:
        head = ("section", "configuration", "rate", "unit", "audio s/s", "goal", "wall s", "peak GiB", "status",
                "note")
        cells = [head] + [(r.section, r.config, fmt(r.rate), r.unit, fmt(r.realtime), r.goal, fmt(r.wall_s, 1),
                           fmt(r.peak_gib, 2), r.status, r.note) for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines += ["", "| section | budget s | used s | peak GiB | status |", "|---|---|---|---|---|"]
        lines += [f"| {s.name} | {s.budget_s:.0f} | {s.wall_s:.0f} | {fmt(s.peak_gib, 2)} | {s.status} |"
                  for s in self.sections]
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {"env": self.env, "sections": [dataclasses.asdict(s) for s in self.sections],
                "rows": [dataclasses.asdict(r) for r in self.rows], "goals": self.goals()}

    def goals(self) -> dict:
        def best(section: str, unit: str, key: str = "rate", contains: str = "") -> float | None:
            values = [getattr(r, key) for r in self.rows if r.section == section and r.unit == unit
                      and r.status in ("ok", "partial") and contains in r.config and getattr(r, key) is not None]
            return max(values) if values else None

        tts = max(filter(None, [best("tts-synthesis", "verses/s", contains="Vocos"),
                                best("tts-compiled", "verses/s", contains="Vocos")]), default=None)
        rtfx = best("asr-transcription", "clips/s", key="realtime", contains="end to end, batches")
        rtfx_model = best("asr-transcription", "clips/s", key="realtime", contains="length-bucketed")
        train = best("asr-training", "samples/s")
        return {
            "nt_verses_per_s_needed": round(NT_VERSES / NT_GOAL_S, 1),
            "tts_best_verses_per_s_with_vocoder": tts,
            "nt_minutes": None if not tts else round(NT_VERSES / tts / 60, 2),
            "nt_goal_met": None if tts is None else tts >= NT_VERSES / NT_GOAL_S,
            "asr_rtfx_end_to_end_batched": rtfx,
            "asr_rtfx_goal_met": None if rtfx is None else rtfx >= ASR_RTFX_GOAL,
            "asr_best_rtfx_model_only": rtfx_model,
            "asr_training_samples_per_s": train,
            "asr_training_vs_v100_recipe": None if train is None else round(train / V100_SAMPLES_PER_S, 2),
        }

    def emit(self, json_out: Path | None, *, final_note: str = "") -> bool:
        """Print the table and write the JSON, once (False when the other thread already did)."""
        with self.lock:
            if self.printed:
                return False
            self.printed = True
            print("\n" + self.table())
            g = self.goals()
            print(f"\nGoal: New Testament ({NT_VERSES:,} verses) in < {NT_GOAL_S // 60} min = "
                  f">= {g['nt_verses_per_s_needed']} verses/s with the vocoder: "
                  f"best {fmt(g['tts_best_verses_per_s_with_vocoder'])} -> {verdict(g['nt_goal_met'])}"
                  + (f" ({g['nt_minutes']} min)" if g["nt_minutes"] else ""))
            print(f"Goal: ASR RTFx >= {ASR_RTFX_GOAL:,} end to end, batched: "
                  f"{fmt(g['asr_rtfx_end_to_end_batched'])} -> {verdict(g['asr_rtfx_goal_met'])} "
                  f"(model only, best batch: {fmt(g['asr_best_rtfx_model_only'])})")
            print(f"ASR fine-tuning: best {fmt(g['asr_training_samples_per_s'])} samples/s vs the recipe's "
                  f"{V100_SAMPLES_PER_S} on a V100: {fmt(g['asr_training_vs_v100_recipe'])}x")
            if final_note:
                print(final_note)
            sys.stdout.flush()
            if json_out is not None:
                json_out.parent.mkdir(parents=True, exist_ok=True)
                json_out.write_text(json.dumps(self.as_json(), indent=1) + "\n")
            return True


def fmt(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 0.1 else 4
    return f"{value:,.{digits}f}"


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "NOT met"


def nt_goal(rate: float) -> str:
    minutes = NT_VERSES / rate / 60
    shown = f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.0f} h"
    return f"NT {shown}: {'met' if rate * NT_GOAL_S >= NT_VERSES else 'not met'}"


def environment(device: torch.device, dry_run: bool) -> dict:
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "transformers": transformers.__version__, "device": str(device), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "dry_run": dry_run}
    if cuda(device):
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported(),
                   sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
                   sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return env


# -- TTS synthesis ------------------------------------------------------------------------------------


def tts_setup(ctx) -> SimpleNamespace:
    """Texts, a random model, a 3 s reference and a random Vocos, built once for both TTS sections."""
    if ctx.tts is None:
        device, sizes = ctx.device, ctx.sizes
        texts = tts_bench.verse_texts(sizes.texts, ctx.seed)
        encoded = [e.ids[: sizes.max_ids] for e in RomanizedFrontend("swh", romanizer="latin").encode_batch(texts)]
        model = tts_bench.random_v11(ctx.seed, sizes.tts_preset).to(device)
        g = torch.Generator().manual_seed(ctx.seed)
        ref = mel_spectrogram(0.1 * torch.randn(3 * MEL.sample_rate, generator=g)).unsqueeze(0).to(device)
        torch.manual_seed(ctx.seed)
        vocoder = Vocos(**sizes.vocos).to(device).eval()
        precision = "bf16" if bf16_supported(device) else "fp32"
        ctx.tts = SimpleNamespace(encoded=encoded, model=model, ref=ref, vocoder=vocoder, precision=precision,
                                  best_batch=max(sizes.batch_sizes), eager_mels={}, steps=SAMPLING.steps,
                                  solver=SAMPLING.solver)
    return ctx.tts


def synthesis_args(ctx, batch_size: int) -> SimpleNamespace:
    return SimpleNamespace(batch_size=batch_size, cfg_scale=SAMPLING.cfg_scale, seed=ctx.seed)


def audio_seconds(mels: dict) -> float:
    return sum(m.shape[-1] for m in mels.values()) * SECONDS_PER_FRAME


def section_tts_synthesis(section: Section, ctx) -> None:
    tts = tts_setup(ctx)
    device, sizes, n = ctx.device, ctx.sizes, len(tts.encoded)
    first = min(sizes.batch_sizes)
    # warm-up (kernels, cuBLAS and cuFFT plans, the allocator) at the smallest batch: it must not OOM
    tts_bench.run_ours(tts.model, tts.encoded, tts.ref, synthesis_args(ctx, first), device, tts.solver, tts.steps,
                       "auto", list(range(min(n, first))), vocoder=tts.vocoder)

    up_n = min(sizes.upstream_texts, n)

    def upstream() -> dict:
        # dopri5 on random weights takes hundreds of evaluations per verse: a third of the budget at most
        deadline = time.monotonic() + 0.35 * section.clock.left()
        mels, seconds, nfes = tts_bench.run_upstream_style(
            tts.model, tts.encoded, tts.ref, synthesis_args(ctx, 1), device, "dopri5", tts.steps,
            list(range(up_n)), deadline=deadline)
        rate = len(mels) / seconds
        return {"rate": rate, "unit": "verses/s", "realtime": audio_seconds(mels) / seconds, "goal": nt_goal(rate),
                "status": "ok" if len(mels) == up_n else "partial",
                "note": f"{len(mels)} of {up_n} texts, NFE {sum(nfes) / len(nfes):.0f}/text, per-verse rate"}

    section.measure("upstream-style: 1 text at a time, dopri5, 2 guidance passes, fp32, mel", upstream)

    def ours(batch: int, precision: str, with_vocoder: bool, keep: bool = False) -> Callable[[], dict]:
        def run() -> dict:
            mels, seconds, nfes = tts_bench.run_ours(
                tts.model, tts.encoded, tts.ref, synthesis_args(ctx, batch), device, tts.solver, tts.steps,
                precision, vocoder=tts.vocoder if with_vocoder else None)
            if keep:
                tts.eager_mels[batch] = mels
            rate = n / seconds
            return {"rate": rate, "unit": "verses/s", "realtime": audio_seconds(mels) / seconds,
                    "goal": nt_goal(rate), "note": f"{n} texts, NFE {nfes[0]}/batch"}
        return run

    label = f"ours: batched, {tts.solver} {tts.steps} steps, stacked guidance"
    best_rate, last = {}, {False: 0.0, True: 0.0}
    for batch in sizes.batch_sizes:
        for with_vocoder in (False, True):
            output = "mel + Vocos" if with_vocoder else "mel"
            row = section.measure(f"{label}, {tts.precision}, batch {batch}, {output}",
                                  ours(batch, "auto", with_vocoder, keep=not with_vocoder), need_s=last[with_vocoder])
            if row is not None:
                last[with_vocoder] = row.wall_s
                if not with_vocoder:
                    best_rate[batch] = row.rate
    if best_rate:
        tts.best_batch = max(best_rate, key=best_rate.get)
    tts.eager_mels = {tts.best_batch: tts.eager_mels[tts.best_batch]} if tts.best_batch in tts.eager_mels else {}
    if tts.precision != "fp32":
        section.measure(f"{label}, fp32, batch {tts.best_batch} (the fastest above), mel",
                        ours(tts.best_batch, "fp32", False), need_s=last[False])


def section_tts_compiled(section: Section, ctx) -> None:
    tts = tts_setup(ctx)
    device, n, batch = ctx.device, len(tts.encoded), tts.best_batch
    args = synthesis_args(ctx, batch)
    if batch not in tts.eager_mels:  # the eager section did not run: its reference result, here
        tts_bench.run_ours(tts.model, tts.encoded, tts.ref, args, device, tts.solver, tts.steps, "auto",
                           list(range(min(n, batch))))
        tts.eager_mels[batch] = tts_bench.run_ours(tts.model, tts.encoded, tts.ref, args, device, tts.solver,
                                                   tts.steps, "auto")[0]
    reference, last = tts.eager_mels[batch], 0.0
    for label, options in ctx.sizes.compile_variants:
        def run(options=options) -> dict:
            started = time.perf_counter()
            tts_bench.run_ours(tts.model, tts.encoded, tts.ref, args, device, tts.solver, tts.steps, "auto",
                               list(range(min(n, batch))), compile=options)  # compiles
            first = time.perf_counter() - started
            mels, seconds, _ = tts_bench.run_ours(tts.model, tts.encoded, tts.ref, args, device, tts.solver,
                                                  tts.steps, "auto", compile=options)
            mean_diff, max_diff = tts_bench.mel_distance(mels, reference)
            rate = n / seconds
            return {"rate": rate, "unit": "verses/s", "realtime": audio_seconds(mels) / seconds, "goal": nt_goal(rate),
                    "note": f"first call (compiling) {first:.0f} s; |mel - eager| mean {mean_diff:.1e}, "
                            f"max {max_diff:.1e}"}

        row = section.measure(f"ours compiled ({label}), {tts.precision}, batch {batch}, mel", run, need_s=last)
        last = row.wall_s if row is not None else last


# -- TTS training -------------------------------------------------------------------------------------


def section_tts_training(section: Section, ctx) -> None:
    device, sizes = ctx.device, ctx.sizes
    batches = train_bench.random_batches(sizes.train_batch_frames, sizes.train_clips, seed=ctx.seed)
    results = {}
    with cpu_alignment(device):  # monotonic alignment on the CPU (numba, threaded), as training does on CUDA
        for precision in ("fp32", "bf16"):
            def run(precision=precision) -> dict:
                r = train_bench.run(sizes.train_preset, precision, batches, device, sizes.train_steps,
                                    sizes.train_warmup)
                results[precision] = r["clips_per_s"]
                ratio = results[precision] / results["fp32"] if "fp32" in results else None
                return {"rate": r["clips_per_s"], "unit": "samples/s",
                        "realtime": r["frames_per_s"] * SECONDS_PER_FRAME,
                        "goal": f"{ratio:.2f}x fp32" if ratio and precision != "fp32" else "",
                        "note": f"{r['step_s']:.3f} s/step, MAS {r['mas_share']:.0%} of it, "
                                f"{len(batches)} batches of <= {sizes.train_batch_frames} frames"}

            section.measure(f"{sizes.train_preset} training step, {precision}, SDPA attention", run)


# -- ASR ----------------------------------------------------------------------------------------------


def asr_setup(ctx) -> SimpleNamespace:
    if ctx.asr is None:
        waves, texts = bench_asr.verse_like_clips(ctx.sizes.asr_clips, seed=ctx.seed)
        vocabulary = build_vocabulary(texts, min_char_count=1).vocabulary
        ctx.asr = SimpleNamespace(waves=waves, texts=texts, vocabulary=vocabulary,
                                  feature_extractor=load_feature_extractor(None))
    return ctx.asr


def rtfx_goal(rtfx: float) -> str:
    return f"RTFx >= {ASR_RTFX_GOAL:,}: {'met' if rtfx >= ASR_RTFX_GOAL else 'not met'}"


def section_asr_transcription(section: Section, ctx) -> None:
    asr, device, sizes = asr_setup(ctx), ctx.device, ctx.sizes
    torch.manual_seed(ctx.seed)
    model = bench_asr.random_model(sizes.asr_size, asr.vocabulary, device)
    transcriber = Transcriber(model, asr.feature_extractor, asr.vocabulary, device)
    waves = asr.waves
    seconds_of = [len(w) / SAMPLE_RATE for w in waves]
    total_audio = sum(seconds_of)
    params = sum(p.numel() for p in model.parameters())
    size = f"{sizes.asr_size} ({params / 1e6:.3g} M parameters), {str(transcriber.dtype).removeprefix('torch.')}"
    feats: list = []

    def features() -> dict:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=transcriber.feature_workers) as pool:
            feats.extend(pool.map(transcriber.features, waves))
        seconds = time.perf_counter() - started
        return {"rate": len(waves) / seconds, "unit": "clips/s", "realtime": total_audio / seconds,
                "note": f"{len(waves)} clips, {total_audio:.0f} s of audio (1.5-20 s each)"}

    if section.measure(f"log-mel features on the CPU, {transcriber.feature_workers} threads", features) is None:
        return
    top = max(sizes.asr_batch_sizes)
    transcriber.best_ids(feats[:top], top)  # warm-up

    best = {}
    for batch in sizes.asr_batch_sizes:
        def batched(batch=batch) -> dict:
            started = time.perf_counter()
            transcriber.best_ids(feats, batch)
            seconds = time.perf_counter() - started
            best[batch] = total_audio / seconds
            return {"rate": len(feats) / seconds, "unit": "clips/s", "realtime": total_audio / seconds,
                    "goal": rtfx_goal(total_audio / seconds),
                    "note": f"padding {transcriber.stats.padding_overhead:.1%} of frames"}

        section.measure(f"{size}: length-bucketed batches of {batch}, model only", batched)
    batch = max(best, key=best.get) if best else sizes.asr_batch_sizes[0]

    def per_file(items: list, run_one: Callable, share: float, what: str) -> Callable[[], dict]:
        def run() -> dict:
            deadline = time.monotonic() + share * section.clock.left()
            out, started = [], time.perf_counter()
            for item in items:
                if out and time.monotonic() > deadline:
                    break
                out.append(run_one(item))
            seconds = time.perf_counter() - started
            audio = sum(seconds_of[: len(out)])
            what_done[what] = out
            return {"rate": len(out) / seconds, "unit": "clips/s", "realtime": audio / seconds,
                    "goal": rtfx_goal(audio / seconds), "status": "ok" if len(out) == len(items) else "partial",
                    "note": f"{len(out)} of {len(items)} clips"}
        return run

    what_done: dict = {}
    section.measure(f"{size}: per-file loop, model only",
                    per_file(feats, lambda f: transcriber.best_ids([f], 1), 0.3, "model"))

    def end_to_end() -> dict:
        started = time.perf_counter()
        what_done["batched"] = transcriber.transcribe(waves, batch)
        seconds = time.perf_counter() - started
        return {"rate": len(waves) / seconds, "unit": "clips/s", "realtime": total_audio / seconds,
                "goal": rtfx_goal(total_audio / seconds), "note": "features in threads + model + CTC decoding"}

    section.measure(f"{size}: end to end, batches of {batch}", end_to_end)
    row = section.measure(f"{size}: end to end, per-file loop",
                          per_file(waves, lambda w: transcriber.transcribe([w], 1)[0], 0.6, "per_file"))
    if row is not None and "batched" in what_done:
        done = what_done["per_file"]
        row.note += f"; same text as batched: {sum(a == b for a, b in zip(done, what_done['batched']))}/{len(done)}"
    del transcriber, model
    free_memory(device)


def section_asr_training(section: Section, ctx) -> None:
    asr, device, sizes = asr_setup(ctx), ctx.device, ctx.sizes
    n = min(sizes.asr_train_clips, len(asr.waves))
    clips = bench_asr.training_clips(asr.feature_extractor, asr.waves[:n], asr.texts[:n])
    torch.manual_seed(ctx.seed)
    model = bench_asr.random_model(sizes.asr_size, asr.vocabulary, device)
    precision = "bf16 autocast" if bench_asr.supports_bf16(device) else "fp32"
    last = 0.0
    for checkpointing in sizes.gradient_checkpointing:
        def run(checkpointing=checkpointing) -> dict:
            # transformers 5 renamed gradient checkpointing; the device machine's release may be either
            switch = "enable" if checkpointing else "disable"
            (getattr(model, f"activation_checkpointing_{switch}", None)
             or getattr(model, f"gradient_checkpointing_{switch}"))()
            r = bench_asr.bench_training(model, asr.vocabulary, clips, sizes.asr_train_batch, sizes.asr_train_steps,
                                         device)
            return {"rate": r["samples_per_s"], "unit": "samples/s", "realtime": r["audio_seconds_per_s"],
                    "goal": f"{r['samples_per_s'] / V100_SAMPLES_PER_S:.1f}x the recipe's V100 "
                            f"({V100_SAMPLES_PER_S}/s)",
                    "note": f"{r['steps']} steps; mean clip {r['mean_clip_seconds']:.1f} s (the recipe's Common Voice "
                            "clips are a few seconds)"}

        row = section.measure(f"{sizes.asr_size} fine-tuning step, batch {sizes.asr_train_batch}, {precision}, "
                              f"gradient checkpointing {'on' if checkpointing else 'off'}", run, need_s=last)
        last = row.wall_s if row is not None else last
    del model
    free_memory(device)


RUNNERS = {
    "tts-synthesis": section_tts_synthesis,
    "tts-training": section_tts_training,
    "asr-transcription": section_asr_transcription,
    "asr-training": section_asr_training,
    "tts-compiled": section_tts_compiled,
}


def run_section(report: Report, clock: Clock, ctx, name: str) -> None:
    record = SectionRecord(name)
    report.sections.append(record)
    ctx.current = record
    if clock.global_left() <= 1:
        record.status = "cut"
        report.rows.append(Row(name, "(whole section)", status="cut", note="the global deadline has passed"))
        return
    record.budget_s = clock.start_section(name)
    section = Section(report, record, clock, ctx.device)
    rows_before = len(report.rows)
    started = time.perf_counter()
    print(f"== {name}: budget {record.budget_s:.0f} s", flush=True)
    record.status = "running"
    try:
        RUNNERS[name](section, ctx)
        record.status = "ok"
    except torch.cuda.OutOfMemoryError:
        record.status = "OOM"
        section.add(Row(name, "(section setup)", status="OOM", note="CUDA out of memory"))
    except Exception as exc:  # noqa: BLE001 - the other sections still run
        logger.exception("section %s failed", name)
        record.status = "error"
        section.add(Row(name, "(section setup)", status="error", note=one_line(exc)))
    free_memory(ctx.device)
    record.wall_s = time.perf_counter() - started
    record.peak_gib = max(section.peaks, default=peak_gib(ctx.device))
    statuses = {r.status for r in report.rows[rows_before:]}
    if record.status == "ok" and statuses & {"cut", "partial"}:
        record.status = "cut short"
    for row in report.rows[rows_before:]:
        print(f"   {row.config}: {fmt(row.rate)} {row.unit} [{row.status}] {row.note}", flush=True)


def start_watchdog(report: Report, clock: Clock, ctx, json_out: Path | None, grace_s: float) -> threading.Timer:
    """Past the deadline (plus grace), a call that never returns must not cost the table: print it and exit."""
    def fire() -> None:
        record = ctx.current
        if record is not None and record.status == "running":
            record.status = "hung: cut at the deadline"
            report.rows.append(Row(record.name, "(in progress)", status="cut", note="still running at the deadline"))
        if report.emit(json_out, final_note="Stopped by the watchdog at the global deadline."):
            os._exit(3)

    timer = threading.Timer(max(0.0, clock.global_left()) + grace_s, fire)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, same code paths")
    parser.add_argument("--json-out", type=Path, help="also write the table as JSON here")
    parser.add_argument("--deadline-min", type=float, default=7.5, help="the whole run's deadline, minutes")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (to rerun a part)")
    parser.add_argument("--device", help="default: cuda when present (cpu for --dry-run)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 for --dry-run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    device = torch.device(args.device or ("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"))
    threads = args.threads or (1 if args.dry_run else None)  # tiny models only lose from a second thread
    if threads:
        torch.set_num_threads(threads)
    sizes = DRY if args.dry_run else GPU
    ctx = SimpleNamespace(device=device, sizes=sizes, seed=args.seed, tts=None, asr=None, current=None)
    report = Report(environment(device, args.dry_run))
    print("GPU run" + (" (dry run: tiny sizes, CPU)" if args.dry_run else "") + ": "
          + ", ".join(f"{k} {v}" for k, v in report.env.items() if v is not None), flush=True)
    if not cuda(device) and not args.dry_run:
        print("warning: no CUDA device; these are CPU figures at full size", flush=True)
    clock = Clock(60 * args.deadline_min, tuple(n for n in SECTIONS if n in names), started=STARTED)
    watchdog = start_watchdog(report, clock, ctx, args.json_out, grace_s=20.0)
    for name in SECTIONS:
        if name in names:
            run_section(report, clock, ctx, name)
    watchdog.cancel()
    total = time.monotonic() - STARTED
    report.env["total_s"] = round(total, 1)
    note = f"Total {total:.0f} s (deadline {60 * args.deadline_min:.0f} s)."
    if args.dry_run:
        note += " Dry run: tiny models on a CPU; the figures only show that every path runs, not the goals."
    report.emit(args.json_out, final_note=note)
    return 1 if any(r.status == "error" for r in report.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
