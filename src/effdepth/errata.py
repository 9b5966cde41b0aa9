"""Errata of the published code: how much each of its defects moves the effective-depth numbers and
the paper's conclusions (docs/methods.md#errata).

An experiment runs any analysis under both variants (``variants: [correct, published]``).  Each
effective-depth estimator reads one analysis (``effdepth.depth.ESTIMATOR_ANALYSIS``) and the
published variant of each analysis carries one defect of the public code (``DEFECTS``), so
comparing an estimator's two variants isolates that one defect.  Residual erasure and integrated
gradients feed no estimator: their two variants are compared as maps (where the effect peaks, and
how alike the maps are).  ``question_verdicts`` then says, from the numbers, whether each of the
paper's three conclusions holds under each variant.

Torch-free: the job reads tables only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .depth import ESTIMATOR_ANALYSIS, HEADLINE  # the verdicts read the headline estimators

# The defect of the public code that each analysis's `published` variant reproduces.
DEFECTS = {
    "relative_contribution": "RC and cosine divided by d_model per prompt, not by the token count",
    "logit_lens": "logit lens over h_0 … h_{L−1} only (no final residual)",
    "layer_skip": "layer skip over hidden channels 1 … t−1 instead of tokens",
    "residual_erasure": "erasure baseline divided by d_model (≈ zero-ablation)",
    "integrated_gradients": "IG baseline: each token's mean over the hidden dimension",
}
MAP_METRICS = {"residual_erasure": "output_change", "integrated_gradients": "attribution"}
# Verdict thresholds (docs/methods.md#errata): a ratio "stays about constant" across sizes when its
# range is at most Q1_RATIO_RANGE; harder tasks "use more layers" when the ratio rises by more than
# Q3_RATIO_RISE from the easiest to the hardest task.
Q1_RATIO_RANGE = 0.15
Q3_RATIO_RISE = 0.10

KEYS = ["model", "task", "estimator", "form", "aggregation"]
SIDES = ("ed", "ci_low", "ci_high", "ratio")
SCHEMA = {
    "model": pl.Utf8,
    "task": pl.Utf8,
    "analysis": pl.Utf8,
    "defect": pl.Utf8,
    "estimator": pl.Utf8,
    "form": pl.Utf8,
    "aggregation": pl.Utf8,
    "n_layers": pl.Int64,
    **{f"{c}_{v}": pl.Float64 for v in ("correct", "published") for c in SIDES},
    "ed_difference": pl.Float64,
    "ratio_difference": pl.Float64,
    "intervals_overlap": pl.Boolean,
    "map_correlation": pl.Float64,
}
VERDICT_SCHEMA = {"question": pl.Utf8, "variant": pl.Utf8, "holds": pl.Boolean, "sentence": pl.Utf8}


def errata_configured(analyses: dict[str, Any]) -> bool:
    """Whether a validated analyses block asks for the errata: some analysis runs under several
    variants, and an effective-depth estimator is configured (the errata compare its estimates)."""
    from .depth import effective_depth_inputs

    return bool(effective_depth_inputs(analyses)) and any(len(o.get("variants", [])) > 1 for o in analyses.values())


def estimate_errata(ed: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, task, estimator, form, aggregation) estimated under both variants: ED, its
    95 % interval and ratio under each, the differences (published − correct) and whether the two
    intervals overlap (a missing interval counts as its point; null when either ED is missing).

    ``ed``: the effective-depth table (``effdepth.depth.SCHEMA``) with a ``variant`` column."""
    sides = {
        v: ed.filter(pl.col("variant") == v).select(*KEYS, "n_layers", *[pl.col(c).alias(f"{c}_{v}") for c in SIDES])
        for v in ("correct", "published")
    }
    both = sides["correct"].join(sides["published"].drop("n_layers"), on=KEYS, how="inner", maintain_order="left")
    if both.height == 0:
        return pl.DataFrame(schema=SCHEMA)
    low = {v: pl.coalesce(f"ci_low_{v}", f"ed_{v}") for v in ("correct", "published")}
    high = {v: pl.coalesce(f"ci_high_{v}", f"ed_{v}") for v in ("correct", "published")}
    analysis = pl.col("estimator").replace_strict(ESTIMATOR_ANALYSIS, default=None, return_dtype=pl.Utf8)
    out = both.with_columns(
        analysis=analysis,
        defect=analysis.replace_strict(DEFECTS, default=None, return_dtype=pl.Utf8),
        ed_difference=pl.col("ed_published") - pl.col("ed_correct"),
        ratio_difference=pl.col("ratio_published") - pl.col("ratio_correct"),
        intervals_overlap=pl.when(pl.col("ed_correct").is_null() | pl.col("ed_published").is_null())
        .then(None)
        .otherwise(pl.max_horizontal(low["correct"], low["published"]) <= pl.min_horizontal(high["correct"], high["published"])),
        map_correlation=pl.lit(None, dtype=pl.Float64),
    )
    return out.select([pl.col(k).cast(t) for k, t in SCHEMA.items()])


