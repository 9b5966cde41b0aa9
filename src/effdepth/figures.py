"""Figures: one registered altair theme, every figure of the paper, effective-depth summaries, PDF merging.

Each figure is a ``Figure`` in the ordered registry ``FIGURES`` (the order of all.pdf): the tables it
reads (aggregated analyses, the effective-depth tables), the token tables that label heatmap axes,
and a builder ``(tables, context) -> chart``.  Builders aggregate with polars first and hand altair
small frames; grids facet over every configured model (``figures.columns`` panels a row) with
shared scales where values are comparable across models and per-panel scales where not.

``context`` carries what a figure needs from the config: ``figures`` (width, height, columns),
``models`` (size_b, family, training, base_model), ``tasks`` (source, difficulty, digits),
``analyses`` (tasks, variant, kinds) and ``effective_depth`` (thresholds) — see
``figure_context``.  Every chart is saved as PDF, SVG and a self-contained HTML.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from . import __version__
from .analyses import REGISTRY
from .depth import effective_depth_inputs

THEME = "effdepth"
# vl-convert draws text only in installed fonts: with a single missing family (Helvetica on most
# Linux machines) every label silently disappears from the PDF/SVG.
FONT = "Helvetica, Arial, 'DejaVu Sans', 'Liberation Sans', sans-serif"


@alt.theme.register(THEME, enable=True)
def _theme() -> alt.theme.ThemeConfig:
    return {
        "config": {
            "font": FONT,
            "view": {"stroke": "#dddddd"},
            "axis": {"labelFontSize": 9, "titleFontSize": 10, "grid": False, "labelFont": FONT, "titleFont": FONT},
            "header": {"labelFontSize": 10, "titleFontSize": 11, "labelFont": FONT, "titleFont": FONT, "labelFontWeight": "bold"},
            "legend": {"labelFontSize": 9, "titleFontSize": 10, "labelFont": FONT, "titleFont": FONT},
            "title": {"fontSize": 14, "anchor": "start", "font": FONT, "subtitleFontSize": 10, "subtitleColor": "#555555", "subtitleFont": FONT},
            "text": {"font": FONT},
            "range": {"category": {"scheme": "tableau10"}},
        }
    }


# Frames are aggregated before plotting; a 12-model heatmap grid still has ~10⁵ cells, above altair's
# default guard of 5000 rows (which exists for unaggregated notebook data).
alt.data_transformers.enable("default", max_rows=None)

Tables = dict[str, pl.DataFrame]
Context = dict[str, Any]

ED_TABLES = ("effective_depth", "effective_depth_sweep", "effective_depth_reference")

# (estimator, form, aggregation) -> label; the order of T1's columns.
ESTIMATOR_LABELS = {
    ("cos", "paper", "mean"): "ED_cos",
    ("kl", "paper", "mean"): "ED_KL",
    ("kl", "robust", "mean"): "ED_KL robust",
    ("overlap", "paper", "mean"): "ED_overlap",
    ("overlap", "robust", "mean"): "ED_overlap robust",
    ("depth_score_output", "centre_of_mass", "mean"): "skip CoM output",
    ("depth_score_future", "centre_of_mass", "mean"): "skip CoM future",
}
# The estimators the question summaries (Q1–Q3) use: the cosine crossing, the robust threshold forms
# (the paper's first-crossing forms are artefact-prone, see docs/methods.md#effective-depth) and the skip centre of mass.
HEADLINE = ["ED_cos", "ED_KL robust", "ED_overlap robust", "skip CoM output"]


# --- small helpers ------------------------------------------------------------------------------


def _headline(table: pl.DataFrame) -> pl.DataFrame:
    """Rows aggregating all prompts (prompt is null)."""
    return table.filter(pl.col("prompt").is_null())


def _ordered(configured: list[str], frames: tuple[pl.DataFrame, ...], column: str) -> list[str]:
    """Values of ``column`` present in the frames: in config order, then any others as they appear."""
    seen: list[str] = []
    for f in frames:
        seen += [v for v in f[column].unique(maintain_order=True).to_list() if v not in seen]
    return [v for v in configured if v in seen] + [v for v in seen if v not in configured]


def _models(ctx: Context, *frames: pl.DataFrame) -> list[str]:
    return _ordered(list(ctx.get("models", {})), frames, "model")


def _tasks(ctx: Context, *frames: pl.DataFrame) -> list[str]:
    return _ordered(list(ctx.get("tasks", {})), frames, "task")


def _primary_task(table: pl.DataFrame, ctx: Context, analysis: str) -> str:
    """The task of the per-model grids (F1–F7): ``figures.primary_task`` when the analysis ran on it,
    else the first configured task of the analysis present."""
    configured = ctx.get("analyses", {}).get(analysis, {}).get("tasks") or list(ctx.get("tasks", {}))
    present = table["task"].unique(maintain_order=True).to_list()
    chosen = ctx.get("figures", {}).get("primary_task")
    if chosen in present:
        return chosen
    for task in configured:
        if task in present:
            return task
    return present[0]


def _size(ctx: Context) -> tuple[int, int]:
    opts = ctx.get("figures", {})
    return int(opts.get("width", 180)), int(opts.get("height", 120))


def _columns(ctx: Context) -> int:
    return int(ctx.get("figures", {}).get("columns", 4))


def _title(text: str, *subtitle: str, width: int = 130) -> alt.TitleParams:
    """Title with subtitle lines wrapped at ``width`` characters (long lines would run off the page)."""
    lines = [line for s in subtitle if s for line in textwrap.wrap(s, width)]
    return alt.TitleParams(text=text, subtitle=lines)


def _layer_axis(title: str, n_max: int) -> alt.Axis:
    """Ordinal layer axis that labels every k-th layer so 64 layers stay readable."""
    step = max(1, math.ceil(n_max / 8))
    expr = "datum.label" if step == 1 else f"datum.value % {step} == 0 ? datum.label : ''"
    return alt.Axis(title=title, labelExpr=expr, labelAngle=0, ticks=step == 1)


def _wrap(chart: alt.Chart, ctx: Context, models: list[str], field: str = "model") -> alt.FacetChart:
    return chart.facet(
        facet=alt.Facet(f"{field}:N", sort=models, title=None), columns=min(_columns(ctx), max(1, len(models)))
    )


def _grid(chart: alt.Chart, models: list[str], tasks: list[str]) -> alt.FacetChart:
    return chart.facet(
        row=alt.Row("model:N", sort=models, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("task:N", sort=tasks, title=None),
    )


def _panels(chart: alt.Chart, ctx: Context, data: pl.DataFrame, by_task: bool) -> alt.FacetChart:
    models = _models(ctx, data)
    return _grid(chart, models, _tasks(ctx, data)) if by_task else _wrap(chart, ctx, models)


def _complete(frame: pl.DataFrame, row: str, column: str) -> pl.DataFrame:
    """Add a placeholder row for every (row, column) facet cell without data.  Vega-Lite lays out the
    cells of a row × column facet that have data in order, so one missing cell shifts the rest of its
    column into the wrong rows; with placeholders every cell exists and ``_drawn`` drops them."""
    present = frame.select(row, column).unique()
    missing = frame.select(row).unique().join(frame.select(column).unique(), how="cross").join(present, on=[row, column], how="anti")
    return pl.concat([frame.with_columns(placeholder=pl.lit(False)), missing.with_columns(placeholder=pl.lit(True))], how="diagonal_relaxed")


def _drawn(frame: pl.DataFrame, row: str = "model", column: str = "task") -> alt.Chart:
    """Chart of ``frame`` completed for a (row, column) facet grid, drawing only real rows."""
    return alt.Chart(_complete(frame, row, column)).transform_filter("!datum.placeholder")


def message_chart(title: str, lines: list[str], subtitle: str = "") -> alt.Chart:
    """A page that says something in words (a figure with nothing to show, or a table of contents)."""
    data = pl.DataFrame({"y": list(range(len(lines))), "text": lines})
    return (
        alt.Chart(data)
        .mark_text(align="left", baseline="top", fontSize=11)
        .encode(y=alt.Y("y:O", axis=None), x=alt.value(0), text="text:N")
        .properties(width=720, height=max(18, 18 * len(lines)), title=_title(title, subtitle))
        .configure_view(stroke=None)
    )


def _clean_token(token: str | None) -> str:
    """Token text that shows on an axis: visible spaces / newlines, byte-level BPE markers resolved."""
    if token is None:
        return "?"
    token = token.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")
    token = token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")
    return token[:12] or "∅"


def _ed_label(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the column ``label`` (ESTIMATOR_LABELS; other combinations by name) to ED rows."""
    labels = [
        ESTIMATOR_LABELS.get((e, f, a), f"{e} ({f}, {a})")
        for e, f, a in frame.select("estimator", "form", "aggregation").iter_rows()
    ]
    return frame.with_columns(label=pl.Series(labels, dtype=pl.Utf8))


