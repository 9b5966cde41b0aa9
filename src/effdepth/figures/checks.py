"""Checks of the effective-depth estimates: the threshold sweep (ED_KL and ED_overlap as the threshold
varies, which exposes first-crossing artefacts), the comparison with the paper's published effective
depths for every configured (model, task) the paper reports, and layer deletion (loss and top-1
agreement when the layers after a cut are removed, with every estimate marked at its cut;
docs/methods.md#layer-deletion).

``threshold_sweep_chart`` reads ``tables["effective_depth_sweep"]``, ``reference_chart``
``tables["effective_depth_reference"]``, ``layer_deletion_chart`` and ``layer_deletion_table_chart``
``tables["layer_deletion"]`` and ``tables["effective_depth"]``; each raises ``KeyError`` without its
tables and returns a page that says so when there is nothing to draw."""

from __future__ import annotations

import altair as alt
import polars as pl

from .layout import drawn, grid, headline_rows, models_in, panel_size, tasks_in
from .summaries import ESTIMATOR_LABELS, HEADLINE, _ed_label
from .theme import PAGE_WIDTH, Context, Tables, cell_width, chart_title, message_chart

# A cut leaves the model broken when neither pruned model (early exit, block deletion) agrees with the
# full model's top-1 prediction on at least this fraction of the answer tokens.
BROKEN_AGREEMENT = 0.5
LOSS_FLOOR = 1e-3  # nats: the lowest loss the log axis draws
DELETION_METRICS = (
    "exit_loss",
    "exit_agreement",
    "deletion_loss",
    "deletion_agreement",
    "tuned_exit_loss",
    "tuned_exit_agreement",
)


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


def _cut(column: str) -> pl.Expr:
    """The cut k of an ED (layer index): k = ⌈ED⌉ + 1 leading layers kept, at most L."""
    return pl.min_horizontal(pl.col(column).ceil() + 1, pl.col("n_layers")).cast(pl.Int32)


def deletion_at_ed(deletion: pl.DataFrame, ed: pl.DataFrame) -> pl.DataFrame:
    """Early exit and block deletion at the cut of every effective-depth estimate.

    ``deletion``: the layer_deletion table (``effdepth.analyses.layer_deletion``; the all-prompt rows
    are read); ``ed``: the effective_depth table (``effdepth.depth``).  The cut of an estimate is
    k = ⌈ED⌉ + 1 (layers 0 … ⌈ED⌉ kept, at most L), its interval the cuts of ci_low and ci_high.
    Returns one row per model × task × estimate with a solution and a layer_deletion table: model,
    task, label, estimator, form, n_layers, ed, ci_low, ci_high, cut, cut_low, cut_high, full_loss, exit_loss,
    exit_agreement, deletion_loss, deletion_agreement, tuned_exit_loss, tuned_exit_agreement (null
    without a tuned lens), exit_increase, deletion_increase and tuned_exit_increase (loss − full loss,
    nats), agreement (the best of the pruned models) and broken (agreement < ``BROKEN_AGREEMENT``)."""
    head = headline_rows(deletion)
    curves = (
        head.filter(pl.col("metric").is_in(DELETION_METRICS))
        .pivot(on="metric", index=["model", "task", "layer"], values="value", aggregate_function="first")
        .rename({"layer": "cut"})
    )
    for metric in DELETION_METRICS:
        if metric not in curves.columns:
            curves = curves.with_columns(pl.lit(None, pl.Float64).alias(metric))
    full = head.filter(pl.col("metric") == "full_loss").select("model", "task", pl.col("value").alias("full_loss"))
    full = full.unique(["model", "task"], keep="first", maintain_order=True)
    estimates = (
        _ed_label(ed)
        .filter(pl.col("label").is_in(list(ESTIMATOR_LABELS.values())) & pl.col("ed").is_not_null())
        .with_columns(cut=_cut("ed"), cut_low=_cut("ci_low"), cut_high=_cut("ci_high"))
        .select(
            "model", "task", "label", "estimator", "form", "n_layers", "ed", "ci_low", "ci_high", "cut", "cut_low", "cut_high"
        )
    )
    out = estimates.join(curves, on=["model", "task", "cut"], how="inner").join(full, on=["model", "task"], how="left")
    return out.with_columns(
        exit_increase=pl.col("exit_loss") - pl.col("full_loss"),
        deletion_increase=pl.col("deletion_loss") - pl.col("full_loss"),
        tuned_exit_increase=pl.col("tuned_exit_loss") - pl.col("full_loss"),
        agreement=pl.max_horizontal("exit_agreement", "deletion_agreement", "tuned_exit_agreement"),
    ).with_columns(broken=pl.col("agreement") < BROKEN_AGREEMENT)


_SERIES = {
    "exit": "early exit (logit lens of h_k)",
    "tuned_exit": "early exit (tuned lens of h_k)",
    "deletion": "block deletion (last layers kept)",
}


