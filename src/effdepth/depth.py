"""Effective depth: the paper's estimators, robust forms, the skip depth score, and a prompt bootstrap.

Curves per (model, task), layer convention of the package (h_l enters layer l, l = 0 .. L-1):

- ``cos``: c̄(l) = mean of cos_attention, cos_mlp, cos_layer (relative_contribution), l = 0 .. L-1.
  ED = last l with c̄(l) < 0 and c̄(l+1) ≥ 0 (the paper's only form).
- ``kl``: KL(l) of the logit lens for the layer inputs l = 0 .. L-1 (KL(L) = 0 by construction is
  left out, as in the paper). form ``paper``: first l with KL(l) < τ·max KL; form ``robust``: first l
  from which KL stays below τ·max KL up to layer L-1.
- ``overlap``: top-k overlap of the logit lens, l = 0 .. L-1. ``paper``: first l with overlap > τ;
  ``robust``: first l from which it stays above τ.
- ``depth_score_output`` / ``depth_score_future`` (the method paper): Σ_l l·m_l / Σ_l m_l with m_l the
  layer-skip output effect O(l), or the mean future effect m_s = mean_{j>s} Δ(s, j) (m_{L-1} = 0: no
  later layer), each for the skip effects aggregated with ``max`` (the paper) and ``mean``.

ratio = (ED + 1) / L for every estimator.  The bootstrap resamples prompts with replacement and
re-aggregates the per-prompt rows of the tidy tables (token-weighted mean, or max for
max-aggregated skip effects) — the exact re-aggregation the tables are built for — then re-reads the
estimator; the 95 % interval is the 2.5 / 97.5 percentile of the resamples that have a solution
(``solvable`` = their fraction).  Every estimator is vectorised over resamples: arrays are
[B, L] (B resamples, or 1 for the point estimate).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

log = logging.getLogger("effdepth.depth")

DEFAULT_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COSINES = ("cos_attention", "cos_mlp", "cos_layer")

SCHEMA = {
    "model": pl.Utf8,
    "task": pl.Utf8,
    "estimator": pl.Utf8,
    "form": pl.Utf8,
    "aggregation": pl.Utf8,
    "lens": pl.Utf8,
    "threshold": pl.Float64,
    "ed": pl.Float64,
    "ratio": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "ratio_low": pl.Float64,
    "ratio_high": pl.Float64,
    "solvable": pl.Float64,
    "reason": pl.Utf8,
    "n_layers": pl.Int32,
    "n_prompts": pl.Int32,
    "n_resamples": pl.Int32,
    "variant": pl.Utf8,
}
REFERENCE_SCHEMA = {
    "model": pl.Utf8,
    "task": pl.Utf8,
    "estimator": pl.Utf8,
    "form": pl.Utf8,
    "n_layers": pl.Int32,
    "published_n_layers": pl.Int32,
    "published_ed": pl.Float64,
    "published_ratio": pl.Float64,
    "ed": pl.Float64,
    "ratio": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "difference": pl.Float64,
    "published_in_ci": pl.Boolean,
    "reason": pl.Utf8,
    "variant": pl.Utf8,
}


# --- estimators on curves [B, L] -> [B] (NaN = no solution) -------------------------------------


def _last_true(cond: np.ndarray) -> np.ndarray:
    """Index of the last True per row of [B, n], NaN where none."""
    n = cond.shape[1]
    idx = (n - 1 - np.argmax(cond[:, ::-1], axis=1)).astype(float)
    return np.where(cond.any(axis=1), idx, np.nan)


def _first_true(cond: np.ndarray) -> np.ndarray:
    """Index of the first True per row of [B, n], NaN where none."""
    idx = np.argmax(cond, axis=1).astype(float)
    return np.where(cond.any(axis=1), idx, np.nan)


def _holds_to_end(cond: np.ndarray) -> np.ndarray:
    """[B, n]: True at l where cond holds at every l' ≥ l."""
    return np.logical_and.accumulate(cond[:, ::-1], axis=1)[:, ::-1]


def ed_cosine(mean_cos: np.ndarray) -> np.ndarray:
    """Last l with c̄(l) < 0 and c̄(l+1) ≥ 0.  mean_cos: [B, L]."""
    mean_cos = np.atleast_2d(mean_cos)
    if mean_cos.shape[1] < 2:
        return np.full(mean_cos.shape[0], np.nan)
    return _last_true((mean_cos[:, :-1] < 0) & (mean_cos[:, 1:] >= 0))