def _model_meta(ctx: Context) -> pl.DataFrame:
    rows = [
        {
            "model": name,
            "size_b": float(m["size_b"]) if m.get("size_b") is not None else None,
            "family": m.get("family") or "",
            "training": m.get("training") or "unspecified",
            "base_model": m.get("base_model"),
        }
        for name, m in ctx.get("models", {}).items()
    ]
    schema = {"model": pl.Utf8, "size_b": pl.Float64, "family": pl.Utf8, "training": pl.Utf8, "base_model": pl.Utf8}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def _ci_text(ed: float | None, low: float | None, high: float | None, ratio: float | None, integer: bool) -> str:
    """A T1 cell: 'ED [low–high] · ratio' (— without a solution)."""
    if ed is None:
        return "—"
    fmt = (lambda v: f"{v:.0f}") if integer else (lambda v: f"{v:.1f}")
    interval = f" [{fmt(low)}–{fmt(high)}]" if low is not None and high is not None else ""
    return f"{fmt(ed)}{interval} · {ratio:.2f}"


# --- per-layer bar figures: F1, F3, F4, F5 and their across-task versions F8, F10, F11, F12 -----


def _bars(data: pl.DataFrame, ctx: Context, y_title: str, series_title: str, n_max: int, rule: pl.DataFrame | None = None,
          line: pl.DataFrame | None = None, x_title: str = "layer", y_scale: alt.Scale | None = None) -> alt.LayerChart:
    """Bars of ``value`` per ``layer`` (``series`` side by side), optionally a dashed red horizontal
    ``rule`` per panel (columns model, task, value, series = its name) and a black ``line`` over the
    layers (columns model, task, layer, value, series).  One frame carries all three because a facet
    takes one data source."""
    width, height = _size(ctx)
    n_series = data["series"].n_unique()
    parts = [data.with_columns(mark=pl.lit("bar"))]
    if rule is not None and rule.height:
        parts.append(rule.with_columns(mark=pl.lit("rule"), layer=pl.lit(None, pl.Int32)))
    if line is not None and line.height:
        parts.append(line.with_columns(mark=pl.lit("line")))
    base = _drawn(pl.concat(parts, how="diagonal_relaxed"))
    x = alt.X("layer:O", axis=_layer_axis(x_title, n_max))
    layers = [
        base.transform_filter(alt.datum.mark == "bar").mark_bar().encode(
            x=x,
            y=alt.Y("value:Q", title=y_title, scale=y_scale or alt.Undefined),
            color=alt.Color("series:N", title=series_title, legend=alt.Legend(orient="top")) if n_series > 1 else alt.value("#4c78a8"),
            xOffset=alt.XOffset("series:N") if n_series > 1 else alt.Undefined,
            tooltip=["model:N", "task:N", "series:N", "layer:O", alt.Tooltip("value:Q", format=".4f")],
        )
    ]
    if rule is not None and rule.height:
        layers.append(
            base.transform_filter(alt.datum.mark == "rule").mark_rule(color="#d62728", strokeDash=[4, 3]).encode(
                y="value:Q", tooltip=["series:N", alt.Tooltip("value:Q", format=".4f")]
            )
        )
    if line is not None and line.height:
        layers.append(
            base.transform_filter(alt.datum.mark == "line").mark_line(color="black", strokeWidth=1.2).encode(
                x=x, y="value:Q", tooltip=["model:N", "task:N", "series:N", "layer:O", alt.Tooltip("value:Q", format=".4f")]
            )
        )
    return alt.layer(*layers).properties(width=width, height=height)


def _n_layers_max(table: pl.DataFrame, column: str = "layer") -> int:
    return int(table[column].max()) + 1 if table.height else 1


def _select_task(data: pl.DataFrame, ctx: Context, analysis: str, by_task: bool) -> tuple[pl.DataFrame, str]:
    if by_task:
        return data, "all tasks"
    task = _primary_task(data, ctx, analysis)
    return data.filter(pl.col("task") == task), f"task {task}"


def cosine_chart(tables: Tables, ctx: Context, by_task: bool = False) -> alt.TopLevelMixin:
    """F1 / F8: cosine of attention, MLP and layer contribution with the residual, and their mean c̄."""
    rc = _headline(tables["relative_contribution"]).filter(pl.col("metric").str.starts_with("cos_"))
    rc, which = _select_task(rc, ctx, "relative_contribution", by_task)
    data = rc.select("model", "task", pl.col("metric").str.strip_prefix("cos_").alias("series"), "layer", "value")
    mean = data.group_by("model", "task", "layer").agg(pl.col("value").mean()).with_columns(series=pl.lit("mean c̄"))
    zero = data.select("model", "task").unique().with_columns(value=pl.lit(0.0), series=pl.lit("zero"))
    layered = _bars(data, ctx, "cosine with the residual", "contribution", _n_layers_max(data), rule=zero, line=mean)
    label = "F8" if by_task else "F1"
    return _panels(layered, ctx, data, by_task).resolve_scale(x="independent").properties(
        title=_title(
            f"{label} · Cosine between each layer's contribution and the residual stream ({which})",
            "negative: the layer erases features · ≈ 0: writes new ones · positive: amplifies them; "
            "black line: mean c̄, whose last negative→non-negative crossing is ED_cos",
        )
    )


def skip_output_chart(tables: Tables, ctx: Context, by_task: bool = False) -> alt.TopLevelMixin:
    """F3 / F10: change of the output distribution when a layer is skipped, O(s)."""
    skip = _headline(tables["layer_skip"]).filter((pl.col("metric") == "output") & (pl.col("kind") == "layer"))
    skip, which = _select_task(skip, ctx, "layer_skip", by_task)
    data = skip.select("model", "task", pl.col("aggregation").alias("series"), pl.col("skipped_layer").alias("layer"), "value")
    chart = _bars(data, ctx, "‖p̃ − p‖ (output change)", "aggregation over positions", _n_layers_max(data), x_title="skipped layer")
    label = "F10" if by_task else "F3"
    return _panels(chart, ctx, data, by_task).resolve_scale(x="independent").properties(
        title=_title(
            f"{label} · Effect of skipping a layer on the output distribution ({which})",
            "max: the paper's aggregation over positions and prompts (outlier-driven); mean: the average effect. "
            "Late layers with small bars only refine the prediction.",
        )
    )


def _lens(tables: Tables, ctx: Context, metric: str, by_task: bool) -> tuple[pl.DataFrame, str]:
    lens = _headline(tables["logit_lens"]).filter(pl.col("metric") == metric)
    lens, which = _select_task(lens, ctx, "logit_lens", by_task)
    return lens.select("model", "task", pl.lit(metric).alias("series"), "layer", "value"), which


