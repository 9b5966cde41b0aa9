"""The paper's figures F1–F12: cosine with the residual (F1 / F8), layer-skip maps (F2 / F9) and output
effects (F3 / F10), logit-lens KL (F4 / F11) and overlap (F5 / F12), residual erasure (F6) and
integrated gradients with its completeness check (F7).

F1–F7 show one task (``figures.primary_task``, else the first configured one) for every model; F8–F12
every task.  Thresholds come from ``ctx["effective_depth"]`` (``kl_threshold``, ``overlap_threshold``) only:
F4 / F11 and F5 / F12 raise ``KeyError`` without it and ``TypeError`` for a threshold that is None.
Each builder ``(tables, ctx) -> chart`` reads the tables its ``Figure`` declares (and ``tokens`` for
the heatmaps, optional) and raises ``KeyError`` when a declared table is missing.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from .layout import (
    bars,
    clean_token,
    drawn,
    grid,
    headline_rows,
    models_in,
    n_layers_max,
    n_layers_of,
    panel_size,
    panels,
    select_task,
    tasks_in,
)
from .theme import Context, Tables, chart_title, layer_axis


def cosine_chart(tables: Tables, ctx: Context, by_task: bool = False) -> alt.TopLevelMixin:
    """F1 / F8: cosine of attention, MLP and layer contribution with the residual, and their mean c̄."""
    rc = headline_rows(tables["relative_contribution"]).filter(pl.col("metric").str.starts_with("cos_"))
    rc, which = select_task(rc, ctx, "relative_contribution", by_task)
    data = rc.select("model", "task", pl.col("metric").str.strip_prefix("cos_").alias("series"), "layer", "value")
    mean = (
        data.group_by("model", "task", "layer", maintain_order=True)
        .agg(pl.col("value").mean())
        .with_columns(series=pl.lit("mean c̄"))
    )
    zero = data.select("model", "task").unique(maintain_order=True).with_columns(value=pl.lit(0.0), series=pl.lit("zero"))
    layered = bars(data, ctx, "cosine with the residual", "contribution", n_layers_max(data), rule=zero, line=mean)
    label = "F8" if by_task else "F1"
    return (
        panels(layered, ctx, data, by_task)
        .resolve_scale(x="independent")
        .properties(
            title=chart_title(
                f"{label} · Cosine between each layer's contribution and the residual stream ({which})",
                "negative: the layer erases features · ≈ 0: writes new ones · positive: amplifies them; "
                "black line: mean c̄, whose last negative→non-negative crossing is ED_cos",
            )
        )
    )


def skip_output_chart(tables: Tables, ctx: Context, by_task: bool = False) -> alt.TopLevelMixin:
    """F3 / F10: change of the output distribution when a layer is skipped, O(s)."""
    skip = headline_rows(tables["layer_skip"]).filter((pl.col("metric") == "output") & (pl.col("kind") == "layer"))
    skip, which = select_task(skip, ctx, "layer_skip", by_task)
    data = skip.select("model", "task", pl.col("aggregation").alias("series"), pl.col("skipped_layer").alias("layer"), "value")
    chart = bars(data, ctx, "‖p̃ − p‖ (output change)", "aggregation over positions", n_layers_max(data), x_title="skipped layer")
    label = "F10" if by_task else "F3"
    return (
        panels(chart, ctx, data, by_task)
        .resolve_scale(x="independent")
        .properties(
            title=chart_title(
                f"{label} · Effect of skipping a layer on the output distribution ({which})",
                "max: the paper's aggregation over positions and prompts (outlier-driven); mean: the average effect. "
                "Late layers with small bars only refine the prediction.",
            )
        )
    )


def _lens(tables: Tables, ctx: Context, metric: str, by_task: bool) -> tuple[pl.DataFrame, str]:
    lens = headline_rows(tables["logit_lens"]).filter(pl.col("metric") == metric)
    lens, which = select_task(lens, ctx, "logit_lens", by_task)
    return lens.select("model", "task", pl.lit(metric).alias("series"), "layer", "value"), which


def kl_chart(tables: Tables, ctx: Context, by_task: bool = False) -> alt.TopLevelMixin:
    """F4 / F11: KL(logit lens of h_l ‖ final output) per layer, with the ED_KL threshold τ·max KL."""
    tau = float(ctx["effective_depth"]["kl_threshold"])
    data, which = _lens(tables, ctx, "kl", by_task)
    n_layers = n_layers_of(tables)
    inputs = data.join(n_layers, on="model", how="left", maintain_order="left").filter(
        pl.col("n_layers").is_null() | (pl.col("layer") < pl.col("n_layers"))
    )
    rule = (
        inputs.group_by("model", "task", maintain_order=True)
        .agg((pl.col("value").max() * tau).alias("value"))
        .with_columns(series=pl.lit(f"{tau:g}·max KL"))
    )
    chart = bars(data, ctx, "KL(lens ‖ output) [nats]", "", n_layers_max(data), rule=rule)
    label = "F11" if by_task else "F4"
    return (
        panels(chart, ctx, data, by_task)
        .resolve_scale(x="independent", y="independent")
        .properties(
            title=chart_title(
                f"{label} · Logit lens: KL divergence of each layer's prediction from the final one ({which})",
                f"red dashed line: {tau:g}·max KL over the layer inputs; ED_KL is the first layer below it "
                "(robust form: the first layer after which KL stays below). y scales are per panel.",
            )
        )
    )


def overlap_chart(tables: Tables, ctx: Context, by_task: bool = False) -> alt.TopLevelMixin:
    """F5 / F12: top-k overlap of the logit lens with the final prediction, with the threshold τ."""
    tau = float(ctx["effective_depth"]["overlap_threshold"])
    data, which = _lens(tables, ctx, "overlap", by_task)
    rule = data.select("model", "task").unique(maintain_order=True).with_columns(value=pl.lit(tau), series=pl.lit(f"τ = {tau:g}"))
    chart = bars(data, ctx, "top-k overlap with the output", "", n_layers_max(data), rule=rule, y_scale=alt.Scale(domain=[0, 1]))
    label = "F12" if by_task else "F5"
    return (
        panels(chart, ctx, data, by_task)
        .resolve_scale(x="independent")
        .properties(
            title=chart_title(
                f"{label} · Logit lens: overlap of each layer's top-k tokens with the final top-k ({which})",
                f"red dashed line: τ = {tau:g}; ED_overlap is the first layer above it (robust form: stays above).",
            )
        )
    )


SKIP_MAP_FLOOR = 1e-3  # the smallest relative effect the log colour scale of the attention / MLP maps draws


def skip_map_chart(tables: Tables, ctx: Context, by_task: bool = False, kind: str = "layer") -> alt.TopLevelMixin:
    """F2 / F9: relative change Δ(s, j) of layer j's contribution on future tokens when layer s is
    skipped (max aggregation, as the paper), colour relative to the panel's maximum."""
    skip = headline_rows(tables["layer_skip"]).filter(
        (pl.col("metric") == "future") & (pl.col("kind") == kind) & (pl.col("aggregation") == "max")
    )
    skip, which = select_task(skip, ctx, "layer_skip", by_task)
    data = skip.select("model", "task", "skipped_layer", "layer", "value").with_columns(
        relative=pl.col("value") / pl.col("value").max().over("model", "task").clip(lower_bound=1e-12)
    )
    # The attention- and MLP-only maps are dominated by their first layer's skip (often 10²–10⁴ times the
    # rest): a log colour scale (relative values clipped at SKIP_MAP_FLOOR of the panel max) shows the others.
    log = kind != "layer"
    if log:
        data = data.with_columns(relative=pl.col("relative").clip(lower_bound=SKIP_MAP_FLOOR))
    scale = (
        alt.Scale(type="log", scheme="viridis", domain=[SKIP_MAP_FLOOR, 1]) if log else alt.Scale(scheme="viridis", domain=[0, 1])
    )
    width, _ = panel_size(ctx)
    n_max = max(n_layers_max(data), n_layers_max(data, "skipped_layer"))
    chart = (
        drawn(data)
        .mark_rect()
        .encode(
            x=alt.X("skipped_layer:O", axis=layer_axis("layer skipped", n_max)),
            y=alt.Y("layer:O", axis=layer_axis("effect at layer", n_max), sort="descending"),
            color=alt.Color(
                "relative:Q",
                title="Δ / panel max (log)" if log else "Δ / panel max",
                scale=scale,
                legend=alt.Legend(format="~g") if log else alt.Undefined,
            ),
            tooltip=["model:N", "task:N", "skipped_layer:O", "layer:O", alt.Tooltip("value:Q", title="Δ", format=".4f")],
        )
        .properties(width=width, height=width)
    )
    titles = {
        "layer": ("F9" if by_task else "F2", "Effect of skipping a layer on the computation of later layers"),
        "attention": ("", "Effect of skipping a layer's attention on later layers"),
        "mlp": ("", "Effect of skipping a layer's MLP on later layers"),
    }
    label, text = titles[kind]
    return (
        panels(chart, ctx, data, by_task)
        .resolve_scale(x="independent", y="independent")
        .properties(
            title=chart_title(
                f"{label + ' · ' if label else ''}{text} ({which})",
                "Δ(s, j) = max over future tokens of the relative change of layer j's contribution when layer s is "
                "skipped on earlier tokens; colours are relative to each panel's maximum (tooltip: raw Δ)"
                + (
                    f" on a log scale, values below {SKIP_MAP_FLOOR:g} of the maximum drawn at {SKIP_MAP_FLOOR:g}. "
                    if log
                    else ". "
                )
                + "Rows that stay dark for late skipped layers = those layers feed no later computation.",
            )
        )
    )