def map_errata(table: pl.DataFrame, analysis: str) -> pl.DataFrame:
    """The two variants of a layer × position map analysis (erasure, IG) per (model, task): the layer
    where the prompt-mean of |value| over positions peaks under each (as ``ed_*``; estimator
    ``peak_layer``) and the Pearson correlation of the two prompt-mean maps (``map_correlation``)."""
    metric = MAP_METRICS[analysis]
    rows = table.filter((pl.col("metric") == metric) & pl.col("position").is_not_null())
    mean = rows.group_by("model", "task", "variant", "layer", "position", maintain_order=True).agg(
        pl.col("value").mean(), pl.col("n_layers").first()
    )
    out = []
    for (model, task), cells in mean.partition_by("model", "task", as_dict=True, maintain_order=True).items():
        grids = {v: g.sort("layer", "position") for (v,), g in cells.partition_by("variant", as_dict=True).items()}
        if set(grids) != {"correct", "published"}:
            continue
        peak = {}
        for v, g in grids.items():
            per_layer = g.group_by("layer", maintain_order=True).agg(pl.col("value").abs().mean()).sort("layer")
            peak[v] = float(per_layer["layer"][int(np.argmax(per_layer["value"].to_numpy()))])
        joined = grids["correct"].join(grids["published"], on=["layer", "position"], suffix="_p")
        x, y = joined["value"].to_numpy(), joined["value_p"].to_numpy()
        corr = float(np.corrcoef(x, y)[0, 1]) if len(x) > 1 and x.std() > 0 and y.std() > 0 else None
        out.append(
            {
                "model": model,
                "task": task,
                "analysis": analysis,
                "defect": DEFECTS[analysis],
                "estimator": "peak_layer",
                "form": metric,
                "aggregation": "mean",
                "n_layers": int(cells["n_layers"][0]),
                "ed_correct": peak["correct"],
                "ed_published": peak["published"],
                "ed_difference": peak["published"] - peak["correct"],
                "map_correlation": corr,
            }
        )
    return pl.DataFrame(out, schema=SCHEMA) if out else pl.DataFrame(schema=SCHEMA)


def _headline(ed: pl.DataFrame, variant: str) -> pl.DataFrame:
    keys = pl.struct("estimator", "form", "aggregation")
    wanted = [{"estimator": e, "form": f, "aggregation": a} for e, f, a in HEADLINE]
    return ed.filter((pl.col("variant") == variant) & keys.is_in(wanted) & pl.col("ed").is_not_null())


def _series(rows: pl.DataFrame, by: list[str]) -> list[pl.DataFrame]:
    return list(rows.partition_by(by, maintain_order=True)) if rows.height else []


def in_lens_view(ed: pl.DataFrame, lens: str) -> pl.DataFrame:
    """The estimates of ``ed`` that read no lens (cosine, skip depth score) or read ``lens``: the
    effective-depth table as seen through that lens (the paper's is the logit lens's)."""
    if "lens" not in ed.columns:
        return ed
    return ed.filter(pl.col("lens").is_null() | (pl.col("lens") == lens))


