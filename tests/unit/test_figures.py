"""Figures: every chart spec validates on synthetic tables in the tidy schema (including the edge
cases: no Q2 pair, an unsolvable estimator, one model), the registry schedules what a config can
produce, and one real render to PDF — title page + figures merged — has the pages and titles it
should."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import polars as pl
import pytest

from effdepth import figures
from effdepth.depth import ED_ANALYSES, effective_depth
from effdepth.errata import estimate_errata, question_verdicts
from effdepth.figures import (
    FIGURE_BY_NAME,
    FIGURES,
    PROFILE,
    all_pdf,
    available_figures,
    build_chart,
    figure_context,
    page_title,
    q2_pairs,
    save_chart,
)
from effdepth.figures.layout import headline_rows, select_task

# --- synthetic tables in the schema of effdepth.tables -----------------------------------------


def _rows(model: str, task: str, analysis: str, n_layers: int, **cols) -> pl.DataFrame:
    """Rows of one analysis table; like every analysis table they carry the model's ``n_layers`` (Int32)."""
    n = len(cols["value"])
    base = {"model": [model] * n, "task": [task] * n, "analysis": [analysis] * n, "variant": ["correct"] * n}
    schema = {"layer": pl.Int32, "prompt": pl.Int32, "skipped_layer": pl.Int32, "position": pl.Int32, "span": pl.Int32}
    frame = pl.DataFrame({**base, **cols}).with_columns([pl.col(c).cast(t) for c, t in schema.items() if c in cols])
    return frame.with_columns(n_layers=pl.lit(n_layers, pl.Int32))


def _ig_completeness(
    model: str,
    task: str,
    n_layers: int,
    attribution_sum: np.ndarray,
    f_input: np.ndarray,
    f_baseline: np.ndarray,
    prompt: int = 0,
) -> pl.DataFrame:
    """The IG table's completeness rows of one prompt: per layer f_input, f_baseline, attribution_sum
    (prompt set, position null)."""
    layers = np.arange(n_layers)
    metrics = [m for m in ("f_input", "f_baseline", "attribution_sum") for _ in layers]
    values = np.concatenate([f_input, f_baseline, attribution_sum]).astype(float)
    return _rows(
        model,
        task,
        "integrated_gradients",
        n_layers,
        metric=metrics,
        layer=np.tile(layers, 3),
        prompt=[prompt] * values.size,
        value=values,
        weight=[1.0] * values.size,
    )


def _per_prompt(rng: np.random.Generator, curve: np.ndarray, n_prompts: int, noise: float) -> np.ndarray:
    return curve[None, :] + noise * rng.standard_normal((n_prompts, curve.size))


