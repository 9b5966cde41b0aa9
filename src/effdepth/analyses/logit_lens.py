"""Logit lens: KL divergence, top-k overlap and JSD of each depth's lens distribution against the
model's output, and the tokens' settling depths (docs/methods.md#logit-lens, #settling-depth;
nostalgebraist 2020, Chen et al. 2026).  ``lens_table`` serves every lens: the tuned lens's table
(``effdepth.analyses.tuned_lens``) is the same table read from that lens's statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ..stats import ExtractionStats
from ..tables import frame, mean_rows, per_prompt_sums


def settled_shares(jsd: np.ndarray, token_prompt: np.ndarray, n_prompts: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-prompt sums [P, L+1, 1] of the one-hot settling depth of each token, token counts [P]):
    divided by the counts, the share of a prompt's tokens that settle at depth l (l = 0 … L; the
    embedding l = 0 is never a settling depth, ``effdepth.settling.settling_depth`` with start 1)."""
    from ..settling import settling_depth

    depth = settling_depth(jsd, threshold)  # [N], NaN: never settles
    onehot = np.zeros(jsd.shape, dtype=np.float64)
    settled = ~np.isnan(depth)
    onehot[np.flatnonzero(settled), depth[settled].astype(np.int64)] = 1.0
    return per_prompt_sums(onehot[:, :, None], token_prompt, n_prompts)


def lens_table(stats: ExtractionStats, variant: str, lens: str, options: dict[str, Any] | None = None) -> pl.DataFrame:
    """The table of ``lens`` (``logit``, or a further lens the extraction read: ``tuned``) from the
    statistics: metrics kl (KL(lens ‖ output), nats), overlap (top-k) and jsd (JSD(output ‖ lens),
    bits) for h_0 .. h_L, and settled (the share of tokens whose settling depth under
    ``options["settling_threshold"]`` is l, l = 0 … L; without ``options``, the schema's default of
    ``analyses.<lens>_lens``).  The published variant (the paper's code)
    has kl and overlap for h_0 .. h_{L-1} only.  Raises KeyError when the statistics lack the lens."""
    suffix = "" if lens == "logit" else f".{lens}"
    n_prompts, n_layers, ids = stats.n_prompts, stats.n_layers, stats.ids
    published = variant == "published"
    metrics = ["kl", "overlap"] if published else ["kl", "overlap", "jsd"]
    layers = n_layers if published else n_layers + 1
    token_prompt = stats.array("token_prompt")
    values = np.stack([stats.array(f"lens_{m}{suffix}") for m in metrics], -1)[:, :layers]
    sums, counts = per_prompt_sums(values, token_prompt, n_prompts)
    # The published code's lens averages over tokens correctly; only the layer range differs.
    rows = mean_rows(sums, counts, metrics, "correct", stats.d_model, layers)
    if not published:
        if options is None:
            from ..config import block_options

            options = block_options(f"analyses.{lens}_lens")
        threshold = float(options["settling_threshold"])
        settled, counts = settled_shares(stats.array(f"lens_jsd{suffix}"), token_prompt, n_prompts, threshold)
        more = mean_rows(settled, counts, ["settled"], "correct", stats.d_model, layers)
        rows = {k: rows[k] + more[k] for k in rows}
    return frame(rows, analysis=f"{lens}_lens", variant=variant, **ids)


def table(stats: ExtractionStats, variant: str, options: dict[str, Any] | None = None) -> pl.DataFrame:
    """The logit lens's table (``lens_table`` with lens ``logit``)."""
    return lens_table(stats, variant, "logit", options)
