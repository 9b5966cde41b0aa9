"""Settling depth and the deep-thinking ratio (Chen et al. 2026, arXiv 2602.13517;
docs/methods.md#settling-depth).

Per token, D_l = JSD(p_final ‖ q_l) (bits) at depths l = 0 … L under some lens
(``effdepth.lenses.trajectories``).  The running minimum m_l = min_{k ≤ l} D_k; the settling depth
c = the first l ≥ ``start`` with m_l < g — the first depth from which the running minimum stays
below g (it never rises again), which is also the first l ≥ start with D_l < g.  Chen et al. read
the outputs of layers 1 … L, so ``start`` = 1 leaves the embedding (l = 0) out by default.  A
token is deep-thinking when c ≥ ⌈ρ·L⌉, i.e. it settles only in the deepest (1 − ρ) share of the
layers (their "depth fraction" ρ = 0.85: the last 15 %); the deep-thinking ratio (DTR) of a set of
tokens is the share of deep-thinking ones.  Since D_L = 0 (the lens at l = L is the output), every
token with finite D settles by l = L for any g > 0.

Intervals: prompts resampled with replacement (``effdepth.depth.resample_counts``), the
token-weighted statistic recomputed per resample, percentile interval
``effdepth.depth.percentile_interval``.  With ``key = (model, task)`` and the same seed these are
the very resamples of the effective-depth bootstrap of that (model, task) (``effdepth.depth``),
and every lens of it shares them, so lens comparisons are paired.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .depth import percentile_interval, resample_counts

DEFAULT_THRESHOLD = 0.5  # g, bits of JSD
DEFAULT_DEPTH_FRACTION = 0.85  # ρ: deep-thinking = settling in the last (1 − ρ) of the layers


def settling_depth(jsd: np.ndarray, threshold: float = DEFAULT_THRESHOLD, *, start: int = 1) -> np.ndarray:
    """Settling depth per token.  jsd: [..., L+1] JSD(final ‖ lens_l) for l = 0 … L (any
    divergence trajectory).  Returns [...] float64: the first depth l ≥ ``start`` whose running
    minimum over l' = start … l is below ``threshold``, NaN where there is none (a NaN in a
    trajectory propagates into its running minimum, so a trajectory with a NaN before it settles
    never settles).  Raises ValueError unless 0 ≤ start < L+1."""
    jsd = np.asarray(jsd, dtype=np.float64)
    depth = jsd.shape[-1]
    if not 0 <= start < depth:
        raise ValueError(f"start must lie in 0 … {depth - 1}, got {start}")
    running = np.minimum.accumulate(jsd[..., start:], axis=-1)
    settled = running < threshold
    first = np.argmax(settled, axis=-1).astype(np.float64) + start
    return np.where(settled.any(axis=-1), first, np.nan)


def deep_layer(n_layers: int, depth_fraction: float = DEFAULT_DEPTH_FRACTION) -> int:
    """⌈ρ·L⌉: the shallowest depth at which a settling token counts as deep-thinking.  Raises
    ValueError unless 0 < ρ ≤ 1 and L ≥ 1."""
    if not 0 < depth_fraction <= 1 or n_layers < 1:
        raise ValueError(f"need 0 < depth_fraction ≤ 1 and n_layers ≥ 1, got {depth_fraction}, {n_layers}")
    return math.ceil(depth_fraction * n_layers - 1e-12)


def deep_thinking(settle: np.ndarray, n_layers: int, depth_fraction: float = DEFAULT_DEPTH_FRACTION) -> np.ndarray:
    """Per token: 1.0 when it is deep-thinking (settling depth ≥ ⌈ρ·L⌉), 0.0 when not, NaN where
    the settling depth is NaN.  settle: [...] from ``settling_depth``; returns [...] float64."""
    settle = np.asarray(settle, dtype=np.float64)
    deep = (settle >= deep_layer(n_layers, depth_fraction)).astype(np.float64)
    return np.where(np.isnan(settle), np.nan, deep)


def _per_prompt(values: np.ndarray, token_prompt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt ids [P], per-prompt sums of the finite values [P], their counts [P])."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    token_prompt = np.asarray(token_prompt).reshape(-1)
    if values.shape != token_prompt.shape:
        raise ValueError(f"values {values.shape} and token_prompt {token_prompt.shape} differ in length")
    ok = ~np.isnan(values)
    prompts, index = np.unique(token_prompt, return_inverse=True)
    sums = np.bincount(index[ok], weights=values[ok], minlength=prompts.size)
    counts = np.bincount(index[ok], minlength=prompts.size).astype(np.float64)
    return prompts, sums, counts


def per_prompt_mean(values: np.ndarray, token_prompt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prompt ids [P], mean of the finite values of each prompt's tokens [P], NaN for a prompt
    without one) — e.g. each sequence's DTR from ``deep_thinking``."""
    prompts, sums, counts = _per_prompt(values, token_prompt)
    return prompts, np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)