def lens_question_verdicts(ed: pl.DataFrame, models: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """Q1–Q3 (``question_verdicts``' rules, variant correct) under each lens an estimate was read
    through: columns lens, question, holds, sentence — the same headline estimators, with the
    logit-lens ones replaced by their tuned-lens counterparts under the tuned lens."""
    from .depth import LENS_SUFFIX

    lenses = [v for v in LENS_SUFFIX if "lens" in ed.columns and (ed["lens"] == v).any()]
    rows = []
    for lens in lenses:
        for q, _v, h, t in _question_rows(in_lens_view(ed, lens), ["correct"], models, tasks):
            verdict = "holds" if h else "does not hold" if h is not None else "cannot be checked"
            rows.append(
                {"lens": lens, "question": q, "holds": h, "sentence": f"{q} ({lens} lens): {t}: the conclusion {verdict}."}
            )
    schema = {"lens": pl.Utf8, "question": pl.Utf8, "holds": pl.Boolean, "sentence": pl.Utf8}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def _question_rows(
    ed: pl.DataFrame, variants: list[str], models: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]]
) -> list[tuple[str, str, bool | None, str]]:
    """(question, variant, holds, text) of Q1–Q3 per variant from the headline rows of ``ed``."""
    size = {m: e.get("size_b") for m, e in models.items()}
    training = {m: e.get("training") or "" for m, e in models.items()}
    difficulty = {t: e.get("difficulty") for t, e in tasks.items()}
    rows: list[tuple[str, str, bool | None, str]] = []
    for variant in variants:
        head = _headline(ed, variant).with_columns(
            size=pl.col("model").replace_strict(size, default=None, return_dtype=pl.Float64),
            training=pl.col("model").replace_strict(training, default="", return_dtype=pl.Utf8),
            difficulty=pl.col("task").replace_strict(difficulty, default=None, return_dtype=pl.Float64),
        )
        # Q1
        series = [
            s
            for s in _series(head.filter(pl.col("size").is_not_null()), ["estimator", "task", "training"])
            if s["size"].n_unique() >= 2
        ]
        if series:
            grows = sum(float(s.sort("size")["ed"][-1]) > float(s.sort("size")["ed"][0]) for s in series)
            flat = sum(float(s["ratio"].max() - s["ratio"].min()) <= Q1_RATIO_RANGE for s in series)
            holds = grows * 2 >= len(series) and flat * 2 >= len(series)
            text = (
                f"ED grows from the smallest to the largest model in {grows} of {len(series)} series and the ratio "
                f"stays within {Q1_RATIO_RANGE:g} in {flat}"
            )
        else:
            holds, text = None, "not testable: no series with two model sizes (size_b)"
        rows.append(("Q1 scale", variant, holds, text))
        # Q2
        pairs = [
            (m, e.get("base_model"))
            for m, e in models.items()
            if e.get("training") == "long-cot" and e.get("base_model") in models
        ]
        compared = deeper = 0
        for long_cot, base in pairs:
            a = head.filter(pl.col("model") == long_cot)
            b = head.filter(pl.col("model") == base)
            for r in a.join(b, on=["estimator", "form", "aggregation", "task"], suffix="_base").iter_rows(named=True):
                compared += 1
                low = r["ci_low"] if r["ci_low"] is not None else r["ed"]
                high = r["ci_high_base"] if r["ci_high_base"] is not None else r["ed_base"]
                deeper += low > high
        if compared:
            holds, text = (
                deeper == 0,
                f"a long-CoT model is deeper than its base beyond the intervals in {deeper} of {compared} comparisons",
            )
        else:
            holds, text = None, "not testable: no long-CoT model with a configured base_model"
        rows.append(("Q2 training", variant, holds, text))
        # Q3
        series = [
            s
            for s in _series(head.filter(pl.col("difficulty").is_not_null()), ["model", "estimator"])
            if s["difficulty"].n_unique() >= 2
        ]
        if series:
            rising = sum(
                float(s.sort("difficulty")["ratio"][-1]) - float(s.sort("difficulty")["ratio"][0]) > Q3_RATIO_RISE for s in series
            )
            holds = rising == 0
            text = (
                f"the ratio rises by more than {Q3_RATIO_RISE:g} from the easiest to the hardest task "
                f"in {rising} of {len(series)} series"
            )
        else:
            holds, text = None, "not testable: no model with tasks of two difficulties"
        rows.append(("Q3 difficulty", variant, holds, text))
    return rows


