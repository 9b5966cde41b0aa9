"""Layout helpers shared by the figures: which rows to plot, model / task order, facet grids, the
per-layer bar panel, jittered estimates with intervals, and the canonical row order that makes
every spec independent of the order of the input rows.

Grids facet over every configured model (``figures.columns`` panels a row).  A (row, column) facet
grid is completed with placeholder rows (``_complete``) because Vega-Lite lays out only the cells
that have data.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl

from .theme import Context, Tables, layer_axis


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` sorted by every column (nulls last): the same rows in any order give the same frame,
    so aggregations sum in one order and every spec lists its rows in one order."""
    if frame.width == 0 or frame.height < 2:
        return frame
    return frame.sort(frame.columns, nulls_last=True, maintain_order=True)


def headline_rows(table: pl.DataFrame) -> pl.DataFrame:
    """Rows aggregating all prompts (prompt is null)."""
    return table.filter(pl.col("prompt").is_null())


def _ordered(configured: list[str], frames: tuple[pl.DataFrame, ...], column: str) -> list[str]:
    """Values of ``column`` present in the frames: in config order, then any others sorted."""
    seen: set[str] = set()
    for f in frames:
        seen.update(v for v in f[column].unique(maintain_order=True).to_list() if v is not None)
    return [v for v in configured if v in seen] + sorted(v for v in seen if v not in configured)


def models_in(ctx: Context, *frames: pl.DataFrame) -> list[str]:
    """Models present in ``frames`` (column ``model``): in config order, then unconfigured ones sorted."""
    return _ordered(list(ctx.get("models", {})), frames, "model")


def tasks_in(ctx: Context, *frames: pl.DataFrame) -> list[str]:
    """Tasks present in ``frames`` (column ``task``): in config order, then unconfigured ones sorted."""
    return _ordered(list(ctx.get("tasks", {})), frames, "task")


def primary_task(table: pl.DataFrame, ctx: Context, analysis: str) -> str:
    """The task of the per-model grids (F1–F7): ``figures.primary_task`` when the analysis ran on it,
    else the first configured task of the analysis present, else the first present in sorted order.

    ``table``: rows with a ``task`` column; ``analysis``: the analysis whose configured tasks count.
    Raises ``IndexError`` when ``table`` has no task at all."""
    configured = ctx.get("analyses", {}).get(analysis, {}).get("tasks") or list(ctx.get("tasks", {}))
    present = sorted(table["task"].unique(maintain_order=True).drop_nulls().to_list())
    chosen = ctx.get("figures", {}).get("primary_task")
    if chosen in present:
        return chosen
    for task in configured:
        if task in present:
            return task
    return present[0]


def panel_size(ctx: Context) -> tuple[int, int]:
    """(width, height) of one panel in pixels: ``figures.width`` / ``figures.height`` (180 × 120)."""
    opts = ctx.get("figures", {})
    return int(opts.get("width", 180)), int(opts.get("height", 120))


def _columns(ctx: Context) -> int:
    return int(ctx.get("figures", {}).get("columns", 4))


def wrap_models(chart: alt.Chart, ctx: Context, models: list[str], field: str = "model") -> alt.FacetChart:
    """``chart`` faceted over ``field`` in the order ``models``, ``figures.columns`` panels a row."""
    return chart.facet(facet=alt.Facet(f"{field}:N", sort=models, title=None), columns=min(_columns(ctx), max(1, len(models))))


