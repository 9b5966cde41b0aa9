"""Relative contribution and cosine of each layer's attention, MLP and whole-layer contribution
with the residual stream, token-weighted means (docs/methods.md#relative-contribution;
Csordás, Manning & Potts 2025, arXiv 2505.13898)."""

from __future__ import annotations

from typing import Any

import polars as pl

from ..stats import ExtractionStats
from ..tables import LAYER_STATS, frame, mean_rows, per_prompt_sums


def table(stats: ExtractionStats, variant: str, options: dict[str, Any] | None = None) -> pl.DataFrame:
    """RC and cosine per layer (metrics rc_*/cos_* of metrics.LAYER_STATS, without cos_in_out)."""
    names = [m for m in LAYER_STATS if m != "cos_in_out"]
    cols = [LAYER_STATS.index(m) for m in names]
    n_prompts, n_layers, ids = stats.n_prompts, stats.n_layers, stats.ids
    sums, counts = per_prompt_sums(stats.array("layer_stats")[:, :, cols], stats.array("token_prompt"), n_prompts)
    rows = mean_rows(sums, counts, names, variant, stats.d_model, n_layers)
    return frame(rows, analysis="relative_contribution", variant=variant, **ids)
