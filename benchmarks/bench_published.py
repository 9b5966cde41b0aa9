"""Compute alone: effdepth against the published code's structure (``published_structure.py``).

    python benchmarks/bench_published.py --models tiny --repeat 3
    python benchmarks/bench_published.py --models smollm2-135m --ig-layers 0 6 12 18 24 29
    python benchmarks/bench_published.py --models qwen2.5-1.5b-shape --shape-layers 4 --analyses forward layer_skip

Per (model, analysis) the two paths run alternately ``--repeat`` times on the same model, loaded
once, and the medians are reported, with the token-layer evaluations of both (decoder-layer calls
weighted by batch × tokens), the work ratio (matmul FLOPs, published ÷ effdepth) and the largest
difference between the results.  Layer skip compares the whole-layer skip only (the public script
has no other kind).  Integrated gradients: effdepth runs ``--ig-rule`` (default ``auto``, with the
completeness target set to the published structure's own worst relative gap on the same layers,
at most 0.05, so effdepth is timed at equal or better completeness) and points per pass from the
IG job's token budget; ``--ig-layers`` restricts both paths to some layers (the published structure
costs 16 full forward/backward passes per layer).  Whole jobs: ``bench_whole_jobs.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import published_structure as published  # noqa: E402
from bench_analyses import DTYPES, MODELS, TEXTS, benchmark_prompt, compare_forward, flops, interleaved, load, max_diff, positive  # noqa: E402

from effdepth.analyses.integrated_gradients import integrated_gradients, points_per_pass  # noqa: E402
from effdepth.analyses.layer_skip import layer_skip, skip_positions  # noqa: E402
from effdepth.analyses.logit_lens import table as logit_lens_table  # noqa: E402
from effdepth.analyses.relative_contribution import table as relative_contribution_table  # noqa: E402
from effdepth.analyses.residual_erasure import residual_erasure  # noqa: E402
from effdepth.extraction import extract_stats  # noqa: E402

ANALYSES = ("forward", "layer_skip", "residual_erasure", "integrated_gradients")


def worst_gap(out: dict[str, torch.Tensor], layers: list[int]) -> float:
    """max over ``layers`` of |Σ_t IG − (F(x) − F(x′))| / |F(x) − F(x′)|."""
    delta = (out["f_input"] - out["f_baseline"])[layers]
    return float(((out["ig"][layers].sum(-1) - delta).abs() / delta.abs()).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["tiny", "smollm2-135m"])
    parser.add_argument("--shape-layers", type=positive, help="keep only the first N decoder layers of a qwen2.5-*-shape model")
    parser.add_argument("--analyses", nargs="+", choices=ANALYSES, default=list(ANALYSES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--repeat", type=positive, default=1, help="alternating runs of both paths; medians are reported")
    parser.add_argument("--ig-rule", default="auto", choices=["riemann", "gauss_legendre", "auto"])
    parser.add_argument("--ig-steps", type=int, default=8, help="nodes of riemann / gauss_legendre; first node count of auto")
    parser.add_argument("--ig-tolerance", type=float, help="auto's target (default: the published structure's worst gap, ≤ 0.05)")
    parser.add_argument("--ig-layers", type=int, nargs="+", help="integrated gradients on these layers only (default: all)")
    parser.add_argument("--ig-max-batch-tokens", type=int, default=512, help="the IG job's token budget per pass")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.shape_layers is not None and not any(name.endswith("-shape") for name in args.models):
        parser.error("--shape-layers applies to the qwen2.5-*-shape models only")
    if args.ig_tolerance is not None and args.ig_tolerance <= 0:
        parser.error("--ig-tolerance must be positive")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        model, tokenizer = load(name, dtype, args.device)
        if args.shape_layers is not None and name.endswith("-shape"):
            model.model.layers = model.model.layers[: args.shape_layers]
            model.config.num_hidden_layers = args.shape_layers
            if getattr(model.config, "layer_types", None):
                model.config.layer_types = model.config.layer_types[: args.shape_layers]
        n_layers = model.config.num_hidden_layers
        ids, n_answer = benchmark_prompt(tokenizer)
        sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
        positions = skip_positions(len(ids), 4, 8, 0, 0) or [len(ids) // 2]
        baseline = published.erasure_baseline(model, sequences)
        ig_layers = args.ig_layers or list(range(n_layers))
        if any(not 0 <= layer < n_layers for layer in ig_layers):
            raise SystemExit(f"--ig-layers {ig_layers}: {name} has layers 0 … {n_layers - 1}")
        ig_target = {}

        def forward_effdepth():
            stats = extract_stats(
                model, [{"input_ids": s} for s in sequences], pad_id=0, batch_size=len(sequences), model_name=name, task="bench"
            )
            return (
                relative_contribution_table(stats, "correct"),
                logit_lens_table(stats, "correct"),
            )

        def ig_published():
            out = published.integrated_gradients(model, ids, n_answer, ig_layers)
            ig_target.setdefault("tolerance", min(0.05, worst_gap(out, ig_layers)))
            return out

        def ig_effdepth():
            return integrated_gradients(
                model,
                ids,
                n_answer,
                args.ig_steps,
                "correct",
                points_per_pass({"max_batch_tokens": args.ig_max_batch_tokens}, len(ids)),
                rule=args.ig_rule,
                tolerance=ig_target["tolerance"] if args.ig_tolerance is None else args.ig_tolerance,
                layers=ig_layers,
            )

        cases = {
            "forward": (
                forward_effdepth,
                lambda: (published.relative_contribution(model, sequences), published.logit_lens(model, sequences)),
            ),
            "layer_skip": (
                lambda: layer_skip(model, ids, positions, ("layer",)),
                lambda: published.layer_skip(model, ids, positions),
            ),
            "residual_erasure": (
                lambda: residual_erasure(model, ids, n_answer, baseline),
                lambda: published.residual_erasure(model, ids, n_answer, baseline),
            ),
            "integrated_gradients": (ig_effdepth, ig_published),
        }
        for analysis in args.analyses:
            fast_fn, slow_fn = cases[analysis]
            (fast, fast_s, fast_evals), (slow, slow_s, slow_evals) = interleaved(
                model, fast_fn, slow_fn, args.repeat, False, slow_first=True
            )
            if analysis == "forward":
                diff = compare_forward(fast, slow)
            elif analysis == "integrated_gradients":
                diff = max_diff(fast["ig"], slow["ig"])
            else:
                diff = max_diff(fast, slow)
            fast_flop, slow_flop = flops(model, *fast_evals), flops(model, *slow_evals)
            row = {
                "model": name,
                "analysis": analysis,
                "tokens": len(ids),
                "layers": n_layers,
                "published_s": round(slow_s, 3),
                "effdepth_s": round(fast_s, 3),
                "ratio": round(slow_s / fast_s, 1),
                "published_token_layers": slow_evals[0],
                "effdepth_token_layers": fast_evals[0],
                "work_ratio": round(slow_flop / fast_flop, 2),
                "max_abs_diff": f"{diff:.2e}",
                "repeat": args.repeat,
            }
            if analysis == "integrated_gradients":
                row["ig_layers"] = "/".join(map(str, ig_layers))
                row["ig_nodes"] = "/".join(str(int(fast["steps"][l])) for l in ig_layers)
                row["ig_worst_gap"] = f"{worst_gap(slow, ig_layers):.2e}/{worst_gap(fast, ig_layers):.2e}"
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pl.from_dicts(rows, infer_schema_length=None).write_csv(args.out)


if __name__ == "__main__":
    main()