def grid(chart: alt.Chart, models: list[str], tasks: list[str]) -> alt.FacetChart:
    """``chart`` faceted as a grid: one row per model, one column per task, in the given orders.  Draw
    the data through ``drawn`` so missing cells keep the grid aligned."""
    return chart.facet(
        row=alt.Row("model:N", sort=models, title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("task:N", sort=tasks, title=None),
    )


def panels(chart: alt.Chart, ctx: Context, data: pl.DataFrame, by_task: bool) -> alt.FacetChart:
    """A model × task ``grid`` when ``by_task`` (F8–F12), else one wrapped panel per model (F1–F7)."""
    models = models_in(ctx, data)
    return grid(chart, models, tasks_in(ctx, data)) if by_task else wrap_models(chart, ctx, models)


def _complete(frame: pl.DataFrame, row: str, column: str) -> pl.DataFrame:
    """Add a placeholder row for every (row, column) facet cell without data.  Vega-Lite lays out the
    cells of a row × column facet that have data in order, so one missing cell shifts the rest of its
    column into the wrong rows; with placeholders every cell exists and ``drawn`` drops them."""
    present = frame.select(row, column).unique(maintain_order=True)
    rows, columns = frame.select(row).unique(maintain_order=True), frame.select(column).unique(maintain_order=True)
    cells = rows.join(columns, how="cross", maintain_order="left_right")
    missing = cells.join(present, on=[row, column], how="anti", nulls_equal=True, maintain_order="left")
    return pl.concat(
        [frame.with_columns(placeholder=pl.lit(False)), missing.with_columns(placeholder=pl.lit(True))], how="diagonal_relaxed"
    )


def drawn(frame: pl.DataFrame, row: str = "model", column: str = "task") -> alt.Chart:
    """Chart of ``frame`` completed for a (row, column) facet grid, drawing only real rows."""
    return alt.Chart(_complete(frame, row, column)).transform_filter("!datum.placeholder")


def clean_token(token: str | None) -> str:
    """Token text that shows on an axis: visible spaces / newlines, byte-level BPE markers resolved."""
    if token is None:
        return "?"
    token = token.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")
    token = token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")
    return token[:12] or "∅"


def bars(
    data: pl.DataFrame,
    ctx: Context,
    y_title: str,
    series_title: str,
    n_max: int,
    rule: pl.DataFrame | None = None,
    line: pl.DataFrame | None = None,
    x_title: str = "layer",
    y_scale: alt.Scale | None = None,
) -> alt.LayerChart:
    """Bars of ``value`` per ``layer`` (``series`` side by side), optionally a dashed red horizontal
    ``rule`` per panel (columns model, task, value, series = its name) and a black ``line`` over the
    layers (columns model, task, layer, value, series).  One frame carries all three because a facet
    takes one data source."""
    width, height = panel_size(ctx)
    n_series = data["series"].n_unique()
    parts = [data.with_columns(mark=pl.lit("bar"))]
    if rule is not None and rule.height:
        parts.append(rule.with_columns(mark=pl.lit("rule"), layer=pl.lit(None, pl.Int32)))
    if line is not None and line.height:
        parts.append(line.with_columns(mark=pl.lit("line")))
    base = drawn(pl.concat(parts, how="diagonal_relaxed"))
    x = alt.X("layer:O", axis=layer_axis(x_title, n_max))
    layers = [
        base.transform_filter(alt.datum.mark == "bar")
        .mark_bar()
        .encode(
            x=x,
            y=alt.Y("value:Q", title=y_title, scale=y_scale or alt.Undefined),
            color=alt.Color("series:N", title=series_title, legend=alt.Legend(orient="top"))
            if n_series > 1
            else alt.value("#4c78a8"),
            xOffset=alt.XOffset("series:N") if n_series > 1 else alt.Undefined,
            tooltip=["model:N", "task:N", "series:N", "layer:O", alt.Tooltip("value:Q", format=".4f")],
        )
    ]
    if rule is not None and rule.height:
        layers.append(
            base.transform_filter(alt.datum.mark == "rule")
            .mark_rule(color="#d62728", strokeDash=[4, 3])
            .encode(y="value:Q", tooltip=["series:N", alt.Tooltip("value:Q", format=".4f")])
        )
    if line is not None and line.height:
        layers.append(
            base.transform_filter(alt.datum.mark == "line")
            .mark_line(color="black", strokeWidth=1.2)
            .encode(x=x, y="value:Q", tooltip=["model:N", "task:N", "series:N", "layer:O", alt.Tooltip("value:Q", format=".4f")])
        )
    return alt.layer(*layers).properties(width=width, height=height)


def n_layers_max(table: pl.DataFrame, column: str = "layer") -> int:
    """1 + the largest value of ``column`` (the number of layer positions an axis needs); 1 when empty."""
    return int(table[column].max()) + 1 if table.height else 1


def select_task(data: pl.DataFrame, ctx: Context, analysis: str, by_task: bool) -> tuple[pl.DataFrame, str]:
    """(rows, label for the title): every task when ``by_task``, else the rows of ``primary_task``
    (which raises ``IndexError`` on rows without any task)."""
    if by_task:
        return data, "all tasks"
    task = primary_task(data, ctx, analysis)
    return data.filter(pl.col("task") == task), f"task {task}"


def n_layers_of(tables: Tables) -> pl.DataFrame:
    """model -> L, from the ``n_layers`` column every analysis table carries."""
    frames = [t.select("model", pl.col("n_layers").cast(pl.Int32)) for t in tables.values() if "n_layers" in t.columns]
    if not frames:
        return pl.DataFrame(schema={"model": pl.Utf8, "n_layers": pl.Int32})
    return pl.concat(frames).unique("model", keep="first", maintain_order=True)


def jitter(frame: pl.DataFrame, column: str, by: str, order: list[str], step: float, log: bool = False) -> pl.DataFrame:
    """``x``: ``column`` shifted a little per value of ``by`` so estimates at the same position do not
    hide each other's intervals (multiplicatively on a log axis); the tooltip keeps ``column``."""
    n = max(1, len(order))
    shift = pl.col(by).replace_strict(
        {v: (i - (n - 1) / 2) * step for i, v in enumerate(order)}, default=0.0, return_dtype=pl.Float64
    )
    return frame.with_columns(x=pl.col(column) * shift.exp() if log else pl.col(column) + shift)


def interval_layers(
    base: alt.Chart,
    x: alt.X,
    color: alt.Color,
    tooltip: list[Any],
    shape: alt.Shape | None = None,
    x_offset: alt.XOffset | None = None,
    line_detail: list[str] | None = None,
) -> list[alt.Chart]:
    """An estimate (``value``) with its interval (``low``–``high``): optional connecting line, error
    bar, point."""
    offset = {"xOffset": x_offset} if x_offset is not None else {}
    layers = []
    if line_detail:
        layers.append(base.mark_line(strokeWidth=1, opacity=0.5).encode(x=x, y="value:Q", color=color, detail=line_detail))
    layers.append(base.mark_rule(strokeWidth=1.5, opacity=0.6).encode(x=x, y="low:Q", y2="high:Q", color=color, **offset))
    layers.append(
        base.mark_point(filled=True, size=45).encode(
            x=x,
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format=".3~g")),
            color=color,
            tooltip=tooltip,
            **({"shape": shape} if shape is not None else {}),
            **offset,
        )
    )
    return layers
