"""Building a figure by name (the profile: for a model), saving it (PDF; SVG and self-contained HTML
on request), rendering every figure of a run in one process from its named tables
(``render_figures``) and assembling all.pdf (a title page with provenance and contents, then every
figure with an outline entry).  Every path comes from the caller: the workflow owns the layout of
results/.
"""

from __future__ import annotations

import datetime as _dt
import io
import re
import textwrap
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from .. import __version__
from ..depth import ESTIMATOR_ANALYSIS
from .layout import canonical
from .profile import model_profile_chart
from .registry import FIGURE_BY_NAME, PROFILE, figure_title
from .theme import Context, Tables, message_chart


def build_chart(name: str, tables: Tables, ctx: Context, model: str | None = None) -> alt.TopLevelMixin:
    """Figure ``name`` (a ``FIGURES`` name, or ``PROFILE`` with ``model``: that model's effective-depth
    profile) from ``tables`` (table name, an analysis or effective_depth*, plus ``tokens`` -> frame)
    and the figure context (``figure_context``).

    The tables are put in a canonical row order first, so the same tables give the same spec (and
    byte-identical SVG / HTML) whatever order their rows come in.  Raises ``ValueError`` for the
    profile without a model or another figure with one, ``KeyError`` for an unknown figure name or
    when a table the figure declares is missing, and ``KeyError`` / ``TypeError`` when
    ``ctx["effective_depth"]`` lacks a threshold a figure draws.
    """
    if name == PROFILE and model is None:
        raise ValueError(f"figure {PROFILE} is drawn for one model: give model=")
    if name != PROFILE and model is not None:
        raise ValueError(f"figure {name} is drawn for every model: model= is for figure {PROFILE} only")
    if not (name in FIGURE_BY_NAME and FIGURE_BY_NAME[name].every_variant):
        tables = shown_variants(tables, ctx)
    tables = {key: canonical(table) for key, table in tables.items()}
    if model is not None:
        return model_profile_chart(tables, ctx, model)
    return FIGURE_BY_NAME[name].builder(tables, ctx)


def page_title(name: str, model: str | None = None) -> str:
    """The title of figure ``name`` (the profile: of ``model``) in all.pdf's contents and outline."""
    return f"Effective-depth profile · {model}" if model is not None else figure_title(name)


def shown_variants(tables: Tables, ctx: Context) -> Tables:
    """Only the rows of the variant each analysis is shown in (``analyses.<a>.variant``, the first of
    its ``variants``): an analysis table's own rows, and the effective-depth tables' estimates of
    the estimators that read it (``effdepth.depth.ESTIMATOR_ANALYSIS``).  Tables without a variant
    column pass unchanged."""
    shown = {a: o.get("variant") for a, o in ctx.get("analyses", {}).items()}
    out: Tables = {}
    for key, table in tables.items():
        if "variant" not in table.columns or not table.height:
            out[key] = table
        elif key in shown:
            out[key] = table.filter(pl.col("variant") == shown[key])
        elif "estimator" in table.columns:
            wanted = pl.col("estimator").replace_strict(
                {e: shown.get(a) for e, a in ESTIMATOR_ANALYSIS.items()}, default=None, return_dtype=pl.Utf8
            )
            out[key] = table.filter((pl.col("variant") == wanted) | wanted.is_null())
        else:
            out[key] = table
    return out


_GRADIENT_ID = re.compile(r"\bgradient_(\d+)\b")


def stable_svg(svg: str) -> str:
    """``svg`` with vl-convert's gradient ids (``gradient_<n>``, numbered by a counter that lives as long
    as the process) renumbered 0, 1, … in order of first appearance."""
    ids: dict[str, int] = {}
    return _GRADIENT_ID.sub(lambda m: f"gradient_{ids.setdefault(m.group(1), len(ids))}", svg)


def _sort_dictionaries(obj: Any, seen: set[tuple[int, int]]) -> None:
    """Put the entries of every PDF dictionary reachable from ``obj`` in key order, in place."""
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    if isinstance(obj, IndirectObject):
        if (obj.idnum, obj.generation) not in seen:
            seen.add((obj.idnum, obj.generation))
            _sort_dictionaries(obj.get_object(), seen)
    elif isinstance(obj, DictionaryObject):
        items = sorted(obj.items())
        obj.clear()
        for key, value in items:
            obj[key] = value
            _sort_dictionaries(value, seen)
    elif isinstance(obj, ArrayObject):
        for value in obj:
            _sort_dictionaries(value, seen)