def _map_frame(tables: Tables, analysis: str, metric: str) -> pl.DataFrame:
    """Prompt-0 (layer × position) map of every (model, task) with a token label per position."""
    table = tables[analysis].filter(pl.col("metric") == metric)
    first = table.group_by("model", "task", maintain_order=True).agg(pl.col("prompt").min().alias("first"))
    table = table.join(first, on=["model", "task"], maintain_order="left").filter(pl.col("prompt") == pl.col("first"))
    data = table.select("model", "task", "prompt", "layer", "position", "value")
    tokens = tables.get("tokens")
    if tokens is not None and tokens.height:
        tokens = tokens.select("model", "task", pl.col("prompt").cast(pl.Int32), pl.col("position").cast(pl.Int32), "token")
        data = data.join(tokens, on=["model", "task", "prompt", "position"], how="left", maintain_order="left")
    else:
        data = data.with_columns(token=pl.lit(None, pl.Utf8))
    n_tokens = data.group_by("model", "task", maintain_order=True).agg(pl.col("position").max().alias("n"))
    data = data.join(n_tokens, on=["model", "task"], maintain_order="left")
    labels = [
        f"{p:>2} {clean_token(t)}" if (t is not None and n <= 80) else str(p)
        for p, t, n in data.select("position", "token", "n").iter_rows()
    ]
    return data.with_columns(label=pl.Series(labels, dtype=pl.Utf8)).drop("n")


