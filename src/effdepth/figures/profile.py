"""The per-model effective-depth profile (one page per model): every curve an estimator reads, its
threshold, the estimates and the paper form's 95 % bootstrap interval, one row per curve and one
column per task.

It reads ``tables["effective_depth"]`` and whichever of relative_contribution, logit_lens and layer_skip
are present, and the thresholds from ``ctx["effective_depth"]``; raises ``KeyError`` without them."""

from __future__ import annotations

import altair as alt
import polars as pl

from .layout import headline_rows, panel_size, tasks_in
from .theme import Context, Tables, chart_title, message_chart


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
        rc = headline_rows(tables["relative_contribution"]).filter(
            (pl.col("model") == model) & pl.col("metric").is_in(["cos_attention", "cos_mlp", "cos_layer"])
        )
        curves.append(
            rc.group_by("task", "layer", maintain_order=True)
            .agg(pl.col("value").mean())
            .with_columns(curve=pl.lit("mean cosine c̄"))
        )
        rules.append(rc.select("task").unique(maintain_order=True).with_columns(curve=pl.lit("mean cosine c̄"), value=pl.lit(0.0)))
    if "logit_lens" in tables:
        lens = headline_rows(tables["logit_lens"]).filter(pl.col("model") == model)
        if n_layers is not None:
            lens = lens.filter(pl.col("layer") < n_layers)
        kl = lens.filter(pl.col("metric") == "kl").with_columns(
            value=pl.col("value") / pl.col("value").max().over("task").clip(lower_bound=1e-12)
        )
        curves.append(kl.select("task", "layer", "value").with_columns(curve=pl.lit("KL / max KL")))
        rules.append(
            kl.select("task").unique(maintain_order=True).with_columns(curve=pl.lit("KL / max KL"), value=pl.lit(tau_kl))
        )
        ov = lens.filter(pl.col("metric") == "overlap")
        curves.append(ov.select("task", "layer", "value").with_columns(curve=pl.lit("top-k overlap")))
        rules.append(
            ov.select("task").unique(maintain_order=True).with_columns(curve=pl.lit("top-k overlap"), value=pl.lit(tau_ov))
        )
    if "layer_skip" in tables:
        out = headline_rows(tables["layer_skip"]).filter(
            (pl.col("model") == model)
            & (pl.col("metric") == "output")
            & (pl.col("kind") == "layer")
            & (pl.col("aggregation") == "mean")
        )
        out = out.with_columns(value=pl.col("value") / pl.col("value").max().over("task").clip(lower_bound=1e-12))
        curves.append(
            out.select("task", pl.col("skipped_layer").alias("layer"), "value").with_columns(
                curve=pl.lit("skip output effect / max")
            )
        )
    curve_of = {"cos": "mean cosine c̄", "kl": "KL / max KL", "overlap": "top-k overlap"}
    marks = ed.filter(
        pl.col("estimator").is_in(list(curve_of))
        | ((pl.col("estimator") == "depth_score_output") & (pl.col("aggregation") == "mean"))
    ).with_columns(
        curve=pl.col("estimator").replace_strict({**curve_of, "depth_score_output": "skip output effect / max"}, default=None)
    )
    frame = pl.concat(
        [
            *[
                c.select("task", "curve", pl.col("layer").cast(pl.Float64), "value").with_columns(mark=pl.lit("curve"))
                for c in curves
            ],
            *[r.select("task", "curve", "value").with_columns(mark=pl.lit("threshold")) for r in rules],
            marks.select(
                "task",
                "curve",
                "form",
                pl.col("ed").alias("value"),
                pl.col("ci_low").alias("low"),
                pl.col("ci_high").alias("high"),
                "reason",
            ).with_columns(mark=pl.lit("estimate")),
        ],
        how="diagonal_relaxed",
    ).with_columns(model=pl.lit(model))
    order = ["mean cosine c̄", "KL / max KL", "top-k overlap", "skip output effect / max"]
    width, height = panel_size(ctx)
    base = alt.Chart(frame)
    x = alt.X(
        "layer:Q",
        title="layer",
        scale=alt.Scale(domain=[0, max(1, (n_layers or 1) - 1)]),
        axis=alt.Axis(tickMinStep=1, format="d"),
    )
    layers = [
        base.transform_filter((alt.datum.mark == "estimate") & alt.expr.isValid(alt.datum.low) & (alt.datum.form != "robust"))
        .mark_rect(opacity=0.15, color="#e45756")
        .encode(x=alt.X("low:Q"), x2="high:Q", tooltip=["form:N", "low:Q", "high:Q"]),
        base.transform_filter(alt.datum.mark == "curve")
        .mark_line(point=alt.OverlayMarkDef(size=10), color="#4c78a8")
        .encode(
            x=x,
            y=alt.Y("value:Q", title=None),
            tooltip=["task:N", "curve:N", alt.Tooltip("layer:Q"), alt.Tooltip("value:Q", format=".3f")],
        ),
        base.transform_filter(alt.datum.mark == "threshold").mark_rule(color="#999999", strokeDash=[4, 3]).encode(y="value:Q"),
        base.transform_filter((alt.datum.mark == "estimate") & alt.expr.isValid(alt.datum.value))
        .mark_rule(color="#e45756", strokeWidth=1.5)
        .encode(
            x="value:Q",
            strokeDash=alt.StrokeDash(
                "form:N",
                scale=alt.Scale(domain=["paper", "robust", "centre_of_mass"], range=[[1, 0], [5, 3], [2, 2]]),
                legend=alt.Legend(orient="top", title="estimate"),
            ),
            tooltip=[
                "task:N",
                "curve:N",
                "form:N",
                alt.Tooltip("value:Q", title="ED", format=".2f"),
                "low:Q",
                "high:Q",
                "reason:N",
            ],
        ),
    ]
    chart = alt.layer(*layers).properties(width=width, height=height)
    L = f"L = {n_layers}" if n_layers else ""
    # one row per curve, holding only the tasks the curve's analysis ran on (a grid would leave empty
    # panels where an analysis ran on fewer tasks, e.g. the layer skip)
    present = frame.filter(pl.col("mark") == "curve").select("curve", "task").unique(maintain_order=True)
    all_tasks = tasks_in(ctx, frame)
    rows = []
    for curve in [c for c in order if c in set(present["curve"].to_list())]:
        row_tasks = [t for t in all_tasks if t in set(present.filter(pl.col("curve") == curve)["task"].to_list())]
        rows.append(
            chart.transform_filter(alt.datum.curve == curve)
            .facet(column=alt.Column("task:N", sort=row_tasks, title=None))
            .resolve_scale(y="independent")
            .properties(title=alt.TitleParams(curve, fontSize=11, anchor="start"))
        )
    if not rows:
        return message_chart(f"Effective-depth profile · {model}", ["No curve of an effective-depth analysis for this model."])
    return alt.vconcat(*rows).properties(
        title=chart_title(
            f"Effective-depth profile · {model} ({L})",
            "Blue: the curve each estimator reads; grey dashed: its threshold; red: the estimate (solid: paper form, "
            "dashed: robust form, dotted: skip centre of mass) and the paper form's 95 % bootstrap interval (band).  "
            "A row shows the tasks its analysis ran on.",
        )
    )