def stable_pdf(data: bytes) -> bytes:
    """``data`` (a PDF) rewritten with every dictionary of its pages in key order: vl-convert writes a
    page's font resources in an order that changes from process to process, so the same chart gave
    different bytes (and reran whatever depends on it)."""
    from pypdf import PdfReader, PdfWriter

    reader = PdfReader(io.BytesIO(data))
    seen: set[tuple[int, int]] = set()
    for page in reader.pages:
        _sort_dictionaries(page, seen)
    out = io.BytesIO()
    PdfWriter(clone_from=reader).write(out)
    return out.getvalue()


def save_chart(chart: alt.TopLevelMixin, pdf: str, svg: str | None = None, html: str | None = None) -> None:
    """Save ``chart`` to the paths ``pdf`` and, when given, ``svg`` and ``html`` (self-contained,
    inline scripts), creating their folders.  The SVG's gradient ids are renumbered (``stable_svg``) and the PDF's
    dictionaries put in key order (``stable_pdf``), so one chart gives the same bytes whatever was
    rendered before it, in any process.  Raises altair's
    ``SchemaValidationError`` for a spec that does not validate against the Vega-Lite schema, and
    vl-convert's ``ValueError`` when it cannot render."""
    import vl_convert as vlc

    spec = chart.to_dict()  # validates against the Vega-Lite schema
    for path in (pdf, svg, html):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(pdf).write_bytes(stable_pdf(vlc.vegalite_to_pdf(spec)))
    if svg:
        Path(svg).write_text(stable_svg(vlc.vegalite_to_svg(spec)))
    if html:
        chart.save(html, inline=True)


FORMATS = ("pdf", "svg", "html")


def output_key(figure: str, ext: str = "pdf", model: str | None = None) -> str:
    """The name of a figure's output in the workflow's figures rule: the figure's name (the profile of
    ``model``: ``profile/<model>``), then ``.svg`` / ``.html`` for the other formats."""
    key = f"{figure}/{model}" if model is not None else figure
    return key if ext == "pdf" else f"{key}.{ext}"


def render_figures(
    tables: dict[str, str],
    tokens: dict[str, list[str]],
    ctx: Context,
    figures: list[str],
    models: list[str],
    outputs: dict[str, str],
    info: dict[str, Any] | None = None,
) -> list[tuple[str, float]]:
    """Render every figure of ``figures`` and the profile of every model of ``models`` in this process,
    then all.pdf: each table is read once, each chart built and saved once.

    ``tables``: table name (an analysis, effective_depth, errata, …) -> parquet path, every table a
    figure of ``figures`` declares (``Figure.tables``) and, with ``models``, the effective-depth inputs
    present and ``effective_depth``; ``tokens``: analysis -> its token tables (``Figure.tokens``);
    ``outputs``: ``output_key`` -> path; a figure is written as PDF and as each other format
    (``FORMATS``) whose key is in ``outputs``; ``outputs["all"]``, when present, gets all.pdf with
    the title page from ``info`` (``all_pdf``).  Returns (output key, seconds) per figure rendered
    (a profile: ``profile/<model>``).
    Raises ``KeyError`` for a declared table or an output missing, and what ``build_chart`` and
    ``save_chart`` raise, with a note naming the figure."""
    import logging
    import time

    from ..depth import ED_ANALYSES

    log = logging.getLogger("effdepth.figures")
    frames = {name: pl.read_parquet(path) for name, path in tables.items()}
    token_frames = {
        a: pl.concat([pl.read_parquet(p) for p in paths], how="diagonal_relaxed") for a, paths in tokens.items() if paths
    }
    jobs: list[tuple[str, str | None, Tables]] = []
    for name in figures:
        fig = FIGURE_BY_NAME[name]
        missing = [t for t in fig.tables if t not in frames]
        if missing:
            raise KeyError(f"figure {name}: its tables {', '.join(missing)} are not among the inputs")
        declared = {t: frames[t] for t in (*fig.tables, *fig.optional) if t in frames}
        if fig.tokens and fig.tokens in token_frames:
            declared["tokens"] = token_frames[fig.tokens]
        jobs.append((name, None, declared))
    profile_tables = {t: frames[t] for t in (*ED_ANALYSES, "effective_depth") if t in frames}
    jobs += [(PROFILE, m, profile_tables) for m in models]
    timings, pdfs, titles = [], [], []
    for name, model, declared in jobs:
        start = time.perf_counter()
        key = output_key(name, model=model)
        try:
            chart = build_chart(name, declared, ctx, model=model)
            extra = {ext: outputs.get(output_key(name, ext, model)) for ext in FORMATS[1:]}
            save_chart(chart, outputs[key], **extra)
        except Exception as err:
            err.add_note(f"while rendering figure {key} ({outputs.get(key, key)})")
            raise
        pdfs.append(outputs[key])
        titles.append(page_title(name, model))
        timings.append((key, time.perf_counter() - start))
        log.info(f"figure {key}: {timings[-1][1]:.1f} s -> {outputs[key]}")
    if "all" in outputs:
        all_pdf(info or {"models": models, "tasks": list(ctx.get("tasks", {}))}, pdfs, outputs["all"], titles)
        log.info(f"all.pdf: {len(pdfs)} figures -> {outputs['all']}")
    return timings


