"""Further analyses beyond the paper: relative contribution per layer, block influence (ShortGPT) and
the angular distance between layers (Gromov et al. 2024).

Each builder ``(tables, ctx) -> chart`` reads the table its ``Figure`` declares (relative_contribution or
block_influence) and raises ``KeyError`` when it is missing."""

from __future__ import annotations

import altair as alt
import polars as pl

from .layout import drawn, grid, headline_rows, models_in, n_layers_max, panel_size, primary_task, tasks_in, wrap_models
from .theme import Context, Tables, chart_title, layer_axis


def angular_distance_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Gromov et al.'s angular distance d(l, n) of the last token between h_l and h_{l+n}."""
    table = headline_rows(tables["block_influence"]).filter(pl.col("metric") == "angular_distance")
    task = primary_task(table, ctx, "block_influence")
    data = table.filter(pl.col("task") == task).select("model", "task", "layer", "span", "value")
    width, _ = panel_size(ctx)
    n_max = n_layers_max(data) + 1
    chart = (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X("layer:O", axis=layer_axis("first layer l", n_max)),
            y=alt.Y("span:O", axis=layer_axis("block size n", n_max), sort="descending"),
            color=alt.Color("value:Q", title="angular distance", scale=alt.Scale(scheme="viridis", domain=[0, 1])),
            tooltip=["model:N", "layer:O", "span:O", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=width, height=width)
    )
    return (
        wrap_models(chart, ctx, models_in(ctx, data))
        .resolve_scale(x="independent", y="independent")
        .properties(
            title=chart_title(
                f"Angular distance between h_l and h_(l+n) of the last token (task {task})",
                "Gromov et al. 2024: the block of n layers with the smallest distance is the cheapest to prune; "
                "dark cells far up the diagonal = long runs of layers that barely change the residual.",
            )
        )
    )


def relative_contribution_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """‖contribution‖ / ‖residual‖ of attention, MLP and layer per layer, model × task grid (log scale)."""
    data = (
        headline_rows(tables["relative_contribution"])
        .filter(pl.col("metric").str.starts_with("rc_"))
        .select("model", "task", pl.col("metric").str.strip_prefix("rc_").alias("sublayer"), "layer", "value")
    )
    width, height = panel_size(ctx)
    chart = (
        drawn(data)
        .mark_line(point=alt.OverlayMarkDef(size=10))
        .encode(
            x=alt.X("layer:Q", title="layer"),
            y=alt.Y("value:Q", title="‖contribution‖ / ‖residual‖", scale=alt.Scale(type="log")),
            color=alt.Color("sublayer:N", title="contribution", legend=alt.Legend(orient="top")),
            tooltip=["model:N", "task:N", "sublayer:N", "layer:Q", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(width=width, height=height)
    )
    return (
        grid(chart, models_in(ctx, data), tasks_in(ctx, data))
        .resolve_scale(x="independent")
        .properties(
            title=chart_title(
                "Relative contribution of each layer to the residual stream",
                "norm of the attention / MLP / layer output relative to the residual it is added to (log scale); "
                "a layer with a small ratio changes the residual little.",
            )
        )
    )


def block_influence_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """ShortGPT's block influence 1 − cos(h_l, h_l+1) per layer, one panel per model, every task."""
    data = (
        headline_rows(tables["block_influence"])
        .filter(pl.col("metric") == "block_influence")
        .select("model", "task", "layer", "value")
    )
    width, height = panel_size(ctx)
    chart = (
        alt.Chart(data)
        .mark_line(point=alt.OverlayMarkDef(size=10))
        .encode(
            x=alt.X("layer:Q", title="layer"),
            y=alt.Y("value:Q", title="block influence 1 − cos(h_l, h_l+1)"),
            color=alt.Color("task:N", sort=tasks_in(ctx, data), legend=alt.Legend(orient="top")),
            tooltip=["model:N", "task:N", "layer:Q", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(width=width, height=height)
    )
    return (
        wrap_models(chart, ctx, models_in(ctx, data))
        .resolve_scale(x="independent")
        .properties(
            title=chart_title(
                "Block influence (ShortGPT) per layer, every task",
                "how much a layer turns the residual stream; layers near zero are candidates for removal.",
            )
        )
    )
