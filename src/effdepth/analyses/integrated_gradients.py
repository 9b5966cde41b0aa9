"""Integrated gradients of the answer probability with respect to each layer's output
(docs/methods.md#integrated-gradients; Sundararajan, Taly & Yan 2017, arXiv 1703.01365)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from ..adapters import adapter_for
from ..capture import LayerRunner
from ..numerics import check_completeness, completeness_gap
from ..staircase import answer_positions, clean_run
from ..subjects import Subject
from ..tables import frame, map_table

RULES = ("riemann", "gauss_legendre", "auto")
# The public code's quadrature, which ``variant: published`` always uses: left Riemann sum, 256 steps.
PUBLISHED_RULE, PUBLISHED_STEPS = "riemann", 256


def quadrature(rule: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes α [n] and weights w [n] (float64, Σ w = 1) with ∫_0^1 g(α) dα ≈ Σ_k w_k g(α_k).

    ``riemann``: the left Riemann sum, α_k = k/n, w_k = 1/n (k = 0 … n−1; error O(1/n) for a smooth
    g).  ``gauss_legendre``: α_k = (1 + ξ_k)/2, w_k = ω_k/2 from the Legendre nodes ξ_k and weights
    ω_k on [−1, 1] (``numpy.polynomial.legendre.leggauss``); exact for polynomials of degree ≤ 2n − 1.
    Raises ValueError for another rule or n < 1.
    """
    if n < 1:
        raise ValueError(f"a quadrature needs at least one node, got {n}")
    if rule == "riemann":
        return torch.arange(n, dtype=torch.float64) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "gauss_legendre":
        xi, omega = np.polynomial.legendre.leggauss(n)
        return torch.from_numpy((xi + 1.0) / 2.0), torch.from_numpy(omega / 2.0)
    raise ValueError(f"unknown quadrature rule {rule!r} (one of riemann, gauss_legendre)")


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