def synthetic_tables(
    models: dict[str, int],
    tasks: list[str],
    n_prompts: int = 3,
    n_tokens: int = 12,
    seed: int = 0,
    kinds: tuple[str, ...] = ("layer", "attention", "mlp"),
    ig_gap: float = 0.01,
) -> dict[str, pl.DataFrame]:
    """Aggregated analysis tables (and token tables) for models {name: L} × tasks: cosines that cross
    zero at ~0.6 L, a decreasing KL, a rising overlap, skip effects that fade with depth.  Per-prompt
    rows re-aggregate exactly to the null-prompt rows (weighted mean, or max for max-aggregated skips)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[pl.DataFrame]] = {
        k: []
        for k in (
            "relative_contribution",
            "logit_lens",
            "block_influence",
            "layer_skip",
            "residual_erasure",
            "integrated_gradients",
            "layer_deletion",
            "tokens",
        )
    }
    for model, L in models.items():
        layers = np.arange(L)
        for task in tasks:
            w = rng.integers(10, 40, n_prompts).astype(float)

            def add(analysis: str, metric: str, curve: np.ndarray, noise: float, idx: dict, combine: str = "mean") -> None:
                per = _per_prompt(rng, curve, n_prompts, noise)
                agg = per.max(0) if combine == "max" else (w[:, None] * per).sum(0) / w.sum()
                values = np.concatenate([agg, per.ravel()])
                prompt = [None] * curve.size + [p for p in range(n_prompts) for _ in range(curve.size)]
                weight = [w.sum()] * curve.size + [w[p] for p in range(n_prompts) for _ in range(curve.size)]
                cols = {k: list(v) * (n_prompts + 1) for k, v in idx.items()}
                out[analysis].append(
                    _rows(
                        model,
                        task,
                        analysis,
                        L,
                        metric=[metric] * values.size,
                        prompt=prompt,
                        value=values,
                        weight=weight,
                        **cols,
                    )
                )

            crossing = 0.6 * L
            for i, m in enumerate(("attention", "mlp", "layer")):
                add(
                    "relative_contribution",
                    f"cos_{m}",
                    0.3 * np.tanh((layers - crossing) / 2) + 0.02 * i,
                    0.02,
                    {"layer": layers},
                )
                add("relative_contribution", f"rc_{m}", 0.5 / (1 + layers) + 0.05, 0.01, {"layer": layers})
            lens_layers = np.arange(L + 1)
            add("logit_lens", "kl", 8.0 * np.exp(-lens_layers / (0.3 * L)), 0.05, {"layer": lens_layers})
            add("logit_lens", "overlap", np.clip(lens_layers / L, 0, 1), 0.02, {"layer": lens_layers})
            full = 0.3
            add("layer_deletion", "exit_loss", full + 5.0 * np.exp(-lens_layers / (0.2 * L)), 0.02, {"layer": lens_layers})
            add("layer_deletion", "deletion_loss", full + 3.0 * np.exp(-lens_layers / (0.2 * L)), 0.02, {"layer": lens_layers})
            add("layer_deletion", "exit_agreement", np.clip(lens_layers / (0.7 * L), 0, 1), 0.0, {"layer": lens_layers})
            add("layer_deletion", "deletion_agreement", np.clip(lens_layers / (0.5 * L), 0, 1), 0.0, {"layer": lens_layers})
            add("layer_deletion", "full_loss", np.array([full]), 0.01, {"layer": [L]})
            add("block_influence", "block_influence", 0.2 * np.exp(-layers / 5) + 0.05, 0.01, {"layer": layers})
            for span in range(1, L + 1):
                first = np.arange(L + 1 - span)
                add(
                    "block_influence",
                    "angular_distance",
                    np.clip(0.05 * span + 0.01 * first, 0, 1),
                    0.0,
                    {"layer": first, "span": [span] * first.size},
                )
            for kind in kinds:
                for agg in ("max", "mean"):
                    scale = 1.0 if agg == "max" else 0.5
                    out_curve = scale * np.exp(-layers / (0.4 * L))
                    base = {"kind": [kind] * L, "aggregation": [agg] * L, "skipped_layer": layers, "layer": layers}
                    add("layer_skip", "output", out_curve, 0.01, base, combine=agg)
                    s, j = np.triu_indices(L, k=1)
                    fut = scale * np.exp(-s / (0.3 * L)) / (1 + 0.1 * (j - s))
                    add(
                        "layer_skip",
                        "future",
                        fut,
                        0.01,
                        {"kind": [kind] * s.size, "aggregation": [agg] * s.size, "skipped_layer": s, "layer": j},
                        combine=agg,
                    )
            positions = np.arange(n_tokens)
            for analysis, metric, rows_ in (
                ("residual_erasure", "output_change", L + 1),
                ("integrated_gradients", "attribution", L),
            ):
                ll, pp = np.meshgrid(np.arange(rows_), positions, indexing="ij")
                value = np.abs(rng.standard_normal(ll.size)) * 0.3 if metric == "output_change" else rng.standard_normal(ll.size)
                out[analysis].append(
                    _rows(
                        model,
                        task,
                        analysis,
                        L,
                        metric=[metric] * ll.size,
                        layer=ll.ravel(),
                        position=pp.ravel(),
                        prompt=[0] * ll.size,
                        value=value,
                        weight=[1.0] * ll.size,
                    )
                )
                if metric == "attribution":  # completeness terms: Σ_t IG = F(x) − F(x′) up to a relative gap ig_gap
                    total = value.reshape(L, n_tokens).sum(1)
                    out[analysis].append(_ig_completeness(model, task, L, total, total / (1 + ig_gap) + 1.0, np.ones(L)))
            out["tokens"].append(
                pl.DataFrame(
                    {
                        "prompt": [0] * n_tokens,
                        "position": positions,
                        "token": [f"Ġt{p}" for p in positions],
                        "model": [model] * n_tokens,
                        "task": [task] * n_tokens,
                    }
                ).with_columns(pl.col("prompt").cast(pl.Int32), pl.col("position").cast(pl.Int32))
            )
    return {k: pl.concat(v, how="diagonal_relaxed") for k, v in out.items() if v}


def _context(models: dict[str, dict], tasks: dict[str, dict]) -> dict:
    config = {
        "models": models,
        "tasks": tasks,
        "analyses": {
            a: {"tasks": list(tasks), "variant": "correct"}
            for a in (
                "relative_contribution",
                "logit_lens",
                "block_influence",
                "layer_skip",
                "residual_erasure",
                "integrated_gradients",
                "layer_deletion",
            )
        },
        "figures": {"width": 120, "height": 80, "columns": 3},
        "effective_depth": {"kl_threshold": 0.5, "overlap_threshold": 0.3},
    }
    config["analyses"]["layer_skip"]["kinds"] = ["layer", "attention", "mlp"]
    return figure_context(config)


PAPER_LIKE_MODELS = {
    "Qwen2.5-Math-1.5B": {"size_b": 1.5, "family": "qwen2.5", "training": "math-base"},
    "DeepSeek-R1-Distill-Qwen-1.5B": {"size_b": 1.5, "family": "r1", "training": "long-cot", "base_model": "Qwen2.5-Math-1.5B"},
    "Qwen2.5-1.5B-Instruct": {"size_b": 1.5, "family": "qwen2.5", "training": "instruct"},
    "Qwen2.5-7B-Instruct": {"size_b": 7, "family": "qwen2.5", "training": "instruct"},
}
PAPER_LIKE_TASKS = {
    "gsm8k": {"source": "gsm8k", "difficulty": 2},
    "addition_2": {"source": "addition", "digits": 2, "difficulty": 2},
    "addition_4": {"source": "addition", "digits": 4, "difficulty": 4},
}


@pytest.fixture(scope="module")
def paper_like() -> tuple[dict[str, pl.DataFrame], dict]:
    """Four models with a Q2 pair (L = 4 / 5 / 4 / 6) × three tasks, and the effective-depth tables."""
    layers = dict(zip(PAPER_LIKE_MODELS, (4, 5, 4, 6)))
    tables = synthetic_tables(layers, list(PAPER_LIKE_TASKS))
    ed_inputs = {k: tables[k] for k in ("relative_contribution", "logit_lens", "layer_skip")}
    ed, sweep = effective_depth(ed_inputs, kl_threshold=0.5, overlap_threshold=0.3, bootstrap=20, sweep=[0.3, 0.6])
    reference = pl.DataFrame(
        {
            "model": ["DeepSeek-R1-Distill-Qwen-1.5B"] * 3,
            "task": ["gsm8k"] * 3,
            "estimator": ["cos", "kl", "overlap"],
            "published_ed": [3.0, 1.0, 3.0],
            "ed": [3.0, 2.0, 3.0],
            "ci_low": [2.0, 2.0, 3.0],
            "ci_high": [3.0, 3.0, 4.0],
            "n_layers": [5] * 3,
            "published_n_layers": [28] * 3,
            "form": ["paper"] * 3,
        }
    )
    tables.update(effective_depth=ed, effective_depth_sweep=sweep, effective_depth_reference=reference)
    ctx = _context(PAPER_LIKE_MODELS, PAPER_LIKE_TASKS)
    # the errata: every estimator's analysis also "published", its values halved (signs kept)
    both = {
        k: pl.concat([t, t.with_columns(variant=pl.lit("published"), value=pl.col("value") * 0.5)]) for k, t in ed_inputs.items()
    }
    ed_both, _ = effective_depth(both, kl_threshold=0.5, overlap_threshold=0.3, bootstrap=20)
    tables.update(
        errata=estimate_errata(ed_both),
        errata_questions=question_verdicts(ed_both, ctx["models"], ctx["tasks"]),
        effective_depth_both=ed_both,
    )
    return tables, ctx


def declared(tables: dict[str, pl.DataFrame], name: str) -> dict[str, pl.DataFrame]:
    """The tables the workflow hands figure ``name``: its declared ``Figure.tables`` (plus ``tokens`` when it
    declares token tables); the profile gets the effective-depth inputs and the effective-depth table."""
    if name == PROFILE:
        keys = [*ED_ANALYSES, "effective_depth"]
    else:
        fig = FIGURE_BY_NAME[name]
        keys = [*fig.tables, *(["tokens"] if fig.tokens else [])]
    return {k: tables[k] for k in keys if k in tables}


def chart(name: str, tables: dict[str, pl.DataFrame], ctx: dict, model: str | None = None) -> alt.TopLevelMixin:
    """``build_chart`` on exactly the tables the workflow passes (the path figures.py runs); ``model``:
    whose profile (figure ``PROFILE``)."""
    return build_chart(name, declared(tables, name), ctx, model=model)


# (figure, model): every figure, and the profile of one model.
ALL_CHARTS = [(f.name, None) for f in FIGURES] + [(PROFILE, "DeepSeek-R1-Distill-Qwen-1.5B")]
CHART_IDS = [name if model is None else f"{name}-{model}" for name, model in ALL_CHARTS]

# --- specs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, model", ALL_CHARTS, ids=CHART_IDS)
def test_every_chart_spec_validates(paper_like, name, model):
    tables, ctx = paper_like
    spec = chart(name, tables, ctx, model).to_dict(validate=True)
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    title = spec.get("title") or spec.get("spec", {}).get("title")
    assert title, f"{name} has no title"


def test_figures_plot_aggregated_frames(paper_like):
    """Charts get small frames: no figure carries per-prompt rows into the spec."""
    tables, ctx = paper_like
    for name in ("cosine", "skip_map_by_task", "logit_lens_kl"):
        spec = chart(name, tables, ctx).to_dict()
        (values,) = [d for d in spec["datasets"].values()]
        n = len(values)
        raw = {
            "cosine": tables["relative_contribution"],
            "skip_map_by_task": tables["layer_skip"],
            "logit_lens_kl": tables["logit_lens"],
        }[name]
        assert n < raw.height / 3, (name, n, raw.height)


def test_heatmaps_use_token_labels_and_a_symmetric_diverging_scale(paper_like):
    tables, ctx = paper_like
    spec = chart("integrated_gradients", tables, ctx).to_dict()
    enc = spec["spec"]["encoding"]
    assert enc["color"]["scale"]["domain"] == [-1, 1] and enc["color"]["scale"]["domainMid"] == 0
    labels = {row["label"] for row in next(iter(spec["datasets"].values()))}
    assert " 3 ␣t3" in labels  # position + token, BPE space marker made visible
    assert spec["resolve"]["scale"]["x"] == "independent"


def test_q2_pairs_long_cot_with_base_and_same_size_instruct(paper_like):
    _, ctx = paper_like
    pairs = q2_pairs(ctx)
    assert set(pairs.iter_rows()) == {
        ("1.5B", "long-CoT", "DeepSeek-R1-Distill-Qwen-1.5B"),
        ("1.5B", "base", "Qwen2.5-Math-1.5B"),
        ("1.5B", "instruct", "Qwen2.5-1.5B-Instruct"),
    }


def test_q2_without_pairs_says_so(paper_like):
    tables, ctx = paper_like
    ctx = {**ctx, "models": {m: {**v, "training": "instruct", "base_model": None} for m, v in ctx["models"].items()}}
    spec = chart("q2_training", tables, ctx).to_dict()
    text = " ".join(row["text"] for row in next(iter(spec["datasets"].values())))
    assert "No long-CoT / base pair is configured" in text


def test_t1_marks_an_estimate_without_solution(paper_like):
    tables, ctx = paper_like
    ed = tables["effective_depth"].with_columns(
        ed=pl.when((pl.col("estimator") == "cos") & (pl.col("task") == "gsm8k")).then(None).otherwise(pl.col("ed")),
        reason=pl.when((pl.col("estimator") == "cos") & (pl.col("task") == "gsm8k"))
        .then(pl.lit("no crossing"))
        .otherwise(pl.col("reason")),
    )
    spec = chart("effective_depth_table", {**tables, "effective_depth": ed}, ctx).to_dict()
    rows = next(iter(spec["datasets"].values()))
    cos_gsm8k = [r for r in rows if r["label"] == "ED_cos" and r["task"] == "gsm8k"]
    assert cos_gsm8k and all(r["text"] == "—" and r["note"] == "no crossing" for r in cos_gsm8k)
    with_ci = [r for r in rows if r["label"] == "ED_KL robust"]
    assert all("[" in r["text"] for r in with_ci)


def test_single_model_grids(paper_like):
    tables, ctx = paper_like
    one = "Qwen2.5-7B-Instruct"
    small = {k: (v.filter(pl.col("model") == one) if "model" in v.columns else v) for k, v in tables.items()}
    ctx = {**ctx, "models": {one: ctx["models"][one]}}
    for name in ("cosine", "skip_map", "q1_scale", "q3_difficulty", "effective_depth_table"):
        chart(name, small, ctx).to_dict(validate=True)
    chart(PROFILE, small, ctx, one).to_dict(validate=True)


def test_primary_task_chooses_the_per_model_grids_task(paper_like):
    tables, ctx = paper_like
    rc = headline_rows(tables["relative_contribution"])
    assert select_task(rc, ctx, "relative_contribution", False)[1] == "task gsm8k"  # first configured
    chosen = {**ctx, "figures": {**ctx["figures"], "primary_task": "addition_4"}}
    data, label = select_task(rc, chosen, "relative_contribution", False)
    assert label == "task addition_4" and data["task"].unique().to_list() == ["addition_4"]
    # an analysis that did not run on the chosen task keeps its own first task
    only_gsm8k = rc.filter(pl.col("task") == "gsm8k")
    assert select_task(only_gsm8k, chosen, "relative_contribution", False)[1] == "task gsm8k"
    assert "task addition_4" in str(chart("cosine", tables, chosen).to_dict())


# --- the registry -------------------------------------------------------------------------------


def test_available_figures_follow_the_configured_analyses():
    everything = {
        a: {"kinds": ["layer", "attention", "mlp"]}
        for a in ED_ANALYSES + ("block_influence", "residual_erasure", "integrated_gradients")
    }
    names = available_figures(everything)
    assert names[:16] == [
        "cosine",
        "skip_map",
        "skip_output",
        "logit_lens_kl",
        "logit_lens_overlap",
        "residual_erasure",
        "integrated_gradients",
        "cosine_by_task",
        "skip_map_by_task",
        "skip_output_by_task",
        "logit_lens_kl_by_task",
        "logit_lens_overlap_by_task",
        "effective_depth_table",
        "q1_scale",
        "q2_training",
        "q3_difficulty",
    ]
    assert "reference_comparison" not in names and "reference_comparison" in available_figures(everything, reference_matches=True)
    only_lens = available_figures({"logit_lens": {}})
    assert "logit_lens_kl" in only_lens and "effective_depth_table" in only_lens and "cosine" not in only_lens
    assert available_figures({"residual_erasure": {}}) == ["residual_erasure"]
    assert "layer_deletion" not in names and "layer_deletion_table" not in names
    with_deletion = available_figures({**everything, "layer_deletion": {}})
    assert with_deletion[-2:] == ["layer_deletion", "layer_deletion_table"]
    assert available_figures({"layer_deletion": {}}) == []  # no effective depth to check
    layer_only = available_figures({"layer_skip": {"kinds": ["layer"]}})
    assert "skip_map" in layer_only and "skip_map_mlp" not in layer_only
    # the lens pages: settling depth with the logit lens alone, the comparison only with a tuned lens
    assert "settling_depth" in only_lens and "lens_comparison" not in only_lens and "lens_curves" not in only_lens
    assert {"lens_comparison", "lens_curves", "settling_depth"} <= set(names)


def test_theme_is_registered_and_uses_installed_fallback_fonts():
    assert alt.theme.active == figures.THEME
    assert "sans-serif" in figures.FONT  # a single missing font family makes vl-convert drop all text


# --- one real render ----------------------------------------------------------------------------


def test_render_and_merge_into_all_pdf(paper_like, tmp_path: Path):
    from pypdf import PdfReader

    tables, ctx = paper_like
    pdfs = []
    for name in ("logit_lens_kl", "effective_depth_table"):
        out = {ext: str(tmp_path / f"{name}.{ext}") for ext in ("pdf", "svg", "html")}
        save_chart(chart(name, tables, ctx), out["pdf"], out["svg"], out["html"])
        assert Path(out["svg"]).read_text().lstrip().startswith("<svg")
        assert "vega" in Path(out["html"]).read_text().lower()
        pdfs.append(out["pdf"])
    target = tmp_path / "all.pdf"
    info = {
        "name": "unit",
        "models": list(ctx["models"]),
        "tasks": list(ctx["tasks"]),
        "variants": {"logit_lens": "correct"},
        "config_hash": "abc123def456",
    }
    all_pdf(info, pdfs, str(target), [page_title(name) for name in ("logit_lens_kl", "effective_depth_table")])
    reader = PdfReader(str(target))
    assert len(reader.pages) == 3
    first, kl, t1 = (page.extract_text() for page in reader.pages)
    assert "Effective depth · unit" in first and "abc123def456" in first and "Contents" in first
    flat = " ".join(first.split())
    assert "p. 2 F4 · logit lens: KL to the final prediction" in flat and "p. 3 T1 · effective-depth table" in flat
    assert kl.startswith("F4 · Logit lens") or "F4 · Logit lens" in kl
    assert "T1 · Effective depth per model and task" in t1 and "ED_KL robust" in t1
    assert [o["/Title"] for o in reader.outline] == [
        "F4 · logit lens: KL to the final prediction",
        "T1 · effective-depth table with 95 % intervals",
    ]


def test_the_profile_and_only_the_profile_takes_a_model(paper_like):
    tables, ctx = paper_like
    with pytest.raises(ValueError, match="give model="):
        chart(PROFILE, tables, ctx)
    with pytest.raises(ValueError, match="model= is for figure profile only"):
        chart("cosine", tables, ctx, "Qwen2.5-7B-Instruct")
    assert page_title(PROFILE, "Qwen2.5-7B-Instruct") == "Effective-depth profile · Qwen2.5-7B-Instruct"


# --- byte-identical outputs ---------------------------------------------------------------------


def _shuffled(tables: dict[str, pl.DataFrame], seed: int) -> dict[str, pl.DataFrame]:
    return {k: v.sample(fraction=1, shuffle=True, seed=seed + i) for i, (k, v) in enumerate(sorted(tables.items()))}


@pytest.mark.parametrize("name, model", ALL_CHARTS, ids=CHART_IDS)
def test_the_same_tables_in_any_row_order_give_the_same_spec(paper_like, name, model):
    """Two runs of one config give identical SVG / HTML: a spec does not depend on the order of the
    rows it reads, nor on polars' unordered group_by / unique / join."""
    tables, ctx = paper_like
    first = chart(name, _shuffled(tables, 1), ctx, model).to_dict()
    second = chart(name, _shuffled(tables, 100), ctx, model).to_dict()
    assert first == second