def ed_kl(kl: np.ndarray, tau: float, robust: bool = False) -> np.ndarray:
    """First l with KL(l) < τ·max_l KL (robust: and for every later layer).  kl: [B, L], l = 0 .. L-1."""
    kl = np.atleast_2d(kl)
    cond = kl < tau * kl.max(axis=1, keepdims=True)
    return _first_true(_holds_to_end(cond) if robust else cond)


def ed_overlap(overlap: np.ndarray, tau: float, robust: bool = False) -> np.ndarray:
    """First l with overlap(l) > τ (robust: and for every later layer).  overlap: [B, L]."""
    cond = np.atleast_2d(overlap) > tau
    return _first_true(_holds_to_end(cond) if robust else cond)


def depth_score(effect: np.ndarray) -> np.ndarray:
    """Centre of mass Σ_l l·m_l / Σ_l m_l of a non-negative per-layer effect [B, L]; NaN if Σ m = 0."""
    effect = np.atleast_2d(effect)
    total = effect.sum(axis=1)
    com = (effect * np.arange(effect.shape[1])).sum(axis=1) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, com, np.nan)


def ratio(ed: np.ndarray | float, n_layers: int) -> np.ndarray | float:
    """Effective-depth ratio (ED + 1) / L."""
    return (np.asarray(ed) + 1.0) / n_layers


# --- per-prompt curves and the bootstrap --------------------------------------------------------


@dataclass
class Curves:
    """One source of one (model, task): features per prompt, and how to turn them into a curve.

    point    [F]     features from the all-prompt aggregate rows (prompt null: the paper's numbers)
    values   [P, F]  the same features per prompt (P may be 0: no bootstrap)
    weights  [P]     tokens / positions behind each prompt's row
    combine  "mean" (weighted mean over prompts) or "max"
    to_curve [B, F] -> [B, L] (e.g. the mean of the three cosines, the mean over j of Δ(s, j))
    """

    point: np.ndarray
    values: np.ndarray
    weights: np.ndarray
    combine: str
    to_curve: Callable[[np.ndarray], np.ndarray]
    n_layers: int
    variant: str
    problem: str | None = None  # why no estimate may be read from these curves (non-finite values)
    note: str | None = None  # prompts the analysis was given but left out (in the reason of every estimate)

    @property
    def n_prompts(self) -> int:
        return int(self.values.shape[0])

    def point_curve(self) -> np.ndarray:
        return self.to_curve(self.point[None, :])

    def resampled_curves(self, counts: np.ndarray, chunk: int = 64) -> np.ndarray:
        """Curves [B, L] for prompt multiplicities ``counts`` [B, P] (each row sums to P)."""
        out = []
        for start in range(0, counts.shape[0], chunk):
            c = counts[start : start + chunk].astype(float)
            if self.combine == "max":
                feats = np.where(c[:, :, None] > 0, self.values[None], -np.inf).max(axis=1)
            else:
                w = c * self.weights[None, :]
                feats = (w @ self.values) / np.clip(w.sum(axis=1, keepdims=True), 1e-12, None)
            out.append(self.to_curve(feats))
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.n_layers))


