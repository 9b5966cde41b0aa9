"""Integrated gradients of the answer probability with respect to each layer's output
(docs/methods.md#integrated-gradients; Sundararajan, Taly & Yan 2017, arXiv 1703.01365)."""

from __future__ import annotations

from typing import Any

import polars as pl
import torch
from torch import nn

from ..capture import LayerRunner
from ..numerics import check_completeness
from ..staircase import answer_positions, batch_size_for, clean_run
from ..tables import frame, map_table


def ig_baseline(x: torch.Tensor, variant: str = "correct") -> torch.Tensor:
    """IG baseline for a layer output x [T, d]: its token mean (correct), or — as the public code —
    the mean over the hidden dimension of each token, broadcast to d (published)."""
    if variant == "published":
        return x.mean(-1, keepdim=True).expand_as(x)
    return x.mean(0, keepdim=True).expand_as(x)


def answer_probability(runner: LayerRunner, final: torch.Tensor, answer: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """F = Σ_i p(gold_i | i) over answer positions, per sequence.  final [B, T, d] -> [B]"""
    probs = torch.softmax(runner.logits(final[:, answer]), -1)  # [B, n_a, V]
    return probs.gather(-1, gold.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(-1).sum(-1)


def integrated_gradients(
    model: nn.Module,
    input_ids: list[int],
    n_answer: int,
    steps: int = 256,
    variant: str = "correct",
    max_batch: int = 32,
) -> dict[str, torch.Tensor]:
    """IG(l, t) = (1/S) Σ_k Σ_d (x − x′)[t, d] · ∂F/∂x[t, d] at x′ + (k/S)(x − x′), k = 0 … S−1.

    x = output of layer l (h_{l+1}), x′ = ig_baseline(x).  Returns ``ig`` [L, T] (signed) and the
    endpoints ``f_input`` [L] = F(x), ``f_baseline`` [L] = F(x′) for the completeness check.
    """
    clean = clean_run(model, input_ids)
    runner, n_layers = clean.runner, clean.runner.n_layers
    n_tokens = clean.h.shape[1]
    device = clean.h.device
    answer = answer_positions(n_tokens, n_answer).to(device)
    gold = torch.tensor(input_ids, device=device)[answer + 1]
    ig = torch.zeros(n_layers, n_tokens, dtype=torch.float64)
    f_input, f_baseline = torch.zeros(n_layers, dtype=torch.float64), torch.zeros(n_layers, dtype=torch.float64)
    alphas = torch.arange(steps, device=device, dtype=torch.float64) / steps
    accumulate = torch.float64 if clean.h.dtype == torch.float64 else torch.float32
    for layer in range(n_layers):
        x = clean.h[layer + 1]
        x0 = ig_baseline(x, variant)
        diff = x - x0
        grad_sum = torch.zeros_like(x, dtype=accumulate)
        for start in range(0, steps, max_batch):
            alpha = alphas[start : start + max_batch].to(x.dtype).view(-1, 1, 1)
            with torch.enable_grad():
                states = (x0 + alpha * diff).detach().requires_grad_(True)
                target = answer_probability(runner, runner.run(states, layer + 1), answer, gold)
                (grad,) = torch.autograd.grad(target.sum(), states)
            grad_sum += grad.to(accumulate).sum(0)
        ig[layer] = (diff.to(accumulate) * grad_sum).sum(-1).cpu() / steps
        with torch.no_grad():
            ends = answer_probability(runner, runner.run(torch.stack([x, x0]), layer + 1), answer, gold)
        f_input[layer], f_baseline[layer] = ends[0].cpu(), ends[1].cpu()
    return {"ig": ig, "f_input": f_input, "f_baseline": f_baseline}


def run(subject: Any, options: dict[str, Any]) -> pl.DataFrame:
    """The IG job: a signed L × T attribution map per prompt of ``subject`` (``effdepth.jobs.Subject``)
    and, per layer and prompt, the completeness terms f_input = F(x), f_baseline = F(x′),
    attribution_sum = Σ_t IG(l, t) and the completeness gap Σ_t IG − (F(x) − F(x′))
    (docs/methods.md#integrated-gradients; finite, signed), with a warning for every layer whose
    relative gap |gap| / |F(x) − F(x′)| exceeds ``options['completeness_tolerance']``."""
    maps, rows = [], {"metric": [], "layer": [], "prompt": [], "value": [], "weight": []}
    for p, prompt in enumerate(subject.progress("integrated gradients")):
        ids = prompt["input_ids"]
        out = integrated_gradients(
            subject.model, ids, prompt["n_answer"], options["steps"], options["variant"], batch_size_for(options, len(ids))
        )
        subject.check(out["ig"], "integrated gradients", p)
        maps.append(out["ig"])
        for layer in range(len(out["f_input"])):
            total, f_input, f_baseline = (
                float(v) for v in (out["ig"][layer].sum(), out["f_input"][layer], out["f_baseline"][layer])
            )
            check_completeness(
                total,
                f_input,
                f_baseline,
                model=subject.model_name,
                task=subject.task,
                prompt=prompt.get("id", p),
                layer=layer,
                steps=options["steps"],
                tolerance=options["completeness_tolerance"],
                logger=subject.log,
            )
            for metric, value in (
                ("f_input", f_input),
                ("f_baseline", f_baseline),
                ("attribution_sum", total),
                ("completeness_gap", total - (f_input - f_baseline)),
            ):
                for key, v in zip(rows, (metric, layer, p, value, 1.0)):
                    rows[key].append(v)
    table = map_table(maps, "attribution", "integrated_gradients", options["variant"], **subject.ids)
    ends = frame(rows, analysis="integrated_gradients", variant=options["variant"], **subject.ids)
    return pl.concat([table, ends], how="diagonal_relaxed")
