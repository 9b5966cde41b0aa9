"""Effective-depth summaries: T1 (the table with 95 % intervals), Q1 (ED vs model size), Q2 (long-CoT
models vs their bases) and Q3 (ED vs task difficulty).  The threshold sweep and the comparison with
the paper's published values are in ``checks``.

They read the effective-depth table (``effdepth.depth``: effective_depth) and the model / task
metadata of the context (size_b, family, training, base_model; source, difficulty, digits).  Each
builder ``(tables, ctx) -> chart`` raises ``KeyError`` without ``tables["effective_depth"]``; with
nothing to plot (no estimate, no model size, no long-CoT / base pair) it returns a page that says so.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from ..depth import ESTIMATOR_LABELS
from ..depth import HEADLINE as HEADLINE_KEYS
from .layout import drawn, interval_layers, jitter, models_in, panel_size, tasks_in
from .theme import Context, Tables, cell_width, chart_title, message_chart, text_width

# (estimator, form, aggregation) -> label, in the order of T1's columns; the labels of the estimators
# the question summaries (Q1–Q3) use (the cosine crossing, the robust threshold forms — the paper's
# first-crossing forms are artefact-prone, docs/methods.md#effective-depth — and the skip centre of
# mass).  Both from the estimator registry, ``effdepth.depth.ESTIMATORS``.
HEADLINE = [ESTIMATOR_LABELS[key] for key in HEADLINE_KEYS]


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


def _ed(tables: Tables) -> pl.DataFrame:
    return _ed_label(tables["effective_depth"])


def effective_depth_table_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """T1: the effective-depth table as a page: ED [95 % CI] per model × estimator, one block per task,
    cells coloured by the ratio (ED + 1) / L."""
    ed = _ed(tables).filter(pl.col("label").is_in(list(ESTIMATOR_LABELS.values())))
    if ed.height == 0:
        return message_chart(
            "T1 · Effective depth", ["No effective-depth estimate was computed (no analysis configured for it)."]
        )
    integer = ~pl.col("estimator").str.starts_with("depth_score")
    texts = [
        _ci_text(e, lo, hi, r, is_int)
        for e, lo, hi, r, is_int in ed.select("ed", "ci_low", "ci_high", "ratio", integer.alias("i")).iter_rows()
    ]
    data = ed.with_columns(
        text=pl.Series(texts, dtype=pl.Utf8),
        note=pl.when(pl.col("reason").is_not_null()).then(pl.col("reason")).otherwise(pl.lit("")),
        solvable_pct=(pl.col("solvable") * 100).round(0),
    ).select(
        "model",
        "task",
        "label",
        "ed",
        "ratio",
        "ci_low",
        "ci_high",
        "ratio_low",
        "ratio_high",
        "solvable_pct",
        "n_layers",
        "n_prompts",
        "text",
        "note",
    )
    models, tasks = models_in(ctx, data), tasks_in(ctx, data)
    columns = [c for c in ESTIMATOR_LABELS.values() if c in set(data["label"].to_list())]
    base = alt.Chart(data).encode(
        x=alt.X("label:N", sort=columns, title=None, axis=alt.Axis(orient="top", labelAngle=0, labelLimit=120)),
        y=alt.Y("model:N", sort=models, title=None, axis=alt.Axis(labelLimit=220)),
        tooltip=[
            "model:N",
            "task:N",
            "label:N",
            "text:N",
            alt.Tooltip("ratio:Q", format=".2f"),
            alt.Tooltip("ratio_low:Q", format=".2f"),
            alt.Tooltip("ratio_high:Q", format=".2f"),
            alt.Tooltip("solvable_pct:Q", title="% resamples with a solution"),
            "n_layers:Q",
            "n_prompts:Q",
            "note:N",
        ],
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color(
            "ratio:Q",
            title="ratio (ED+1)/L",
            scale=alt.Scale(scheme="blues", domain=[0, 1.3]),
            legend=alt.Legend(orient="bottom", gradientLength=200),
        )
    )
    text = base.mark_text(fontSize=10).encode(text="text:N")
    cell = cell_width(data["text"].to_list(), 10, 132)
    table = alt.layer(cells, text).properties(width=cell * len(columns), height=20 * len(models))
    return table.facet(
        row=alt.Row("task:N", sort=tasks, title=None, header=alt.Header(labelAngle=0, labelAlign="left", labelFontSize=12))
    ).properties(
        title=chart_title(
            "T1 · Effective depth per model and task: ED [95 % bootstrap interval] · ratio (ED + 1) / L (also the colour)",
            "ED_cos: last negative→non-negative crossing of the mean cosine · ED_KL / ED_overlap: first layer past the "
            "threshold (paper) or from which the condition holds to the end (robust) · skip CoM: centre of mass of the "
            "layer-skip effect (method paper) · — : no solution (reason in the tooltip / CSV)",
        )
    )


def _headline_ed(tables: Tables, ctx: Context) -> pl.DataFrame:
    """Headline estimators joined with model metadata, ED and ratio in long form (measure, value, low, high)."""
    ed = _ed(tables).filter(pl.col("label").is_in(HEADLINE)).join(_model_meta(ctx), on="model", how="left", maintain_order="left")
    cols = ["model", "task", "label", "size_b", "family", "training", "base_model", "n_layers"]
    return pl.concat(
        [
            ed.select(
                *cols,
                pl.lit("ED (layers)").alias("measure"),
                pl.col("ed").alias("value"),
                pl.col("ci_low").alias("low"),
                pl.col("ci_high").alias("high"),
            ),
            ed.select(
                *cols,
                pl.lit("ratio (ED+1)/L").alias("measure"),
                pl.col("ratio").alias("value"),
                pl.col("ratio_low").alias("low"),
                pl.col("ratio_high").alias("high"),
            ),
        ]
    ).filter(pl.col("value").is_not_null())


def q1_scale_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Q1: ED and ratio against model size, per estimator, every task (colour) and training regime."""
    data = _headline_ed(tables, ctx)
    missing = sorted(set(data.filter(pl.col("size_b").is_null())["model"].to_list()))
    data = data.filter(pl.col("size_b").is_not_null())
    if data.height == 0:
        return message_chart("Q1 · Effective depth vs model size", ["No model has size_b in the config: nothing to plot."])
    width, height = panel_size(ctx)
    tasks = tasks_in(ctx, data)
    data = jitter(data, "size_b", "task", tasks, step=0.03, log=True)
    sizes = sorted(set(data["size_b"].to_list()))
    x = alt.X(
        "x:Q",
        title="parameters (billions, log scale)",
        scale=alt.Scale(type="log", nice=False, padding=12),
        axis=alt.Axis(values=sizes, format="~g"),
    )
    color = alt.Color("task:N", sort=tasks, legend=alt.Legend(orient="top", columns=8))
    tooltip = [
        "model:N",
        "task:N",
        "label:N",
        "training:N",
        "size_b:Q",
        alt.Tooltip("value:Q", format=".2f"),
        alt.Tooltip("low:Q", format=".2f"),
        alt.Tooltip("high:Q", format=".2f"),
    ]
    base = drawn(data, "label", "measure")
    layers = interval_layers(
        base,
        x,
        color,
        tooltip,
        shape=alt.Shape("training:N", legend=alt.Legend(orient="top")),
        line_detail=["task:N", "training:N"],
    )
    chart = alt.layer(*layers).properties(width=width, height=height)
    return (
        chart.facet(
            row=alt.Row("label:N", sort=HEADLINE, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            column=alt.Column("measure:N", title=None),
        )
        .resolve_scale(y="independent")
        .properties(
            title=chart_title(
                "Q1 · Does effective depth grow with model size? ED (left) and ratio (right) with 95 % bootstrap intervals",
                "The paper's claim: ED grows with size while the ratio (ED + 1)/L stays about constant. Lines join models "
                "of one training regime on one task.",
                f"models without size_b left out: {', '.join(missing)}" if missing else "",
            )
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
    data = _ed(tables).filter(pl.col("label").is_in(HEADLINE)).join(pairs, on="model", how="inner", maintain_order="left")
    data = data.select(
        "group",
        "role",
        "model",
        "task",
        "label",
        pl.col("ed").alias("value"),
        pl.col("ci_low").alias("low"),
        pl.col("ci_high").alias("high"),
        "ratio",
        "n_layers",
    ).filter(pl.col("value").is_not_null())
    width, height = panel_size(ctx)
    groups = pairs["group"].unique(maintain_order=True).to_list()
    roles = ["base", "long-CoT", "instruct"]
    x = alt.X("group:N", sort=groups, title="model size")
    color = alt.Color(
        "role:N",
        sort=roles,
        scale=alt.Scale(domain=roles, range=["#4c78a8", "#e45756", "#72b7b2"]),
        legend=alt.Legend(orient="top"),
    )
    tooltip = [
        "model:N",
        "task:N",
        "label:N",
        alt.Tooltip("value:Q", title="ED", format=".1f"),
        "low:Q",
        "high:Q",
        alt.Tooltip("ratio:Q", format=".2f"),
    ]
    base = drawn(data, "label", "task")
    layers = interval_layers(base, x, color, tooltip, x_offset=alt.XOffset("role:N", sort=roles))
    chart = alt.layer(*layers).properties(width=max(width // 2, 40 * len(groups)), height=height)
    return (
        chart.facet(
            row=alt.Row("label:N", sort=HEADLINE, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            column=alt.Column("task:N", sort=tasks_in(ctx, data), title=None),
        )
        .resolve_scale(y="independent")
        .properties(
            title=chart_title(
                "Q2 · Are long-CoT (R1-distilled) models deeper than their bases? ED with 95 % bootstrap intervals",
                "The paper's claim: no. A long-CoT model whose interval sits above its base's would contradict it.",
            )
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
    """Q3: ED ratio per task, tasks as categories grouped by family (benchmarks, addition,
    multiplication) in order of difficulty, one panel per estimator holding only the tasks it ran on,
    models side by side within a task and joined by a line within a family."""
    data = (
        _headline_ed(tables, ctx)
        .filter(pl.col("measure") == "ratio (ED+1)/L")
        .join(_difficulty(ctx), on="task", how="inner", maintain_order="left")
    )
    if data.height == 0:
        return message_chart("Q3 · Effective depth vs task difficulty", ["No effective-depth estimate to plot."])
    width, height = panel_size(ctx)
    models = models_in(ctx, data)
    families = ["benchmarks", "addition", "multiplication"]
    order = (
        data.select("task", "series", "difficulty")
        .unique("task", keep="first", maintain_order=True)
        .with_columns(rank=pl.col("series").replace_strict({f: i for i, f in enumerate(families)}, default=len(families)))
        .sort("rank", "difficulty", "task")
    )
    tasks = order["task"].to_list()
    labels = [label for label in HEADLINE if label in set(data["label"].to_list())]
    most = int(data.group_by("label").agg(pl.col("task").n_unique())["task"].max())
    panel_width = max(width, 36 * most)
    # task names horizontal where they fit their band, else slanted (they would run into each other)
    fits = max(text_width(t, 9) for t in tasks) <= panel_width / most - 6
    x = alt.X(
        "task:N",
        sort=tasks,
        title=None,
        axis=alt.Axis(labelAngle=0 if fits else -35, labelAlign="center" if fits else "right", labelLimit=120),
    )
    offset = alt.XOffset("model:N", sort=models)
    color = alt.Color(
        "model:N",
        sort=models,
        scale=alt.Scale(scheme="tableau20" if len(models) > 10 else "tableau10"),
        legend=alt.Legend(orient="top", columns=4),
    )
    tooltip = [
        "model:N",
        "task:N",
        "series:N",
        "label:N",
        "difficulty:Q",
        alt.Tooltip("value:Q", title="ratio", format=".2f"),
        alt.Tooltip("low:Q", format=".2f"),
        alt.Tooltip("high:Q", format=".2f"),
    ]
    base = alt.Chart(data)
    y = alt.Y("value:Q", title="ratio (ED + 1) / L", scale=alt.Scale(zero=False), axis=alt.Axis(format=".2~f"))
    layers = [
        base.mark_line(strokeWidth=1, opacity=0.5).encode(x=x, xOffset=offset, y=y, color=color, detail="series:N"),
        base.mark_rule(strokeWidth=1.5, opacity=0.6).encode(x=x, xOffset=offset, y="low:Q", y2="high:Q", color=color),
        base.mark_point(filled=True, size=45).encode(x=x, xOffset=offset, y=y, color=color, tooltip=tooltip),
    ]
    chart = alt.layer(*layers).properties(width=panel_width, height=height)
    return (
        chart.facet(facet=alt.Facet("label:N", sort=labels, title=None), columns=2)
        # xOffset too: with x resolved per panel alone, Vega-Lite draws every model at the band's start
        .resolve_scale(x="independent", xOffset="independent")
        .properties(
            title=chart_title(
                "Q3 · Do models use more layers for harder inputs? ED ratio with 95 % bootstrap intervals per task",
                "The paper's claim: no — flat lines. Tasks are grouped by family in order of difficulty (arithmetic: operand "
                "digits; benchmarks: HellaSwag → GSM8K → AIME24, else config order); lines join one model's tasks of one "
                "family.  Each panel shows the tasks its estimator ran on.",
                width=max(560, 2 * panel_width + 80),
            )
        )
    )