def resample_counts(n_prompts: int, n_resamples: int, seed: int, *key: str) -> np.ndarray:
    """Multiplicities [B, P] of prompts drawn with replacement; seeded by (seed, key) so a (model,
    task) gets the same resamples whatever else is configured, and sources with the same prompts
    share them."""
    stable = [zlib.crc32(k.encode()) for k in key]
    rng = np.random.default_rng(np.random.SeedSequence([seed, n_prompts, *stable]))
    draws = rng.integers(0, n_prompts, size=(n_resamples, n_prompts))
    counts = np.zeros((n_resamples, n_prompts), dtype=np.int64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1)
    return counts


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(low, high, solvable fraction) over the non-NaN samples; percentiles on observed values
    (lower / higher), so integer EDs keep integer bounds."""
    if samples.size == 0:
        return None, None, None
    ok = samples[~np.isnan(samples)]
    solvable = ok.size / samples.size
    if ok.size == 0:
        return None, None, solvable
    alpha = (1 - level) / 2
    low = float(np.quantile(ok, alpha, method="lower"))
    high = float(np.quantile(ok, 1 - alpha, method="higher"))
    return low, high, solvable


# --- curves from the tidy tables ----------------------------------------------------------------


def _matrix(rows: pl.DataFrame, feature: pl.Expr, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point [F], per-prompt values [P, F], weights [P]) from rows with columns prompt, weight, value;
    ``feature`` computes each row's integer feature index in [0, n_features).  Absent features are NaN."""
    rows = rows.select(pl.col("prompt"), pl.col("weight"), pl.col("value"), feature.cast(pl.Int64).alias("f"))
    rows = rows.filter((pl.col("f") >= 0) & (pl.col("f") < n_features))
    agg = rows.filter(pl.col("prompt").is_null())
    point = np.full(n_features, np.nan)
    point[agg["f"].to_numpy()] = agg["value"].to_numpy()
    per = rows.filter(pl.col("prompt").is_not_null())
    prompts = np.unique(per["prompt"].to_numpy())
    values = np.full((prompts.size, n_features), np.nan)
    index = np.searchsorted(prompts, per["prompt"].to_numpy())
    values[index, per["f"].to_numpy()] = per["value"].to_numpy()
    weights = np.zeros(prompts.size)
    weights[index] = per["weight"].to_numpy()
    return point, values, weights


def _n_layers(tables: dict[str, pl.DataFrame], model: str) -> int | None:
    """L of a model, from the ``n_layers`` column every analysis table carries (recorded at
    extraction or when the intervention job loaded the model)."""
    for table in tables.values():
        rows = table.filter(pl.col("model") == model)
        if rows.height:
            return int(rows["n_layers"][0])
    return None


def cosine_curves(rows: pl.DataFrame, n_layers: int) -> Curves:
    """c̄(l) from relative_contribution rows of one (model, task); features: the three cosines × L."""
    rows = rows.filter(pl.col("metric").is_in(COSINES))
    metric = pl.col("metric").replace_strict({m: i for i, m in enumerate(COSINES)}, return_dtype=pl.Int64)
    point, values, weights = _matrix(rows, metric * n_layers + pl.col("layer"), len(COSINES) * n_layers)

    def to_curve(feats: np.ndarray) -> np.ndarray:
        return feats.reshape(feats.shape[0], len(COSINES), n_layers).mean(axis=1)

    return Curves(point, values, weights, "mean", to_curve, n_layers, rows["variant"][0])


def lens_curves(rows: pl.DataFrame, metric: str, n_layers: int) -> Curves | None:
    """KL(l) or overlap(l) for the layer inputs l = 0 .. L-1 from the rows of a lens table
    (logit_lens, tuned_lens; h_L left out); None when the rows lack ``metric``."""
    rows = rows.filter(pl.col("metric") == metric)
    if not rows.height:
        return None
    point, values, weights = _matrix(rows, pl.col("layer"), n_layers)
    return Curves(point, values, weights, "mean", lambda f: f, n_layers, rows["variant"][0])


def settled_curves(rows: pl.DataFrame, n_layers: int) -> Curves | None:
    """The settling-depth histogram s(l), l = 0 .. L (the share of tokens that settle at depth l;
    docs/methods.md#settling-depth) from the ``settled`` rows of a lens table; None without them."""
    rows = rows.filter(pl.col("metric") == "settled")
    if not rows.height:
        return None
    point, values, weights = _matrix(rows, pl.col("layer"), n_layers + 1)
    return Curves(point, values, weights, "mean", lambda f: f, n_layers, rows["variant"][0])


def mean_settling_depth(settled: np.ndarray) -> np.ndarray:
    """Token mean of the settling depth Σ_l l·s(l) / Σ_l s(l) from histograms [B, L+1]; NaN if no
    token settles."""
    return depth_score(settled)


def deep_thinking_ratio(settled: np.ndarray, depth_fraction: float) -> np.ndarray:
    """Share of tokens settling at depth ≥ ⌈ρ·L⌉ (Chen et al. 2026) from histograms [B, L+1]."""
    from .settling import deep_layer

    settled = np.atleast_2d(settled)
    return settled[:, deep_layer(settled.shape[1] - 1, depth_fraction) :].sum(axis=1)