# --- integrated gradients: completeness ---------------------------------------------------------


def test_ig_completeness_gap_is_computed_and_shown(paper_like):
    """Σ IG should equal F(x) − F(x′): a known gap per layer comes out of ig_completeness and the
    worst one per model is in F7's subtitle; the synthetic tables carry a 1 % gap everywhere."""
    tables, ctx = paper_like
    model, task, L = "Qwen2.5-7B-Instruct", "gsm8k", 6
    f_input, f_baseline = np.full(L, 3.0), np.ones(L)
    attribution_sum = np.full(L, 2.0)
    attribution_sum[2] = 2.5  # gap 0.5 on a difference of 2: relative 25 %
    f_input[4] = f_baseline[4] = 1.0  # F(x) = F(x′): the relative gap divides by 1e-12
    attribution_sum[4] = 1e-15
    ig = _ig_completeness(model, task, L, attribution_sum, f_input, f_baseline, prompt=1)
    gaps = figures.paper.ig_completeness(ig)
    assert gaps["layer"].to_list() == list(range(L)) and gaps["prompt"].to_list() == [1] * L
    np.testing.assert_allclose(gaps["gap"].to_numpy(), [0, 0, 0.5, 0, 1e-15, 0], atol=1e-18)
    np.testing.assert_allclose(gaps["relative_gap"].to_numpy(), [0, 0, 0.25, 0, 1e-3, 0], atol=1e-12)

    base = tables["integrated_gradients"]
    without = base.filter(~((pl.col("model") == model) & (pl.col("task") == task) & pl.col("position").is_null()))
    known = {**tables, "integrated_gradients": pl.concat([without, ig], how="diagonal_relaxed")}
    spec = chart("integrated_gradients", known, ctx).to_dict()
    subtitle = " ".join(spec["title"]["subtitle"])
    assert f"{model}: 25.0% (layer 2, {task})" in subtitle
    assert "DeepSeek-R1-Distill-Qwen-1.5B: 1.0%" in subtitle
    rows = next(iter(spec["datasets"].values()))
    assert {round(r["relative_gap"], 6) for r in rows if r["model"] == "Qwen2.5-1.5B-Instruct" and not r.get("placeholder")} == {
        0.01
    }


