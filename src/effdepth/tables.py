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

import polars as pl
import torch

from .metrics import LAYER_STATS

BASE_SCHEMA = {
    "model": pl.Utf8,
    "task": pl.Utf8,
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


def _per_prompt_sums(values: torch.Tensor, token_prompt: torch.Tensor, n_prompts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ over each prompt's tokens of ``values`` [N, ...] -> ([P, ...] sums, [P] counts), float64."""
    sums = torch.zeros((n_prompts, *values.shape[1:]), dtype=torch.float64)
    sums.index_add_(0, token_prompt.long(), values.double())
    counts = torch.bincount(token_prompt.long(), minlength=n_prompts).double()
    return sums, counts


def _mean_rows(
    sums: torch.Tensor, counts: torch.Tensor, metrics: list[str], variant: str, d_model: int, layers: int
) -> dict[str, list[Any]]:
    """Rows for per-prompt means and the all-prompt aggregate of [P, layers, metrics] sums.

    correct: the aggregate divides by the total token count and each prompt by its own.
    published: each prompt's sum is divided by d_model and the aggregate averages prompts.
    """
    n_prompts = sums.shape[0]
    if variant == "published":
        per_prompt = sums / d_model
        aggregate = per_prompt.mean(0)
        weights = torch.ones(n_prompts, dtype=torch.float64)
    else:
        per_prompt = sums / counts.clamp_min(1).view(-1, *[1] * (sums.dim() - 1))
        aggregate = sums.sum(0) / counts.sum().clamp_min(1)
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


def relative_contribution_table(stats: dict[str, torch.Tensor], meta: dict[str, str], variant: str, **ids: str) -> pl.DataFrame:
    """RC and cosine per layer (metrics rc_*/cos_* of metrics.LAYER_STATS, without cos_in_out)."""
    names = [m for m in LAYER_STATS if m != "cos_in_out"]
    cols = [LAYER_STATS.index(m) for m in names]
    n_prompts, n_layers = int(meta["n_prompts"]), int(meta["n_layers"])
    sums, counts = _per_prompt_sums(stats["layer_stats"][:, :, cols], stats["token_prompt"], n_prompts)
    rows = _mean_rows(sums, counts, names, variant, int(meta["d_model"]), n_layers)
    return frame(rows, analysis="relative_contribution", variant=variant, **ids)


def logit_lens_table(stats: dict[str, torch.Tensor], meta: dict[str, str], variant: str, **ids: str) -> pl.DataFrame:
    """KL(lens ‖ final) and top-k overlap for h_0 .. h_L (published: h_0 .. h_{L-1}, the layer inputs)."""
    n_prompts, n_layers = int(meta["n_prompts"]), int(meta["n_layers"])
    layers = n_layers if variant == "published" else n_layers + 1
    values = torch.stack([stats["lens_kl"], stats["lens_overlap"]], -1)[:, :layers]
    sums, counts = _per_prompt_sums(values, stats["token_prompt"], n_prompts)
    # The published code's lens averages over tokens correctly; only the layer range differs.
    rows = _mean_rows(sums, counts, ["kl", "overlap"], "correct", int(meta["d_model"]), layers)
    return frame(rows, analysis="logit_lens", variant=variant, **ids)


def block_influence_table(stats: dict[str, torch.Tensor], meta: dict[str, str], variant: str, **ids: str) -> pl.DataFrame:
    """ShortGPT block influence 1 − mean_t cos(h_l, h_{l+1}) and Gromov et al.'s angular distance
    arccos(cos(h_l[T−1], h_{l+n}[T−1])) / π of the last token (metric angular_distance, column span = n)."""
    n_prompts, n_layers = int(meta["n_prompts"]), int(meta["n_layers"])
    col = LAYER_STATS.index("cos_in_out")
    sums, counts = _per_prompt_sums(1.0 - stats["layer_stats"][:, :, col : col + 1], stats["token_prompt"], n_prompts)
    influence = frame(_mean_rows(sums, counts, ["block_influence"], "correct", 0, n_layers), analysis="block_influence", variant=variant, **ids)
    last = stats["resid_last"].double()  # [P, L+1, d]
    unit = last / last.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    rows: dict[str, list[Any]] = {"metric": [], "layer": [], "span": [], "prompt": [], "value": [], "weight": []}
    for span in range(1, n_layers + 1):
        for layer in range(0, n_layers + 1 - span):
            cos = (unit[:, layer] * unit[:, layer + span]).sum(-1).clamp(-1, 1)
            dist = torch.arccos(cos) / torch.pi
            for p in [None, *range(n_prompts)]:
                rows["metric"].append("angular_distance")
                rows["layer"].append(layer)
                rows["span"].append(span)
                rows["prompt"].append(p)
                rows["value"].append(float(dist.mean() if p is None else dist[p]))
                rows["weight"].append(float(n_prompts if p is None else 1))
    return pl.concat([influence, frame(rows, analysis="block_influence", variant=variant, **ids)], how="diagonal_relaxed")


FORWARD_TABLES = {
    "relative_contribution": relative_contribution_table,
    "logit_lens": logit_lens_table,
    "block_influence": block_influence_table,
}


def layer_skip_table(results: list[dict[str, torch.Tensor]], positions: list[list[int]], kinds: list[str], variant: str, **ids: str) -> pl.DataFrame:
    """Skip effects: metric ``future`` (layer = effect layer j, skipped_layer = s) and ``output``
    (layer = skipped layer), each with aggregation max (the paper) and mean, over positions and
    prompts.  Per-prompt rows aggregate that prompt's positions."""
    rows: dict[str, list[Any]] = {k: [] for k in ("metric", "kind", "aggregation", "skipped_layer", "layer", "prompt", "value", "weight")}

    def add(metric, kind, agg, s, j, p, value, weight):
        for key, v in zip(rows, (metric, kind, agg, s, j, p, value, weight)):
            rows[key].append(v)

    valid = [i for i, pos in enumerate(positions) if pos]
    if not valid:
        raise ValueError("no prompt is long enough for a skip position (need T > stride + 4 tokens)")
    n_layers = results[valid[0]]["output_max"].shape[1]
    for ki, kind in enumerate(kinds):
        for agg in ("max", "mean"):
            per_prompt_future = [results[i][f"future_{agg}"][ki] for i in valid]  # [L, L, P_i]
            per_prompt_output = [results[i][f"output_{agg}"][ki] for i in valid]  # [L, P_i]
            reduce = (lambda x: x.amax(-1)) if agg == "max" else (lambda x: x.mean(-1))
            all_future = reduce(torch.cat(per_prompt_future, -1))
            all_output = reduce(torch.cat(per_prompt_output, -1))
            for s in range(n_layers):
                for p in [None, *valid]:
                    out = all_output[s] if p is None else reduce(per_prompt_output[valid.index(p)])[s]
                    add("output", kind, agg, s, s, p, float(out), float(len(positions[p]) if p is not None else sum(map(len, positions))))
                    fut = all_future[s] if p is None else reduce(per_prompt_future[valid.index(p)])[s]
                    for j in range(s + 1, n_layers):
                        add("future", kind, agg, s, j, p, float(fut[j]), float(len(positions[p]) if p is not None else sum(map(len, positions))))
    return frame(rows, analysis="layer_skip", variant=variant, **ids)


def map_table(maps: list[torch.Tensor], metric: str, analysis: str, variant: str, **ids: str) -> pl.DataFrame:
    """A (layer × position) map per prompt ([rows, T] tensors) as rows with position and prompt."""
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