def question_verdicts(ed: pl.DataFrame, models: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """Whether each of the paper's conclusions holds under each variant, in one generated sentence each,
    from the headline estimators (``HEADLINE``) and the config's model and task metadata.

    Q1 scale: per (estimator, task, training) series over ≥ 2 sizes, ED grows from the smallest to the
    largest model and the ratio's range is ≤ Q1_RATIO_RANGE; holds when both are true in at least half
    of the series.  Q2 training: no long-CoT model's ED interval lies wholly above its base model's
    (per estimator and task).  Q3 difficulty: in no (model, estimator) series over ≥ 2 difficulties does
    the ratio rise by more than Q3_RATIO_RISE from the easiest to the hardest task.  A question the
    configuration cannot test has ``holds`` null and says why.  A last row per question (variant
    ``both``) says whether the conclusion holds under both variants."""
    rows = []
    variants = [v for v in ("correct", "published") if ed.height and (ed["variant"] == v).any()]
    rows = _question_rows(in_lens_view(ed, "logit"), variants, models, tasks)
    frame = (
        pl.DataFrame(
            [
                {
                    "question": q,
                    "variant": v,
                    "holds": h,
                    "sentence": f"{q} ({v}): {t}: the conclusion "
                    + ("holds." if h else "does not hold." if h is not None else "cannot be checked."),
                }
                for q, v, h, t in rows
            ],
            schema=VERDICT_SCHEMA,
        )
        if rows
        else pl.DataFrame(schema=VERDICT_SCHEMA)
    )
    summary = []
    for question in ("Q1 scale", "Q2 training", "Q3 difficulty"):
        per = {v: h for q, v, h, _ in rows if q == question}
        if len(per) < 2:
            continue
        if None in per.values():
            text, holds = "cannot be checked under both variants", None
        elif all(per.values()):
            text, holds = "holds under both variants", True
        elif not any(per.values()):
            text, holds = "does not hold under either variant", False
        else:
            kept = ", ".join(v for v, h in per.items() if h)
            lost = ", ".join(v for v, h in per.items() if not h)
            text, holds = f"holds under {kept} but not under {lost}: the defects decide it", False
        summary.append(
            {"question": question, "variant": "both", "holds": holds, "sentence": f"{question}: the conclusion {text}."}
        )
    return pl.concat([frame, pl.DataFrame(summary, schema=VERDICT_SCHEMA)]) if summary else frame


def run(ed_path: str, map_paths: list[str], models: dict[str, Any], tasks: dict[str, Any], outputs: dict[str, str]) -> None:
    """The errata rule: read the effective-depth table and the aggregated erasure / IG tables, write
    ``outputs`` keys ``table`` (parquet) and ``csv``, and ``questions_table`` (parquet) and
    ``questions`` (csv) of ``question_verdicts``."""
    from .tables import write_table

    ed = pl.read_parquet(ed_path)
    frames = [estimate_errata(ed)]
    for path in map_paths:
        table = pl.read_parquet(path)
        if table.height:
            frames.append(map_errata(table, str(table["analysis"][0])))
    errata = pl.concat(frames)
    questions = question_verdicts(ed, models, tasks)
    write_table(errata, outputs["table"])
    write_table(questions, outputs["questions_table"])
    for key, frame in (("csv", errata), ("questions", questions)):
        Path(outputs[key]).parent.mkdir(parents=True, exist_ok=True)
        frame.with_columns(pl.selectors.float().round(4)).write_csv(outputs[key])
