"""Logit lens: KL divergence and top-k overlap of each layer's lens distribution with the model's
output (docs/methods.md#logit-lens; nostalgebraist 2020)."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..stats import ExtractionStats
from ..tables import frame, mean_rows, per_prompt_sums


def table(stats: ExtractionStats, variant: str) -> pl.DataFrame:
    """KL(lens ‖ final) and top-k overlap for h_0 .. h_L (published: h_0 .. h_{L-1}, the layer inputs)."""
    n_prompts, n_layers, ids = stats.n_prompts, stats.n_layers, stats.ids
    layers = n_layers if variant == "published" else n_layers + 1
    values = np.stack([stats.array("lens_kl"), stats.array("lens_overlap")], -1)[:, :layers]
    sums, counts = per_prompt_sums(values, stats.array("token_prompt"), n_prompts)
    # The published code's lens averages over tokens correctly; only the layer range differs.
    rows = mean_rows(sums, counts, ["kl", "overlap"], "correct", stats.d_model, layers)
    return frame(rows, analysis="logit_lens", variant=variant, **ids)