def layer_deletion_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Loss (top) and top-1 agreement with the full model (bottom) against the cut k, early exit and
    block deletion, the full model's loss dashed red, and every ED estimate as a point on the early-exit
    curve at its cut with its bootstrap interval (of cuts) as a horizontal bar; one panel per model × task."""
    deletion = headline_rows(tables["layer_deletion"])
    if deletion.height == 0:
        return message_chart("Layer deletion", ["No layer-deletion rows: the analysis produced nothing to draw."])
    curves = deletion.filter(pl.col("metric").is_in(DELETION_METRICS)).select(
        "model",
        "task",
        "layer",
        "value",
        pl.col("metric").str.extract(r"^(tuned_exit|exit|deletion)_").alias("mode"),
        pl.col("metric").str.extract(r"_(loss|agreement)$").alias("quantity"),
    )
    curves = curves.with_columns(series=pl.col("mode").replace_strict(_SERIES), mark=pl.lit("line"))
    full = deletion.filter(pl.col("metric") == "full_loss").select(
        "model", "task", "value", quantity=pl.lit("loss"), series=pl.lit("full model"), mark=pl.lit("rule")
    )
    # the headline estimates only (every estimate is in the layer-deletion table page)
    marks = deletion_at_ed(tables["layer_deletion"], tables["effective_depth"]).filter(pl.col("label").is_in(HEADLINE))
    points = pl.concat(
        [
            marks.select(
                "model",
                "task",
                "label",
                "form",
                "ed",
                "ci_low",
                "ci_high",
                "cut",
                "cut_low",
                "cut_high",
                # an estimate read through the tuned lens sits on the tuned exit, the others on the logit exit
                pl.when(pl.col("estimator").str.ends_with("_tuned") & pl.col(f"tuned_exit_{q}").is_not_null())
                .then(pl.col(f"tuned_exit_{q}"))
                .otherwise(pl.col(f"exit_{q}"))
                .alias("value"),
                quantity=pl.lit(q),
                mark=pl.lit("estimate"),
            )
            for q in ("loss", "agreement")
        ]
    )
    data = pl.concat([curves, full, points], how="diagonal_relaxed")
    # the loss axis is logarithmic (the k = 0 cut's loss is tens of times the full model's and would
    # flatten the region around the estimates): losses are drawn at ≥ LOSS_FLOOR, tooltips give the raw value
    data = data.with_columns(
        raw=pl.col("value"),
        value=pl.when(pl.col("quantity") == "loss").then(pl.col("value").clip(lower_bound=LOSS_FLOOR)).otherwise(pl.col("value")),
    )
    models, tasks = models_in(ctx, data), tasks_in(ctx, data)
    labels = [v for v in ESTIMATOR_LABELS.values() if v in set(points["label"].to_list())]
    width, height = panel_size(ctx)
    # panels fill the page: as wide as PAGE_WIDTH allows for the tasks, up to twice the configured size
    width = max(width, min(2 * width, (PAGE_WIDTH - 200) // max(1, len(tasks))))
    height = max(height, int(0.55 * width))
    x = alt.X(
        "layer:Q", title="cut k (leading layers kept)", axis=alt.Axis(tickMinStep=1, format="d"), scale=alt.Scale(nice=False)
    )

    def page(quantity: str, title: str) -> alt.FacetChart:
        base = drawn(data.filter(pl.col("quantity") == quantity))
        scale = alt.Scale(type="log", nice=False) if quantity == "loss" else alt.Scale(domain=[0, 1])
        layers = [
            base.transform_filter(alt.datum.mark == "line")
            .mark_line(color="#333333", strokeWidth=1.2, point=alt.OverlayMarkDef(size=8, color="#333333"))
            .encode(
                x=x,
                y=alt.Y("value:Q", title=title, scale=scale),
                strokeDash=alt.StrokeDash(
                    "series:N",
                    title=None,
                    scale=alt.Scale(domain=list(_SERIES.values()), range=[[1, 0], [2, 2], [5, 3]]),
                    legend=alt.Legend(orient="top"),
                ),
                tooltip=[
                    "model:N",
                    "task:N",
                    "series:N",
                    alt.Tooltip("layer:Q", title="cut k"),
                    alt.Tooltip("raw:Q", format=".4f", title=quantity),
                ],
            ),
            base.transform_filter(alt.datum.mark == "estimate")
            .mark_rule(strokeWidth=2, opacity=0.45)
            .encode(x="cut_low:Q", x2="cut_high:Q", y="value:Q", color=alt.Color("label:N", sort=labels)),
            base.transform_filter(alt.datum.mark == "estimate")
            .mark_point(filled=True, size=40, opacity=0.9)
            .encode(
                x="cut:Q",
                y="value:Q",
                color=alt.Color("label:N", title="ED estimate (at k = ⌈ED⌉ + 1)", sort=labels, legend=alt.Legend(orient="right")),
                tooltip=[
                    "model:N",
                    "task:N",
                    "label:N",
                    "ed:Q",
                    "ci_low:Q",
                    "ci_high:Q",
                    alt.Tooltip("cut:Q", title="cut k"),
                    alt.Tooltip("raw:Q", format=".4f", title=f"early-exit {quantity}"),
                ],
            ),
        ]
        if quantity == "loss":
            layers.insert(
                1,
                base.transform_filter(alt.datum.mark == "rule")
                .mark_rule(color="#d62728", strokeDash=[4, 3])
                .encode(y="value:Q", tooltip=["series:N", alt.Tooltip("raw:Q", format=".4f", title="full-model loss")]),
            )
        chart = alt.layer(*layers).properties(width=width, height=height)
        # every model its own cut axis 0 … L (layer counts differ between models)
        return grid(chart, models, tasks).resolve_scale(x="independent", y="independent")

    return alt.vconcat(
        page("loss", "answer loss (nats, log scale)"), page("agreement", "top-1 agreement with the full model")
    ).properties(
        title=chart_title(
            "Layer deletion: answer loss (top) and top-1 agreement with the full model (bottom), layers past cut k removed",
            "Solid: early exit (the read-out applied to h_k) · dotted: early exit through the tuned lens, where one "
            "was trained · dashed: block deletion (layers k … L−1−keep_last removed, "
            "the last layers kept) · red dashed: the full model's loss · points: each headline ED estimate at k = ⌈ED⌉ + 1 "
            "on the early-exit curve of its lens, bars: its 95 % bootstrap interval.  Each model has its own cut axis "
            "0 … L; the loss axis "
            "is logarithmic, so the region around the estimates stays readable next to the k = 0 cut.  An ED is "
            "confirmed where the curves have reached the full model at its point; a point where the loss is still high "
            "and the agreement low marks layers past the ED that the prediction needs.",
            width=max(PAGE_WIDTH, len(tasks) * (width + 20) + 160),
        )
    )


def layer_deletion_table_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """The loss increase at every ED estimate as a page: per task, a model × estimate table whose cell
    reads 'k · +Δ early exit | +Δ block deletion' (nats over the full model's answer loss), coloured by
    the better top-1 agreement; the subtitle counts, per estimator, the model × task pairs whose ED
    leaves the model broken (agreement < ``BROKEN_AGREEMENT``)."""
    at = deletion_at_ed(tables["layer_deletion"], tables["effective_depth"])
    if at.height == 0:
        return message_chart(
            "Layer deletion at each effective depth",
            ["No model × task has both a layer-deletion table and an effective-depth estimate."],
        )
    texts = [
        f"k {k} · {e:+.2f} | {d:+.2f}{' · broken' if b else ''}"
        for k, e, d, b in at.select("cut", "exit_increase", "deletion_increase", "broken").iter_rows()
    ]
    data = at.with_columns(text=pl.Series(texts, dtype=pl.Utf8)).drop("estimator")
    labels = [v for v in ESTIMATOR_LABELS.values() if v in set(data["label"].to_list())]
    counts = data.group_by("label").agg(pl.col("broken").sum().alias("n"), pl.len().alias("of"))
    count_of = {label: (n, of) for label, n, of in counts.iter_rows()}
    verdict = " · ".join(f"{label} {count_of[label][0]}/{count_of[label][1]}" for label in labels)
    models, tasks = models_in(ctx, data), tasks_in(ctx, data)
    base = alt.Chart(data).encode(
        x=alt.X("label:N", sort=labels, title=None, axis=alt.Axis(orient="top", labelAngle=0, labelLimit=140)),
        y=alt.Y("model:N", sort=models, title=None, axis=alt.Axis(labelLimit=220)),
        tooltip=[
            "model:N",
            "task:N",
            "label:N",
            "ed:Q",
            "ci_low:Q",
            "ci_high:Q",
            alt.Tooltip("cut:Q", title="cut k"),
            alt.Tooltip("full_loss:Q", format=".4f"),
            alt.Tooltip("exit_loss:Q", format=".4f"),
            alt.Tooltip("exit_agreement:Q", format=".0%"),
            alt.Tooltip("deletion_loss:Q", format=".4f"),
            alt.Tooltip("deletion_agreement:Q", format=".0%"),
            "broken:N",
        ],
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color(
            "agreement:Q",
            title="top-1 agreement",
            scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1]),
            legend=alt.Legend(orient="bottom", gradientLength=200, format=".0%"),
        )
    )
    # dark text on the light middle of the scale, white on its dark ends (red ≤ 15 %, green ≥ 85 %)
    text = base.mark_text(fontSize=9).encode(
        text="text:N",
        color=alt.condition(
            (alt.datum.agreement <= 0.15) | (alt.datum.agreement >= 0.85), alt.value("white"), alt.value("black")
        ),
    )
    cell = cell_width(texts, 9, 150)
    table = alt.layer(cells, text).properties(width=cell * len(labels), height=20 * len(models))
    return table.facet(
        row=alt.Row("task:N", sort=tasks, title=None, header=alt.Header(labelAngle=0, labelAlign="left", labelFontSize=12))
    ).properties(
        title=chart_title(
            "Layer deletion at each effective depth: k = ⌈ED⌉ + 1 · loss increase of early exit | of block deletion (nats)",
            "Colour: the better top-1 agreement with the full model of the two pruned models.  'broken': neither agrees "
            f"on {BROKEN_AGREEMENT:.0%} of the answer tokens — the layers past that ED are needed.",
            f"Broken at its ED (model × task pairs): {verdict}",
        )
    )