def skip_curves(rows: pl.DataFrame, effect: str, aggregation: str, n_layers: int) -> Curves:
    """m_l for the depth score from layer_skip rows (kind = layer): ``output`` O(l), or ``future``
    m_s = mean over j > s of Δ(s, j) (m_{L-1} = 0); features of ``future``: the L × L map, zero below
    the diagonal."""
    rows = rows.filter((pl.col("kind") == "layer") & (pl.col("aggregation") == aggregation) & (pl.col("metric") == effect))
    variant = rows["variant"][0]
    # prompts too short for a skip position: per-prompt rows of weight 0 and no value (layer_skip.table)
    unused = pl.col("prompt").is_not_null() & pl.col("value").is_null()
    left_out = sorted(set(rows.filter(unused)["prompt"].to_list()))
    rows = rows.filter(~unused)
    note = None
    if left_out:
        used = rows.filter(pl.col("prompt").is_not_null())["prompt"].n_unique()
        shown = ", ".join(map(str, left_out[:10])) + (f" and {len(left_out) - 10} more" if len(left_out) > 10 else "")
        note = (
            f"{used} of {used + len(left_out)} prompts: prompt {shown} too short for a skip position "
            "(weight 0 in the layer_skip table)"
        )
    if effect == "output":
        point, values, weights = _matrix(rows, pl.col("skipped_layer"), n_layers)
        return Curves(point, values, weights, aggregation, lambda f: f, n_layers, variant, note=note)
    L = n_layers
    point, values, weights = _matrix(rows, pl.col("skipped_layer") * L + pl.col("layer"), L * L)
    later = np.triu(np.ones((L, L), dtype=bool), k=1).ravel()  # j > s
    point[~later] = 0.0
    values[:, ~later] = 0.0
    n_later = np.maximum(np.arange(L - 1, -1, -1), 1)  # layers after s (avoid 0 / 0 at s = L-1)

    def to_curve(feats: np.ndarray) -> np.ndarray:
        return feats.reshape(feats.shape[0], L, L).sum(axis=2) / n_later

    return Curves(point, values, weights, aggregation, to_curve, L, variant, note=note)


