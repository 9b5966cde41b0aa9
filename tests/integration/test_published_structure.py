"""The benchmarks' baseline (benchmarks/published_structure.py) measures what effdepth measures, so
the timings against it compare equal results: its forward analyses equal the slow references and
its integrated gradients equal effdepth's 256-step left Riemann sum, on a tiny float64 model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from effdepth.analyses.integrated_gradients import integrated_gradients
from effdepth.reference import reference_lens, reference_rc
from effdepth.testing import tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import published_structure as published  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen2", seed=0, dtype=torch.float64)


def test_forward_analyses_equal_the_references(model, tokenizer):
    sequences = [tokenizer(t)["input_ids"] for t in ("12 + 34 = 46", "the cat sat on the mat")]
    rc = published.relative_contribution(model, sequences)
    for metric, values in reference_rc(model, sequences).items():
        assert rc[metric] == pytest.approx(values, rel=1e-6, abs=1e-9), metric  # float32 norms, as the public code
    kl, overlap = published.logit_lens(model, sequences, 5)
    kl_ref, overlap_ref = reference_lens(model, sequences, 5)
    assert kl == pytest.approx(kl_ref, rel=1e-6, abs=1e-9)
    assert overlap == pytest.approx(overlap_ref, abs=1e-6)  # float32 one-hot products


def test_integrated_gradients_equal_the_256_step_sum(model, tokenizer):
    ids = tokenizer("12 + 34 = 46")["input_ids"]
    slow = published.integrated_gradients(model, ids, 2, layers=[0, 2])
    fast = integrated_gradients(model, ids, 2, 256, "correct", 64, layers=[0, 2])
    for key in ("ig", "f_input", "f_baseline"):
        torch.testing.assert_close(slow[key], fast[key], rtol=1e-7, atol=1e-10)
    assert slow["ig"][[1, 3]].abs().max() == 0 and slow["ig"][0].abs().max() > 0


def test_erasure_baseline_is_the_token_mean_of_every_residual(model, tokenizer):
    from effdepth.staircase import clean_run

    sequences = [tokenizer(t)["input_ids"] for t in ("12 + 34 = 46", "the cat sat on the mat")]
    expected = torch.cat([clean_run(model, ids).h for ids in sequences], 1).mean(1)  # [L+1, d]
    torch.testing.assert_close(published.erasure_baseline(model, sequences), expected, rtol=1e-12, atol=1e-12)
