"""The lens as a unit: the logit lens and an untrained tuned lens agree exactly on every family,
a trained tuned lens equals its formula, trajectories equal extraction's logit-lens statistics and
plain float64 references of KL, overlap and JSD."""

import math

import pytest
import torch

from effdepth.adapters import adapter_for
from effdepth.capture import run_captured
from effdepth.extraction import extract_stats
from effdepth.lenses import LENSES, LogitLens, TunedLens, js_divergence, kl_divergence, make_lens, top_k_overlap
from effdepth.lenses.trajectories import LENS_STATISTICS, lens_statistics, lens_trajectories
from effdepth.reference import reference_activations
from effdepth.testing import tiny_model

SEQUENCES = [[5 + (7 * i + j) % 100 for i in range(11 + j)] for j in range(3)]


def test_registry_builds_each_lens(model64):
    assert set(LENSES) == {"logit", "tuned"}
    assert isinstance(make_lens("logit", model64), LogitLens)
    assert isinstance(make_lens("tuned", model64), TunedLens)
    with pytest.raises(ValueError, match="unknown lens 'nope'"):
        make_lens("nope", model64)


def test_lens_holds_no_model_weights(model64):
    lens = TunedLens(model64)
    model_params = {id(p) for p in model64.parameters()}
    assert not model_params & {id(p) for p in lens.parameters()}
    assert set(lens.state_dict()) == {f"translators.{i}.{w}" for i in range(4) for w in ("weight", "bias")}
    assert list(LogitLens(model64).parameters()) == []


def test_depth_outside_the_model_is_refused(model64):
    lens = TunedLens(model64)
    h = torch.zeros(2, 64, dtype=torch.float64)
    for bad in (-1, 5):
        with pytest.raises(IndexError, match="outside 0 … 4"):
            lens(h, bad)


def test_untrained_tuned_lens_is_the_logit_lens_on_every_family(family_model64):
    """Zero translators add an exact zero: the logits agree bit for bit at every depth."""
    model = family_model64
    adapter = adapter_for(model)
    # equal lengths: no padding (eager float64 attention turns padded rows NaN in some families)
    capture, mask = run_captured(model, adapter, [s[:11] for s in SEQUENCES], 0)
    logit, tuned = LogitLens(model, adapter), TunedLens(model, adapter)
    assert tuned.is_identity()
    for layer, h in enumerate(capture.residuals()):
        a, b = logit(h[mask], layer), tuned(h[mask], layer)
        assert a.dtype == torch.float64 and torch.isfinite(a).all()
        assert torch.equal(a, b), f"depth {layer}"
    # and the lens at l = L is the model's output
    assert torch.allclose(logit(capture.resid_final[mask], len(capture.resid_pre)), capture.logits[mask], atol=1e-10, rtol=0)


def _randomise(lens: TunedLens, seed: int = 0, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def test_tuned_lens_equals_its_formula(model64):
    """W_U · Norm_f(h + A h + b), written out with the Llama-shaped modules, float64."""
    lens = TunedLens(model64)
    _randomise(lens)
    h, _, _, logits = reference_activations(model64, SEQUENCES[0])
    for layer in range(5):
        if layer < 4:
            A = lens.translators[layer].weight
            b = lens.translators[layer].bias
            x = h[layer] + h[layer] @ A.T + b
        else:
            x = h[layer]
        want = model64.lm_head(model64.model.norm(x))
        assert torch.allclose(lens(h[layer], layer), want, atol=1e-12, rtol=0)
    assert torch.allclose(lens(h[4], 4), logits, atol=1e-10, rtol=0)


def test_float32_model_gets_float32_translators_and_half_precision_round_trips():
    model = tiny_model("qwen2", seed=1, dtype=torch.bfloat16)
    lens = TunedLens(model)
    assert lens.dtype == torch.float32
    h = torch.randn(3, 64, dtype=torch.bfloat16)
    assert lens.transform(h, 0).dtype == torch.bfloat16
    assert torch.equal(lens(h, 1), LogitLens(model)(h, 1))


# ---------------------------------------------------------------- divergences against plain loops


def _plain(p_logits, q_logits, k):
    p_logits, q_logits = p_logits.tolist(), q_logits.tolist()

    def softmax(z):
        top = max(z)
        e = [math.exp(v - top) for v in z]
        s = sum(e)
        return [v / s for v in e]

    p, q = softmax(p_logits), softmax(q_logits)
    kl_pq = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)
    kl_qp = sum(b * (math.log(b) - math.log(a)) for a, b in zip(p, q) if b > 0)
    m = [(a + b) / 2 for a, b in zip(p, q)]
    js = 0.5 * sum(a * math.log2(a / c) for a, c in zip(p, m) if a > 0) + 0.5 * sum(
        b * math.log2(b / c) for b, c in zip(q, m) if b > 0
    )
    top_p = set(sorted(range(len(p)), key=lambda i: -p_logits[i])[:k])
    top_q = set(sorted(range(len(q)), key=lambda i: -q_logits[i])[:k])
    return kl_pq, kl_qp, js, len(top_p & top_q) / k


