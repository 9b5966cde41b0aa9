"""Settling depth and the deep-thinking ratio on synthetic trajectories with known answers, against
plain float64 loops, and their prompt-bootstrap intervals against a loop over the same resamples."""

import math

import numpy as np
import pytest

from effdepth.depth import resample_counts
from effdepth.settling import (
    deep_layer,
    deep_thinking,
    per_prompt_mean,
    settling_depth,
    settling_summary,
    token_mean_interval,
)


def plain_settling(trajectory, g, start):
    """First l ≥ start whose running minimum of D over start … l is below g; None if none."""
    running = math.inf
    for layer in range(start, len(trajectory)):
        d = trajectory[layer]
        running = math.nan if (math.isnan(d) or math.isnan(running)) else min(running, d)
        if running < g:
            return layer
    return None


KNOWN = [  # trajectory over l = 0 … 4, g = 0.5, answers for start = 1 and start = 0
    ([0.9, 0.6, 0.4, 0.7, 0.0], 2, 2),  # settles at 2 although D rises again at 3
    ([0.1, 0.9, 0.8, 0.7, 0.0], 4, 0),  # the embedding's readout only counts with start = 0
    ([0.9, 0.45, 0.8, 0.9, 0.0], 1, 1),  # the running minimum stays below g from l = 1 on
    ([0.9, 0.5, 0.5, 0.5, 0.5], None, None),  # D = g is not below g: never settles
    ([0.9, math.nan, 0.1, 0.0, 0.0], None, None),  # a NaN before settling: never settles
    ([0.9, 0.2, math.nan, 0.0, 0.0], 1, 1),  # a NaN after settling changes nothing
]


@pytest.mark.parametrize("trajectory, at1, at0", KNOWN)
def test_known_settling_depths(trajectory, at1, at0):
    for start, want in ((1, at1), (0, at0)):
        got = settling_depth(np.array([trajectory]), 0.5, start=start)[0]
        assert plain_settling(trajectory, 0.5, start) == want
        assert (math.isnan(got) and want is None) or got == want


def test_settling_depth_equals_the_plain_loop_on_random_trajectories():
    rng = np.random.default_rng(0)
    jsd = rng.uniform(0, 1, size=(300, 9)) ** 2
    jsd[:, -1] = 0.0
    jsd[::17, 3] = np.nan
    for g in (0.05, 0.2, 0.5):
        for start in (0, 1, 4):
            fast = settling_depth(jsd, g, start=start)
            for t in range(jsd.shape[0]):
                want = plain_settling(list(jsd[t]), g, start)
                assert (want is None and math.isnan(fast[t])) or fast[t] == want
    # any leading shape
    assert settling_depth(jsd.reshape(30, 10, 9), 0.2).shape == (30, 10)
    with pytest.raises(ValueError, match="start must lie in 0 … 8"):
        settling_depth(jsd, 0.5, start=9)


def test_deep_layer_and_deep_thinking_tokens():
    assert deep_layer(30, 0.85) == 26  # ⌈25.5⌉
    assert deep_layer(10, 0.7) == 7  # 0.7 · 10 = 7.000000000000001 in floating point
    assert deep_layer(4, 1.0) == 4
    with pytest.raises(ValueError):
        deep_layer(4, 0.0)
    deep = deep_thinking(np.array([6.0, 7.0, 10.0, np.nan]), 10, 0.7)
    assert deep[:3].tolist() == [0.0, 1.0, 1.0] and math.isnan(deep[3])


def test_dtr_and_its_bootstrap_equal_a_plain_loop():
    rng = np.random.default_rng(1)
    n_layers, tokens_per_prompt = 8, [5, 9, 3, 7, 4, 6]
    token_prompt = np.repeat(np.arange(6), tokens_per_prompt)
    jsd = rng.uniform(0, 0.8, size=(token_prompt.size, n_layers + 1))
    jsd[:, -1] = 0.0
    summary = settling_summary(
        jsd, token_prompt, n_layers, threshold=0.1, depth_fraction=0.75, n_resamples=50, seed=3, key=("m", "t", "tuned")
    )
    deep = [1.0 if plain_settling(list(row), 0.1, 1) >= 6 else 0.0 for row in jsd]
    assert summary["deep"].tolist() == deep and summary["deep_layer"] == 6
    assert summary["dtr"]["value"] == pytest.approx(sum(deep) / len(deep), abs=1e-15)
    counts = resample_counts(6, 50, 3, "m", "t", "tuned")
    boot = []
    for row in counts:
        num = sum(row[token_prompt[t]] * deep[t] for t in range(len(deep)))
        den = sum(row[token_prompt[t]] for t in range(len(deep)))
        boot.append(num / den)
    boot.sort()
    assert summary["dtr"]["ci_low"] == pytest.approx(float(np.quantile(boot, 0.025, method="lower")), abs=1e-15)
    assert summary["dtr"]["ci_high"] == pytest.approx(float(np.quantile(boot, 0.975, method="higher")), abs=1e-15)
    assert summary["dtr"]["n_prompts"] == 6 and summary["dtr"]["n_tokens"] == token_prompt.size
    settle = [plain_settling(list(row), 0.1, 1) for row in jsd]
    assert summary["mean_settling_depth"]["value"] == pytest.approx(sum(settle) / len(settle), abs=1e-12)
    with pytest.raises(ValueError, match=r"jsd must be \[N, 9\]"):
        settling_summary(jsd[:, :-1], token_prompt, n_layers)


def test_per_prompt_means_skip_nan_tokens():
    prompts, means = per_prompt_mean(np.array([1.0, 0.0, np.nan, 1.0, np.nan]), np.array([4, 4, 4, 7, 9]))
    assert prompts.tolist() == [4, 7, 9]
    assert means[:2].tolist() == [0.5, 1.0] and math.isnan(means[2])
    interval = token_mean_interval(np.array([np.nan]), np.array([0]), n_resamples=0)
    assert math.isnan(interval["value"]) and interval["ci_low"] is None
