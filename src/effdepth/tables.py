"""Tidy (long) Parquet tables from cached statistics and intervention results.

Every table has the columns ``model, task, analysis, variant, metric, layer, prompt, value, weight``
plus analysis-specific index columns (``skipped_layer``, ``kind``, ``aggregation``, ``position``,
``span``).  ``prompt`` is null on rows that aggregate all prompts the way the paper defines the
metric; rows with a prompt index hold that prompt alone and ``weight`` (its token count where
the aggregate is a token-weighted mean) so any subset of prompts can be re-aggregated exactly —
which is how the bootstrap resamples prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

# Columns of the per-token layer statistics in the extraction cache, in order
# (``effdepth.metrics.layer_token_stats`` computes them).
LAYER_STATS = (
    "rc_attention",
    "rc_mlp",
    "rc_layer",
    "cos_attention",
    "cos_mlp",
    "cos_layer",
    "cos_in_out",  # cos(h_l, h_{l+1}), for block influence
)

BASE_SCHEMA = {
    "model": pl.Utf8,
    "task": pl.Utf8,
    "n_layers": pl.Int32,
    "analysis": pl.Utf8,
    "variant": pl.Utf8,
    "metric": pl.Utf8,
    "layer": pl.Int32,
    "prompt": pl.Int32,
    "value": pl.Float64,
    "weight": pl.Float64,
}
EXTRA_SCHEMA = {
    "kind": pl.Utf8,
    "aggregation": pl.Utf8,
    "skipped_layer": pl.Int32,
    "position": pl.Int32,
    "span": pl.Int32,
}


def frame(rows: dict[str, list[Any]], **constants: Any) -> pl.DataFrame:
    """Build a table with the standard column order and dtypes."""
    n = len(rows["value"])
    data = {**{k: [v] * n for k, v in constants.items()}, **rows}
    schema = {k: t for k, t in {**BASE_SCHEMA, **EXTRA_SCHEMA}.items() if k in data or k in BASE_SCHEMA}
    for key in BASE_SCHEMA:
        data.setdefault(key, [None] * n)
    return pl.DataFrame({k: data[k] for k in schema}, schema=schema)


def per_prompt_sums(values: np.ndarray, token_prompt: np.ndarray, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """Σ over each prompt's tokens of ``values`` [N, ...] -> ([P, ...] sums, [P] counts), float64."""
    index = np.asarray(token_prompt, dtype=np.int64)
    sums = np.zeros((n_prompts, *values.shape[1:]), dtype=np.float64)
    np.add.at(sums, index, np.asarray(values, dtype=np.float64))
    counts = np.bincount(index, minlength=n_prompts).astype(np.float64)
    return sums, counts


def mean_rows(
    sums: np.ndarray, counts: np.ndarray, metrics: list[str], variant: str, d_model: int, layers: int
) -> dict[str, list[Any]]:
    """Rows for per-prompt means and the all-prompt aggregate of [P, layers, metrics] sums.

    correct: the aggregate divides by the total token count and each prompt by its own.
    published: each prompt's sum is divided by d_model and the aggregate averages prompts.
    """
    n_prompts = sums.shape[0]
    if variant == "published":
        per_prompt = sums / d_model
        aggregate = per_prompt.mean(0)
        weights = np.ones(n_prompts, dtype=np.float64)
    else:
        per_prompt = sums / np.maximum(counts, 1).reshape(-1, *[1] * (sums.ndim - 1))
        aggregate = sums.sum(0) / max(counts.sum(), 1)
        weights = counts
    rows: dict[str, list[Any]] = {"metric": [], "layer": [], "prompt": [], "value": [], "weight": []}
    for mi, metric in enumerate(metrics):
        for layer in range(layers):
            for p in [None, *range(n_prompts)]:
                rows["metric"].append(metric)
                rows["layer"].append(layer)
                rows["prompt"].append(p)
                value = aggregate[layer, mi] if p is None else per_prompt[p, layer, mi]
                rows["value"].append(float(value))
                rows["weight"].append(float(weights.sum() if p is None else weights[p]))
    return rows


def map_table(maps: list[Any], metric: str, analysis: str, variant: str, **ids: str) -> pl.DataFrame:
    """A (layer × position) map per prompt ([rows, T] tensors or arrays) as rows with position and prompt."""
    rows: dict[str, list[Any]] = {k: [] for k in ("metric", "layer", "position", "prompt", "value", "weight")}
    for p, grid in enumerate(maps):
        n_rows, n_tokens = grid.shape
        for layer in range(n_rows):
            for t in range(n_tokens):
                rows["metric"].append(metric)
                rows["layer"].append(layer)
                rows["position"].append(t)
                rows["prompt"].append(p)
                rows["value"].append(float(grid[layer, t]))
                rows["weight"].append(1.0)
    return frame(rows, analysis=analysis, variant=variant, **ids)


def tokens_table(token_lists: list[list[str]], **ids: str) -> pl.DataFrame:
    """Token strings per prompt and position, to label map axes."""
    rows = {"prompt": [], "position": [], "token": []}
    for p, toks in enumerate(token_lists):
        for t, tok in enumerate(toks):
            rows["prompt"].append(p)
            rows["position"].append(t)
            rows["token"].append(tok)
    out = pl.DataFrame(rows, schema={"prompt": pl.Int32, "position": pl.Int32, "token": pl.Utf8})
    return out.with_columns([pl.lit(v).alias(k) for k, v in ids.items()])


def write_table(table: pl.DataFrame, path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    table.write_parquet(tmp)
    tmp.rename(path)