# --- the estimator registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A curve estimators read: its name, the analysis table it comes from, its label in figures,
    ``build(rows, n_layers)`` -> Curves (None when the rows lack it) from that table's rows of one
    (model, task) and variant, and the lens it is read through (None: no lens)."""

    name: str
    analysis: str
    label: str
    build: Callable[[pl.DataFrame, int], Curves | None]
    lens: str | None = None


def _skip_source(effect: str, aggregation: str) -> Source:
    def build(rows: pl.DataFrame, n_layers: int) -> Curves | None:
        present = rows.filter((pl.col("kind") == "layer") & (pl.col("metric") == effect) & (pl.col("aggregation") == aggregation))
        return skip_curves(rows, effect, aggregation, n_layers) if present.height else None

    return Source(f"skip_{effect}_{aggregation}", "layer_skip", f"skip {effect} effect ({aggregation})", build)


# The lenses with a forward table of their own (effdepth.analyses: <lens>_lens) and the name suffix of
# their curves and estimators ("" for the logit lens, the paper's).
LENS_SUFFIX = {"logit": "", "tuned": "_tuned"}


def _lens_sources(lens: str) -> list[Source]:
    suffix, analysis = LENS_SUFFIX[lens], f"{lens}_lens"
    note = "" if lens == "logit" else f" ({lens} lens)"
    return [
        Source(f"kl{suffix}", analysis, f"KL / max KL{note}", lambda rows, n: lens_curves(rows, "kl", n), lens),
        Source(f"overlap{suffix}", analysis, f"top-k overlap{note}", lambda rows, n: lens_curves(rows, "overlap", n), lens),
        Source(f"settled{suffix}", analysis, f"tokens settling{note}", settled_curves, lens),
    ]


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("cos", "relative_contribution", "mean cosine c̄", cosine_curves),
        *(src for lens in LENS_SUFFIX for src in _lens_sources(lens)),
        *(_skip_source(effect, agg) for effect in ("output", "future") for agg in ("max", "mean")),
    )
}


@dataclass(frozen=True)
class Estimator:
    """One effective-depth estimator (docs/methods.md#effective-depth): one row per (model, task,
    variant) of the effective-depth table.

    estimator, form, aggregation   its key in the table
    source        the ``SOURCES`` curve it reads (and so the analysis whose variant it has)
    rule          (curves [B, L], τ) -> ED [B], NaN where the curve has no solution
    no_solution   the table's ``reason`` when it has none ({tau} is filled in)
    threshold     the ``effective_depth`` option holding τ, or None (τ = ``fixed``)
    fixed         τ of an estimator without a threshold option (recorded in the table)
    label         its name in figures (None: not shown in the summary figures)
    headline      read by the question summaries (Q1–Q3) and the errata verdicts
    paper_column  its column in the paper's table (resources/reference), compared with ours
    depth         whether the value is a layer index (with a ratio (ED + 1) / L); False for a share
                  of tokens (the deep-thinking ratio), whose ratio columns stay empty
    """

    estimator: str
    form: str
    aggregation: str
    source: str
    rule: Callable[[np.ndarray, float | None], np.ndarray]
    no_solution: str
    threshold: str | None = None
    fixed: float | None = None
    label: str | None = None
    headline: bool = False
    paper_column: str | None = None
    depth: bool = True

    @property
    def analysis(self) -> str:
        return SOURCES[self.source].analysis

    @property
    def lens(self) -> str | None:
        return SOURCES[self.source].lens

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.estimator, self.form, self.aggregation)

    def tau(self, options: dict[str, float]) -> float | None:
        """τ under the thresholds ``options`` (kl_threshold, overlap_threshold, depth_fraction)."""
        return float(options[self.threshold]) if self.threshold else self.fixed


def _depth_scores() -> list[Estimator]:
    out = []
    for effect in ("output", "future"):
        for agg in ("max", "mean"):
            out.append(
                Estimator(
                    f"depth_score_{effect}",
                    "centre_of_mass",
                    agg,
                    f"skip_{effect}_{agg}",
                    lambda c, _t: depth_score(c),
                    "no skip effect at any layer (all zero)",
                    label=f"skip CoM {effect}" if agg == "mean" else None,
                    headline=(effect, agg) == ("output", "mean"),
                )
            )
    return out


_LENS_READINGS = (
    ("kl", "paper", "KL never falls below {tau:g}·max KL"),
    ("kl", "robust", "KL does not stay below {tau:g}·max KL up to the last layer"),
    ("overlap", "paper", "overlap never exceeds {tau:g}"),
    ("overlap", "robust", "overlap does not stay above {tau:g} up to the last layer"),
)
_LENS_RULES: dict[tuple[str, str], Callable[[np.ndarray, float | None], np.ndarray]] = {
    ("kl", "paper"): lambda c, t: ed_kl(c, t),
    ("kl", "robust"): lambda c, t: ed_kl(c, t, robust=True),
    ("overlap", "paper"): lambda c, t: ed_overlap(c, t),
    ("overlap", "robust"): lambda c, t: ed_overlap(c, t, robust=True),
}


def _lens_estimators(lens: str) -> list[Estimator]:
    """ED_KL and ED_overlap (paper and robust forms), the mean settling depth and the deep-thinking
    ratio read through ``lens``; only the logit lens's are in the paper's table."""
    suffix = LENS_SUFFIX[lens]
    note, paper = ("", True) if lens == "logit" else (f" ({lens})", False)
    out = []
    for metric, form, no_solution in _LENS_READINGS:
        out.append(
            Estimator(
                f"{metric}{suffix}",
                form,
                "mean",
                f"{metric}{suffix}",
                _LENS_RULES[metric, form],
                no_solution,
                threshold=f"{metric}_threshold",
                label=f"{'ED_KL' if metric == 'kl' else 'ED_overlap'}{' robust' if form == 'robust' else ''}{note}",
                headline=form == "robust",
                paper_column=f"ed_{metric}" if paper else None,
            )
        )
    out.append(
        Estimator(
            f"settling{suffix}",
            "mean",
            "mean",
            f"settled{suffix}",
            lambda c, _t: mean_settling_depth(c),
            "no token settles",
            label=f"settling depth{note}",
        )
    )
    out.append(
        Estimator(
            f"dtr{suffix}",
            "share",
            "mean",
            f"settled{suffix}",
            deep_thinking_ratio,
            "no token settles",
            threshold="depth_fraction",
            depth=False,
        )
    )
    return out


# Adding an estimator: one entry here (and its curve in SOURCES).  Order: the table's and the figures'.
ESTIMATORS: tuple[Estimator, ...] = (
    Estimator(
        "cos",
        "paper",
        "mean",
        "cos",
        lambda c, _t: ed_cosine(c),
        "no negative-to-non-negative crossing of the mean cosine",
        fixed=0.0,
        label="ED_cos",
        headline=True,
        paper_column="ed_cosine",
    ),
    *(e for lens in LENS_SUFFIX for e in _lens_estimators(lens)),
    *_depth_scores(),
)

ESTIMATOR_ORDER = tuple(dict.fromkeys(e.estimator for e in ESTIMATORS))
ESTIMATOR_ANALYSIS = {e.estimator: e.analysis for e in ESTIMATORS}  # its variant is the variant of the estimate
ED_ANALYSES = tuple(dict.fromkeys(SOURCES[e.source].analysis for e in ESTIMATORS))  # the tables the estimators read
ESTIMATOR_LABELS = {e.key: e.label for e in ESTIMATORS if e.label}
HEADLINE = tuple(e.key for e in ESTIMATORS if e.headline)
REFERENCE_COLUMNS = {e.estimator: e.paper_column for e in ESTIMATORS if e.paper_column}


def curves_for(rows: dict[str, pl.DataFrame], n_layers: int) -> dict[str, Curves]:
    """Every curve source (``SOURCES``) available from the rows of one (model, task), keyed by name."""
    out: dict[str, Curves] = {}
    for source in SOURCES.values():
        if (table := rows.get(source.analysis)) is not None and (curves := source.build(table, n_layers)) is not None:
            out[source.name] = curves
    mark_nonfinite(rows, out)
    return out


def nonfinite_reason(rows: pl.DataFrame, analysis: str) -> str | None:
    """Why no estimate may be read from ``rows`` (one analysis, one model and task), or None.

    Any NaN or ±inf ``value`` — of any metric, prompt or aggregate row — makes every curve of that
    analysis untrustworthy, not only the metric that shows it: NaN logits give NaN KL but a finite,
    meaningless top-k overlap (docs/methods.md#numerics).  The reason names the metrics
    and layers affected (the skipped layer for layer_skip) and the usual cause.
    """
    bad = rows.filter(~pl.col("value").is_finite())
    if bad.height == 0:
        return None
    layer_col = "skipped_layer" if analysis == "layer_skip" and "skipped_layer" in bad.columns else "layer"
    layers = sorted({int(v) for v in bad[layer_col].drop_nulls().to_list()})
    metrics = sorted(set(bad["metric"].drop_nulls().to_list()))
    shown = ", ".join(map(str, layers[:12])) + (f", … ({len(layers)} layers)" if len(layers) > 12 else "")
    return (
        f"non-finite values in the {analysis.replace('_', '-')} curve at layers {shown} "
        f"(metrics {', '.join(metrics)}): the activations overflowed or the weights hold NaN; rerun extraction "
        "with `dtype: bfloat16` or `dtype: float32` for this model"
    )


def mark_nonfinite(rows: dict[str, pl.DataFrame], curves: dict[str, Curves]) -> None:
    """Set ``Curves.problem`` on every curve fed by an analysis whose rows hold a non-finite value."""
    for analysis, table in rows.items():
        reason = nonfinite_reason(table, analysis)
        if reason is None:
            continue
        for name, c in curves.items():
            if SOURCES[name].analysis == analysis:
                c.problem = reason


def _row(
    model: str, task: str, est: Estimator, tau: float | None, curves: Curves, boot: np.ndarray | None, n_resamples: int
) -> dict[str, Any]:
    L = curves.n_layers
    usable = curves.problem is None  # estimators never read non-finite values
    value = est.rule(curves.point_curve(), tau)[0] if L >= 2 and usable else np.nan
    ed = None if np.isnan(value) else float(value)
    reason = None
    if L < 2:
        reason = "fewer than 2 layers"
    elif not usable:
        reason = curves.problem
    elif np.isnan(curves.point).any():
        reason = "missing layers in the table"
        ed = None
    elif ed is None:
        reason = est.no_solution.format(tau=tau)
    if curves.note:
        reason = curves.note if reason is None else f"{reason}; {curves.note}"
    low = high = solvable = None
    if boot is not None and boot.size and usable:
        low, high, solvable = percentile_interval(est.rule(boot, tau))
    return {
        "model": model,
        "task": task,
        "estimator": est.estimator,
        "form": est.form,
        "aggregation": est.aggregation,
        "lens": est.lens,
        "threshold": tau,
        "ed": ed,
        "ratio": None if ed is None or not est.depth else float(ratio(ed, L)),
        "ci_low": low,
        "ci_high": high,
        "ratio_low": None if low is None or not est.depth else float(ratio(low, L)),
        "ratio_high": None if high is None or not est.depth else float(ratio(high, L)),
        "solvable": solvable,
        "reason": reason,
        "n_layers": L,
        "n_prompts": curves.n_prompts,
        "n_resamples": n_resamples if boot is not None else 0,
        "variant": curves.variant,
    }


def _pairs(tables: dict[str, pl.DataFrame]) -> list[tuple[str, str]]:
    """(model, task) pairs in order of first appearance over the tables."""
    seen: dict[tuple[str, str], None] = {}
    for t in tables.values():
        for m, k in t.select("model", "task").unique(maintain_order=True).iter_rows():
            seen.setdefault((m, k), None)
    return list(seen)


def effective_depth(
    tables: dict[str, pl.DataFrame],
    kl_threshold: float,
    overlap_threshold: float,
    bootstrap: int,
    seed: int = 0,
    sweep: Iterable[float] | None = None,
    depth_fraction: float | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(effective-depth table, threshold-sweep table) from analysis tables keyed by analysis name
    (relative_contribution, logit_lens, tuned_lens, layer_skip; any subset).  ``depth_fraction``: ρ
    of the deep-thinking ratio (None: the schema's default).  Columns: see ``SCHEMA``."""
    if depth_fraction is None:
        from .config import block_options

        depth_fraction = block_options("effective_depth")["depth_fraction"]
    thresholds = {"kl_threshold": kl_threshold, "overlap_threshold": overlap_threshold, "depth_fraction": depth_fraction}
    main_readings = [(e, e.tau(thresholds)) for e in ESTIMATORS]
    # the sweep repeats the depths read at a threshold (ED_KL, ED_overlap under each lens), not the DTR,
    # a share whose ρ is a different quantity on a different axis (docs/methods.md#threshold-sweep)
    sweep_readings = [(e, float(tau)) for tau in (sweep or DEFAULT_SWEEP) for e in ESTIMATORS if e.threshold and e.depth]
    main_rows, sweep_rows = [], []
    if "layer_skip" in tables:  # the depth score reads whole-layer skips only
        tables = {**tables, "layer_skip": tables["layer_skip"].filter(pl.col("kind") == "layer")}
    parts = {a: t.partition_by("model", "task", as_dict=True) for a, t in tables.items()}
    layers_of: dict[str, int | None] = {}
    for model, task in _pairs(tables):
        if model not in layers_of:
            layers_of[model] = _n_layers(tables, model)
        n_layers = layers_of[model]
        if n_layers is None:
            continue
        rows_of = {a: p[(model, task)] for a, p in parts.items() if (model, task) in p}
        # one estimate per variant an analysis ran under (variants: [correct, published]); the same
        # resampled prompts serve every variant, so their intervals are paired
        for variant in sorted({v for r in rows_of.values() for v in r["variant"].unique()}):
            of_variant = {a: r.filter(pl.col("variant") == variant) for a, r in rows_of.items()}
            sources = curves_for({a: r for a, r in of_variant.items() if r.height}, n_layers)
            boots: dict[str, np.ndarray | None] = {}
            for name, curves in sources.items():
                if bootstrap > 0 and curves.n_prompts > 0 and curves.problem is None:
                    counts = resample_counts(curves.n_prompts, bootstrap, seed, model, task)
                    boots[name] = curves.resampled_curves(counts)
                else:
                    boots[name] = None
            for rows, readings in ((main_rows, main_readings), (sweep_rows, sweep_readings)):
                for est, tau in readings:
                    if est.source in sources:
                        rows.append(_row(model, task, est, tau, sources[est.source], boots[est.source], bootstrap))
            log.info("%s / %s (%s): L=%d, sources %s", model, task, variant, n_layers, ", ".join(sources))
    return _frame(main_rows), _frame(sweep_rows)


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)


