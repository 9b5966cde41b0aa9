"""Metrics on synthetic tensors with known answers."""

import math

import pytest
import torch

from effdepth.metrics import EPS, cosine, final_distribution, layer_token_stats, lens_divergences, relative
from effdepth.tables import LAYER_STATS


def test_cosine_known_values():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 2.0], [2.0, 2.0], [-3.0, 0.0]])
    assert torch.allclose(cosine(x, y), torch.tensor([0.0, 1.0, -1.0]))


def test_cosine_and_relative_clamp_zero_vectors():
    zero = torch.zeros(1, 4)
    assert cosine(zero, torch.ones(1, 4)).item() == 0.0
    assert relative(torch.ones(1, 4), zero).item() == pytest.approx(2.0 / EPS)


def test_layer_token_stats_known_answer():
    # h = (3, 4) (norm 5); a = (-3, 0) erases half of h; m = (0, 4) amplifies along h + a = (0, 4).
    h = torch.tensor([[3.0, 4.0]])
    a = torch.tensor([[-3.0, 0.0]])
    m = torch.tensor([[0.0, 4.0]])
    stats = dict(zip(LAYER_STATS, layer_token_stats(h, a, m)[0].tolist()))
    assert stats["rc_attention"] == pytest.approx(3 / 5)
    assert stats["rc_mlp"] == pytest.approx(4 / 4)
    assert stats["rc_layer"] == pytest.approx(5 / 5)  # c = (-3, 4)
    assert stats["cos_attention"] == pytest.approx(-3 / 5)
    assert stats["cos_mlp"] == pytest.approx(1.0)
    assert stats["cos_layer"] == pytest.approx((-9 + 16) / 25)
    assert stats["cos_in_out"] == pytest.approx((0 + 32) / (5 * 8))  # h + c = (0, 8)


def test_lens_identical_distributions_give_zero_kl_full_overlap():
    logits = torch.randn(3, 50)
    kl, overlap, jsd = lens_divergences(logits, final_distribution(logits.clone(), 5), k=5)
    assert torch.allclose(kl, torch.zeros(3), atol=1e-6)
    assert torch.allclose(jsd, torch.zeros(3), atol=1e-6)
    assert torch.equal(overlap, torch.ones(3))


def test_lens_kl_direction_and_overlap_known_answer():
    q = torch.tensor([[math.log(0.5), math.log(0.5), -1e9]])
    p = torch.tensor([[math.log(0.25), math.log(0.25), math.log(0.5)]])
    kl, overlap, jsd = lens_divergences(q, final_distribution(p, 1), k=1)
    # KL(q || p) = 0.5 log(0.5/0.25) * 2 = log 2 (the other direction would be infinite)
    assert kl.item() == pytest.approx(math.log(2), rel=1e-5)
    assert overlap.item() == 0.0  # top-1 of q is token 0, of p token 2
    # JSD in bits: m = (3/8, 3/8, 1/4); ½ Σ p log(p/m) + ½ Σ q log(q/m)
    m = [3 / 8, 3 / 8, 1 / 4]
    ref = 0.5 * (2 * 0.25 * math.log(0.25 / m[0]) + 0.5 * math.log(0.5 / m[2])) + 0.5 * (2 * 0.5 * math.log(0.5 / m[0]))
    assert jsd.item() == pytest.approx(ref / math.log(2), rel=1e-5)


def test_lens_jsd_is_in_bits_with_maximum_one():
    """Disjoint distributions give JSD = 1 bit (ln 2 nats), the maximum: the unit of the settling
    threshold g (docs/methods.md#settling-depth), whose source compares values up to 0.96 with
    g = 0.5 -- values a JSD in nats (at most ln 2 ≈ 0.693) could not take."""
    q = torch.tensor([[0.0, -1e9, -1e9], [0.0, 0.0, -1e9]])
    p = torch.tensor([[-1e9, 0.0, -1e9], [-1e9, -1e9, 0.0]])
    _, _, jsd = lens_divergences(q, final_distribution(p, 1), k=1)
    assert jsd.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    half = torch.tensor([[0.0, 0.0, -1e9]])  # q = (½, ½, 0) against p = (1, 0, 0): m = (¾, ¼, 0)
    _, _, jsd = lens_divergences(half, final_distribution(torch.tensor([[0.0, -1e9, -1e9]]), 1), k=1)
    want = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert jsd.item() == pytest.approx(want, rel=1e-5)
