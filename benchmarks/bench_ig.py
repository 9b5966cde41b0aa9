"""Integrated gradients: effdepth's path against the structure of the published code.

    python benchmarks/bench_ig.py --models tiny smollm2-135m --repeat 3

The *published structure* (written here from its description, ``published_structure_ig``): one
prompt per pass, 16 interpolation points per forward/backward pass, the 256-step left Riemann sum,
one layer at a time, each pass a full forward of the model from the token ids with layer l's output
replaced by the interpolated states (a forward hook), and a backward to those states.  The
baseline x′ is the token mean in both paths (``variant: correct``), so both integrate the same
function and their completeness gaps are comparable.

effdepth's path: ``integrated_gradients`` with ``--rule`` (default ``auto``: Gauss–Legendre from
``--min-steps`` nodes, doubled per layer up to ``--max-steps`` until the relative completeness gap
is ≤ ``--tolerance``), points per pass from the job's token budget (``--max-batch-tokens``).
Without ``--tolerance`` the target is the published structure's own worst relative gap (from its
first run, at most 0.05), so effdepth is timed at equal or better completeness.

Compute only (the model is loaded once, before timing); the paths run alternately ``--repeat``
times and the medians are reported.  Per model: wall time of both, their ratio, the worst (over
layers) relative completeness gap |Σ_t IG − (F(x) − F(x′))| / |F(x) − F(x′)| of both, and the node
counts effdepth chose.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_analyses import benchmark_prompt, load  # noqa: E402

from effdepth.adapters import adapter_for  # noqa: E402
from effdepth.analyses.integrated_gradients import ig_baseline, integrated_gradients, points_per_pass  # noqa: E402
from effdepth.staircase import clean_run  # noqa: E402

PUBLISHED_STEPS, PUBLISHED_POINTS_PER_PASS = 256, 16


def published_structure_ig(model, ids: list[int], n_answer: int) -> dict[str, torch.Tensor]:
    """IG as the published code is structured: per layer l, 256 left-Riemann points α_k = k/256 in
    16 passes of 16 points; each pass is a full forward of 16 copies of the prompt whose layer-l
    output a hook replaces by x′ + α_k (x − x′), then a backward of F to those states.
    ids: token ids (question + answer); n_answer: answer tokens at the end.  Returns ``ig`` [L, T],
    ``f_input`` [L], ``f_baseline`` [L] (float64) as ``integrated_gradients``."""
    layers = adapter_for(model).decoder_layers(model)
    device = next(model.parameters()).device
    n_tokens = len(ids)
    answer = torch.arange(n_tokens - n_answer - 1, n_tokens - 1, device=device)
    gold = torch.tensor(ids, device=device)[answer + 1]
    h = clean_run(model, ids).h  # layer outputs h_{l+1} of the clean run
    ig = torch.zeros(len(layers), n_tokens, dtype=torch.float64)
    f_input, f_baseline = torch.zeros(len(layers), dtype=torch.float64), torch.zeros(len(layers), dtype=torch.float64)

    def forward_replacing(layer: int, states: torch.Tensor) -> torch.Tensor:
        def hook(module, args, output):
            return (states, *output[1:]) if isinstance(output, tuple) else states

        handle = layers[layer].register_forward_hook(hook)
        try:
            batch = torch.tensor([ids] * states.shape[0], device=device)
            logits = model(input_ids=batch, use_cache=False).logits[:, answer].double()
        finally:
            handle.remove()
        probs = torch.softmax(logits, -1)
        return probs.gather(-1, gold.view(1, -1, 1).expand(states.shape[0], -1, 1)).squeeze(-1).sum(-1)

    for layer in range(len(layers)):
        x = h[layer + 1]
        x0 = ig_baseline(x, "correct")
        total = torch.zeros_like(x, dtype=torch.float64)
        for start in range(0, PUBLISHED_STEPS, PUBLISHED_POINTS_PER_PASS):
            alpha = torch.arange(start, start + PUBLISHED_POINTS_PER_PASS, device=device, dtype=x.dtype) / PUBLISHED_STEPS
            with torch.enable_grad():
                states = (x0 + alpha.view(-1, 1, 1) * (x - x0)).detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(forward_replacing(layer, states).sum(), states)
            total += grad.double().sum(0)
        ig[layer] = ((x - x0).double() * total).sum(-1).cpu() / PUBLISHED_STEPS
        with torch.no_grad():
            ends = forward_replacing(layer, torch.stack([x, x0]))
        f_input[layer], f_baseline[layer] = ends[0].cpu(), ends[1].cpu()
    return {"ig": ig, "f_input": f_input, "f_baseline": f_baseline}


def worst_gap(out: dict[str, torch.Tensor]) -> float:
    """max over layers of |Σ_t IG − (F(x) − F(x′))| / |F(x) − F(x′)|."""
    delta = out["f_input"] - out["f_baseline"]
    return float(((out["ig"].sum(-1) - delta).abs() / delta.abs()).max())


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rule", default="auto", choices=["riemann", "gauss_legendre", "auto"])
    parser.add_argument("--steps", type=int, default=32, help="nodes of riemann / gauss_legendre")
    parser.add_argument("--min-steps", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=256)
    parser.add_argument("--tolerance", type=float, help="auto's target relative gap (default: the published structure's, ≤ 0.05)")
    parser.add_argument("--max-batch-tokens", type=int, default=512, help="the IG job's token budget per pass")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of both paths; medians are reported")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    rows = []
    for name in args.models:
        model, tokenizer = load(name, dtype, args.device)
        ids, n_answer = benchmark_prompt(tokenizer)
        per_pass = points_per_pass({"max_batch_tokens": args.max_batch_tokens}, len(ids))
        tolerance = args.tolerance
        fast_times, slow_times, fast, slow = [], [], None, None
        for _ in range(max(1, args.repeat)):
            slow, seconds = timed(lambda: published_structure_ig(model, ids, n_answer))
            slow_times.append(seconds)
            if tolerance is None:
                tolerance = min(0.05, worst_gap(slow))
            first = args.min_steps if args.rule == "auto" else args.steps

            def fast_fn(first=first, tolerance=tolerance):
                return integrated_gradients(
                    model,
                    ids,
                    n_answer,
                    first,
                    "correct",
                    per_pass,
                    rule=args.rule,
                    tolerance=tolerance,
                    max_steps=args.max_steps,
                )

            fast, seconds = timed(fast_fn)
            fast_times.append(seconds)
            print(f"  {name}: published structure {slow_times[-1]:.2f} s, effdepth {fast_times[-1]:.2f} s", flush=True)
        fast_s, slow_s = statistics.median(fast_times), statistics.median(slow_times)
        row = {
            "model": name,
            "tokens": len(ids),
            "layers": model.config.num_hidden_layers,
            "rule": args.rule,
            "tolerance": f"{tolerance:.2e}" if args.rule == "auto" else "",
            "points_per_pass": per_pass,
            "nodes_per_layer": "/".join(str(int(n)) for n in fast["steps"]),
            "published_s": round(slow_s, 2),
            "effdepth_s": round(fast_s, 2),
            "ratio": round(slow_s / fast_s, 1),
            "published_worst_gap": f"{worst_gap(slow):.2e}",
            "effdepth_worst_gap": f"{worst_gap(fast):.2e}",
            "max_abs_diff": f"{float((fast['ig'] - slow['ig']).abs().max()):.2e}",
            "repeat": len(fast_times),
        }
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.out:
        with args.out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
