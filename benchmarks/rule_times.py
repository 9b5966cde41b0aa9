"""Time per rule of a finished workflow run, from the benchmark files every rule writes.

    python benchmarks/rule_times.py                 # the run in this directory (e.g. after `make demo`)
    python benchmarks/rule_times.py --workdir DIR --out benchmarks/out/demo_rules.csv

Every rule writes ``logs/benchmark/<rule or analysis>/…tsv`` (Snakemake's ``benchmark:``; the
``intervention`` rule under the analysis's name, the figure rules under ``figure``).  Per group this
prints the jobs, their summed and longest wall time (``s`` column: the job's process from start to
end) and their summed CPU time; with ``--cores`` > 1 jobs overlap, so the sum exceeds the run's wall
time.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import polars as pl


def rule_times(workdir: Path) -> list[dict[str, object]]:
    """One row per group of benchmark files (first folder under logs/benchmark, or the file's name
    for a rule with a single job), longest total first."""
    root = workdir / "logs" / "benchmark"
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for path in sorted(root.rglob("*.tsv")):
        with path.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"), None)
        if row is None or "s" not in row:
            print(f"skipped {path}: no benchmark row (an interrupted job?)")
            continue
        cpu = row.get("cpu_time", "NA")
        parts = path.relative_to(root).parts
        groups[parts[0] if len(parts) > 1 else path.stem].append((float(row["s"]), float(cpu) if cpu not in ("NA", "") else 0.0))
    if not groups:
        raise SystemExit(f"no benchmark files under {root}: run the workflow there first")
    rows = [
        {
            "rule": name,
            "jobs": len(times),
            "total_s": round(sum(s for s, _ in times), 1),
            "longest_s": round(max(s for s, _ in times), 1),
            "cpu_s": round(sum(c for _, c in times), 1),
        }
        for name, times in groups.items()
    ]
    return sorted(rows, key=lambda r: -r["total_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = rule_times(args.workdir)
    print(f"{'rule':<24}{'jobs':>6}{'total s':>10}{'longest s':>11}{'cpu s':>9}")
    for r in rows:
        print(f"{r['rule']:<24}{r['jobs']:>6}{r['total_s']:>10}{r['longest_s']:>11}{r['cpu_s']:>9}")
    print(f"{'all':<24}{sum(r['jobs'] for r in rows):>6}{round(sum(r['total_s'] for r in rows), 1):>10}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pl.from_dicts(rows, infer_schema_length=None).write_csv(args.out)


if __name__ == "__main__":
    main()