def test_two_renders_of_shuffled_tables_give_byte_identical_svg_and_html(paper_like, tmp_path: Path):
    """The files themselves: vl-convert numbers SVG gradients per process, save_chart renumbers them."""
    tables, ctx = paper_like
    outputs = []
    for run, seed in enumerate((3, 7)):
        out = {ext: tmp_path / f"{run}.{ext}" for ext in ("pdf", "svg", "html")}
        save_chart(chart("integrated_gradients", _shuffled(tables, seed), ctx), *(str(out[e]) for e in ("pdf", "svg", "html")))
        outputs.append((out["svg"].read_bytes(), out["html"].read_bytes()))
    assert outputs[0] == outputs[1]


def test_layer_deletion_at_each_effective_depth(paper_like):
    """Each estimate is read at k = ⌈ED⌉ + 1 (at most L); broken = neither pruned model agrees on half the answer tokens."""
    from effdepth.figures.checks import BROKEN_AGREEMENT, deletion_at_ed

    tables, ctx = paper_like
    at = deletion_at_ed(tables["layer_deletion"], tables["effective_depth"])
    solved = tables["effective_depth"].filter(pl.col("ed").is_not_null() & (pl.col("aggregation") == "mean"))
    assert at.height == solved.height > 0
    assert at.select(pl.col("cut") == pl.min_horizontal(pl.col("ed").ceil() + 1, "n_layers"))["cut"].all()
    head = headline_rows(tables["layer_deletion"])
    row = at.row(0, named=True)
    exit_at = head.filter(
        (pl.col("model") == row["model"])
        & (pl.col("task") == row["task"])
        & (pl.col("metric") == "exit_loss")
        & (pl.col("layer") == row["cut"])
    )["value"].item()
    full = head.filter((pl.col("model") == row["model"]) & (pl.col("task") == row["task"]) & (pl.col("metric") == "full_loss"))
    assert row["exit_increase"] == pytest.approx(exit_at - full["value"].item())
    best = at.select(pl.max_horizontal("exit_agreement", "deletion_agreement") < BROKEN_AGREEMENT).to_series()
    assert (at["broken"] == best).all()
    subtitle = " ".join(chart("layer_deletion_table", tables, ctx).to_dict()["title"]["subtitle"])
    assert "Broken at its ED" in subtitle and "ED_cos" in subtitle


