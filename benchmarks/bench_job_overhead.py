"""Fixed cost of the forward-table jobs: what turning one extraction cache into the forward
analyses' tables costs per (model, task), as whole processes (interpreter start, imports, reading the
cache, writing the table), alternating the two layouts so both see the same load.

    python benchmarks/bench_job_overhead.py --old-src /path/to/old/checkout/src --cache results/cache/M/T/stats.safetensors

old: one process per forward analysis (the layout before one job per model × task), each importing
what that code imported (torch included); new: one process writing every forward analysis
(``effdepth.jobs.forward_tables``, numpy only).  Snakemake's own per-job wrapper comes on top of
both, once per job.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORWARD = ("relative_contribution", "logit_lens", "block_influence")


def _run(src: Path, code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(src)}, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-src", type=Path, required=True, help="src/ of a checkout with one job per forward analysis")
    parser.add_argument("--cache", type=Path, required=True, help="an extraction cache (stats.safetensors)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp())
    old = (
        "from effdepth.log import get_logger; from effdepth.jobs import forward_table; "
        "forward_table({a!r}, {cache!r}, {out!r}, 'correct', 'm', 't')"
    )
    variants = {a: ["correct"] for a in FORWARD}
    new = (
        "from effdepth.log import get_logger; from effdepth.jobs import forward_tables; "
        f"forward_tables({variants!r}, {str(args.cache)!r}, {str(out / 'forward.parquet')!r}, 'm', 't')"
    )
    olds, news = [], []
    for _ in range(args.repeat):
        olds.append(
            sum(_run(args.old_src, old.format(a=a, cache=str(args.cache), out=str(out / f"{a}.parquet"))) for a in FORWARD)
        )
        news.append(_run(REPO / "src", new))
    o, n = statistics.median(olds), statistics.median(news)
    runs = f"per (model, task), median of {args.repeat} alternating runs"
    print(f"{runs}: {len(FORWARD)} jobs {o:.2f} s -> 1 job {n:.2f} s ({o / n:.1f}x)")


if __name__ == "__main__":
    main()