# --- comparison with the published values -------------------------------------------------------


def read_reference(path: Path | str) -> pl.DataFrame:
    """The paper's table (model, hf_id, n_layers, dataset, ed_cosine, ed_kl, ed_overlap) in long form:
    model, task, estimator, published_n_layers, published_ed, published_ratio."""
    ref = pl.read_csv(path)
    long = ref.unpivot(
        index=["model", "dataset", "n_layers"],
        on=list(REFERENCE_COLUMNS.values()),
        variable_name="column",
        value_name="published_ed",
    )
    inverse = {v: k for k, v in REFERENCE_COLUMNS.items()}
    return long.select(
        pl.col("model"),
        pl.col("dataset").alias("task"),
        pl.col("column").replace_strict(inverse).alias("estimator"),
        pl.col("n_layers").cast(pl.Int32).alias("published_n_layers"),
        pl.col("published_ed").cast(pl.Float64),
        ((pl.col("published_ed") + 1) / pl.col("n_layers")).alias("published_ratio"),
    )


def compare_with_reference(table: pl.DataFrame, reference: pl.DataFrame) -> pl.DataFrame:
    """Our estimates (paper and robust forms of cos / kl / overlap) next to the published values for
    every (model, task) present in both; empty with the right columns when none matches."""
    ours = table.filter(pl.col("estimator").is_in(list(REFERENCE_COLUMNS)))
    joined = ours.join(reference, on=["model", "task", "estimator"], how="inner")
    if joined.height == 0:
        return pl.DataFrame(schema=REFERENCE_SCHEMA)
    out = joined.with_columns(
        (pl.col("ed") - pl.col("published_ed")).alias("difference"),
        pl.when(pl.col("ci_low").is_null())
        .then(None)
        .otherwise((pl.col("published_ed") >= pl.col("ci_low")) & (pl.col("published_ed") <= pl.col("ci_high")))
        .alias("published_in_ci"),
    )
    return out.select([pl.col(c).cast(t) for c, t in REFERENCE_SCHEMA.items()]).sort(
        "model",
        "task",
        pl.col("estimator").replace_strict({e: i for i, e in enumerate(ESTIMATOR_ORDER)}, return_dtype=pl.Int32),
        "form",
    )


