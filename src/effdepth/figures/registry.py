"""The figure registry: each ``Figure`` (name, builder, the tables it declares, report category) in the
ordered list ``FIGURES`` — the order of all.pdf — and what the workflow asks of it: which figures a
config can produce (``available_figures``), report options, short titles, and the part of the config
the builders read (``figure_context``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import altair as alt

from ..analyses import REGISTRY
from ..depth import effective_depth_inputs
from ..errata import errata_configured
from .checks import layer_deletion_chart, layer_deletion_table_chart, reference_chart, threshold_sweep_chart
from .errata import errata_chart
from .extra import angular_distance_chart, block_influence_chart, relative_contribution_chart
from .lenses import lens_comparison_chart, lens_curves_chart, settling_chart
from .paper import (
    cosine_chart,
    erasure_chart,
    integrated_gradients_chart,
    kl_chart,
    overlap_chart,
    skip_map_chart,
    skip_output_chart,
)
from .summaries import (
    effective_depth_table_chart,
    q1_scale_chart,
    q2_training_chart,
    q3_difficulty_chart,
)
from .theme import Context, Tables

ED_TABLES = ("effective_depth", "effective_depth_sweep", "effective_depth_reference")
ERRATA_TABLES = ("errata", "errata_questions")  # written when an analysis runs under several variants


@dataclass(frozen=True)
class Figure:
    """One page of all.pdf.  ``tables`` names the tables it reads (analysis names or effective_depth*: the
    workflow's figures job passes each table by this name, ``render_figures``); ``tokens`` names
    the analysis whose per-(model, task) token tables label the x axis; ``kinds`` the layer-skip kinds
    it needs; ``category`` / ``subcategory`` group it in the Snakemake report."""

    name: str
    builder: Callable[[Tables, Context], alt.TopLevelMixin]
    tables: tuple[str, ...]
    category: str
    subcategory: str = ""
    tokens: str | None = None
    kinds: tuple[str, ...] = ()
    paper: str = ""  # the paper's figure / table id
    short: str = ""  # title on the contents page and in the PDF outline
    needs: tuple[str, ...] = field(default=())  # analyses that must be configured (default: tables that are analyses)
    optional: tuple[str, ...] = ()  # tables it also draws when the run made them
    every_variant: bool = False  # reads the rows of every variant (else only those of each analysis's shown variant)


ED_CAT, Q1_CAT, Q2_CAT, Q3_CAT = "1 · Effective depth", "2 · Q1 scale", "3 · Q2 training", "4 · Q3 difficulty"
PAPER_CAT, PER_MODEL, ACROSS_TASKS = "5 · Paper figures", "F1–F7 · one task, every model", "F8–F12 · every task"
EXTRA_CAT = "7 · Further analyses"
PROFILE = "profile"  # the per-model page: build_chart(PROFILE, tables, ctx, model=...)
PROFILE_CATEGORY = "6 · Per model"
RC, LENS, SKIP = ("relative_contribution",), ("logit_lens",), ("layer_skip",)


def _with(builder: Callable[..., alt.TopLevelMixin], **kw: Any) -> Callable[[Tables, Context], alt.TopLevelMixin]:
    return lambda tables, ctx: builder(tables, ctx, **kw)


# The order of all.pdf: the paper's F1–F12, T1, the three questions, then further analyses.
FIGURES: list[Figure] = [
    Figure(
        "cosine",
        cosine_chart,
        RC,
        PAPER_CAT,
        PER_MODEL,
        paper="F1",
        short="cosine of each layer's contribution with the residual",
    ),
    Figure(
        "skip_map",
        skip_map_chart,
        SKIP,
        PAPER_CAT,
        PER_MODEL,
        kinds=("layer",),
        paper="F2",
        short="layer skip: effect on later layers",
    ),
    Figure(
        "skip_output",
        skip_output_chart,
        SKIP,
        PAPER_CAT,
        PER_MODEL,
        kinds=("layer",),
        paper="F3",
        short="layer skip: effect on the output",
    ),
    Figure("logit_lens_kl", kl_chart, LENS, PAPER_CAT, PER_MODEL, paper="F4", short="logit lens: KL to the final prediction"),
    Figure(
        "logit_lens_overlap",
        overlap_chart,
        LENS,
        PAPER_CAT,
        PER_MODEL,
        paper="F5",
        short="logit lens: top-k overlap with the final prediction",
    ),
    Figure(
        "residual_erasure",
        erasure_chart,
        ("residual_erasure",),
        PAPER_CAT,
        PER_MODEL,
        tokens="residual_erasure",
        paper="F6",
        short="residual erasure, layer × token",
    ),
    Figure(
        "integrated_gradients",
        integrated_gradients_chart,
        ("integrated_gradients",),
        PAPER_CAT,
        PER_MODEL,
        tokens="integrated_gradients",
        paper="F7",
        short="integrated gradients, layer × token",
    ),
    Figure(
        "cosine_by_task", _with(cosine_chart, by_task=True), RC, PAPER_CAT, ACROSS_TASKS, paper="F8", short="cosine, every task"
    ),
    Figure(
        "skip_map_by_task",
        _with(skip_map_chart, by_task=True),
        SKIP,
        PAPER_CAT,
        ACROSS_TASKS,
        kinds=("layer",),
        paper="F9",
        short="layer skip: effect on later layers, every task",
    ),
    Figure(
        "skip_output_by_task",
        _with(skip_output_chart, by_task=True),
        SKIP,
        PAPER_CAT,
        ACROSS_TASKS,
        kinds=("layer",),
        paper="F10",
        short="layer skip: effect on the output, every task",
    ),
    Figure(
        "logit_lens_kl_by_task",
        _with(kl_chart, by_task=True),
        LENS,
        PAPER_CAT,
        ACROSS_TASKS,
        paper="F11",
        short="logit lens KL, every task",
    ),
    Figure(
        "logit_lens_overlap_by_task",
        _with(overlap_chart, by_task=True),
        LENS,
        PAPER_CAT,
        ACROSS_TASKS,
        paper="F12",
        short="logit lens overlap, every task",
    ),
    Figure(
        "effective_depth_table",
        effective_depth_table_chart,
        ("effective_depth",),
        ED_CAT,
        paper="T1",
        short="effective-depth table with 95 % intervals",
    ),
    Figure("q1_scale", q1_scale_chart, ("effective_depth",), Q1_CAT, paper="Q1", short="effective depth vs model size"),
    Figure("q2_training", q2_training_chart, ("effective_depth",), Q2_CAT, paper="Q2", short="long-CoT models vs their bases"),
    Figure(
        "q3_difficulty", q3_difficulty_chart, ("effective_depth",), Q3_CAT, paper="Q3", short="effective depth vs task difficulty"
    ),
    Figure("relative_contribution", relative_contribution_chart, RC, EXTRA_CAT, short="relative contribution per layer"),
    Figure("block_influence", block_influence_chart, ("block_influence",), EXTRA_CAT, short="block influence per layer"),
    Figure("angular_distance", angular_distance_chart, ("block_influence",), EXTRA_CAT, short="angular distance between layers"),
    Figure(
        "skip_map_attention",
        _with(skip_map_chart, kind="attention"),
        SKIP,
        EXTRA_CAT,
        kinds=("attention",),
        short="attention-only skip: effect on later layers",
    ),
    Figure(
        "skip_map_mlp",
        _with(skip_map_chart, kind="mlp"),
        SKIP,
        EXTRA_CAT,
        kinds=("mlp",),
        short="MLP-only skip: effect on later layers",
    ),
    Figure(
        "threshold_sweep",
        threshold_sweep_chart,
        ("effective_depth_sweep",),
        ED_CAT,
        short="threshold sweep of ED_KL and ED_overlap",
    ),
    Figure(
        "reference_comparison",
        reference_chart,
        ("effective_depth_reference",),
        ED_CAT,
        short="comparison with the published effective depths",
    ),
    Figure(
        "lens_comparison",
        lens_comparison_chart,
        ("effective_depth",),
        ED_CAT,
        needs=("logit_lens", "tuned_lens"),
        short="lenses: effective depths under the logit and the tuned lens, and where the conclusion changes",
    ),
    Figure(
        "lens_curves",
        lens_curves_chart,
        ("logit_lens", "tuned_lens"),
        ED_CAT,
        optional=("lens_heldout",),
        short="lenses: KL and overlap per depth under both lenses, held-out KL of the trained lens",
    ),
    Figure(
        "settling_depth",
        settling_chart,
        ("logit_lens", "effective_depth"),
        ED_CAT,
        optional=("tuned_lens",),
        short="settling depth of the tokens per task, every lens",
    ),
    Figure(
        "layer_deletion",
        layer_deletion_chart,
        ("layer_deletion", "effective_depth"),
        ED_CAT,
        short="layer deletion: loss and agreement after each cut, ED estimates marked",
    ),
    Figure(
        "layer_deletion_table",
        layer_deletion_table_chart,
        ("layer_deletion", "effective_depth"),
        ED_CAT,
        short="layer deletion: loss increase at each effective depth",
    ),
    Figure(
        "errata",
        errata_chart,
        ("errata", "errata_questions"),
        ED_CAT,
        short="errata: each defect of the published code, isolated, and the paper's conclusions under both variants",
        every_variant=True,
    ),
]
FIGURE_BY_NAME = {f.name: f for f in FIGURES}


def _needs(fig: Figure) -> tuple[str, ...]:
    if fig.needs:
        return fig.needs
    needed: list[str] = []
    for table in fig.tables:
        needed += [table] if table not in ED_TABLES + ERRATA_TABLES else []
    return tuple(needed)


def available_figures(analyses: dict[str, Any], reference_matches: bool = False) -> list[str]:
    """Figures whose inputs the configured analyses produce, in the stable order of all.pdf.

    ``analyses``: the validated config's analyses block.  A figure of intervention kinds (the
    attention- and MLP-only skip maps) is listed only when the configured job produces those kinds
    (``effdepth.analyses.Analysis.kinds``: the published layer skip produces whole-layer skips only).
    The comparison with the paper is listed only when ``reference_matches`` (some configured model
    and task are in the published table); Q2 is always listed and says on its page when no pair is
    configured."""
    names = []
    for fig in FIGURES:
        if any(t in ED_TABLES for t in fig.tables) and not effective_depth_inputs(analyses):
            continue
        if any(t in ERRATA_TABLES for t in fig.tables) and not errata_configured(analyses):
            continue
        if not all(a in analyses for a in _needs(fig)):
            continue
        if fig.kinds:
            produced = REGISTRY["layer_skip"].kinds(analyses["layer_skip"])
            if not all(k in produced for k in fig.kinds):
                continue
        if fig.name == "reference_comparison" and not reference_matches:
            continue
        names.append(fig.name)
    return names


def report_options(name: str) -> dict[str, Any]:
    """category / subcategory / labels of a figure for Snakemake's report() (the caption file is the
    workflow's: workflow/report/<name>.rst).  Raises ``KeyError`` for a name not in ``FIGURES``."""
    fig = FIGURE_BY_NAME[name]
    return {
        "category": fig.category,
        "subcategory": fig.subcategory or "figures",
        "labels": {"figure": fig.paper or "extra", "shows": fig.short},
    }


