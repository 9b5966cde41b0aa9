"""The errata page: each estimate under the correct and the published variant, one defect at a time,
and whether each of the paper's conclusions holds under both (``effdepth.errata``)."""

from __future__ import annotations

import math

import altair as alt
import polars as pl

from .layout import models_in
from .summaries import ESTIMATOR_LABELS
from .theme import Context, Tables, cell_width, chart_title, message_chart

CELL_FONT = 9


def decimals(values: list[float | None], low: float | None, high: float | None) -> int:
    """Decimals an estimate and its interval support: none when every value is a whole layer,
    else down to the interval width's first significant digit (0.3 → 1, 0.04 → 2), 2 without an
    interval, at most 3."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if all(float(v).is_integer() for v in present):
        return 0
    width = abs(high - low) if low is not None and high is not None else 0.0
    if not width or not math.isfinite(width):
        return 2
    return max(0, min(3, -math.floor(math.log10(width))))


def interval_text(ed: float | None, low: float | None, high: float | None) -> str:
    """'ED [low–high]' rounded to what the interval supports (``decimals``); '–' without an estimate."""
    if ed is None:
        return "–"
    d = decimals([ed, low, high], low, high)
    if low is None or high is None:
        return f"{ed:.{d}f}"
    return f"{ed:.{d}f} [{low:.{d}f}–{high:.{d}f}]"


def _column(estimator: str, form: str, aggregation: str | None) -> str:
    """The column of an errata row: the estimator's label (``ESTIMATOR_LABELS``), with its aggregation
    when that is not the labelled one (the skip scores come as mean and max: one column each, so no
    two rows share a cell)."""
    if (estimator, form, aggregation) in ESTIMATOR_LABELS:
        return ESTIMATOR_LABELS[(estimator, form, aggregation)]
    label = next((v for (e, f, _), v in ESTIMATOR_LABELS.items() if (e, f) == (estimator, form)), f"{estimator}/{form}")
    return f"{label} ({aggregation})" if aggregation else label


def errata_chart(tables: Tables, ctx: Context) -> alt.TopLevelMixin:
    """Rows model × task, columns estimator (and the erasure / IG peak layers): "correct → published"
    with both intervals, coloured by whether the intervals overlap; the subtitle carries the generated
    verdict of each paper question under both variants."""
    errata = tables["errata"]
    verdicts = tables.get("errata_questions", pl.DataFrame())
    sentences = verdicts.filter(pl.col("variant") == "both")["sentence"].to_list() if verdicts.height else []
    if errata.height == 0:
        return message_chart(
            "Errata of the published code",
            ["No analysis ran under both variants (set e.g. `variants: [correct, published]`)."],
        )
    data = errata.with_columns(
        column=pl.Series([_column(*key) for key in errata.select("estimator", "form", "aggregation").iter_rows()], dtype=pl.Utf8),
        row=pl.concat_str([pl.col("model"), pl.lit(" · "), pl.col("task")]),
        text=pl.Series(
            [
                f"{interval_text(c, cl, ch)} → {interval_text(p, pl_, ph)}"
                for c, cl, ch, p, pl_, ph in errata.select(
                    "ed_correct", "ci_low_correct", "ci_high_correct", "ed_published", "ci_low_published", "ci_high_published"
                ).iter_rows()
            ],
            dtype=pl.Utf8,
        ),
        agreement=pl.when(pl.col("intervals_overlap").is_null())
        .then(pl.lit("no interval comparison"))
        .when(pl.col("intervals_overlap"))
        .then(pl.lit("intervals overlap"))
        .otherwise(pl.lit("intervals disjoint: the defect moves the number")),
    )
    rows = [
        f"{m} · {t}" for m in models_in(ctx, data) for t in data.filter(pl.col("model") == m)["task"].unique(maintain_order=True)
    ]
    columns = data["column"].unique(maintain_order=True).to_list()
    base = alt.Chart(data).encode(
        x=alt.X("column:N", sort=columns, title=None, axis=alt.Axis(orient="top", labelAngle=0, labelLimit=140)),
        y=alt.Y("row:N", sort=rows, title=None, axis=alt.Axis(labelLimit=260)),
        tooltip=["model:N", "task:N", "defect:N", "text:N", "ed_difference:Q", "ratio_difference:Q", "map_correlation:Q"],
    )
    color = alt.Color(
        "agreement:N",
        scale=alt.Scale(
            domain=["intervals overlap", "intervals disjoint: the defect moves the number", "no interval comparison"],
            range=["#e8f1e4", "#f6d5d1", "#eeeeee"],
        ),
        legend=alt.Legend(orient="bottom", title=None, labelLimit=400),
    )
    # every cell as wide as its longest text (a cell narrower than its text overlaps its neighbours)
    cell = cell_width(data["text"].to_list(), CELL_FONT, 150)
    chart = alt.layer(
        base.mark_rect().encode(color=color),
        base.mark_text(fontSize=CELL_FONT).encode(text="text:N"),
    ).properties(width=max(400, cell * len(columns)), height=max(60, 20 * len(rows)))
    subtitle = [
        "Each cell: ED [95 % interval] under the correct variant → under the published one, rounded to what the "
        "interval supports (whole layers, else the interval width's first digit); each column switches "
        "one defect of the public code (its analysis's published variant); erasure / IG: the layer where the map peaks.",
        *sentences,
    ]
    return chart.properties(
        title=chart_title(
            "Errata: how each defect of the published code moves the effective depth",
            *subtitle,
            width=max(600, cell * len(columns)),
        )
    )
