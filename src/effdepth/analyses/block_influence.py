"""Block influence (ShortGPT, Men et al. 2024, arXiv 2403.03853) and angular distance between
layers (Gromov et al. 2024, arXiv 2403.17887); docs/methods.md#block-influence."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ..stats import ExtractionStats
from ..tables import LAYER_STATS, frame, mean_rows, per_prompt_sums


def table(stats: ExtractionStats, variant: str, options: dict[str, Any] | None = None) -> pl.DataFrame:
    """ShortGPT block influence 1 − mean_t cos(h_l, h_{l+1}) and Gromov et al.'s angular distance
    arccos(cos(h_l[T−1], h_{l+n}[T−1])) / π of the last token (metric angular_distance, column span = n)."""
    n_prompts, n_layers, ids = stats.n_prompts, stats.n_layers, stats.ids
    col = LAYER_STATS.index("cos_in_out")
    sums, counts = per_prompt_sums(1.0 - stats.array("layer_stats")[:, :, col : col + 1], stats.array("token_prompt"), n_prompts)
    influence = frame(
        mean_rows(sums, counts, ["block_influence"], "correct", 0, n_layers), analysis="block_influence", variant=variant, **ids
    )
    last = np.asarray(stats.array("resid_last"), dtype=np.float64)  # [P, L+1, d]
    unit = last / np.maximum(np.linalg.norm(last, axis=-1, keepdims=True), 1e-6)
    rows: dict[str, list[Any]] = {"metric": [], "layer": [], "span": [], "prompt": [], "value": [], "weight": []}
    for span in range(1, n_layers + 1):
        for layer in range(0, n_layers + 1 - span):
            cos = np.clip((unit[:, layer] * unit[:, layer + span]).sum(-1), -1, 1)
            dist = np.arccos(cos) / np.pi
            for p in [None, *range(n_prompts)]:
                rows["metric"].append("angular_distance")
                rows["layer"].append(layer)
                rows["span"].append(span)
                rows["prompt"].append(p)
                rows["value"].append(float(dist.mean() if p is None else dist[p]))
                rows["weight"].append(float(n_prompts if p is None else 1))
    return pl.concat([influence, frame(rows, analysis="block_influence", variant=variant, **ids)], how="diagonal_relaxed")