def token_mean_interval(
    values: np.ndarray,
    token_prompt: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    key: tuple[str, ...] = (),
    level: float = 0.95,
) -> dict[str, Any]:
    """Token-weighted mean of per-token ``values`` [N] (NaN ignored) over all tokens, with a
    prompt-bootstrap interval: prompts (``token_prompt`` [N]) resampled with replacement
    ``n_resamples`` times (``effdepth.depth.resample_counts(P, B, seed, *key)``), the mean of the
    resampled tokens each time, the ``level`` percentile interval of those.

    Returns {"value", "ci_low", "ci_high", "solvable", "n_tokens", "n_prompts", "n_resamples"}
    (value NaN and bounds None without finite tokens; bounds None when n_resamples = 0)."""
    prompts, sums, counts = _per_prompt(values, token_prompt)
    total = counts.sum()
    value = float(sums.sum() / total) if total > 0 else float("nan")
    low = high = solvable = None
    if n_resamples > 0 and prompts.size > 0:
        draws = resample_counts(prompts.size, n_resamples, seed, *key).astype(np.float64)
        num, den = draws @ sums, draws @ counts
        boot = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        low, high, solvable = percentile_interval(boot, level)
    return {
        "value": value,
        "ci_low": low,
        "ci_high": high,
        "solvable": solvable,
        "n_tokens": int(total),
        "n_prompts": int(prompts.size),
        "n_resamples": int(n_resamples),
    }


def settling_summary(
    jsd: np.ndarray,
    token_prompt: np.ndarray,
    n_layers: int,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    depth_fraction: float = DEFAULT_DEPTH_FRACTION,
    start: int = 1,
    n_resamples: int = 1000,
    seed: int = 0,
    key: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Settling depth and DTR of one (model, task, lens) from its trajectories.

    jsd: [N, L+1] per-token JSD(final ‖ lens_l); token_prompt: [N].  Returns {"settling_depth":
    [N] float64, "deep": [N] float64 (``deep_thinking``), "dtr": ``token_mean_interval`` of deep,
    "mean_settling_depth": ``token_mean_interval`` of the settling depth, "threshold",
    "depth_fraction", "deep_layer", "n_layers"}.  Raises ValueError when jsd has not L+1 columns."""
    jsd = np.asarray(jsd, dtype=np.float64)
    if jsd.ndim != 2 or jsd.shape[1] != n_layers + 1:
        raise ValueError(f"jsd must be [N, {n_layers + 1}] (depths 0 … L), got {jsd.shape}")
    settle = settling_depth(jsd, threshold, start=start)
    deep = deep_thinking(settle, n_layers, depth_fraction)
    options = {"n_resamples": n_resamples, "seed": seed, "key": key}
    return {
        "settling_depth": settle,
        "deep": deep,
        "dtr": token_mean_interval(deep, token_prompt, **options),
        "mean_settling_depth": token_mean_interval(settle, token_prompt, **options),
        "threshold": threshold,
        "depth_fraction": depth_fraction,
        "deep_layer": deep_layer(n_layers, depth_fraction),
        "n_layers": n_layers,
    }