# --- errata and variants ----------------------------------------------------------------------


def test_errata_page_shows_both_variants_and_the_verdicts(paper_like):
    tables, ctx = paper_like
    assert tables["errata"].height and (tables["errata"].filter(pl.col("estimator") == "cos")["ed_difference"] == 0).all()
    spec = chart("errata", tables, ctx).to_dict()
    subtitle = " ".join(spec["title"]["subtitle"])
    assert "Q1 scale: the conclusion" in subtitle and "Q2 training: the conclusion" in subtitle
    rows = next(iter(spec["datasets"].values()))
    assert any("→" in r["text"] for r in rows)


def test_figures_show_only_each_analysis_shown_variant(paper_like):
    """With estimates under both variants, T1 shows those of the variant each analysis is shown in."""
    from effdepth.figures.summaries import ESTIMATOR_LABELS

    tables, ctx = paper_like
    both = {**tables, "effective_depth": tables["effective_depth_both"]}
    labelled = pl.struct("estimator", "form", "aggregation").is_in(
        [{"estimator": e, "form": f, "aggregation": a} for e, f, a in ESTIMATOR_LABELS]
    )
    shown_eds = {}
    for shown in ("correct", "published"):
        context = {**ctx, "analyses": {a: {**o, "variant": shown} for a, o in ctx["analyses"].items()}}
        rows = next(iter(chart("effective_depth_table", both, context).to_dict()["datasets"].values()))
        expected = tables["effective_depth_both"].filter((pl.col("variant") == shown) & labelled)
        assert sorted((r["model"], r["task"], r["ed"] is None) for r in rows) == sorted(
            (m, t, e is None) for m, t, e in expected.select("model", "task", "ed").iter_rows()
        )
        shown_eds[shown] = sorted(str(r["ed"]) for r in rows)
    assert shown_eds["correct"] != shown_eds["published"]  # the halved published values move some estimate