def test_divergences_equal_plain_float64_loops():
    g = torch.Generator().manual_seed(1)
    p = torch.randn(6, 40, generator=g, dtype=torch.float64) * 3
    q = torch.randn(6, 40, generator=g, dtype=torch.float64) * 3
    q[0] = p[0]  # identical distributions: every divergence 0, overlap 1
    kl_pq, kl_qp, js, ov = kl_divergence(p, q), kl_divergence(q, p), js_divergence(p, q), top_k_overlap(p, q, 5)
    for t in range(6):
        want = _plain(p[t], q[t], 5)
        assert kl_pq[t].item() == pytest.approx(want[0], abs=1e-12)
        assert kl_qp[t].item() == pytest.approx(want[1], abs=1e-12)
        assert js[t].item() == pytest.approx(want[2], abs=1e-12)
        assert ov[t].item() == pytest.approx(want[3])
    assert js[0].item() == pytest.approx(0.0, abs=1e-15) and ov[0].item() == 1.0
    assert torch.allclose(js, js_divergence(q, p), atol=1e-15)  # symmetric
    # disjoint supports reach the JSD's upper bound of 1 bit
    a = torch.tensor([[0.0, -math.inf, -math.inf]], dtype=torch.float64)
    b = torch.tensor([[-math.inf, 0.0, -math.inf]], dtype=torch.float64)
    assert js_divergence(a, b).item() == pytest.approx(1.0, abs=1e-12)


def test_overlap_refuses_k_outside_the_vocabulary():
    with pytest.raises(ValueError, match="1 ≤ k ≤ 3"):
        top_k_overlap(torch.zeros(1, 3), torch.zeros(1, 3), 4)


# ---------------------------------------------------------------- trajectories


def test_logit_lens_trajectories_equal_extraction(model64):
    prompts = [{"input_ids": s, "id": i} for i, s in enumerate(SEQUENCES)]
    stats = extract_stats(model64, prompts, 0, batch_size=2, top_k=5).tensors
    traj = lens_trajectories(model64, {"logit": LogitLens(model64)}, SEQUENCES, 0, batch_size=2, top_k=5)
    assert torch.equal(traj["token_prompt"], stats["token_prompt"])
    assert torch.equal(traj["token_position"], stats["token_position"])
    assert torch.allclose(traj["lens_kl.logit"], stats["lens_kl"], atol=1e-6, rtol=0)
    assert torch.equal(traj["lens_overlap.logit"], stats["lens_overlap"])


def test_trajectories_equal_a_plain_reference_under_a_trained_lens(model64):
    """One forward for two lenses; every statistic against the float64 loop on unpadded prompts."""
    tuned = TunedLens(model64)
    _randomise(tuned, seed=2, scale=0.1)
    traj = lens_trajectories(model64, {"logit": LogitLens(model64), "tuned": tuned}, SEQUENCES, 0, batch_size=3, top_k=3)
    n_tokens = sum(len(s) for s in SEQUENCES)
    assert set(traj) == {"token_prompt", "token_position"} | {
        f"lens_{s}.{n}" for s in LENS_STATISTICS for n in ("logit", "tuned")
    }
    row = 0
    for ids in SEQUENCES:
        h, _, _, logits = reference_activations(model64, ids)
        for t in range(len(ids)):
            for layer in range(5):
                x = h[layer][t]
                if layer < 4:
                    x = x + tuned.translators[layer].weight @ x + tuned.translators[layer].bias
                z = model64.lm_head(model64.model.norm(x))
                kl_pq, kl_qp, js, ov = _plain(logits[t], z, 3)
                assert traj["lens_kl_final.tuned"][row, layer].item() == pytest.approx(kl_pq, abs=1e-5)
                assert traj["lens_kl.tuned"][row, layer].item() == pytest.approx(kl_qp, abs=1e-5)
                assert traj["lens_jsd.tuned"][row, layer].item() == pytest.approx(js, abs=1e-6)
                assert traj["lens_overlap.tuned"][row, layer].item() == pytest.approx(ov)
            row += 1
    assert row == n_tokens
    assert not torch.equal(traj["lens_jsd.tuned"], traj["lens_jsd.logit"])  # the translators matter


def test_lens_statistics_of_the_output_itself_are_trivial():
    z = torch.randn(4, 30, dtype=torch.float64)
    stats = lens_statistics(z, z, 5)
    assert all(stats[s].abs().max() < 1e-12 for s in ("kl", "kl_final", "jsd"))
    assert torch.equal(stats["overlap"], torch.ones(4))


def test_a_lens_of_another_model_is_refused(model64):
    other = tiny_model("qwen2", seed=4, dtype=torch.float64)
    with pytest.raises(ValueError, match="belongs to another model"):
        lens_trajectories(model64, {"x": LogitLens(other)}, SEQUENCES, 0)
