"""What a finished run prints last: where all.pdf and the effective-depth table are, and the headline
estimates per model × task with their 95 % intervals, rounded as the errata page rounds them."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .errata import interval_text
from .layout import models_in, tasks_in
from .output import shown_variants
from .summaries import HEADLINE, _ed_label
from .theme import Context


def headline_lines(ed: pl.DataFrame, ctx: Context) -> list[str]:
    """A fixed-width table of the headline estimators (``HEADLINE``), one line per model × task with
    an estimate: 'ED [low–high]' per estimator, '—' without a solution, blank where the estimator's
    analysis did not run on the task; the shown variant's rows (``shown_variants``).  No lines for
    a table without headline rows."""
    ed = _ed_label(shown_variants({"effective_depth": ed}, ctx)["effective_depth"]).filter(pl.col("label").is_in(HEADLINE))
    if ed.height == 0:
        return []
    labels = [label for label in HEADLINE if label in set(ed["label"].to_list())]
    cells = {
        (m, t, label): interval_text(e, lo, hi) if e is not None else "—"
        for m, t, label, e, lo, hi in ed.select("model", "task", "label", "ed", "ci_low", "ci_high").iter_rows()
    }
    layers = dict(ed.select("model", "n_layers").unique("model", keep="first").iter_rows())
    rows = [
        [f"{m} (L = {layers[m]})", t, *[cells.get((m, t, label), "") for label in labels]]
        for m in models_in(ctx, ed)
        for t in tasks_in(ctx, ed)
        if any((m, t, label) in cells for label in labels)
    ]
    header = ["model", "task", *labels]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def run_summary(all_pdf: str, ed_csv: str | None, ed_parquet: str | None, ctx: Context) -> list[str]:
    """The lines a finished run ends with: all.pdf's path (when it exists), the effective-depth CSV's
    path and the headline table (``headline_lines``) read from ``ed_parquet`` (when it exists)."""
    lines = []
    if Path(all_pdf).is_file():
        lines.append(f"effdepth: every figure is in {all_pdf}")
    if ed_parquet and Path(ed_parquet).is_file():
        table = headline_lines(pl.read_parquet(ed_parquet), ctx)
        if table:
            lines.append(f"effdepth: effective depth (layer index) [95 % bootstrap interval], all estimators in {ed_csv}:")
            lines += [f"  {line}" for line in table]
    return lines
