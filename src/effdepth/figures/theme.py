"""The look of every figure: the registered altair theme ``effdepth`` (fonts that vl-convert can draw),
title and layer-axis helpers, and ``message_chart`` for pages that say something in words.

Importing this module registers and enables the theme and lifts altair's 5000-row guard.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import altair as alt
import polars as pl

THEME = "effdepth"
# vl-convert draws text only in installed fonts: with a single missing family (Helvetica on most
# Linux machines) every label silently disappears from the PDF/SVG.
FONT = "Helvetica, Arial, 'DejaVu Sans', 'Liberation Sans', sans-serif"


@alt.theme.register(THEME, enable=True)
def _theme() -> alt.theme.ThemeConfig:
    return {
        "config": {
            "font": FONT,
            "view": {"stroke": "#dddddd"},
            "axis": {"labelFontSize": 9, "titleFontSize": 10, "grid": False, "labelFont": FONT, "titleFont": FONT},
            "header": {"labelFontSize": 10, "titleFontSize": 11, "labelFont": FONT, "titleFont": FONT, "labelFontWeight": "bold"},
            "legend": {"labelFontSize": 9, "titleFontSize": 10, "labelFont": FONT, "titleFont": FONT},
            "title": {
                "fontSize": 14,
                "anchor": "start",
                "font": FONT,
                "subtitleFontSize": 10,
                "subtitleColor": "#555555",
                "subtitleFont": FONT,
            },
            "text": {"font": FONT},
            "range": {"category": {"scheme": "tableau10"}},
        }
    }


# Frames are aggregated before plotting; a 12-model heatmap grid still has ~10⁵ cells, above altair's
# default guard of 5000 rows (which exists for unaggregated notebook data).
alt.data_transformers.enable("default", max_rows=None)


Tables = dict[str, pl.DataFrame]
Context = dict[str, Any]


def chart_title(text: str, *subtitle: str, width: int = 130) -> alt.TitleParams:
    """Title with subtitle lines wrapped at ``width`` characters (long lines would run off the page)."""
    lines = [line for s in subtitle if s for line in textwrap.wrap(s, width)]
    return alt.TitleParams(text=text, subtitle=lines)


def layer_axis(title: str, n_max: int) -> alt.Axis:
    """Ordinal layer axis that labels every k-th layer so 64 layers stay readable."""
    step = max(1, math.ceil(n_max / 8))
    expr = "datum.label" if step == 1 else f"datum.value % {step} == 0 ? datum.label : ''"
    return alt.Axis(title=title, labelExpr=expr, labelAngle=0, ticks=step == 1)


def message_chart(title: str, lines: list[str], subtitle: str = "") -> alt.Chart:
    """A page that says something in words (a figure with nothing to show, or a table of contents)."""
    data = pl.DataFrame({"y": list(range(len(lines))), "text": lines})
    return (
        alt.Chart(data)
        .mark_text(align="left", baseline="top", fontSize=11)
        .encode(y=alt.Y("y:O", axis=None), x=alt.value(0), text="text:N")
        .properties(width=720, height=max(18, 18 * len(lines)), title=chart_title(title, subtitle))
        .configure_view(stroke=None)
    )