def test_a_chart_gives_the_same_pdf_bytes_in_every_process(tmp_path):
    """vl-convert orders a page's font resources differently from process to process; the saved PDF
    does not (``stable_pdf``).  Three fresh interpreters render the same chart."""
    import subprocess
    import sys

    code = """
import sys
import altair as alt, polars as pl
from effdepth.figures.output import save_chart
chart = alt.Chart(pl.DataFrame({"x": [1, 2, 3], "y": [3, 1, 2]})).mark_line().encode(x="x:Q", y="y:Q").properties(title="t")
out = sys.argv[1]
save_chart(chart, out + ".pdf", out + ".svg", out + ".html")
"""
    env = {"PYTHONPATH": str(Path(figures.__file__).resolve().parents[2])}
    for i in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"c{i}")], check=True, env=env, capture_output=True)
    pdfs = {(tmp_path / f"c{i}.pdf").read_bytes() for i in range(3)}
    assert len(pdfs) == 1


# --- readability, checked from the spec -------------------------------------------------------


def _units(spec: dict, inherited: dict | None = None):
    """(unit spec, width, data rows) of every unit or layer spec of ``spec``: width and data are
    inherited from the enclosing specs (a facet's inner spec, a layer's parent)."""
    inherited = dict(inherited or {})
    datasets = inherited.setdefault("datasets", spec.get("datasets", {}))
    if "data" in spec and "name" in spec["data"]:
        inherited["rows"] = datasets[spec["data"]["name"]]
    if "width" in spec:
        inherited["width"] = spec["width"]
    if "mark" in spec:
        yield spec, inherited.get("width"), inherited.get("rows", [])
    for key in ("layer", "vconcat", "hconcat", "concat"):
        for sub in spec.get(key, []):
            yield from _units(sub, inherited)
    if "spec" in spec:
        yield from _units(spec["spec"], inherited)