def kl_chart(tables: Tables, ctx: Context, by_task: bool = False) -> alt.TopLevelMixin:
    """F4 / F11: KL(logit lens of h_l ‖ final output) per layer, with the ED_KL threshold τ·max KL."""
    tau = float(ctx["effective_depth"]["kl_threshold"])
    data, which = _lens(tables, ctx, "kl", by_task)
    n_layers = _n_layers(tables)
    inputs = data.join(n_layers, on="model", how="left").filter(pl.col("n_layers").is_null() | (pl.col("layer") < pl.col("n_layers")))
    rule = inputs.group_by("model", "task").agg((pl.col("value").max() * tau).alias("value")).with_columns(series=pl.lit(f"{tau:g}·max KL"))
    chart = _bars(data, ctx, "KL(lens ‖ output) [nats]", "", _n_layers_max(data), rule=rule)
    label = "F11" if by_task else "F4"
    return _panels(chart, ctx, data, by_task).resolve_scale(x="independent", y="independent").properties(
        title=_title(
            f"{label} · Logit lens: KL divergence of each layer's prediction from the final one ({which})",
            f"red dashed line: {tau:g}·max KL over the layer inputs; ED_KL is the first layer below it "
            "(robust form: the first layer after which KL stays below). y scales are per panel.",
        )
    )


def overlap_chart(tables: Tables, ctx: Context, by_task: bool = False) -> alt.TopLevelMixin:
    """F5 / F12: top-k overlap of the logit lens with the final prediction, with the threshold τ."""
    tau = float(ctx["effective_depth"]["overlap_threshold"])
    data, which = _lens(tables, ctx, "overlap", by_task)
    rule = data.select("model", "task").unique().with_columns(value=pl.lit(tau), series=pl.lit(f"τ = {tau:g}"))
    chart = _bars(data, ctx, "top-k overlap with the output", "", _n_layers_max(data), rule=rule, y_scale=alt.Scale(domain=[0, 1]))
    label = "F12" if by_task else "F5"
    return _panels(chart, ctx, data, by_task).resolve_scale(x="independent").properties(
        title=_title(
            f"{label} · Logit lens: overlap of each layer's top-k tokens with the final top-k ({which})",
            f"red dashed line: τ = {tau:g}; ED_overlap is the first layer above it (robust form: stays above).",
        )
    )


def _n_layers(tables: Tables) -> pl.DataFrame:
    """model -> L, from the ``n_layers`` column every analysis table carries."""
    frames = [t.select("model", pl.col("n_layers").cast(pl.Int32)) for t in tables.values() if "n_layers" in t.columns]
    if not frames:
        return pl.DataFrame(schema={"model": pl.Utf8, "n_layers": pl.Int32})
    return pl.concat(frames).unique("model", keep="first", maintain_order=True)


# --- heatmaps: F2 / F9 (skip), F6 (erasure), F7 (integrated gradients), angular distance ----------


def skip_map_chart(tables: Tables, ctx: Context, by_task: bool = False, kind: str = "layer") -> alt.TopLevelMixin:
    """F2 / F9: relative change Δ(s, j) of layer j's contribution on future tokens when layer s is
    skipped (max aggregation, as the paper), colour relative to the panel's maximum."""
    skip = _headline(tables["layer_skip"]).filter(
        (pl.col("metric") == "future") & (pl.col("kind") == kind) & (pl.col("aggregation") == "max")
    )
    skip, which = _select_task(skip, ctx, "layer_skip", by_task)
    data = skip.select("model", "task", "skipped_layer", "layer", "value").with_columns(
        relative=pl.col("value") / pl.col("value").max().over("model", "task").clip(lower_bound=1e-12)
    )
    width, _ = _size(ctx)
    n_max = max(_n_layers_max(data), _n_layers_max(data, "skipped_layer"))
    chart = _drawn(data).mark_rect().encode(
        x=alt.X("skipped_layer:O", axis=_layer_axis("layer skipped", n_max)),
        y=alt.Y("layer:O", axis=_layer_axis("effect at layer", n_max), sort="descending"),
        color=alt.Color("relative:Q", title="Δ / panel max", scale=alt.Scale(scheme="viridis", domain=[0, 1])),
        tooltip=["model:N", "task:N", "skipped_layer:O", "layer:O", alt.Tooltip("value:Q", title="Δ", format=".4f")],
    ).properties(width=width, height=width)
    titles = {
        "layer": ("F9" if by_task else "F2", "Effect of skipping a layer on the computation of later layers"),
        "attention": ("", "Effect of skipping a layer's attention on later layers"),
        "mlp": ("", "Effect of skipping a layer's MLP on later layers"),
    }
    label, text = titles[kind]
    return _panels(chart, ctx, data, by_task).resolve_scale(x="independent", y="independent").properties(
        title=_title(
            f"{label + ' · ' if label else ''}{text} ({which})",
            "Δ(s, j) = max over future tokens of the relative change of layer j's contribution when layer s is "
            "skipped on earlier tokens; colours are relative to each panel's maximum (tooltip: raw Δ). "
            "Rows that stay dark for late skipped layers = those layers feed no later computation.",
        )
    )


def _map_frame(tables: Tables, analysis: str, metric: str) -> pl.DataFrame:
    """Prompt-0 (layer × position) map of every (model, task) with a token label per position."""
    table = tables[analysis].filter(pl.col("metric") == metric)
    first = table.group_by("model", "task").agg(pl.col("prompt").min().alias("first"))
    table = table.join(first, on=["model", "task"]).filter(pl.col("prompt") == pl.col("first"))
    data = table.select("model", "task", "prompt", "layer", "position", "value")
    tokens = tables.get("tokens")
    if tokens is not None and tokens.height:
        tokens = tokens.select("model", "task", pl.col("prompt").cast(pl.Int32), pl.col("position").cast(pl.Int32), "token")
        data = data.join(tokens, on=["model", "task", "prompt", "position"], how="left")
    else:
        data = data.with_columns(token=pl.lit(None, pl.Utf8))
    n_tokens = data.group_by("model", "task").agg(pl.col("position").max().alias("n"))
    data = data.join(n_tokens, on=["model", "task"])
    labels = [
        f"{p:>2} {_clean_token(t)}" if (t is not None and n <= 80) else str(p)
        for p, t, n in data.select("position", "token", "n").iter_rows()
    ]
    return data.with_columns(label=pl.Series(labels, dtype=pl.Utf8)).drop("n")


def _token_heatmap(data: pl.DataFrame, ctx: Context, color: alt.Color, tooltip_title: str) -> alt.FacetChart:
    width, height = _size(ctx)
    n_max = _n_layers_max(data)
    chart = _drawn(data).mark_rect().encode(
        x=alt.X("label:O", sort=alt.EncodingSortField("position", order="ascending"), title="token",
                axis=alt.Axis(labelAngle=-60, labelFontSize=8, labelLimit=60)),
        y=alt.Y("layer:O", axis=_layer_axis("layer", n_max), sort="descending"),
        color=color,
        tooltip=["model:N", "task:N", "layer:O", "position:O", "token:N", alt.Tooltip("value:Q", title=tooltip_title, format=".4f")],
    ).properties(width=max(width, 9 * int(data["position"].max() + 1)), height=max(height, 4 * n_max))
    return _grid(chart, _models(ctx, data), _tasks(ctx, data)).resolve_scale(x="independent", y="independent")


def erasure_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """F6: output change when the residual stream at (layer, token) is replaced by its mean."""
    data = _map_frame(tables, "residual_erasure", "output_change")
    color = alt.Color("value:Q", title="‖p̃ − p‖ on the answer", scale=alt.Scale(scheme="inferno", reverse=True, domainMin=0))
    return _token_heatmap(data, ctx, color, "output change").properties(
        title=_title(
            "F6 · Residual erasure: where information about the answer lives (prompt 0 of each task)",
            "colour: max change of the answer's next-token distributions when h_l at that token is set to its "
            "mean over a reference task; shared scale. Bright rows stop early = the answer no longer depends "
            "on that token at later layers.",
        )
    )