# --- the rule's entry point ---------------------------------------------------------------------


def run(
    table_paths: list[str],
    reference_path: str | None,
    options: dict[str, Any],
    outputs: dict[str, str],
) -> pl.DataFrame:
    """Read the aggregated analysis tables, write effective_depth.{parquet,csv}, the sweep and the
    comparison with the published values.  ``outputs`` keys: table, csv, sweep, reference, reference_csv."""
    tables = {}
    for path in table_paths:
        t = pl.read_parquet(path)
        if t.height:
            tables[str(t["analysis"][0])] = t
    from .api import effective_depth as estimate  # the notebook API's estimate, options checked there

    table, sweep = estimate(tables, **options)
    reference = read_reference(reference_path) if reference_path else None
    comparison = compare_with_reference(table, reference) if reference is not None else pl.DataFrame(schema=REFERENCE_SCHEMA)
    for key, frame_, fmt in (
        ("table", table, "parquet"),
        ("csv", table, "csv"),
        ("sweep", sweep, "parquet"),
        ("reference", comparison, "parquet"),
        ("reference_csv", comparison, "csv"),
    ):
        if key not in outputs:
            continue
        path = Path(outputs[key])
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":  # for people: 4 decimals are plenty for layer indices and ratios
            frame_.with_columns(pl.selectors.float().round(4)).write_csv(path)
        else:
            frame_.write_parquet(path)
    unsolved = table.filter(pl.col("ed").is_null())
    for r in unsolved.iter_rows(named=True):
        log.warning("no ED: %s / %s %s (%s): %s", r["model"], r["task"], r["estimator"], r["form"], r["reason"])
    log.info(
        "%d estimates (%d without a solution), %d sweep rows, %d compared with the paper",
        table.height,
        unsolved.height,
        sweep.height,
        comparison.height,
    )
    return table


def effective_depth_inputs(analyses: Iterable[str]) -> list[str]:
    """The configured analyses the effective-depth rule reads, in a fixed order."""
    return [a for a in ED_ANALYSES if a in analyses]


def reference_pairs(path: Path | str) -> set[tuple[str, str]]:
    """(model, task) pairs of the paper's table (csv module: cheap enough to call while Snakemake
    parses the workflow)."""
    import csv

    with open(path, newline="") as fh:
        return {(row["model"], row["dataset"]) for row in csv.DictReader(fh)}