def _chunks(n: int, cap: int) -> list[tuple[int, int]]:
    """Split n points into the fewest passes of ≤ cap points, of near-equal size: [(start, stop)]."""
    passes = math.ceil(n / max(1, cap))
    size = math.ceil(n / passes)
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def adaptive_gauss_legendre(
    g: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    max_nodes: int,
    done: Callable[[torch.Tensor], bool],
    points_per_round: int = 1,
) -> tuple[torch.Tensor, int]:
    """∫_0^1 g(α) dα for a vector-valued g by Gauss–Legendre panels, refined where g is least resolved.

    ``g`` maps nodes α [k] (float64) to values [k, T] (float64).  The estimate starts as one panel
    [0, 1] with ``n`` Gauss–Legendre nodes.  While ``done(estimate)`` is false and the budget allows,
    the panels with the largest error indicator are bisected, each half getting its own ``n`` nodes.
    A panel's indicator comes from its own values: the size of the last two coefficients of their
    Legendre interpolant, (b − a) Σ_t (|c_{n−1,t}| + |c_{n−2,t}|) — small where a polynomial of degree
    n − 3 already fits g, large where g is steep or oscillates (a spectral tail estimate, hence
    n ≥ 3; ValueError otherwise).  A round bisects the worst panel and those whose indicator is at
    least a quarter of its, as many as ``points_per_round`` nodes allow, so that rounds fill gradient
    passes without refining where it matters less.  ``max_nodes`` caps the nodes
    evaluated, discarded panels included (an integrand whose root already satisfies ``done`` costs ``n``).

    Returns (estimate [T] float64, nodes evaluated).  docs/methods.md#integrated-gradients.
    """
    if n < 3:
        raise ValueError(f"adaptive Gauss–Legendre needs at least 3 nodes per panel, got {n}")
    xi, omega = np.polynomial.legendre.leggauss(n)
    x, w = torch.from_numpy((xi + 1) / 2), torch.from_numpy(omega / 2)
    # c_j = (2j + 1)/2 Σ_k ω_k P_j(ξ_k) g_k, exact for the interpolant (degree n − 1 < 2n): its last two j
    tail = np.polynomial.legendre.legvander(xi, n - 1)[:, n - 2 :] * omega[:, None] * (2 * np.arange(n - 2, n) + 1) / 2
    tail = torch.from_numpy(tail.T.copy())  # [2, n]

    def panels(bounds: list[tuple[float, float]]) -> list[tuple[float, float, float, torch.Tensor]]:
        values = g(torch.cat([a + (b - a) * x for a, b in bounds])).view(len(bounds), n, -1)
        return [
            (float((b - a) * (tail @ v).abs().sum()), a, b, (b - a) * (w.view(-1, 1) * v).sum(0))
            for (a, b), v in zip(bounds, values)
        ]

    leaves = panels([(0.0, 1.0)])  # (indicator, a, b, estimate)
    used = n
    while not done(sum(leaf[3] for leaf in leaves)):
        affordable = (max_nodes - used) // (2 * n)
        if affordable < 1:
            break
        leaves.sort(key=lambda leaf: -leaf[0])
        worst = leaves[0][0]
        candidates = sum(1 for leaf in leaves if leaf[0] >= worst / 4)
        count = min(affordable, candidates, max(1, points_per_round // (2 * n)))
        split, leaves = leaves[:count], leaves[count:]
        leaves += panels([half for _, a, b, _ in split for half in ((a, (a + b) / 2), ((a + b) / 2, b))])
        used += 2 * count * n
    return sum(leaf[3] for leaf in leaves), used


def _path_gradients(
    runner: LayerRunner,
    layer: int,
    x0: torch.Tensor,
    diff: torch.Tensor,
    alpha: torch.Tensor,
    answer: torch.Tensor,
    gold: torch.Tensor,
    max_batch: int,
    accumulate: torch.dtype,
) -> torch.Tensor:
    """g(α_k)[t] = Σ_d (x − x′)[t, d] · ∂F/∂x[t, d] at x′ + α_k (x − x′) for every node α_k, in passes of
    ≤ ``max_batch`` points through layers ``layer`` + 1 … L−1.  alpha [k] -> [k, T] float64."""
    diff_acc = diff.to(accumulate)
    out = []
    for start, stop in _chunks(len(alpha), max_batch):
        nodes = alpha[start:stop].to(diff.device, diff.dtype).view(-1, 1, 1)
        with torch.enable_grad():
            states = (x0 + nodes * diff).detach().requires_grad_(True)
            target = answer_probability(runner, runner.run(states, layer + 1), answer, gold)
            (grad,) = torch.autograd.grad(target.sum(), states)
        out.append((diff_acc * grad.to(accumulate)).sum(-1).double().cpu())
    return torch.cat(out)


def integrated_gradients(
    model: nn.Module,
    input_ids: list[int],
    n_answer: int,
    steps: int = 256,
    variant: str = "correct",
    max_batch: int = 32,
    *,
    rule: str = "riemann",
    tolerance: float = 0.05,
    max_steps: int = 256,
    layers: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """IG(l, t) = Σ_k w_k Σ_d (x − x′)[t, d] · ∂F/∂x[t, d] at x′ + α_k (x − x′)  (``quadrature``).

    x = output of layer l (h_{l+1}) [T, d], x′ = ``ig_baseline(x, variant)`` (``variant`` chooses
    the baseline only; the IG job's ``published`` variant also fixes the quadrature, ``job_quadrature``).
    F = ``answer_probability``: the summed probability of the gold answer tokens (unitless, in
    [0, n_answer]).  ``rule``: ``riemann`` or ``gauss_legendre`` with ``steps`` nodes, or ``auto``:
    ``adaptive_gauss_legendre`` with ``steps`` nodes per panel, per layer until the relative
    completeness gap |Σ_t IG − (F(x) − F(x′))| / |F(x) − F(x′)| ≤ ``tolerance`` or ``max_steps``
    nodes are spent.  ``max_batch``: interpolation points per forward/backward pass (each point is
    one T-token sequence through layers l+1 … L−1); the passes are split into near-equal chunks.
    ``layers``: attribute only these layers' outputs (default: all); the other rows stay zero.

    Everything that does not depend on α is computed once: the clean run (and with it the layer
    call arguments: masks, rotary embeddings), the answer positions, the gold ids, and per layer x′,
    x − x′ and the endpoints F(x), F(x′).

    Returns ``ig`` [L, T] (signed, float64), ``f_input`` [L] = F(x), ``f_baseline`` [L] = F(x′)
    and ``steps`` [L] (int64, the nodes each layer evaluated).  Raises ValueError for an unknown
    rule, steps < 1 (auto: outside 3 … max_steps), a layer outside 0 … L−1 or a prompt without
    answer tokens.
    """
    if rule not in RULES:
        raise ValueError(f"unknown quadrature rule {rule!r} (one of {', '.join(RULES)})")
    if rule == "auto" and not 3 <= steps <= max_steps:
        raise ValueError(f"rule auto needs 3 <= steps (nodes per panel) <= max_steps, got steps={steps}, max_steps={max_steps}")
    n_layers = len(adapter_for(model).decoder_layers(model))
    bad = [layer for layer in layers or [] if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"integrated gradients: layers {bad} outside 0 … {n_layers - 1}")
    clean = clean_run(model, input_ids)
    runner = clean.runner
    n_tokens = clean.h.shape[1]
    device = clean.h.device
    answer = answer_positions(n_tokens, n_answer).to(device)
    gold = torch.tensor(input_ids, device=device)[answer + 1]
    ig = torch.zeros(n_layers, n_tokens, dtype=torch.float64)
    f_input, f_baseline = torch.zeros(n_layers, dtype=torch.float64), torch.zeros(n_layers, dtype=torch.float64)
    used = torch.zeros(n_layers, dtype=torch.int64)
    accumulate = torch.float64 if clean.h.dtype == torch.float64 else torch.float32
    fixed = None if rule == "auto" else quadrature(rule, steps)

    for layer in range(n_layers) if layers is None else layers:
        x = clean.h[layer + 1]
        x0 = ig_baseline(x, variant)
        diff = x - x0
        with torch.no_grad():
            ends = answer_probability(runner, runner.run(torch.stack([x, x0]), layer + 1), answer, gold)
        f_input[layer], f_baseline[layer] = ends[0].cpu(), ends[1].cpu()

        def g(alpha: torch.Tensor, layer: int = layer, x0: torch.Tensor = x0, diff: torch.Tensor = diff) -> torch.Tensor:
            return _path_gradients(runner, layer, x0, diff, alpha, answer, gold, max_batch, accumulate)

        if fixed is not None:
            alpha, weight = fixed
            ig[layer] = (weight.view(-1, 1) * g(alpha)).sum(0)
            used[layer] = steps
        else:
            delta = float(f_input[layer] - f_baseline[layer])

            def done(estimate: torch.Tensor, delta: float = delta) -> bool:
                gap = completeness_gap(float(estimate.sum()), delta, 0.0)
                return gap <= tolerance or math.isnan(gap)

            ig[layer], used[layer] = adaptive_gauss_legendre(g, steps, max_steps, done, max_batch)
    return {"ig": ig, "f_input": f_input, "f_baseline": f_baseline, "steps": used}


def points_per_pass(options: dict[str, Any], n_tokens: int) -> int:
    """Interpolation points per gradient pass of the IG job: as many T-token sequences as fit in
    ``max_batch_tokens`` (points × tokens ≤ budget; at least 1), capped by ``max_batch`` when set."""
    points = max(1, int(options["max_batch_tokens"]) // max(n_tokens, 1))
    if options.get("max_batch") is not None:
        points = min(points, int(options["max_batch"]))
    return points


def job_quadrature(options: dict[str, Any]) -> tuple[str, int, int]:
    """(rule, nodes, node cap) of the IG job.  ``variant: published`` is always the paper's left
    Riemann sum with 256 steps, whatever ``rule`` and ``steps`` say; ``rule: auto`` uses panels of
    ``min_steps`` nodes and at most ``max_steps`` nodes per layer; otherwise ``steps`` nodes.  Raises
    ValueError when min_steps > max_steps under auto."""
    if options["variant"] == "published":
        return PUBLISHED_RULE, PUBLISHED_STEPS, PUBLISHED_STEPS
    rule = options.get("rule", "riemann")
    if rule == "auto":
        first, cap = int(options.get("min_steps", 8)), int(options.get("max_steps", 256))
        if first > cap:
            raise ValueError(f"integrated_gradients: min_steps ({first}) exceeds max_steps ({cap})")
        return rule, first, cap
    return rule, int(options["steps"]), int(options["steps"])


def run(subject: Subject, options: dict[str, Any]) -> pl.DataFrame:
    """The IG job: a signed L × T attribution map per prompt of ``subject`` (``effdepth.subjects.Subject``)
    and, per layer and prompt, the completeness terms f_input = F(x), f_baseline = F(x′),
    attribution_sum = Σ_t IG(l, t), the completeness gap Σ_t IG − (F(x) − F(x′))
    (docs/methods.md#integrated-gradients; finite, signed) and the node count used (``steps``),
    with a warning for every layer whose relative gap |gap| / |F(x) − F(x′)| exceeds
    ``options['completeness_tolerance']``.  Quadrature: ``job_quadrature``; points per pass:
    ``points_per_pass``."""
    rule, first, cap = job_quadrature(options)
    tolerance = options["completeness_tolerance"]
    maps, rows = [], {"metric": [], "layer": [], "prompt": [], "value": [], "weight": []}
    for p, prompt in enumerate(subject.progress("integrated gradients")):
        ids = prompt["input_ids"]
        out = integrated_gradients(
            subject.model,
            ids,
            prompt["n_answer"],
            first,
            options["variant"],
            points_per_pass(options, len(ids)),
            rule=rule,
            tolerance=tolerance,
            max_steps=cap,
        )
        subject.check(out["ig"], "integrated gradients", p)
        maps.append(out["ig"])
        for layer in range(len(out["f_input"])):
            total, f_input, f_baseline = (
                float(v) for v in (out["ig"][layer].sum(), out["f_input"][layer], out["f_baseline"][layer])
            )
            n = int(out["steps"][layer])
            check_completeness(
                total,
                f_input,
                f_baseline,
                model=subject.model_name,
                task=subject.task,
                prompt=prompt.get("id", p),
                layer=layer,
                steps=n,
                tolerance=tolerance,
                logger=subject.log,
                knob=None if options["variant"] == "published" else "max_steps" if rule == "auto" else "steps",
                knob_value=cap,
            )
            for metric, value in (
                ("f_input", f_input),
                ("f_baseline", f_baseline),
                ("attribution_sum", total),
                ("completeness_gap", total - (f_input - f_baseline)),
                ("steps", float(n)),
            ):
                for key, v in zip(rows, (metric, layer, p, value, 1.0)):
                    rows[key].append(v)
    table = map_table(maps, "attribution", "integrated_gradients", options["variant"], **subject.ids)
    ends = frame(rows, analysis="integrated_gradients", variant=options["variant"], **subject.ids)
    return pl.concat([table, ends], how="diagonal_relaxed")
