"""Figures: one registered altair theme, charts built from aggregated tidy tables, PDF merging.

Charts receive small frames (aggregate first, plot second) and are saved as PDF, SVG and a
self-contained HTML.  ``FIGURES`` maps each figure name to (tables it reads, builder).
"""

from __future__ import annotations

import datetime as _dt
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from . import __version__

THEME = "effdepth"


@alt.theme.register(THEME, enable=True)
def _theme() -> alt.theme.ThemeConfig:
    return {
        "config": {
            "font": "Helvetica",
            "view": {"stroke": None},
            "axis": {"labelFontSize": 9, "titleFontSize": 10, "grid": False},
            "header": {"labelFontSize": 10, "titleFontSize": 11},
            "legend": {"labelFontSize": 9, "titleFontSize": 10},
            "title": {"fontSize": 13, "anchor": "start"},
        }
    }


def _headline(table: pl.DataFrame) -> pl.DataFrame:
    """Rows aggregating all prompts (prompt is null)."""
    return table.filter(pl.col("prompt").is_null())


def _facet(chart: alt.Chart, columns: int, field: str = "model") -> alt.FacetChart:
    return chart.facet(facet=alt.Facet(f"{field}:N", title=None), columns=columns)


def cosine_chart(table: pl.DataFrame, options: dict[str, Any]) -> alt.TopLevelMixin:
    """F1: per-layer cosine of attention, MLP and layer contributions with the residual (all tasks)."""
    data = _headline(table).filter(pl.col("metric").str.starts_with("cos_")).select("model", "task", "metric", "layer", "value")
    base = alt.Chart(data).mark_bar().encode(
        x=alt.X("layer:O", title="layer"),
        y=alt.Y("value:Q", title="cosine with residual"),
        color=alt.Color("metric:N", title="sublayer"),
        xOffset="metric:N",
        tooltip=["model:N", "task:N", "metric:N", "layer:O", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=options["width"], height=options["height"])
    return base.facet(row=alt.Row("task:N"), column=alt.Column("model:N")).properties(
        title="F1 · Cosine between each layer's contribution and the residual stream"
    )


def relative_contribution_chart(table: pl.DataFrame, options: dict[str, Any]) -> alt.TopLevelMixin:
    data = _headline(table).filter(pl.col("metric").str.starts_with("rc_")).select("model", "task", "metric", "layer", "value")
    base = alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer"),
        y=alt.Y("value:Q", title="‖contribution‖ / ‖residual‖"),
        color=alt.Color("metric:N", title="sublayer"),
    ).properties(width=options["width"], height=options["height"])
    return base.facet(row=alt.Row("task:N"), column=alt.Column("model:N")).properties(
        title="Relative contribution of each layer to the residual stream"
    )


FIGURES: dict[str, tuple[list[str], Callable[[pl.DataFrame, dict[str, Any]], alt.TopLevelMixin]]] = {
    "cosine": (["relative_contribution"], cosine_chart),
    "relative_contribution": (["relative_contribution"], relative_contribution_chart),
}


def available_figures(analyses: list[str]) -> list[str]:
    """Figures whose tables are all produced by the configured analyses, in the stable order."""
    return [name for name, (needs, _) in FIGURES.items() if all(a in analyses for a in needs)]


def save_chart(chart: alt.TopLevelMixin, pdf: str, svg: str, html: str) -> None:
    import vl_convert as vlc

    spec = chart.to_dict()
    Path(pdf).parent.mkdir(parents=True, exist_ok=True)
    Path(pdf).write_bytes(vlc.vegalite_to_pdf(spec))
    Path(svg).write_text(vlc.vegalite_to_svg(spec))
    chart.save(html, inline=True)


def build_figure(name: str, tables: list[str], options: dict[str, Any], pdf: str, svg: str, html: str) -> None:
    needs, builder = FIGURES[name]
    table = pl.concat([pl.read_parquet(t) for t in tables], how="diagonal_relaxed")
    save_chart(builder(table, options), pdf, svg, html)


def title_page(info: dict[str, Any]) -> bytes:
    """A one-page PDF with the experiment's provenance."""
    import vl_convert as vlc

    lines = [
        f"config: {info.get('config_hash', '?')}",
        f"models ({len(info['models'])}): " + ", ".join(info["models"]),
        f"tasks ({len(info['tasks'])}): " + ", ".join(info["tasks"]),
        "variants: " + ", ".join(f"{k}={v}" for k, v in info.get("variants", {}).items()),
        f"effdepth {__version__} · {_dt.date.today().isoformat()}",
    ]
    wrapped: list[str] = []
    for line in lines:
        while len(line) > 110:
            wrapped.append(line[:110])
            line = "    " + line[110:]
        wrapped.append(line)
    data = pl.DataFrame({"y": list(range(len(wrapped))), "text": wrapped})
    chart = alt.Chart(data).mark_text(align="left", fontSize=11).encode(
        y=alt.Y("y:O", axis=None), text="text:N"
    ).properties(width=700, height=18 * len(wrapped), title=f"Effective depth · {info.get('name', 'experiment')}")
    return vlc.vegalite_to_pdf(chart.to_dict())


def merge_pdfs(title: bytes, pdfs: list[str], output: str) -> None:
    """Title page followed by every figure PDF, in the given order."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(title)).pages:
        writer.add_page(page)
    for path in pdfs:
        reader = PdfReader(path)
        for page in reader.pages:
            writer.add_page(page)
        writer.add_outline_item(Path(path).stem, len(writer.pages) - len(reader.pages))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as fh:
        writer.write(fh)
