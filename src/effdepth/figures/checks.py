"""Checks of the effective-depth estimates: the threshold sweep (ED_KL and ED_overlap as the threshold
varies, which exposes first-crossing artefacts) and the comparison with the paper's published effective
depths for every configured (model, task) the paper reports.

``threshold_sweep_chart`` reads ``tables["effective_depth_sweep"]``, ``reference_chart``
``tables["effective_depth_reference"]``; each raises ``KeyError`` without its table and returns a page
that says so when the table is empty."""

from __future__ import annotations

import altair as alt
import polars as pl

from .layout import drawn, grid, models_in, panel_size, tasks_in
from .theme import Context, Tables, chart_title, message_chart


def threshold_sweep_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """ED_KL and ED_overlap (both forms) as the threshold τ varies, with bootstrap bands."""
    sweep = tables["effective_depth_sweep"]
    if sweep.height == 0:
        return message_chart("Threshold sweep", ["No logit-lens estimate: nothing to sweep."])
    data = sweep.with_columns(curve=pl.format("{} · {}", pl.col("estimator"), pl.col("form"))).select(
        "model", "task", "estimator", "form", "curve", "threshold", "ed", "ci_low", "ci_high", "solvable"
    )
    width, height = panel_size(ctx)
    base = drawn(data)
    color = alt.Color("estimator:N", title="estimator", legend=alt.Legend(orient="top"))
    band = base.mark_area(opacity=0.12).encode(
        x="threshold:Q", y="ci_low:Q", y2="ci_high:Q", fill=alt.Fill("estimator:N", legend=None), detail="curve:N"
    )
    line = base.mark_line().encode(
        x=alt.X("threshold:Q", title="threshold τ"),
        y=alt.Y("ed:Q", title="ED (layer)"),
        color=color,
        strokeDash=alt.StrokeDash(
            "form:N",
            title="form",
            scale=alt.Scale(domain=["paper", "robust"], range=[[1, 0], [5, 3]]),
            legend=alt.Legend(orient="top"),
        ),
        tooltip=[
            "model:N",
            "task:N",
            "curve:N",
            "threshold:Q",
            "ed:Q",
            "ci_low:Q",
            "ci_high:Q",
            alt.Tooltip("solvable:Q", format=".0%"),
        ],
    )
    points = base.mark_point(size=12, filled=True).encode(x="threshold:Q", y="ed:Q", color=color)
    chart = alt.layer(band, line, points).properties(width=width, height=height)
    return (
        grid(chart, models_in(ctx, data), tasks_in(ctx, data))
        .resolve_scale(y="independent")
        .properties(
            title=chart_title(
                "Threshold sweep: ED_KL and ED_overlap as the threshold τ varies (bands: 95 % bootstrap intervals)",
                "A paper-form curve that jumps where the robust one is smooth marks a threshold artefact "
                "(e.g. KL(0) being the maximum makes 'first layer below τ·max' fire at layer 1).",
            )
        )
    )


def reference_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Our ED (with intervals) against the paper's published value for every matching (model, task)."""
    ref = tables["effective_depth_reference"]
    if ref.height == 0:
        return message_chart(
            "Comparison with the published effective depths", ["No configured model and task appears in the paper's table."]
        )
    data = ref.select(
        "model", "task", "estimator", "form", "published_ed", "ed", "ci_low", "ci_high", "n_layers", "published_n_layers"
    )
    top = float(data.select(pl.max_horizontal(pl.col("published_n_layers").max(), pl.col("n_layers").max())).item())
    diagonal = pl.DataFrame({"published_ed": [0.0, top], "ed": [0.0, top]})
    width, _ = panel_size(ctx)
    color = alt.Color("form:N", legend=alt.Legend(orient="top"))
    x = alt.X("published_ed:Q", title="published ED (layer)")
    base = alt.Chart(data)
    layers = [
        alt.Chart(diagonal).mark_line(color="#999999", strokeDash=[3, 3]).encode(x="published_ed:Q", y="ed:Q"),
        base.mark_rule(opacity=0.5).encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=color),
        base.mark_point(filled=True, size=40).encode(
            x=x,
            y=alt.Y("ed:Q", title="this pipeline (layer)"),
            color=color,
            shape=alt.Shape("task:N", legend=alt.Legend(orient="top")),
            tooltip=["model:N", "task:N", "estimator:N", "form:N", "published_ed:Q", "ed:Q", "ci_low:Q", "ci_high:Q"],
        ),
    ]
    charts = [
        alt.layer(
            *[layer.transform_filter(alt.datum.estimator == est) if i else layer for i, layer in enumerate(layers)]
        ).properties(width=width * 1.4, height=width * 1.4, title=est)
        for est in ("cos", "kl", "overlap")
        if est in set(data["estimator"].to_list())
    ]
    return alt.hconcat(*charts).properties(
        title=chart_title(
            "Comparison with the paper's published effective depths (dashed: equal)",
            "Points off the diagonal whose intervals miss it disagree with the paper; the published ED_KL = 1 of "
            "R1-Distill-1.5B on GSM8K is the known first-crossing artefact.",
        )
    )
