"""Figures of the lenses (docs/methods.md#lenses, #settling-depth): is an effective depth a property
of the model or of the lens it is read through?

* ``lens_comparison_chart`` — per model × task, each lens-read estimate (ED_KL robust, ED_overlap
  robust, mean settling depth) under the logit lens and the tuned lens with 95 % intervals, and a
  sentence per estimate saying whether the lens changes it beyond its uncertainty.
* ``lens_curves_chart`` — KL and top-k overlap per depth under both lenses, per model (one task),
  and the tuned lens's held-out KL against the logit lens's when the workflow trained the lens.
* ``settling_chart`` — the distribution of the tokens' settling depth per model × task, every lens
  read, with the deep-thinking boundary ⌈ρ·L⌉ and the DTR.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from ..depth import ESTIMATORS, LENS_SUFFIX
from .layout import headline_rows, models_in, panel_size, primary_task, tasks_in
from .theme import PAGE_WIDTH, Context, Tables, chart_title, message_chart

# one colour per lens of depth.LENS_SUFFIX (a further lens takes the next; blue and red for logit, tuned)
LENS_COLOURS = alt.Scale(
    domain=list(LENS_SUFFIX), range=["#4c78a8", "#e45756", "#54a24b", "#b279a2", "#f58518"][: len(LENS_SUFFIX)]
)
# the estimates compared across lenses: (estimator stem, form) -> label without the lens
COMPARED = (("kl", "robust", "ED_KL robust"), ("overlap", "robust", "ED_overlap robust"), ("settling", "mean", "settling depth"))


def lens_estimates(ed: pl.DataFrame) -> pl.DataFrame:
    """The effective-depth rows of the ``COMPARED`` estimates under every lens, with columns model,
    task, lens, quantity (label), ed, ci_low, ci_high, n_layers, ratio (the shown variant's rows)."""
    keys = []
    for stem, form, label in COMPARED:
        for suffix in LENS_SUFFIX.values():
            keys.append({"estimator": f"{stem}{suffix}", "form": form, "quantity": label})
    wanted = pl.DataFrame(keys)
    return ed.join(wanted, on=["estimator", "form"], how="inner").select(
        "model", "task", "lens", "quantity", "ed", "ci_low", "ci_high", "n_layers", "ratio", "reason"
    )


def _verdict(shift: float | None, changes: bool | None, missing: str | None) -> str:
    if missing:
        return f"no estimate under the {missing} lens"
    if changes is None:
        return f"{shift:+.1f} layers (no intervals)"
    return f"{shift:+.1f} layers: " + ("CHANGES (intervals disjoint)" if changes else "same within the intervals")


def lens_verdicts(ed: pl.DataFrame) -> pl.DataFrame:
    """Per (model, task, quantity): the logit- and tuned-lens estimates and whether the lens changes
    the conclusion — the tuned estimate's 95 % interval disjoint from the logit one's.  Columns
    model, task, quantity, logit, tuned (ED), shift (tuned − logit, layers), changes (bool, null
    without intervals or estimates), verdict (a sentence)."""
    rows = lens_estimates(ed)
    out = []
    for (model, task, quantity), part in rows.group_by("model", "task", "quantity", maintain_order=True):
        by = {r["lens"]: r for r in part.iter_rows(named=True)}
        if "logit" not in by or "tuned" not in by:
            continue
        logit, tuned = by["logit"], by["tuned"]
        both = logit["ed"] is not None and tuned["ed"] is not None
        bounded = both and None not in (logit["ci_low"], logit["ci_high"], tuned["ci_low"], tuned["ci_high"])
        shift = tuned["ed"] - logit["ed"] if both else None
        changes = (tuned["ci_low"] > logit["ci_high"] or tuned["ci_high"] < logit["ci_low"]) if bounded else None
        missing = None if both else ("logit" if logit["ed"] is None else "tuned")
        out.append(
            {
                "model": model,
                "task": task,
                "quantity": quantity,
                "logit": logit["ed"],
                "tuned": tuned["ed"],
                "shift": shift,
                "changes": changes,
                "verdict": _verdict(shift, changes, missing),
            }
        )
    schema = {
        "model": pl.Utf8,
        "task": pl.Utf8,
        "quantity": pl.Utf8,
        "logit": pl.Float64,
        "tuned": pl.Float64,
        "shift": pl.Float64,
        "changes": pl.Boolean,
        "verdict": pl.Utf8,
    }
    return pl.DataFrame(out, schema=schema)


def lens_comparison_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Logit- vs tuned-lens estimates with intervals per model × task, and where the conclusion changes."""
    title = "Lenses · Is the effective depth a property of the model or of the lens?"
    data = lens_estimates(tables["effective_depth"]).filter(pl.col("ed").is_not_null())
    verdicts = lens_verdicts(tables["effective_depth"])
    if not data.height or not verdicts.height:
        return message_chart(title, ["No estimate was read under both the logit and the tuned lens (analyses.tuned_lens)."])
    models, tasks = models_in(ctx, data), tasks_in(ctx, data)
    quantities = [q for _, _, q in COMPARED if q in set(data["quantity"].to_list())]
    data = data.with_columns(
        row=pl.col("model") + " · " + pl.col("task"),
        ci_low=pl.col("ci_low").fill_null(pl.col("ed")),
        ci_high=pl.col("ci_high").fill_null(pl.col("ed")),
    )
    order = [f"{m} · {t}" for m in models for t in tasks if (data["row"] == f"{m} · {t}").any()]
    width = max(160, (PAGE_WIDTH - 160) // max(1, len(quantities)))
    y = alt.Y("row:N", sort=order, title=None, axis=alt.Axis(labelLimit=300))
    y_offset = alt.YOffset("lens:N", sort=list(LENS_SUFFIX))
    colour = alt.Color("lens:N", scale=LENS_COLOURS, title="lens")
    base = alt.Chart().encode(y=y, yOffset=y_offset, color=colour)  # the facet passes the data
    interval = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title="layer (ED)"), x2="ci_high:Q")
    point = base.mark_point(filled=True, size=40).encode(
        x="ed:Q", tooltip=["model", "task", "lens", "quantity", alt.Tooltip("ed:Q", format=".2f"), "ci_low", "ci_high"]
    )
    chart = (
        alt.layer(interval, point)
        .properties(width=width, height=alt.Step(10))
        .facet(column=alt.Column("quantity:N", sort=quantities, title=None), data=data)
        .resolve_scale(x="independent")
    )
    changed = verdicts.filter(pl.col("changes").fill_null(False))
    lines = [
        f"{r['model']} · {r['task']} · {r['quantity']}: logit {r['logit']:.1f}, tuned {r['tuned']:.1f} → {r['verdict']}"
        for r in (changed if changed.height else verdicts).iter_rows(named=True)
        if r["logit"] is not None and r["tuned"] is not None
    ]
    shown = 14
    if len(lines) > shown:  # the page holds 14; say how many more and where they all are
        lines = [
            *lines[:shown],
            f"… and {len(lines) - shown} more: every pair is in results/tables/effective_depth.parquet (column lens)",
        ]
    said = (
        f"The lens changes {changed.height} of {verdicts.height} estimates beyond their 95 % intervals:"
        if changed.height
        else f"No estimate of the {verdicts.height} changes beyond its 95 % interval under the tuned lens:"
    )
    from ..errata import lens_question_verdicts

    questions = lens_question_verdicts(tables["effective_depth"], ctx.get("models", {}), ctx.get("tasks", {}))
    by_question = {}
    for r in questions.iter_rows(named=True):
        by_question.setdefault(r["question"], {})[r["lens"]] = r["holds"]
    flips = [q for q, per in by_question.items() if len(per) == 2 and None not in per.values() and len(set(per.values())) == 2]
    question_lines = [*questions["sentence"].to_list()]
    if flips:
        question_lines.append(f"The lens decides {', '.join(flips)}: the conclusion holds under one lens and not the other.")
    body = [said, *lines, "", *question_lines]
    text = (
        alt.Chart(pl.DataFrame({"y": list(range(len(body))), "text": body}))
        .mark_text(align="left", baseline="top", fontSize=10)
        .encode(y=alt.Y("y:O", axis=None), x=alt.value(0), text="text:N")
        .properties(width=PAGE_WIDTH - 40, height=16 * len(body))
    )
    return alt.vconcat(
        chart.properties(
            title=chart_title(
                title,
                "Each estimate read through the logit lens (the paper's) and through a tuned lens (trained affine translators, "
                "Belrose et al. 2023), with its 95 % prompt-bootstrap interval; x scales per column. A tuned lens removes the "
                "logit lens's bias in early layers, so an estimate that moves says more about the lens than the model.",
            )
        ),
        text.properties(
            title=chart_title("Where the conclusion changes", "an estimate changes when its two intervals are disjoint")
        ),
    ).configure_view(stroke=None)


def _curve_rows(tables: Tables, ctx: Context) -> tuple[pl.DataFrame, str]:
    frames = []
    for lens in LENS_SUFFIX:
        table = tables.get(f"{lens}_lens")
        if table is not None and table.height:
            frames.append(headline_rows(table).filter(pl.col("metric").is_in(["kl", "overlap"])).with_columns(lens=pl.lit(lens)))
    data = pl.concat(frames, how="diagonal_relaxed")
    tuned = tables.get("tuned_lens")
    task = primary_task(tuned if tuned is not None and tuned.height else data, ctx, "tuned_lens")
    return data.filter(pl.col("task") == task), task


def lens_curves_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """KL and overlap per depth under each lens, per model, on one task; held-out KL when trained."""
    data, task = _curve_rows(tables, ctx)
    width, height = panel_size(ctx)
    models = models_in(ctx, data)
    metric_title = {"kl": "KL(lens ‖ output) [nats]", "overlap": "top-k overlap"}
    rows = []
    for metric in ("kl", "overlap"):
        part = data.filter(pl.col("metric") == metric)
        rows.append(
            alt.Chart(part)
            .mark_line(point=alt.OverlayMarkDef(size=12))
            .encode(
                x=alt.X("layer:Q", title="depth l (h_l)"),
                y=alt.Y("value:Q", title=metric_title[metric], scale=alt.Scale(type="symlog") if metric == "kl" else alt.Scale()),
                color=alt.Color("lens:N", scale=LENS_COLOURS, title="lens"),
            )
            .properties(width=width, height=height)
            .facet(column=alt.Column("model:N", sort=models, title=None))
            .resolve_scale(x="independent")
        )
    heldout = tables.get("lens_heldout")
    subtitle = (
        f"task {task}: the lens distributions at each depth against the model's output (KL on a symlog scale). "
        "The tuned lens is the logit lens plus one trained affine translator per depth; at l = L both are the output."
    )
    if heldout is not None and heldout.height:
        rows.append(
            alt.Chart(heldout)
            .mark_line(point=alt.OverlayMarkDef(size=12))
            .encode(
                x=alt.X("layer:Q", title="depth l"),
                y=alt.Y("kl:Q", title="held-out KL(output ‖ lens) [nats]", scale=alt.Scale(type="symlog")),
                color=alt.Color("lens:N", scale=LENS_COLOURS, title="lens"),
            )
            .properties(width=width, height=height)
            .facet(column=alt.Column("model:N", sort=models_in(ctx, heldout), title=None))
            .resolve_scale(x="independent")
        )
        subtitle += (
            " Bottom row: the training loss on held-out corpus text, before training (= the logit lens) and after; "
            "a trained lens should lie at or below the logit lens at every depth."
        )
    return alt.vconcat(*rows).properties(
        title=chart_title("Lenses · KL and top-k overlap through the logit lens and the tuned lens", subtitle)
    )


def settling_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """The settling-depth distribution per model × task and lens, with ⌈ρ·L⌉ and the DTR."""
    frames = []
    for lens in LENS_SUFFIX:
        table = tables.get(f"{lens}_lens")
        if table is not None and table.height:
            frames.append(headline_rows(table).filter(pl.col("metric") == "settled").with_columns(lens=pl.lit(lens)))
    title = "Settling depth · the depth from which each token's lens prediction stays close to the output"
    if not frames:
        return message_chart(title, ["No lens table holds settling depths."])
    data = pl.concat(frames, how="diagonal_relaxed").filter(pl.col("layer") > 0)
    ed = tables.get("effective_depth")
    rho = float(ctx.get("effective_depth", {}).get("depth_fraction") or 0.85)
    g = ", ".join(
        f"{a.replace('_', ' ')} g = {o['settling_threshold']:g}"
        for a, o in ctx.get("analyses", {}).items()
        if o.get("settling_threshold") is not None
    )
    models, tasks = models_in(ctx, data), tasks_in(ctx, data)
    # per panel: the deep-thinking boundary ⌈ρ·L⌉ (L = the model's deepest settling depth) and the DTR
    panels = data.group_by("model", "task").agg(pl.col("layer").max().alias("n_layers"))
    marks = panels.with_columns(boundary=(pl.col("n_layers") * rho).ceil().cast(pl.Int64), kind=pl.lit("boundary"))
    if ed is not None and ed.height:
        dtr = ed.filter(
            pl.col("estimator").is_in([e.estimator for e in ESTIMATORS if e.estimator.startswith("dtr")])
            & pl.col("ed").is_not_null()
        )
        texts = {}
        for r in dtr.sort("lens").iter_rows(named=True):
            interval = f" [{r['ci_low']:.2f}–{r['ci_high']:.2f}]" if r["ci_low"] is not None else ""
            texts.setdefault((r["model"], r["task"]), []).append(f"{r['lens']} {r['ed']:.2f}{interval}")
        labels = pl.DataFrame(
            [{"model": m, "task": t, "text": "DTR " + "\n".join(v), "kind": "dtr"} for (m, t), v in texts.items()],
            schema={"model": pl.Utf8, "task": pl.Utf8, "text": pl.Utf8, "kind": pl.Utf8},
        )
        marks = pl.concat([marks, labels], how="diagonal_relaxed")
    width, height = panel_size(ctx)
    every = pl.concat([data.with_columns(kind=pl.lit("curve")), marks], how="diagonal_relaxed")
    base = alt.Chart()
    bars = (
        base.transform_filter(alt.datum.kind == "curve")
        .mark_line(point=alt.OverlayMarkDef(size=16))
        .encode(
            x=alt.X("layer:Q", title="settling depth l", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("value:Q", title="share of tokens", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("lens:N", scale=LENS_COLOURS, title="lens"),
            tooltip=["model", "task", "lens", "layer", alt.Tooltip("value:Q", format=".1%")],
        )
    )
    boundary = (
        base.transform_filter(alt.datum.kind == "boundary")
        .mark_rule(color="grey", strokeDash=[4, 3])
        .encode(x="boundary:Q", tooltip=[alt.Tooltip("boundary:Q", title="⌈ρ·L⌉")])
    )
    dtr_text = (
        base.transform_filter(alt.datum.kind == "dtr")
        .mark_text(align="right", baseline="top", fontSize=9, color="#333", lineBreak="\n")
        .encode(text="text:N", x=alt.value(width - 2), y=alt.value(2))
    )
    chart = (
        alt.layer(bars, boundary, dtr_text, data=every)
        .properties(width=width, height=height)
        .facet(
            row=alt.Row("model:N", sort=models, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            column=alt.Column("task:N", sort=tasks, title=None),
        )
        .resolve_scale(x="independent")
    )
    return chart.properties(
        title=chart_title(
            title,
            f"A token settles at the first depth l ≥ 1 whose JSD(output ‖ lens) is below g ({g or 'g = 0.5'}) bits "
            f"(Chen et al. 2026). Deep-thinking tokens settle at l ≥ ⌈{rho:g}·L⌉ (grey dashed); their share is the "
            "DTR, per lens with its 95 % interval (top right; also in the effective-depth table).",
        )
    )
