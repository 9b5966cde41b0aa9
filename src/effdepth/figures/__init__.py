"""Figures: one registered altair theme, every figure of the paper, effective-depth summaries, PDF merging.

Each figure is a ``Figure`` in the ordered registry ``FIGURES`` (the order of all.pdf): the tables it
reads (aggregated analyses, the effective-depth tables), the token tables that label heatmap axes,
and a builder ``(tables, context) -> chart``.  Builders aggregate with polars first and hand altair
small frames; grids facet over every configured model (``figures.columns`` panels a row) with
shared scales where values are comparable across models and per-panel scales where not.  The same
tables give the same spec whatever the order of their rows (``build_chart`` sorts them first).

``context`` carries what a figure needs from the config: ``figures`` (width, height, columns),
``models`` (size_b, family, training, base_model), ``tasks`` (source, difficulty, digits),
``analyses`` (tasks, variant, kinds) and ``effective_depth`` (thresholds) — see
``figure_context``.  Every chart is saved as PDF and, on request, SVG and a self-contained HTML;
``render_figures`` renders a whole run's figures and all.pdf in one process; the caller (the
workflow) names every path.

Modules: ``theme`` (altair theme, titles, message pages), ``layout`` (facets, ordering, bars,
intervals), ``paper`` (F1–F12), ``extra`` (further analyses), ``summaries`` (T1, Q1–Q3), ``checks``
(threshold sweep, comparison with the paper), ``profile`` (per-model page, ``PROFILE``), ``registry`` (``FIGURES`` and what
the workflow asks of it), ``output`` (building, saving, all.pdf).
"""

from .output import (
    FORMATS,
    all_pdf,
    build_chart,
    merge_pdfs,
    output_key,
    page_title,
    render_figures,
    save_chart,
    title_page,
)
from .profile import model_profile_chart
from .registry import (
    ED_CAT,
    ED_TABLES,
    FIGURE_BY_NAME,
    FIGURES,
    PROFILE,
    PROFILE_CATEGORY,
    Figure,
    available_figures,
    figure_context,
    figure_title,
    report_options,
)
from .summaries import ESTIMATOR_LABELS, HEADLINE, q2_pairs
from .theme import FONT, THEME, Context, Tables, message_chart

__all__ = [
    "ED_CAT",
    "ED_TABLES",
    "FORMATS",
    "ESTIMATOR_LABELS",
    "FIGURES",
    "FIGURE_BY_NAME",
    "FONT",
    "HEADLINE",
    "PROFILE",
    "PROFILE_CATEGORY",
    "THEME",
    "Context",
    "Figure",
    "Tables",
    "all_pdf",
    "available_figures",
    "build_chart",
    "figure_context",
    "figure_title",
    "merge_pdfs",
    "message_chart",
    "model_profile_chart",
    "output_key",
    "page_title",
    "q2_pairs",
    "render_figures",
    "report_options",
    "save_chart",
    "title_page",
]
