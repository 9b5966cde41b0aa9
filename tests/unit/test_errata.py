"""Errata of the published code: estimates under both variants, map comparisons and the generated
verdicts on the paper's questions, on hand-made tables with known answers."""

from __future__ import annotations

import polars as pl
import pytest

from effdepth.depth import SCHEMA as ED_SCHEMA
from effdepth.errata import estimate_errata, map_errata, question_verdicts


def _ed(rows: list[dict]) -> pl.DataFrame:
    base = {"form": "paper", "aggregation": "mean", "threshold": None, "ci_low": None, "ci_high": None, "n_layers": 10}
    full = []
    for r in rows:
        row = {**base, **r}
        row.setdefault("ratio", None if row["ed"] is None else (row["ed"] + 1) / row["n_layers"])
        full.append({k: row.get(k) for k in ED_SCHEMA})
    return pl.DataFrame(full, schema=ED_SCHEMA)


def test_each_estimate_under_both_variants_with_overlap():
    ed = _ed(
        [
            {"model": "m", "task": "t", "estimator": "cos", "variant": "correct", "ed": 4.0, "ci_low": 3.0, "ci_high": 5.0},
            {"model": "m", "task": "t", "estimator": "cos", "variant": "published", "ed": 5.0, "ci_low": 5.0, "ci_high": 6.0},
            {"model": "m", "task": "t", "estimator": "kl", "variant": "correct", "ed": 2.0, "ci_low": 2.0, "ci_high": 2.0},
            {"model": "m", "task": "t", "estimator": "kl", "variant": "published", "ed": 7.0, "ci_low": 6.0, "ci_high": 8.0},
            {"model": "m", "task": "t", "estimator": "overlap", "variant": "correct", "ed": None},
            {"model": "m", "task": "t", "estimator": "overlap", "variant": "published", "ed": 3.0},
            {"model": "m", "task": "t", "estimator": "depth_score_output", "variant": "correct", "ed": 3.5},  # one variant only
        ]
    )
    out = estimate_errata(ed).sort("estimator")
    assert out["estimator"].to_list() == ["cos", "kl", "overlap"]
    cos, kl, overlap = out.iter_rows(named=True)
    assert cos["ed_difference"] == 1.0 and cos["intervals_overlap"] is True  # [3, 5] and [5, 6] touch
    assert cos["analysis"] == "relative_contribution" and "d_model" in cos["defect"]
    assert kl["ed_difference"] == 5.0 and kl["intervals_overlap"] is False and kl["analysis"] == "logit_lens"
    assert overlap["ed_difference"] is None and overlap["intervals_overlap"] is None
    assert cos["ratio_difference"] == pytest.approx(0.1)


def test_map_errata_peak_layer_and_correlation():
    rows = []
    for variant, peak in (("correct", 2), ("published", 0)):
        for layer in range(3):
            for position in range(4):
                value = (3.0 if layer == peak else 1.0) * (position + 1)
                rows.append(
                    {
                        "model": "m",
                        "task": "t",
                        "analysis": "residual_erasure",
                        "variant": variant,
                        "n_layers": 2,
                        "metric": "output_change",
                        "layer": layer,
                        "position": position,
                        "prompt": 0,
                        "value": value,
                    }
                )
    out = map_errata(pl.DataFrame(rows), "residual_erasure").row(0, named=True)
    assert (out["ed_correct"], out["ed_published"], out["ed_difference"]) == (2.0, 0.0, -2.0)
    assert out["estimator"] == "peak_layer" and -1 <= out["map_correlation"] < 1
    same = pl.DataFrame(
        [{**r, "value": r["value"] if r["variant"] == "correct" else 2 * r["value"]} for r in rows if r["variant"] == "correct"]
        + [{**r, "variant": "published", "value": 2 * r["value"]} for r in rows if r["variant"] == "correct"]
    )
    assert map_errata(same, "residual_erasure")["map_correlation"][0] == pytest.approx(1.0)  # a rescaled map


def test_question_verdicts_from_known_numbers():
    models = {
        "small": {"size_b": 1.5, "training": "instruct"},
        "large": {"size_b": 7.0, "training": "instruct"},
        "cot": {"size_b": 1.5, "training": "long-cot", "base_model": "small"},
    }
    tasks = {"easy": {"difficulty": 1}, "hard": {"difficulty": 5}}
    rows = []
    # correct: ED grows with size at a constant ratio; the long-CoT model is not deeper; ratios flat over difficulty
    # published: the long-CoT model's interval lies wholly above its base's
    for variant, cot in (("correct", 5.0), ("published", 9.0)):
        for task in tasks:
            for model, ed, n in (("small", 5.0, 10), ("large", 11.0, 20), ("cot", cot, 10)):
                rows.append(
                    {
                        "model": model,
                        "task": task,
                        "estimator": "cos",
                        "variant": variant,
                        "ed": ed,
                        "n_layers": n,
                        "ci_low": ed - 0.5,
                        "ci_high": ed + 0.5,
                    }
                )
    verdicts = {(r["question"], r["variant"]): r for r in question_verdicts(_ed(rows), models, tasks).iter_rows(named=True)}
    assert verdicts[("Q1 scale", "correct")]["holds"] is True
    assert verdicts[("Q2 training", "correct")]["holds"] is True
    assert verdicts[("Q2 training", "published")]["holds"] is False
    assert "in 2 of 2 comparisons" in verdicts[("Q2 training", "published")]["sentence"]
    assert verdicts[("Q3 difficulty", "correct")]["holds"] is True
    both = verdicts[("Q2 training", "both")]
    assert both["holds"] is False and "holds under correct but not under published" in both["sentence"]
    assert verdicts[("Q1 scale", "both")]["sentence"] == "Q1 scale: the conclusion holds under both variants."


def test_untestable_questions_say_why():
    rows = [{"model": "m", "task": "t", "estimator": "cos", "variant": "correct", "ed": 3.0}]
    verdicts = question_verdicts(_ed(rows), {"m": {}}, {"t": {}})
    assert verdicts["holds"].null_count() == 3
    assert all("not testable" in s for s in verdicts["sentence"])
