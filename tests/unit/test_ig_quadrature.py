"""Quadrature rules and batching of integrated gradients (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from effdepth.analyses import integrated_gradients as ig_module
from effdepth.analyses.integrated_gradients import _chunks, job_quadrature, points_per_pass, quadrature


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
    from effdepth.jobs import Subject
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