def _merged_encoding(unit: dict, parent_encoding: dict) -> dict:
    return {**parent_encoding, **unit.get("encoding", {})}


TABLE_PAGES = ["effective_depth_table", "errata", "layer_deletion_table"]


@pytest.mark.parametrize("name", TABLE_PAGES)
def test_no_text_mark_is_wider_than_its_cell(paper_like, name):
    """Every text of a table page fits its cell (the unit's width over its x categories) at the font
    size it is drawn at, with the widest of the theme's fonts (theme.text_width), and no two texts
    share a cell (the errata's mean and max skip scores are columns of their own)."""
    from effdepth.figures.theme import text_width

    tables, ctx = paper_like
    spec = chart(name, tables, ctx).to_dict()
    checked = 0

    def walk(s: dict, encoding: dict, width, datasets, rows):
        nonlocal checked
        datasets = s.get("datasets", datasets)
        if "data" in s and "name" in s["data"]:
            rows = datasets[s["data"]["name"]]
        width = s.get("width", width)
        encoding = {**encoding, **s.get("encoding", {})}
        mark = s.get("mark")
        mark = mark if isinstance(mark, dict) else {"type": mark}
        if mark.get("type") == "text":
            field, x = encoding["text"]["field"], encoding["x"]["field"]
            n = len({r[x] for r in rows})
            widest = max(text_width(str(r[field]), mark.get("fontSize", 11)) for r in rows)
            assert widest <= width / n, f"{name}: text {widest:.0f} px wide in cells of {width / n:.0f} px"
            cells = [(r[x], r[encoding["y"]["field"]], r.get("task")) for r in rows]
            assert len(set(cells)) == len(cells), f"{name}: two texts in one cell"
            checked += 1
        for key in ("layer", "vconcat", "hconcat", "concat"):
            for sub in s.get(key, []):
                walk(sub, encoding, width, datasets, rows)
        if "spec" in s:
            walk(s["spec"], encoding, width, datasets, rows)

    walk(spec, {}, None, {}, [])
    assert checked


def test_errata_numbers_are_rounded_to_their_intervals():
    from effdepth.figures.errata import interval_text

    assert interval_text(6.08367, 5.98571, 6.18187) == "6.1 [6.0–6.2]"
    assert interval_text(6.08367, 6.0712, 6.0912) == "6.08 [6.07–6.09]"
    assert interval_text(12.0, 11.0, 14.0) == "12 [11–14]"
    assert interval_text(3.456789, None, None) == "3.46"
    assert interval_text(None, None, None) == "–"


