"""A finished run's console and its Snakemake report: the run ends by naming all.pdf and the
effective-depth table with the headline numbers; `snakemake --report` holds every figure and table
of the run, each with its caption, and every caption renders without a reStructuredText error."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import polars as pl
import pytest

from .conftest import REPO, planned_outputs, snakemake

pytestmark = pytest.mark.workflow

REPORTED_TABLES = ["results/tables/effective_depth.csv", "results/tables/effective_depth_reference.csv"]
ERRATA_TABLE = "results/tables/errata.csv"  # reported when an analysis runs under several variants
TABLE_CAPTIONS = {
    "effective_depth": "effective_depth",
    "effective_depth_reference": "effective_depth_reference",
    "errata": "errata_table",
}


def _plain(rst: str) -> str:
    """The first sentence-ish of a caption file as words (markup and jinja dropped), to find it in the HTML."""
    text = re.sub(r"\{\{.*?\}\}", " ", rst)
    text = re.sub(r"[*`]", "", text)
    return " ".join(text.split())


def test_a_finished_run_says_what_it_found(finished_run):
    """The console (default profile) ends with all.pdf's path and the headline estimate of every
    model × task with its interval, and shows no job blocks."""
    console = (finished_run / "console.txt").read_text()
    lines = console.splitlines()
    at = next(i for i, line in enumerate(lines) if "every figure is in results/figures/all.pdf" in line)
    tail = "\n".join(lines[at:])
    assert "results/tables/effective_depth.csv" in tail
    ed = pl.read_parquet(finished_run / "results/tables/effective_depth.parquet")
    for model, task in ed.select("model", "task").unique().iter_rows():
        assert re.search(rf"{re.escape(model)} \(L = \d+\)\s+{re.escape(task)}\s+\d", tail), (model, task, tail)
    assert re.search(r"\d+ \[\d+(\.\d+)?–\d+(\.\d+)?\]", tail), tail
    assert not re.search(r"^\s*(local)?rule \w+:", console, re.M), "job blocks in the default console"
    assert len(lines) - at < 20, tail


def test_report_holds_every_figure_and_table_with_its_caption(finished_run, tmp_path):
    report = tmp_path / "report.zip"
    result = snakemake(finished_run, "--configfile", str(finished_run / "config.yaml"), "--report", str(report))
    messages = result.stdout + result.stderr
    assert not re.search(r"\((ERROR|WARNING|SEVERE)/\d\)", messages), messages[-3000:]
    with zipfile.ZipFile(report) as archive:
        html = archive.read("report/report.html").decode()
        files = {Path(n).name for n in archive.namelist() if "/data/raw/" in n}
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S).group(1))
    figures = finished_run / "results" / "figures"
    expected = sorted(str(p.relative_to(finished_run)) for p in figures.rglob("*.pdf") if p.name != "all.pdf")
    planned, profiles = planned_outputs(finished_run / "config.yaml")  # every figure the config plans, a profile per model
    planned_pdfs = [*(f"results/figures/{f}.pdf" for f in planned), *(f"results/figures/models/{m}.pdf" for m in profiles)]
    assert expected == sorted(planned_pdfs)
    errata = [ERRATA_TABLE] if "errata" in planned else []  # the shared run has both variants
    assert errata, planned
    assert sorted(results) == sorted([*expected, *REPORTED_TABLES, *errata])
    for path, entry in results.items():
        assert Path(path).name in files, path
        assert entry["labels"], path
        name = "model_profile" if "/models/" in path else Path(path).stem
        if path.endswith(".csv"):
            name = TABLE_CAPTIONS[name]
        caption = _plain((REPO / "workflow" / "report" / f"{name}.rst").read_text())
        shown = " ".join(re.sub(r"<[^>]+>", "", entry["caption"]).split())
        shown = shown.replace("&quot;", '"').replace("&#8217;", "'").replace("&amp;", "&")
        assert caption[:40] in shown, (path, caption[:40], shown[:200])
        assert "problematic" not in entry["caption"] and "system-message" not in entry["caption"], path