def title_page(info: dict[str, Any], contents: list[tuple[int, str]] | None = None) -> bytes:
    """A one-page PDF with the experiment's provenance and, when given, the contents (page, title).

    ``info``: name, config_hash, variants, effective_depth (optional) and models, tasks (required:
    ``KeyError`` without them)."""
    import vl_convert as vlc

    lines = [
        f"config: {info.get('config_hash', '?')}",
        f"models ({len(info['models'])}): " + ", ".join(info["models"]),
        f"tasks ({len(info['tasks'])}): " + ", ".join(info["tasks"]),
        "variants: " + ", ".join(f"{k}={v}" for k, v in info.get("variants", {}).items()),
        *([f"effective depth: {info['effective_depth']}"] if info.get("effective_depth") else []),
        f"effdepth {__version__} · {_dt.date.today().isoformat()}",
    ]
    if contents:
        lines += ["", "Contents"] + [f"  p. {page:>3}   {title}" for page, title in contents]
    # at word boundaries (after ", " too), continuation lines indented
    wrapped = [part for line in lines for part in textwrap.wrap(line, 110, subsequent_indent="    ") or [""]]
    chart = message_chart(f"Effective depth · {info.get('name', 'experiment')}", wrapped)
    return vlc.vegalite_to_pdf(chart.to_dict())


def merge_pdfs(title: bytes, pdfs: list[str], output: str, titles: list[str] | None = None) -> None:
    """Write to ``output`` the ``title`` page (PDF bytes) followed by every PDF of ``pdfs``, in the given
    order, with an outline entry each (``titles``, else the file stems).  Raises ``FileNotFoundError``
    for a missing PDF and pypdf's ``PdfReadError`` for one it cannot read."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(title)).pages:
        writer.add_page(page)
    for i, path in enumerate(pdfs):
        reader = PdfReader(path)
        for page in reader.pages:
            writer.add_page(page)
        writer.add_outline_item(title=titles[i] if titles else Path(path).stem, page_number=len(writer.pages) - len(reader.pages))
    seen: set[tuple[int, int]] = set()
    for page in writer.pages:
        _sort_dictionaries(page, seen)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as fh:
        writer.write(fh)


def all_pdf(info: dict[str, Any], pdfs: list[str], output: str, titles: list[str]) -> None:
    """Write all.pdf to ``output``: a title page from ``info`` (see ``title_page``) with the contents,
    then every figure of ``pdfs`` in their stable order, each with its title of ``titles``
    (``page_title``) in the contents and the outline.  Raises what ``title_page`` and ``merge_pdfs``
    raise."""
    from pypdf import PdfReader

    contents, page = [], 2
    for path, title in zip(pdfs, titles):
        contents.append((page, title))
        page += len(PdfReader(path).pages)
    merge_pdfs(title_page(info, contents), pdfs, output, titles)
