"""The look of every figure: the registered altair theme ``effdepth`` (fonts that vl-convert can draw),
title and layer-axis helpers, and ``message_chart`` for pages that say something in words.

Importing this module registers and enables the theme and lifts altair's 5000-row guard.
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import polars as pl

THEME = "effdepth"
# vl-convert draws text only in installed fonts: with a single missing family (Helvetica on most
# Linux machines) every label silently disappears from the PDF/SVG.
FONT = "Helvetica, Arial, 'DejaVu Sans', 'Liberation Sans', sans-serif"
TITLE_SIZE, SUBTITLE_SIZE = 14, 10


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
                "fontSize": TITLE_SIZE,
                "anchor": "start",
                "font": FONT,
                "subtitleFontSize": SUBTITLE_SIZE,
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


# Advance widths (em) of DejaVu Sans, the font vl-convert falls back to where Helvetica and Arial are
# missing (the widest of the families in FONT); characters not listed count as ``_WIDE``.
_EM = {
    **dict.fromkeys("0123456789", 0.636),
    **dict.fromkeys(" .,:;'|!", 0.34),
    **dict.fromkeys("ijlft()[]{}", 0.4),
    **dict.fromkeys("–-_", 0.5),
    **dict.fromkeys("·", 0.32),
    **dict.fromkeys("abcdeghknopqrsuvxyz", 0.63),
    **dict.fromkeys("→+−=<>×÷≈", 0.84),
    **dict.fromkeys("mwMW", 1.0),
}
_WIDE = 0.78
PAGE_WIDTH = 760  # px: the width figures fill and their titles wrap at (a page of all.pdf)


def text_width(text: str, font_size: float, bold: bool = False) -> float:
    """An upper estimate of the width in px of ``text`` drawn at ``font_size`` (px) in the theme's font
    (DejaVu Sans metrics, the widest of ``FONT``); bold adds 10 %."""
    width = sum(_EM.get(ch, _WIDE) for ch in text) * font_size
    return width * 1.1 if bold else width


def cell_width(texts: list[str], font_size: float, minimum: int) -> int:
    """Width in px of a table column whose cells hold ``texts``: the widest text plus a margin, at
    least ``minimum``."""
    return max([minimum, *(math.ceil(text_width(t, font_size)) + 12 for t in texts)])


def wrap_px(text: str, px: float, font_size: float) -> list[str]:
    """``text`` wrapped at word boundaries into lines at most ``px`` wide at ``font_size``."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", font_size) <= px:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def chart_title(text: str, *subtitle: str, width: float = PAGE_WIDTH) -> alt.TitleParams:
    """Title and subtitle lines wrapped to ``width`` px (``PAGE_WIDTH``; a chart passes its own width
    when wider), so neither widens the page past the chart nor runs off it."""
    lines = [line for s in subtitle if s for line in wrap_px(s, width, SUBTITLE_SIZE)]
    title = wrap_px(text, width, TITLE_SIZE * 1.1)  # the title is bold
    return alt.TitleParams(text=title if len(title) > 1 else text, subtitle=lines)


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
