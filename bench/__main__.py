"""`make bench`: every benchmark in one run, each printing its side-by-side ratios.

Benchmarks are not tests: they measure, they do not assert. Sizes here are chosen so the whole run
takes a few minutes on a 2-core CPU; each script takes larger sizes (and a GPU) on its own command line:

    .venv/bin/python bench/bench_tts_synthesis.py --n 200          # on a GPU: the full 200-verse comparison
    .venv/bin/python bench/bench_asr.py --size small --clips 256
    .venv/bin/python bench/bench_gitlab.py                         # 10 -> 1,000 verses and projects
    python bench/gpu_run.py --json-out gpu.json                    # on a lent GPU: every GPU figure in 8 min
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (script, arguments for a CPU-sized run)
BENCHMARKS = [
    ("bench_gitlab.py", ["--quick"]),
    # dopri5 on random v1.1 weights needs ~300 evaluations per verse: ~20 min for ONE verse on 2 CPU cores.
    # The quick run compares per-evaluation efficiency (batching, one CFG pass); the dopri5 ratio is the
    # GPU run: bench_tts_synthesis.py --n 200.
    # On a CPU batching costs (see tts.inference.default_batch_size): --batch-size 1 here compares the
    # stacked guidance pass alone; the batching gain is a GPU measurement.
    ("bench_tts_synthesis.py", ["--n", "8", "--upstream-n", "4", "--upstream-solver", "euler", "--batch-size", "1"]),
    ("bench_tts_training.py", []),
    ("bench_asr.py", ["--clips", "32", "--repeats", "2"]),
    # The GPU run's own code paths at tiny sizes; its figures mean something only on a GPU.
    ("gpu_run.py", ["--dry-run"]),
]


def main() -> int:
    failures = []
    for script, args in BENCHMARKS:
        path = HERE / script
        if not path.exists():
            print(f"== {script}: not present, skipped\n", flush=True)
            continue
        print(f"== {script} {' '.join(args)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(path), *args], cwd=HERE.parent)
        print(f"== {script}: exit {code} after {time.monotonic() - started:.0f} s\n", flush=True)
        if code:
            failures.append(script)
    if failures:
        print("failed: " + ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