def _token_heatmap(
    data: pl.DataFrame, ctx: Context, color: alt.Color, tooltip_title: str, extra_tooltip: tuple[alt.Tooltip, ...] = ()
) -> alt.FacetChart:
    width, height = panel_size(ctx)
    n_max = n_layers_max(data)
    chart = (
        drawn(data)
        .mark_rect()
        .encode(
            x=alt.X(
                "label:O",
                sort=alt.EncodingSortField("position", order="ascending"),
                title="token",
                axis=alt.Axis(labelAngle=-90, labelFontSize=8, labelLimit=60),  # vertical: one cell per label
            ),
            y=alt.Y("layer:O", axis=layer_axis("layer", n_max), sort="descending"),
            color=color,
            tooltip=[
                "model:N",
                "task:N",
                "layer:O",
                "position:O",
                "token:N",
                alt.Tooltip("value:Q", title=tooltip_title, format=".4f"),
                *extra_tooltip,
            ],
        )
        .properties(width=max(width, 9 * int(data["position"].max() + 1)), height=max(height, 4 * n_max))
    )
    return grid(chart, models_in(ctx, data), tasks_in(ctx, data)).resolve_scale(x="independent", y="independent")


def erasure_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """F6: output change when the residual stream at (layer, token) is replaced by its mean."""
    data = _map_frame(tables, "residual_erasure", "output_change")
    color = alt.Color("value:Q", title="‖p̃ − p‖ on the answer", scale=alt.Scale(scheme="inferno", reverse=True, domainMin=0))
    return _token_heatmap(data, ctx, color, "output change").properties(
        title=chart_title(
            "F6 · Residual erasure: where information about the answer lives (prompt 0 of each task)",
            "colour: max change of the answer's next-token distributions when h_l at that token is set to its "
            "mean over a reference task; shared scale. Bright rows stop early = the answer no longer depends "
            "on that token at later layers.",
        )
    )