def _one_task_skip(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The tables as if the layer skip had run on addition_4 only (as in the demo)."""
    skip_estimators = pl.col("estimator").str.starts_with("depth_score")
    return {
        **tables,
        "layer_skip": tables["layer_skip"].filter(pl.col("task") == "addition_4"),
        "effective_depth": tables["effective_depth"].filter(~skip_estimators | (pl.col("task") == "addition_4")),
    }


def test_profile_has_no_panel_without_data(paper_like):
    """A profile row holds only the tasks its analysis ran on: every panel has a curve to draw."""
    tables, ctx = paper_like
    tables = _one_task_skip(tables)
    spec = chart(PROFILE, tables, ctx, "Qwen2.5-7B-Instruct").to_dict()
    rows = next(iter(spec["datasets"].values()))
    panels = {}
    for row in spec["vconcat"]:
        curve = row["title"]["text"]
        tasks = {r["task"] for r in rows if r["curve"] == curve}
        drawn_tasks = {r["task"] for r in rows if r["curve"] == curve and r["mark"] == "curve"}
        assert tasks == drawn_tasks, f"{curve}: panels without a curve for {tasks - drawn_tasks}"
        panels[curve] = tasks
    assert panels["skip output effect / max"] == {"addition_4"}
    assert panels["KL / max KL"] == set(PAPER_LIKE_TASKS)


def test_q3_draws_tasks_as_categories_in_panels_with_data(paper_like):
    """Q3: tasks on a nominal axis (a family with one difficulty is one category, not a collapsed
    numeric axis), x resolved per panel so an estimator with one task shows one category, the axis
    title not repeated under every panel."""
    tables, ctx = paper_like
    spec = chart("q3_difficulty", _one_task_skip(tables), ctx).to_dict()
    assert spec["resolve"]["scale"] == {"x": "independent", "xOffset": "independent"}  # models side by side
    for layer in spec["spec"]["layer"]:
        x = layer["encoding"]["x"]
        assert x["type"] == "nominal" and x["field"] == "task" and x["title"] is None
    rows = next(iter(spec["datasets"].values()))
    panels = {label: {r["task"] for r in rows if r["label"] == label} for label in {r["label"] for r in rows}}
    assert panels["skip CoM output"] == {"addition_4"}
    assert all(panels.values())
    from effdepth.figures.theme import text_width

    axis, width = spec["spec"]["layer"][0]["encoding"]["x"]["axis"], spec["spec"]["width"]
    most = max(len(tasks) for tasks in panels.values())
    if axis["labelAngle"] == 0:  # horizontal task names fit their band
        assert max(text_width(t, 9) for t in PAPER_LIKE_TASKS) <= width / most


def test_layer_deletion_axes_are_per_model_and_the_loss_axis_is_logarithmic(paper_like):
    """The models' layer counts differ (4, 5, 4, 6): every model gets its own cut axis 0 … L; the loss
    axis is a log scale (the k = 0 cut would flatten the rest), the caption says so."""
    tables, ctx = paper_like
    spec = chart("layer_deletion", tables, ctx).to_dict()
    loss, agreement = spec["vconcat"]
    for page in (loss, agreement):
        assert page["resolve"]["scale"]["x"] == "independent"
        for layer in page["spec"]["layer"]:
            assert "domain" not in layer["encoding"].get("x", {}).get("scale", {})
    y = next(layer["encoding"]["y"] for layer in loss["spec"]["layer"] if "strokeDash" in layer.get("encoding", {}))
    assert y["scale"]["type"] == "log"
    rows = next(iter(spec["datasets"].values()))
    assert min(r["value"] for r in rows if r.get("quantity") == "loss" and r.get("value") is not None) > 0
    extent = {}
    for r in rows:
        if r.get("mark") == "line":
            extent[r["model"]] = max(extent.get(r["model"], 0), r["layer"])
    assert extent == {m: L for m, L in zip(PAPER_LIKE_MODELS, (4, 5, 4, 6))}
    assert "logarithmic" in " ".join(spec["title"]["subtitle"])


def test_mlp_skip_map_uses_a_log_colour_scale(paper_like):
    from effdepth.figures.paper import SKIP_MAP_FLOOR

    tables, ctx = paper_like
    spec = chart("skip_map_mlp", tables, ctx).to_dict()
    color = spec["spec"]["encoding"]["color"]
    assert color["scale"]["type"] == "log" and color["scale"]["domain"] == [SKIP_MAP_FLOOR, 1]
    rows = next(iter(spec["datasets"].values()))
    assert min(r["relative"] for r in rows if r.get("relative") is not None) >= SKIP_MAP_FLOOR
    assert "log scale" in " ".join(spec["title"]["subtitle"])


WIDE_TITLES = ("layer_deletion", "skip_map_mlp", "q3_difficulty", "errata", "cosine")


@pytest.mark.parametrize("name, model", [*((n, None) for n in WIDE_TITLES), (PROFILE, "Qwen2.5-7B-Instruct")])
def test_titles_do_not_widen_the_page(paper_like, name, model):
    """Rendered, the page is no wider with its title and subtitle than without them: they are wrapped
    within the chart (or PAGE_WIDTH), not run past its right edge."""
    import re

    import vl_convert as vlc

    tables, ctx = paper_like
    spec = chart(name, tables, ctx, model).to_dict()
    bare = {k: v for k, v in spec.items() if k != "title"}

    def width(s: dict) -> float:
        return float(re.search(r'<svg[^>]* width="([0-9.]+)"', vlc.vegalite_to_svg(s)).group(1))

    from effdepth.figures.theme import PAGE_WIDTH

    assert width(spec) <= max(width(bare), PAGE_WIDTH + 20)


# --- one process renders a run's figures --------------------------------------------------------


def test_render_figures_writes_the_named_outputs_in_the_formats_asked(paper_like, tmp_path: Path):
    """``render_figures`` (the workflow's figures job) reads each table once, writes each figure's PDF
    and only the other formats that have an output, the profiles, and all.pdf with one page each."""
    from pypdf import PdfReader

    from effdepth.figures import output_key, render_figures

    tables, ctx = paper_like
    paths = {}
    for name in ("logit_lens", "effective_depth", "integrated_gradients", "relative_contribution", "layer_skip"):
        paths[name] = str(tmp_path / f"{name}.parquet")
        tables[name].write_parquet(paths[name])
    tables["tokens"].write_parquet(tmp_path / "ig_tokens.parquet")
    model = "Qwen2.5-7B-Instruct"
    outputs = {
        output_key("logit_lens_kl"): str(tmp_path / "f/logit_lens_kl.pdf"),
        output_key("logit_lens_kl", "svg"): str(tmp_path / "f/logit_lens_kl.svg"),
        output_key("integrated_gradients"): str(tmp_path / "f/integrated_gradients.pdf"),
        output_key(PROFILE, model=model): str(tmp_path / "f/page-3.pdf"),  # titles come from names, not paths
        "all": str(tmp_path / "f/all.pdf"),
    }
    timings = render_figures(
        paths,
        {"integrated_gradients": [str(tmp_path / "ig_tokens.parquet")]},
        ctx,
        ["logit_lens_kl", "integrated_gradients"],
        [model],
        outputs,
        {"name": "unit", "models": list(ctx["models"]), "tasks": list(ctx["tasks"])},
    )
    assert [name for name, _ in timings] == ["logit_lens_kl", "integrated_gradients", f"profile/{model}"]
    written = sorted(str(p.relative_to(tmp_path / "f")) for p in (tmp_path / "f").rglob("*.*"))
    assert written == sorted(["all.pdf", "integrated_gradients.pdf", "logit_lens_kl.pdf", "logit_lens_kl.svg", "page-3.pdf"])
    reader = PdfReader(outputs["all"])
    assert len(reader.pages) == 4
    assert [o["/Title"] for o in reader.outline][-1] == f"Effective-depth profile · {model}"
    assert "␣t0" in reader.pages[2].extract_text()  # the IG axis is labelled with the token tables
    with pytest.raises(KeyError) as raised:
        render_figures(paths, {}, ctx, ["block_influence"], [], {"block_influence": str(tmp_path / "b.pdf")})
    assert "figure block_influence: its tables block_influence" in str(raised.value)