def figure_title(name: str) -> str:
    """Short title of figure ``name`` for the contents page and PDF outline ('F4 · …'); a name not in
    ``FIGURES`` is returned as it is."""
    fig = FIGURE_BY_NAME.get(name)
    if fig is None:
        return name
    text = fig.short or name.replace("_", " ")
    return f"{fig.paper} · {text}" if fig.paper else text


def figure_context(config: dict[str, Any]) -> Context:
    """The part of a (validated) ``config`` the figures read: figures, models, tasks, analyses and the
    effective-depth thresholds (None where the config has none; the figures that draw a threshold then
    raise ``TypeError``).  Raises nothing itself."""
    return {
        "figures": dict(config.get("figures", {})),
        "models": {
            n: {k: m.get(k) for k in ("size_b", "family", "training", "base_model")} for n, m in config.get("models", {}).items()
        },
        "tasks": {n: {k: t.get(k) for k in ("source", "difficulty", "digits")} for n, t in config.get("tasks", {}).items()},
        "analyses": {
            a: {
                "tasks": list(o.get("tasks", [])),
                "variant": o.get("variant"),
                **({"kinds": list(o["kinds"])} if "kinds" in o else {}),
                **({"settling_threshold": o["settling_threshold"]} if "settling_threshold" in o else {}),
            }
            for a, o in (config.get("analyses") or {}).items()
        },
        "effective_depth": {
            k: config.get("effective_depth", {}).get(k) for k in ("kl_threshold", "overlap_threshold", "depth_fraction")
        },
    }