def integrated_gradients_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """F7: integrated-gradients attribution of the answer probability to each layer's output per
    token, normalised by the panel's max |IG| on a symmetric diverging scale."""
    data = _map_frame(tables, "integrated_gradients", "attribution")
    data = data.with_columns(
        relative=pl.col("value") / pl.col("value").abs().max().over("model", "task").clip(lower_bound=1e-12)
    )
    color = alt.Color("relative:Q", title="IG / panel max |IG|",
                      scale=alt.Scale(scheme="redblue", reverse=True, domain=[-1, 1], domainMid=0))
    return _token_heatmap(data, ctx, color, "IG").properties(
        title=_title(
            "F7 · Integrated gradients: attribution of the answer to each layer's output per token (prompt 0)",
            "red: raises the gold answer's probability, blue: lowers it; symmetric scale relative to each "
            "panel's largest |IG| (tooltip: raw value).",
        )
    )


def angular_distance_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Gromov et al.'s angular distance d(l, n) of the last token between h_l and h_{l+n}."""
    table = _headline(tables["block_influence"]).filter(pl.col("metric") == "angular_distance")
    task = _primary_task(table, ctx, "block_influence")
    data = table.filter(pl.col("task") == task).select("model", "task", "layer", "span", "value")
    width, _ = _size(ctx)
    n_max = _n_layers_max(data) + 1
    chart = alt.Chart(data).mark_rect().encode(
        x=alt.X("layer:O", axis=_layer_axis("first layer l", n_max)),
        y=alt.Y("span:O", axis=_layer_axis("block size n", n_max), sort="descending"),
        color=alt.Color("value:Q", title="angular distance", scale=alt.Scale(scheme="viridis", domain=[0, 1])),
        tooltip=["model:N", "layer:O", "span:O", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=width, height=width)
    return _wrap(chart, ctx, _models(ctx, data)).resolve_scale(x="independent", y="independent").properties(
        title=_title(
            f"Angular distance between h_l and h_(l+n) of the last token (task {task})",
            "Gromov et al. 2024: the block of n layers with the smallest distance is the cheapest to prune; "
            "dark cells far up the diagonal = long runs of layers that barely change the residual.",
        )
    )


# --- line figures: relative contribution, block influence ----------------------------------------


def relative_contribution_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    data = _headline(tables["relative_contribution"]).filter(pl.col("metric").str.starts_with("rc_")).select(
        "model", "task", pl.col("metric").str.strip_prefix("rc_").alias("sublayer"), "layer", "value"
    )
    width, height = _size(ctx)
    chart = _drawn(data).mark_line(point=alt.OverlayMarkDef(size=10)).encode(
        x=alt.X("layer:Q", title="layer"),
        y=alt.Y("value:Q", title="‖contribution‖ / ‖residual‖", scale=alt.Scale(type="log")),
        color=alt.Color("sublayer:N", title="contribution", legend=alt.Legend(orient="top")),
        tooltip=["model:N", "task:N", "sublayer:N", "layer:Q", alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=width, height=height)
    return _grid(chart, _models(ctx, data), _tasks(ctx, data)).resolve_scale(x="independent").properties(
        title=_title(
            "Relative contribution of each layer to the residual stream",
            "norm of the attention / MLP / layer output relative to the residual it is added to (log scale); "
            "a layer with a small ratio changes the residual little.",
        )
    )


def block_influence_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    data = _headline(tables["block_influence"]).filter(pl.col("metric") == "block_influence").select("model", "task", "layer", "value")
    width, height = _size(ctx)
    chart = alt.Chart(data).mark_line(point=alt.OverlayMarkDef(size=10)).encode(
        x=alt.X("layer:Q", title="layer"),
        y=alt.Y("value:Q", title="block influence 1 − cos(h_l, h_l+1)"),
        color=alt.Color("task:N", sort=_tasks(ctx, data), legend=alt.Legend(orient="top")),
        tooltip=["model:N", "task:N", "layer:Q", alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=width, height=height)
    return _wrap(chart, ctx, _models(ctx, data)).resolve_scale(x="independent").properties(
        title=_title(
            "Block influence (ShortGPT) per layer, every task",
            "how much a layer turns the residual stream; layers near zero are candidates for removal.",
        )
    )


# --- effective depth: T1, Q1, Q2, Q3, threshold sweep, comparison with the paper, per-model profile -


def _ed(tables: Tables) -> pl.DataFrame:
    return _ed_label(tables["effective_depth"])


def effective_depth_table_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """T1: the effective-depth table as a page: ED [95 % CI] per model × estimator, one block per task,
    cells coloured by the ratio (ED + 1) / L."""
    ed = _ed(tables).filter(pl.col("label").is_in(list(ESTIMATOR_LABELS.values())))
    if ed.height == 0:
        return message_chart("T1 · Effective depth", ["No effective-depth estimate was computed (no analysis configured for it)."])
    integer = ~pl.col("estimator").str.starts_with("depth_score")
    texts = [
        _ci_text(e, lo, hi, r, is_int)
        for e, lo, hi, r, is_int in ed.select("ed", "ci_low", "ci_high", "ratio", integer.alias("i")).iter_rows()
    ]
    data = ed.with_columns(
        text=pl.Series(texts, dtype=pl.Utf8),
        note=pl.when(pl.col("reason").is_not_null()).then(pl.col("reason")).otherwise(pl.lit("")),
        solvable_pct=(pl.col("solvable") * 100).round(0),
    ).select("model", "task", "label", "ed", "ratio", "ci_low", "ci_high", "ratio_low", "ratio_high", "solvable_pct",
             "n_layers", "n_prompts", "text", "note")
    models, tasks = _models(ctx, data), _tasks(ctx, data)
    columns = [c for c in ESTIMATOR_LABELS.values() if c in set(data["label"].to_list())]
    base = alt.Chart(data).encode(
        x=alt.X("label:N", sort=columns, title=None, axis=alt.Axis(orient="top", labelAngle=0, labelLimit=120)),
        y=alt.Y("model:N", sort=models, title=None, axis=alt.Axis(labelLimit=220)),
        tooltip=["model:N", "task:N", "label:N", "text:N", alt.Tooltip("ratio:Q", format=".2f"),
                 alt.Tooltip("ratio_low:Q", format=".2f"), alt.Tooltip("ratio_high:Q", format=".2f"),
                 alt.Tooltip("solvable_pct:Q", title="% resamples with a solution"), "n_layers:Q", "n_prompts:Q", "note:N"],
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("ratio:Q", title="ratio (ED+1)/L", scale=alt.Scale(scheme="blues", domain=[0, 1.3]),
                        legend=alt.Legend(orient="bottom", gradientLength=200))
    )
    text = base.mark_text(fontSize=10).encode(text="text:N")
    table = alt.layer(cells, text).properties(width=132 * len(columns), height=20 * len(models))
    return table.facet(row=alt.Row("task:N", sort=tasks, title=None, header=alt.Header(labelAngle=0, labelAlign="left", labelFontSize=12))).properties(
        title=_title(
            "T1 · Effective depth per model and task: ED [95 % bootstrap interval] · ratio (ED + 1) / L (also the colour)",
            "ED_cos: last negative→non-negative crossing of the mean cosine · ED_KL / ED_overlap: first layer past the "
            "threshold (paper) or from which the condition holds to the end (robust) · skip CoM: centre of mass of the "
            "layer-skip effect (method paper) · — : no solution (reason in the tooltip / CSV)",
        )
    )


def _headline_ed(tables: Tables, ctx: Context) -> pl.DataFrame:
    """Headline estimators joined with model metadata, ED and ratio in long form (measure, value, low, high)."""
    ed = _ed(tables).filter(pl.col("label").is_in(HEADLINE)).join(_model_meta(ctx), on="model", how="left")
    cols = ["model", "task", "label", "size_b", "family", "training", "base_model", "n_layers"]
    return pl.concat(
        [
            ed.select(*cols, pl.lit("ED (layers)").alias("measure"), pl.col("ed").alias("value"), pl.col("ci_low").alias("low"), pl.col("ci_high").alias("high")),
            ed.select(*cols, pl.lit("ratio (ED+1)/L").alias("measure"), pl.col("ratio").alias("value"), pl.col("ratio_low").alias("low"), pl.col("ratio_high").alias("high")),
        ]
    ).filter(pl.col("value").is_not_null())


def _jitter(frame: pl.DataFrame, column: str, by: str, order: list[str], step: float, log: bool = False) -> pl.DataFrame:
    """``x``: ``column`` shifted a little per value of ``by`` so estimates at the same position do not
    hide each other's intervals (multiplicatively on a log axis); the tooltip keeps ``column``."""
    n = max(1, len(order))
    shift = pl.col(by).replace_strict({v: (i - (n - 1) / 2) * step for i, v in enumerate(order)}, default=0.0, return_dtype=pl.Float64)
    return frame.with_columns(x=pl.col(column) * shift.exp() if log else pl.col(column) + shift)


def _interval_layers(base: alt.Chart, x: alt.X, color: alt.Color, tooltip: list[Any], shape: alt.Shape | None = None,
                     x_offset: alt.XOffset | None = None, line_detail: list[str] | None = None) -> list[alt.Chart]:
    """An estimate (``value``) with its interval (``low``–``high``): optional connecting line, error
    bar, point."""
    offset = {"xOffset": x_offset} if x_offset is not None else {}
    layers = []
    if line_detail:
        layers.append(base.mark_line(strokeWidth=1, opacity=0.5).encode(x=x, y="value:Q", color=color, detail=line_detail))
    layers.append(base.mark_rule(strokeWidth=1.5, opacity=0.6).encode(x=x, y="low:Q", y2="high:Q", color=color, **offset))
    layers.append(
        base.mark_point(filled=True, size=45).encode(
            x=x, y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format=".3~g")), color=color, tooltip=tooltip,
            **({"shape": shape} if shape is not None else {}), **offset,
        )
    )
    return layers


def q1_scale_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Q1: ED and ratio against model size, per estimator, every task (colour) and training regime."""
    data = _headline_ed(tables, ctx)
    missing = sorted(set(data.filter(pl.col("size_b").is_null())["model"].to_list()))
    data = data.filter(pl.col("size_b").is_not_null())
    if data.height == 0:
        return message_chart("Q1 · Effective depth vs model size", ["No model has size_b in the config: nothing to plot."])
    width, height = _size(ctx)
    tasks = _tasks(ctx, data)
    data = _jitter(data, "size_b", "task", tasks, step=0.03, log=True)
    sizes = sorted(set(data["size_b"].to_list()))
    x = alt.X("x:Q", title="parameters (billions, log scale)", scale=alt.Scale(type="log", nice=False, padding=12),
                axis=alt.Axis(values=sizes, format="~g"))
    color = alt.Color("task:N", sort=tasks, legend=alt.Legend(orient="top", columns=8))
    tooltip = ["model:N", "task:N", "label:N", "training:N", "size_b:Q", alt.Tooltip("value:Q", format=".2f"),
               alt.Tooltip("low:Q", format=".2f"), alt.Tooltip("high:Q", format=".2f")]
    base = _drawn(data, "label", "measure")
    layers = _interval_layers(base, x, color, tooltip, shape=alt.Shape("training:N", legend=alt.Legend(orient="top")),
                              line_detail=["task:N", "training:N"])
    chart = alt.layer(*layers).properties(width=width, height=height)
    return chart.facet(
        row=alt.Row("label:N", sort=HEADLINE, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("measure:N", title=None),
    ).resolve_scale(y="independent").properties(
        title=_title(
            "Q1 · Does effective depth grow with model size? ED (left) and ratio (right) with 95 % bootstrap intervals",
            "The paper's claim: ED grows with size while the ratio (ED + 1)/L stays about constant. Lines join models "
            "of one training regime on one task.",
            f"models without size_b left out: {', '.join(missing)}" if missing else "",
        )
    )


def q2_pairs(ctx: Context) -> pl.DataFrame:
    """(group, role, model) rows: each long-CoT model with a configured base_model, its base, and the
    instruct models of the same size."""
    models = ctx.get("models", {})
    rows = []
    for name, m in models.items():
        base = m.get("base_model")
        if m.get("training") != "long-cot" or not base or base not in models:
            continue
        size = m.get("size_b")
        group = f"{size:g}B" if size is not None else name
        rows += [{"group": group, "role": "long-CoT", "model": name}, {"group": group, "role": "base", "model": base}]
        rows += [
            {"group": group, "role": "instruct", "model": other}
            for other, o in models.items()
            if o.get("training") == "instruct" and size is not None and o.get("size_b") == size
        ]
    schema = {"group": pl.Utf8, "role": pl.Utf8, "model": pl.Utf8}
    return pl.DataFrame(rows, schema=schema).unique(maintain_order=True) if rows else pl.DataFrame(schema=schema)


def q2_training_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Q2: ED of each long-CoT model next to its base (and the instruct model of the same size)."""
    pairs = q2_pairs(ctx)
    if pairs.height == 0:
        return message_chart(
            "Q2 · Are long-CoT models deeper than their bases?",
            [
                "No long-CoT / base pair is configured, so there is nothing to compare.",
                "A pair is a model with `training: long-cot` and `base_model: <name of another configured model>`;",
                "instruct models (`training: instruct`) of the same `size_b` join the comparison.",
                "config.yaml (the paper's experiment) configures the four R1-Distill models and their bases.",
            ],
        )
    data = _ed(tables).filter(pl.col("label").is_in(HEADLINE)).join(pairs, on="model", how="inner")
    data = data.select("group", "role", "model", "task", "label", pl.col("ed").alias("value"), pl.col("ci_low").alias("low"),
                       pl.col("ci_high").alias("high"), "ratio", "n_layers").filter(pl.col("value").is_not_null())
    width, height = _size(ctx)
    groups = pairs["group"].unique(maintain_order=True).to_list()
    roles = ["base", "long-CoT", "instruct"]
    x = alt.X("group:N", sort=groups, title="model size")
    color = alt.Color("role:N", sort=roles, scale=alt.Scale(domain=roles, range=["#4c78a8", "#e45756", "#72b7b2"]),
                      legend=alt.Legend(orient="top"))
    tooltip = ["model:N", "task:N", "label:N", alt.Tooltip("value:Q", title="ED", format=".1f"), "low:Q", "high:Q",
               alt.Tooltip("ratio:Q", format=".2f")]
    base = _drawn(data, "label", "task")
    layers = _interval_layers(base, x, color, tooltip, x_offset=alt.XOffset("role:N", sort=roles))
    chart = alt.layer(*layers).properties(width=max(width // 2, 40 * len(groups)), height=height)
    return chart.facet(
        row=alt.Row("label:N", sort=HEADLINE, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("task:N", sort=_tasks(ctx, data), title=None),
    ).resolve_scale(y="independent").properties(
        title=_title(
            "Q2 · Are long-CoT (R1-distilled) models deeper than their bases? ED with 95 % bootstrap intervals",
            "The paper's claim: no. A long-CoT model whose interval sits above its base's would contradict it.",
        )
    )


def _difficulty(ctx: Context) -> pl.DataFrame:
    """task -> series (addition, multiplication, or benchmarks) and its difficulty value (config
    ``difficulty``, else ``digits``, else its position in the config)."""
    rows = []
    for i, (name, t) in enumerate(ctx.get("tasks", {}).items()):
        source = t.get("source", "")
        series = source if source in ("addition", "multiplication") else "benchmarks"
        value = next((v for v in (t.get("difficulty"), t.get("digits")) if v is not None), i)
        rows.append({"task": name, "series": series, "difficulty": float(value)})
    schema = {"task": pl.Utf8, "series": pl.Utf8, "difficulty": pl.Float64}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def q3_difficulty_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Q3: ED ratio against task difficulty (benchmarks; digit length for arithmetic), per model."""
    data = _headline_ed(tables, ctx).filter(pl.col("measure") == "ratio (ED+1)/L").join(_difficulty(ctx), on="task", how="inner")
    if data.height == 0:
        return message_chart("Q3 · Effective depth vs task difficulty", ["No effective-depth estimate to plot."])
    width, height = _size(ctx)
    models = _models(ctx, data)
    series = [s for s in ("benchmarks", "addition", "multiplication") if s in set(data["series"].to_list())]
    data = _jitter(data, "difficulty", "model", models, step=0.04 * max(1.0, float(data["difficulty"].max() - data["difficulty"].min())))
    x = alt.X("x:Q", title="difficulty (benchmarks: config order; arithmetic: digits)", scale=alt.Scale(zero=False, padding=10),
              axis=alt.Axis(tickMinStep=1))
    color = alt.Color("model:N", sort=models, scale=alt.Scale(scheme="tableau20" if len(models) > 10 else "tableau10"),
                      legend=alt.Legend(orient="top", columns=4))
    tooltip = ["model:N", "task:N", "label:N", "difficulty:Q", alt.Tooltip("value:Q", title="ratio", format=".2f"),
               alt.Tooltip("low:Q", format=".2f"), alt.Tooltip("high:Q", format=".2f")]
    base = _drawn(data, "label", "series")
    layers = _interval_layers(base, x, color, tooltip, line_detail=["model:N"])
    text = base.mark_text(dy=-9, fontSize=8, color="#555555").encode(x=x, y="value:Q", text="task:N").transform_filter(
        alt.datum.series == "benchmarks"
    )
    chart = alt.layer(*layers, text).properties(width=width, height=height)
    return chart.facet(
        row=alt.Row("label:N", sort=HEADLINE, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("series:N", sort=series, title=None),
    ).resolve_scale(x="independent").properties(
        title=_title(
            "Q3 · Do models use more layers for harder inputs? ED ratio with 95 % bootstrap intervals vs difficulty",
            "The paper's claim: no — flat lines. Arithmetic: operand digit length; benchmarks: HellaSwag → GSM8K → AIME24.",
        )
    )


def threshold_sweep_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """ED_KL and ED_overlap (both forms) as the threshold τ varies, with bootstrap bands."""
    sweep = tables["effective_depth_sweep"]
    if sweep.height == 0:
        return message_chart("Threshold sweep", ["No logit-lens estimate: nothing to sweep."])
    data = sweep.with_columns(curve=pl.format("{} · {}", pl.col("estimator"), pl.col("form"))).select(
        "model", "task", "estimator", "form", "curve", "threshold", "ed", "ci_low", "ci_high", "solvable"
    )
    width, height = _size(ctx)
    base = _drawn(data)
    color = alt.Color("estimator:N", title="estimator", legend=alt.Legend(orient="top"))
    band = base.mark_area(opacity=0.12).encode(x="threshold:Q", y="ci_low:Q", y2="ci_high:Q", fill=alt.Fill("estimator:N", legend=None),
                                               detail="curve:N")
    line = base.mark_line().encode(
        x=alt.X("threshold:Q", title="threshold τ"),
        y=alt.Y("ed:Q", title="ED (layer)"),
        color=color,
        strokeDash=alt.StrokeDash("form:N", title="form", scale=alt.Scale(domain=["paper", "robust"], range=[[1, 0], [5, 3]]),
                                  legend=alt.Legend(orient="top")),
        tooltip=["model:N", "task:N", "curve:N", "threshold:Q", "ed:Q", "ci_low:Q", "ci_high:Q",
                 alt.Tooltip("solvable:Q", format=".0%")],
    )
    points = base.mark_point(size=12, filled=True).encode(x="threshold:Q", y="ed:Q", color=color)
    chart = alt.layer(band, line, points).properties(width=width, height=height)
    return _grid(chart, _models(ctx, data), _tasks(ctx, data)).resolve_scale(y="independent").properties(
        title=_title(
            "Threshold sweep: ED_KL and ED_overlap as the threshold τ varies (bands: 95 % bootstrap intervals)",
            "A paper-form curve that jumps where the robust one is smooth marks a threshold artefact "
            "(e.g. KL(0) being the maximum makes 'first layer below τ·max' fire at layer 1).",
        )
    )


def reference_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Our ED (with intervals) against the paper's published value for every matching (model, task)."""
    ref = tables["effective_depth_reference"]
    if ref.height == 0:
        return message_chart("Comparison with the published effective depths", ["No configured model and task appears in the paper's table."])
    data = ref.select("model", "task", "estimator", "form", "published_ed", "ed", "ci_low", "ci_high", "n_layers", "published_n_layers")
    top = float(data.select(pl.max_horizontal(pl.col("published_n_layers").max(), pl.col("n_layers").max())).item())
    diagonal = pl.DataFrame({"published_ed": [0.0, top], "ed": [0.0, top]})
    width, _ = _size(ctx)
    color = alt.Color("form:N", legend=alt.Legend(orient="top"))
    x = alt.X("published_ed:Q", title="published ED (layer)")
    base = alt.Chart(data)
    layers = [
        alt.Chart(diagonal).mark_line(color="#999999", strokeDash=[3, 3]).encode(x="published_ed:Q", y="ed:Q"),
        base.mark_rule(opacity=0.5).encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=color),
        base.mark_point(filled=True, size=40).encode(
            x=x, y=alt.Y("ed:Q", title="this pipeline (layer)"), color=color, shape=alt.Shape("task:N", legend=alt.Legend(orient="top")),
            tooltip=["model:N", "task:N", "estimator:N", "form:N", "published_ed:Q", "ed:Q", "ci_low:Q", "ci_high:Q"],
        ),
    ]
    charts = [
        alt.layer(*[layer.transform_filter(alt.datum.estimator == est) if i else layer for i, layer in enumerate(layers)])
        .properties(width=width * 1.4, height=width * 1.4, title=est)
        for est in ("cos", "kl", "overlap")
        if est in set(data["estimator"].to_list())
    ]
    return alt.hconcat(*charts).properties(
        title=_title(
            "Comparison with the paper's published effective depths (dashed: equal)",
            "Points off the diagonal whose intervals miss it disagree with the paper; the published ED_KL = 1 of "
            "R1-Distill-1.5B on GSM8K is the known first-crossing artefact.",
        )
    )


def model_profile_chart(tables: Tables, ctx: Context, model: str) -> alt.TopLevelMixin:
    """One model: every ED curve per task with its threshold, the estimate (paper: solid, robust:
    dashed) and the 95 % interval (band) — how each number in the table is read off a curve."""
    tau_kl = float(ctx["effective_depth"]["kl_threshold"])
    tau_ov = float(ctx["effective_depth"]["overlap_threshold"])
    ed = tables["effective_depth"].filter(pl.col("model") == model)
    n_layers = int(ed["n_layers"].max()) if ed.height else None
    curves: list[pl.DataFrame] = []
    rules: list[pl.DataFrame] = []
    if "relative_contribution" in tables:
        rc = _headline(tables["relative_contribution"]).filter((pl.col("model") == model) & pl.col("metric").is_in(["cos_attention", "cos_mlp", "cos_layer"]))
        curves.append(rc.group_by("task", "layer").agg(pl.col("value").mean()).with_columns(curve=pl.lit("mean cosine c̄")))
        rules.append(rc.select("task").unique().with_columns(curve=pl.lit("mean cosine c̄"), value=pl.lit(0.0)))
    if "logit_lens" in tables:
        lens = _headline(tables["logit_lens"]).filter(pl.col("model") == model)
        if n_layers is not None:
            lens = lens.filter(pl.col("layer") < n_layers)
        kl = lens.filter(pl.col("metric") == "kl").with_columns(value=pl.col("value") / pl.col("value").max().over("task").clip(lower_bound=1e-12))
        curves.append(kl.select("task", "layer", "value").with_columns(curve=pl.lit("KL / max KL")))
        rules.append(kl.select("task").unique().with_columns(curve=pl.lit("KL / max KL"), value=pl.lit(tau_kl)))
        ov = lens.filter(pl.col("metric") == "overlap")
        curves.append(ov.select("task", "layer", "value").with_columns(curve=pl.lit("top-k overlap")))
        rules.append(ov.select("task").unique().with_columns(curve=pl.lit("top-k overlap"), value=pl.lit(tau_ov)))
    if "layer_skip" in tables:
        out = _headline(tables["layer_skip"]).filter(
            (pl.col("model") == model) & (pl.col("metric") == "output") & (pl.col("kind") == "layer") & (pl.col("aggregation") == "mean")
        )
        out = out.with_columns(value=pl.col("value") / pl.col("value").max().over("task").clip(lower_bound=1e-12))
        curves.append(out.select("task", pl.col("skipped_layer").alias("layer"), "value").with_columns(curve=pl.lit("skip output effect / max")))
    curve_of = {"cos": "mean cosine c̄", "kl": "KL / max KL", "overlap": "top-k overlap"}
    marks = ed.filter(
        pl.col("estimator").is_in(list(curve_of)) | ((pl.col("estimator") == "depth_score_output") & (pl.col("aggregation") == "mean"))
    ).with_columns(curve=pl.col("estimator").replace_strict({**curve_of, "depth_score_output": "skip output effect / max"}, default=None))
    frame = pl.concat(
        [
            *[c.select("task", "curve", pl.col("layer").cast(pl.Float64), "value").with_columns(mark=pl.lit("curve")) for c in curves],
            *[r.select("task", "curve", "value").with_columns(mark=pl.lit("threshold")) for r in rules],
            marks.select("task", "curve", "form", pl.col("ed").alias("value"), pl.col("ci_low").alias("low"), pl.col("ci_high").alias("high"),
                         "reason").with_columns(mark=pl.lit("estimate")),
        ],
        how="diagonal_relaxed",
    ).with_columns(model=pl.lit(model))
    order = ["mean cosine c̄", "KL / max KL", "top-k overlap", "skip output effect / max"]
    width, height = _size(ctx)
    base = _drawn(frame, "curve", "task")
    x = alt.X("layer:Q", title="layer", scale=alt.Scale(domain=[0, max(1, (n_layers or 1) - 1)]))
    layers = [
        base.transform_filter((alt.datum.mark == "estimate") & alt.expr.isValid(alt.datum.low) & (alt.datum.form != "robust")).mark_rect(opacity=0.15, color="#e45756").encode(
            x=alt.X("low:Q"), x2="high:Q", tooltip=["form:N", "low:Q", "high:Q"]
        ),
        base.transform_filter(alt.datum.mark == "curve").mark_line(point=alt.OverlayMarkDef(size=10), color="#4c78a8").encode(
            x=x, y=alt.Y("value:Q", title=None), tooltip=["task:N", "curve:N", alt.Tooltip("layer:Q"), alt.Tooltip("value:Q", format=".3f")]
        ),
        base.transform_filter(alt.datum.mark == "threshold").mark_rule(color="#999999", strokeDash=[4, 3]).encode(y="value:Q"),
        base.transform_filter((alt.datum.mark == "estimate") & alt.expr.isValid(alt.datum.value)).mark_rule(color="#e45756", strokeWidth=1.5).encode(
            x="value:Q",
            strokeDash=alt.StrokeDash("form:N", scale=alt.Scale(domain=["paper", "robust", "centre_of_mass"], range=[[1, 0], [5, 3], [2, 2]]),
                                      legend=alt.Legend(orient="top", title="estimate")),
            tooltip=["task:N", "curve:N", "form:N", alt.Tooltip("value:Q", title="ED", format=".2f"), "low:Q", "high:Q", "reason:N"],
        ),
    ]
    chart = alt.layer(*layers).properties(width=width, height=height)
    L = f"L = {n_layers}" if n_layers else ""
    return chart.facet(
        row=alt.Row("curve:N", sort=order, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("task:N", sort=_tasks(ctx, frame), title=None),
    ).resolve_scale(y="independent").properties(
        title=_title(
            f"Effective-depth profile · {model} ({L})",
            "Blue: the curve each estimator reads; grey dashed: its threshold; red: the estimate (solid: paper form, "
            "dashed: robust form, dotted: skip centre of mass) and the paper form's 95 % bootstrap interval (band).",
        )
    )


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One page of all.pdf.  ``tables`` are read from results/tables/<name>.parquet; ``tokens`` names
    the analysis whose per-(model, task) token tables label the x axis; ``kinds`` the layer-skip kinds
    it needs; ``category`` / ``subcategory`` group it in the Snakemake report."""

    name: str
    builder: Callable[[Tables, Context], alt.TopLevelMixin]
    tables: tuple[str, ...]
    category: str
    subcategory: str = ""
    tokens: str | None = None
    kinds: tuple[str, ...] = ()
    paper: str = ""  # the paper's figure / table id
    short: str = ""  # title on the contents page and in the PDF outline
    needs: tuple[str, ...] = field(default=())  # analyses that must be configured (default: tables that are analyses)


ED_CAT, Q1_CAT, Q2_CAT, Q3_CAT = "1 · Effective depth", "2 · Q1 scale", "3 · Q2 training", "4 · Q3 difficulty"
PAPER_CAT, PER_MODEL, ACROSS_TASKS = "5 · Paper figures", "F1–F7 · one task, every model", "F8–F12 · every task"
EXTRA_CAT = "7 · Further analyses"
PROFILE_CATEGORY = "6 · Per model"
RC, LENS, SKIP = ("relative_contribution",), ("logit_lens",), ("layer_skip",)


def _with(builder: Callable[..., alt.TopLevelMixin], **kw: Any) -> Callable[[Tables, Context], alt.TopLevelMixin]:
    return lambda tables, ctx: builder(tables, ctx, **kw)


# The order of all.pdf: the paper's F1–F12, T1, the three questions, then further analyses.
FIGURES: list[Figure] = [
    Figure("cosine", cosine_chart, RC, PAPER_CAT, PER_MODEL, paper="F1",
           short="cosine of each layer's contribution with the residual"),
    Figure("skip_map", skip_map_chart, SKIP, PAPER_CAT, PER_MODEL, kinds=("layer",), paper="F2",
           short="layer skip: effect on later layers"),
    Figure("skip_output", skip_output_chart, SKIP, PAPER_CAT, PER_MODEL, kinds=("layer",), paper="F3",
           short="layer skip: effect on the output"),
    Figure("logit_lens_kl", kl_chart, LENS, PAPER_CAT, PER_MODEL, paper="F4", short="logit lens: KL to the final prediction"),
    Figure("logit_lens_overlap", overlap_chart, LENS, PAPER_CAT, PER_MODEL, paper="F5",
           short="logit lens: top-k overlap with the final prediction"),
    Figure("residual_erasure", erasure_chart, ("residual_erasure",), PAPER_CAT, PER_MODEL, tokens="residual_erasure", paper="F6",
           short="residual erasure, layer × token"),
    Figure("integrated_gradients", integrated_gradients_chart, ("integrated_gradients",), PAPER_CAT, PER_MODEL,
           tokens="integrated_gradients", paper="F7", short="integrated gradients, layer × token"),
    Figure("cosine_by_task", _with(cosine_chart, by_task=True), RC, PAPER_CAT, ACROSS_TASKS, paper="F8", short="cosine, every task"),
    Figure("skip_map_by_task", _with(skip_map_chart, by_task=True), SKIP, PAPER_CAT, ACROSS_TASKS, kinds=("layer",), paper="F9",
           short="layer skip: effect on later layers, every task"),
    Figure("skip_output_by_task", _with(skip_output_chart, by_task=True), SKIP, PAPER_CAT, ACROSS_TASKS, kinds=("layer",),
           paper="F10", short="layer skip: effect on the output, every task"),
    Figure("logit_lens_kl_by_task", _with(kl_chart, by_task=True), LENS, PAPER_CAT, ACROSS_TASKS, paper="F11",
           short="logit lens KL, every task"),
    Figure("logit_lens_overlap_by_task", _with(overlap_chart, by_task=True), LENS, PAPER_CAT, ACROSS_TASKS, paper="F12",
           short="logit lens overlap, every task"),
    Figure("effective_depth_table", effective_depth_table_chart, ("effective_depth",), ED_CAT, paper="T1",
           short="effective-depth table with 95 % intervals"),
    Figure("q1_scale", q1_scale_chart, ("effective_depth",), Q1_CAT, paper="Q1", short="effective depth vs model size"),
    Figure("q2_training", q2_training_chart, ("effective_depth",), Q2_CAT, paper="Q2", short="long-CoT models vs their bases"),
    Figure("q3_difficulty", q3_difficulty_chart, ("effective_depth",), Q3_CAT, paper="Q3", short="effective depth vs task difficulty"),
    Figure("relative_contribution", relative_contribution_chart, RC, EXTRA_CAT, short="relative contribution per layer"),
    Figure("block_influence", block_influence_chart, ("block_influence",), EXTRA_CAT, short="block influence per layer"),
    Figure("angular_distance", angular_distance_chart, ("block_influence",), EXTRA_CAT, short="angular distance between layers"),
    Figure("skip_map_attention", _with(skip_map_chart, kind="attention"), SKIP, EXTRA_CAT, kinds=("attention",),
           short="attention-only skip: effect on later layers"),
    Figure("skip_map_mlp", _with(skip_map_chart, kind="mlp"), SKIP, EXTRA_CAT, kinds=("mlp",), short="MLP-only skip: effect on later layers"),
    Figure("threshold_sweep", threshold_sweep_chart, ("effective_depth_sweep",), ED_CAT, short="threshold sweep of ED_KL and ED_overlap"),
    Figure("reference_comparison", reference_chart, ("effective_depth_reference",), ED_CAT,
           short="comparison with the published effective depths"),
]
FIGURE_BY_NAME = {f.name: f for f in FIGURES}


def _needs(fig: Figure) -> tuple[str, ...]:
    if fig.needs:
        return fig.needs
    needed: list[str] = []
    for table in fig.tables:
        needed += [table] if table not in ED_TABLES else []
    return tuple(needed)


def available_figures(analyses: dict[str, Any], reference_matches: bool = False) -> list[str]:
    """Figures whose inputs the configured analyses produce, in the stable order of all.pdf.

    ``analyses``: the validated config's analyses block.  A figure of intervention kinds (the
    attention- and MLP-only skip maps) is listed only when the configured job produces those kinds
    (``effdepth.analyses.Analysis.kinds``: the published layer skip produces whole-layer skips only).
    The comparison with the paper is listed only when ``reference_matches`` (some configured model
    and task are in the published table); Q2 is always listed and says on its page when no pair is
    configured."""
    names = []
    for fig in FIGURES:
        if any(t in ED_TABLES for t in fig.tables) and not effective_depth_inputs(analyses):
            continue
        if not all(a in analyses for a in _needs(fig)):
            continue
        if fig.kinds:
            produced = REGISTRY["layer_skip"].kinds(analyses["layer_skip"])
            if not all(k in produced for k in fig.kinds):
                continue
        if fig.name == "reference_comparison" and not reference_matches:
            continue
        names.append(fig.name)
    return names


def report_options(name: str) -> dict[str, Any]:
    """category / subcategory / labels of a figure for Snakemake's report() (the caption file is the
    workflow's: workflow/report/<name>.rst)."""
    fig = FIGURE_BY_NAME[name]
    return {
        "category": fig.category,
        "subcategory": fig.subcategory or "figures",
        "labels": {"figure": fig.paper or "extra", "shows": fig.short},
    }


def figure_title(name: str) -> str:
    """Short title of a figure for the contents page and PDF outline."""
    fig = FIGURE_BY_NAME.get(name)
    if fig is None:
        return name
    text = fig.short or name.replace("_", " ")
    return f"{fig.paper} · {text}" if fig.paper else text


def figure_context(config: dict[str, Any]) -> Context:
    """The part of a (validated) config the figures read."""
    return {
        "figures": dict(config.get("figures", {})),
        "models": {
            n: {k: m.get(k) for k in ("size_b", "family", "training", "base_model")} for n, m in config.get("models", {}).items()
        },
        "tasks": {n: {k: t.get(k) for k in ("source", "difficulty", "digits")} for n, t in config.get("tasks", {}).items()},
        "analyses": {
            a: {"tasks": list(o.get("tasks", [])), "variant": o.get("variant"), **({"kinds": list(o["kinds"])} if "kinds" in o else {})}
            for a, o in (config.get("analyses") or {}).items()
        },
        "effective_depth": {k: config.get("effective_depth", {}).get(k) for k in ("kl_threshold", "overlap_threshold")},
    }


# --- building and saving ------------------------------------------------------------------------


def read_tables(paths: list[str], token_paths: list[str] | None = None) -> Tables:
    """Tables keyed by file stem (analysis name or effective_depth*), plus ``tokens`` (concatenated)."""
    tables: Tables = {Path(p).stem: pl.read_parquet(p) for p in paths}
    if token_paths:
        tables["tokens"] = pl.concat([pl.read_parquet(p) for p in token_paths], how="diagonal_relaxed")
    return tables


def build_chart(name: str, tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    if name.startswith("models/"):
        return model_profile_chart(tables, ctx, name.split("/", 1)[1])
    return FIGURE_BY_NAME[name].builder(tables, ctx)


def save_chart(chart: alt.TopLevelMixin, pdf: str, svg: str, html: str) -> None:
    import vl_convert as vlc

    spec = chart.to_dict()  # validates against the Vega-Lite schema
    for path in (pdf, svg, html):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(pdf).write_bytes(vlc.vegalite_to_pdf(spec))
    Path(svg).write_text(vlc.vegalite_to_svg(spec))
    chart.save(html, inline=True)


def build_figure(name: str, tables: list[str], ctx: Context, pdf: str, svg: str, html: str, tokens: list[str] | None = None) -> None:
    """Read the tables, build figure ``name`` (or ``models/<model>``, a per-model profile) and save it."""
    save_chart(build_chart(name, read_tables(tables, tokens), ctx), pdf, svg, html)


def title_page(info: dict[str, Any], contents: list[tuple[int, str]] | None = None) -> bytes:
    """A one-page PDF with the experiment's provenance and, when given, the contents (page, title)."""
    import vl_convert as vlc

    lines = [
        f"config: {info.get('config_hash', '?')}",
        f"models ({len(info['models'])}): " + ", ".join(info["models"]),
        f"tasks ({len(info['tasks'])}): " + ", ".join(info["tasks"]),
        "variants: " + ", ".join(f"{k}={v}" for k, v in info.get("variants", {}).items()),
        *([f"effective depth: {info['effective_depth']}"] if info.get("effective_depth") else []),
        f"effdepth {__version__} · {_dt.date.today().isoformat()}",
    ]
    if contents:
        lines += ["", "Contents"] + [f"  p. {page:>3}   {title}" for page, title in contents]
    wrapped: list[str] = []
    for line in lines:
        while len(line) > 110:
            wrapped.append(line[:110])
            line = "    " + line[110:]
        wrapped.append(line)
    chart = message_chart(f"Effective depth · {info.get('name', 'experiment')}", wrapped)
    return vlc.vegalite_to_pdf(chart.to_dict())


def merge_pdfs(title: bytes, pdfs: list[str], output: str, titles: list[str] | None = None) -> None:
    """Title page followed by every figure PDF, in the given order, with an outline entry each."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(title)).pages:
        writer.add_page(page)
    for i, path in enumerate(pdfs):
        reader = PdfReader(path)
        for page in reader.pages:
            writer.add_page(page)
        writer.add_outline_item(title=titles[i] if titles else Path(path).stem, page_number=len(writer.pages) - len(reader.pages))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as fh:
        writer.write(fh)


def all_pdf(info: dict[str, Any], pdfs: list[str], output: str) -> None:
    """all.pdf: title page with contents, then every figure (``pdfs`` in their stable order)."""
    from pypdf import PdfReader

    titles = []
    for path in pdfs:
        stem = Path(path).stem
        titles.append(f"Effective-depth profile · {stem}" if Path(path).parent.name == "models" else figure_title(stem))
    contents, page = [], 2
    for path, title in zip(pdfs, titles):
        contents.append((page, title))
        page += len(PdfReader(path).pages)
    merge_pdfs(title_page(info, contents), pdfs, output, titles)