COMPLETENESS_EPS = 1e-12


def ig_completeness(table: pl.DataFrame) -> pl.DataFrame:
    """The completeness check of integrated gradients (Sundararajan et al. 2017: Σ_t IG(l, t) should
    equal F(x) − F(x′)) per (model, task, prompt, layer), from the IG table's ``f_input``,
    ``f_baseline`` and ``attribution_sum`` rows (prompt set, position null).

    Columns: model, task, prompt, layer, gap = attribution_sum − (f_input − f_baseline) and
    relative_gap = |gap| / max(|f_input − f_baseline|, 1e-12); no rows when the table has no
    completeness terms.  A large relative gap means too few integration steps.
    """
    keys = ["model", "task", "prompt", "layer"]
    terms = ("f_input", "f_baseline", "attribution_sum")
    rows = table.filter(pl.col("metric").is_in(terms) & pl.col("prompt").is_not_null())
    if "position" in rows.columns:
        rows = rows.filter(pl.col("position").is_null())
    wide = (
        rows.group_by(*keys, maintain_order=True)
        .agg([pl.col("value").filter(pl.col("metric") == t).first().alias(t) for t in terms])
        .drop_nulls(list(terms))
    )
    delta = pl.col("f_input") - pl.col("f_baseline")
    return wide.select(
        *keys,
        gap=pl.col("attribution_sum") - delta,
        relative_gap=(pl.col("attribution_sum") - delta).abs() / pl.max_horizontal(delta.abs(), pl.lit(COMPLETENESS_EPS)),
    ).sort(keys)


def _worst_gaps(completeness: pl.DataFrame, models: list[str]) -> str:
    """Subtitle line: per model the worst relative completeness gap over layers, tasks and prompts."""
    if completeness.height == 0:
        return "Completeness (Σ IG = F(x) − F(x′)): the table has no completeness terms."
    worst = completeness.sort("relative_gap", "task", "prompt", "layer", descending=[True, False, False, False])
    worst = worst.unique("model", keep="first", maintain_order=True)
    by_model = {m: (g, layer, task) for m, g, layer, task in worst.select("model", "relative_gap", "layer", "task").iter_rows()}
    parts = [f"{m}: {by_model[m][0]:.1%} (layer {by_model[m][1]}, {by_model[m][2]})" for m in models if m in by_model]
    return (
        "Completeness, worst |Σ IG − (F(x) − F(x′))| / |F(x) − F(x′)| over layers, tasks and prompts "
        "(large = too few steps): " + " · ".join(parts)
    )


def integrated_gradients_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """F7: integrated-gradients attribution of the answer probability to each layer's output per
    token, normalised by the panel's max |IG| on a symmetric diverging scale, with the completeness
    gap of each layer (tooltip) and each model's worst relative gap (subtitle, see ``ig_completeness``).

    Reads ``tables["integrated_gradients"]`` (and ``tables["tokens"]`` when present); raises
    ``KeyError`` without the IG table."""
    table = tables["integrated_gradients"]
    data = _map_frame(tables, "integrated_gradients", "attribution")
    data = data.with_columns(relative=pl.col("value") / pl.col("value").abs().max().over("model", "task").clip(lower_bound=1e-12))
    completeness = ig_completeness(table)
    data = data.join(
        completeness.select("model", "task", "prompt", "layer", "relative_gap"),
        on=["model", "task", "prompt", "layer"],
        how="left",
        maintain_order="left",
    )
    color = alt.Color(
        "relative:Q", title="IG / panel max |IG|", scale=alt.Scale(scheme="redblue", reverse=True, domain=[-1, 1], domainMid=0)
    )
    gap_tooltip = alt.Tooltip("relative_gap:Q", title="completeness gap (relative, this layer)", format=".2%")
    return _token_heatmap(data, ctx, color, "IG", (gap_tooltip,)).properties(
        title=chart_title(
            "F7 · Integrated gradients: attribution of the answer to each layer's output per token (prompt 0)",
            "red: raises the gold answer's probability, blue: lowers it; symmetric scale relative to each "
            "panel's largest |IG| (tooltip: raw value).",
            _worst_gaps(completeness, models_in(ctx, data)),
        )
    )
