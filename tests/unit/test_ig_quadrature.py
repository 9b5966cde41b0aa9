"""Quadrature rules and batching of integrated gradients (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from effdepth.analyses import integrated_gradients as ig_module
from effdepth.analyses.integrated_gradients import _chunks, adaptive_gauss_legendre, job_quadrature, points_per_pass, quadrature


def test_left_riemann_nodes_and_weights_are_exact():
    alpha, weight = quadrature("riemann", 256)
    assert alpha.tolist() == [k / 256 for k in range(256)]
    assert weight.tolist() == [1 / 256] * 256


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_gauss_legendre_is_exact_to_degree_2n_minus_1(n):
    alpha, weight = quadrature("gauss_legendre", n)
    assert alpha.dtype == weight.dtype == torch.float64
    assert (alpha > 0).all() and (alpha < 1).all()
    assert float(weight.sum()) == pytest.approx(1.0, abs=1e-14)
    for degree in range(2 * n):  # ∫_0^1 α^p dα = 1 / (p + 1)
        assert float((weight * alpha**degree).sum()) == pytest.approx(1 / (degree + 1), rel=1e-12, abs=1e-14), degree
    # and no further: the degree-2n polynomial P_n(2α − 1)² vanishes at every node, ∫_0^1 of it is 1 / (2n + 1)
    legendre_n = np.polynomial.legendre.legval(2 * alpha.numpy() - 1, [0] * n + [1])
    assert float((weight.numpy() * legendre_n**2).sum()) == pytest.approx(0.0, abs=1e-20 + 1e-12)


def test_gauss_legendre_maps_numpy_nodes_to_the_unit_interval():
    xi, omega = np.polynomial.legendre.leggauss(7)
    alpha, weight = quadrature("gauss_legendre", 7)
    np.testing.assert_array_equal(alpha.numpy(), (xi + 1) / 2)
    np.testing.assert_array_equal(weight.numpy(), omega / 2)


def test_quadrature_rejects_unknown_rules_and_empty_rules():
    with pytest.raises(ValueError, match="unknown quadrature rule"):
        quadrature("simpson", 4)
    with pytest.raises(ValueError, match="at least one node"):
        quadrature("riemann", 0)


def test_points_per_pass_follow_the_token_budget():
    assert points_per_pass({"max_batch_tokens": 512}, 23) == 22  # 22 × 23 = 506 ≤ 512
    assert points_per_pass({"max_batch_tokens": 512}, 8) == 64  # no fixed cap unless max_batch is set
    assert points_per_pass({"max_batch_tokens": 512, "max_batch": 16}, 8) == 16
    assert points_per_pass({"max_batch_tokens": 512, "max_batch": None}, 8) == 64
    assert points_per_pass({"max_batch_tokens": 512}, 2000) == 1  # a long prompt still runs, one point a pass


def test_chunks_are_the_fewest_and_near_equal():
    assert _chunks(256, 22) == [(s, min(256, s + 22)) for s in range(0, 256, 22)]  # 12 passes
    assert _chunks(32, 22) == [(0, 16), (16, 32)]
    assert _chunks(5, 64) == [(0, 5)]
    for n in range(1, 40):
        for cap in range(1, 12):
            parts = _chunks(n, cap)
            assert parts[0][0] == 0 and parts[-1][1] == n and len(parts) == math.ceil(n / cap)
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:])) and all(0 < b - a <= cap for a, b in parts)


def test_published_uses_the_256_step_left_riemann_sum_whatever_the_options():
    options = {"variant": "published", "rule": "gauss_legendre", "steps": 8, "min_steps": 4, "max_steps": 16}
    assert job_quadrature(options) == ("riemann", 256, 256)
    assert job_quadrature({**options, "rule": "auto"}) == ("riemann", 256, 256)
    assert job_quadrature({**options, "variant": "correct"}) == ("gauss_legendre", 8, 8)
    assert job_quadrature({**options, "variant": "correct", "rule": "auto"}) == ("auto", 4, 16)
    with pytest.raises(ValueError, match="min_steps"):
        job_quadrature({**options, "variant": "correct", "rule": "auto", "min_steps": 32})


def test_published_job_calls_the_256_step_left_riemann_sum(monkeypatch, tokenizer):
    """The job hands the published variant's quadrature to ``integrated_gradients`` (recorded here)."""
    from effdepth.subjects import Subject
    from effdepth.testing import tiny_model

    calls = []

    def record(model, ids, n_answer, steps, variant, max_batch, **kwargs):
        calls.append((steps, variant, kwargs["rule"], kwargs["max_steps"], max_batch))
        n_layers = model.config.num_hidden_layers
        ig = torch.full((n_layers, len(ids)), 0.1, dtype=torch.float64)
        ends = {"f_input": torch.ones(n_layers), "f_baseline": torch.zeros(n_layers)}
        return {"ig": ig, **ends, "steps": torch.full((n_layers,), steps)}

    monkeypatch.setattr(ig_module, "integrated_gradients", record)
    ids = tokenizer("12 + 34 = 46")["input_ids"]
    subject = Subject("tiny", "t", tiny_model("qwen2", seed=0), tokenizer, [{"id": 0, "input_ids": ids, "n_answer": 2}])
    options = {
        "variant": "published",
        "rule": "gauss_legendre",
        "steps": 8,
        "min_steps": 4,
        "max_steps": 16,
        "completeness_tolerance": 0.05,
        "max_batch_tokens": 512,
    }
    table = ig_module.run(subject, options)
    assert calls == [(256, "published", "riemann", 256, 512 // len(ids))]
    assert set(table.filter(table["metric"] == "steps")["value"].to_list()) == {256.0}


def _recording(fn):
    """g for adaptive_gauss_legendre from a scalar-vector function of α, recording every call's nodes."""
    calls = []

    def g(alpha):
        calls.append(alpha.clone())
        return fn(alpha)

    return g, calls


def test_adaptive_rule_stops_at_the_root_panel_when_it_is_already_exact():
    """A polynomial of degree ≤ 2n − 1 is integrated exactly by the first panel: n nodes, one call."""
    g, calls = _recording(lambda a: torch.stack([a**3, 1 - 2 * a**5], -1))
    exact = torch.tensor([1 / 4, 1 - 2 / 6], dtype=torch.float64)
    estimate, used = adaptive_gauss_legendre(g, 3, 256, lambda s: bool((s - exact).abs().max() < 1e-12))
    assert used == 3 and len(calls) == 1
    torch.testing.assert_close(estimate, exact, rtol=0, atol=1e-14)


def _bump(alpha):
    """A steep narrow bump at α = 0.23 on a smooth background, two components (the shape of the IG
    integrand of SmolLM2's layer 0, docs/methods.md#integrated-gradients)."""
    spike = torch.exp(-(((alpha - 0.23) / 0.01) ** 2))
    return torch.stack([30 * spike + torch.cos(3 * alpha), -10 * spike + alpha], -1)


BUMP = torch.tensor(
    [30 * 0.01 * math.sqrt(math.pi) + math.sin(3) / 3, -10 * 0.01 * math.sqrt(math.pi) + 0.5], dtype=torch.float64
)


def test_adaptive_rule_puts_its_nodes_on_the_steep_part_and_beats_uniform_rules_at_equal_cost():
    g, calls = _recording(_bump)
    target = 1e-3

    def done(s):
        return float((s - BUMP).abs().sum() / BUMP.abs().sum()) <= target

    estimate, used = adaptive_gauss_legendre(g, 8, 512, done, points_per_round=16)
    assert done(estimate) and used < 256, used
    assert sum(len(c) for c in calls) == used and len(calls) == 1 + (used - 8) // 16  # one bisection a round of 16 points
    assert all(((c > 0.1) & (c < 0.35)).all() for c in calls[4:])  # from the fifth round on, only around the bump
    for rule in ("gauss_legendre", "riemann"):
        alpha, weight = quadrature(rule, used)
        uniform = (weight.view(-1, 1) * _bump(alpha)).sum(0)
        assert not done(uniform), rule


def test_adaptive_rule_respects_its_node_budget_and_batches_rounds():
    g, calls = _recording(lambda a: torch.cos(40 * a).unsqueeze(-1))  # about as rough everywhere
    estimate, used = adaptive_gauss_legendre(g, 4, 60, lambda s: False, points_per_round=24)
    sizes = [len(c) for c in calls]
    assert sizes[0] == 4 and sum(sizes) == used == 60  # the root, then bisections of 8 nodes until the budget is spent
    assert all(size % 8 == 0 and 0 < size <= 24 for size in sizes[1:]), sizes  # at most 3 bisections a round
    assert max(sizes) == 24  # rounds fill a pass where several panels are about as bad
    assert torch.isfinite(estimate).all()
    estimate, used = adaptive_gauss_legendre(_bump, 8, 8, lambda s: False)
    assert used == 8


def test_adaptive_rule_converges_to_the_integral():
    estimate, used = adaptive_gauss_legendre(_bump, 8, 4096, lambda s: float((s - BUMP).abs().max()) < 1e-10)
    torch.testing.assert_close(estimate, BUMP, rtol=0, atol=1e-10)


def test_adaptive_rule_needs_three_nodes_a_panel():
    with pytest.raises(ValueError, match="at least 3 nodes"):
        adaptive_gauss_legendre(_bump, 2, 64, lambda s: False)
