"""Estimators never read non-finite values, and the missing estimate says so."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from effdepth.depth import effective_depth, nonfinite_reason
from tests.unit.test_depth import PAPER, _table

L, P = 6, 4
WEIGHTS = np.full(P, 10.0)


def _lens(model: str, kl: np.ndarray, overlap: np.ndarray) -> pl.DataFrame:
    return _table(
        "logit_lens", model, "easy", {"kl": np.tile(kl, (P, 1)), "overlap": np.tile(overlap, (P, 1))}, WEIGHTS, n_layers=L
    )


def _rc(model: str, cos: np.ndarray) -> pl.DataFrame:
    return _table(
        "relative_contribution",
        model,
        "easy",
        {f"cos_{m}": np.tile(cos, (P, 1)) for m in ("attention", "mlp", "layer")},
        WEIGHTS,
        n_layers=L,
    )


def _row(table: pl.DataFrame, model: str, estimator: str, form: str = "paper") -> dict:
    (row,) = table.filter((pl.col("model") == model) & (pl.col("estimator") == estimator) & (pl.col("form") == form)).to_dicts()
    return row


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    kl = 10.0 * np.exp(-np.arange(L + 1) / 2.0)
    overlap = np.clip(np.arange(L + 1) / L, 0, 1)
    cos = 0.4 * np.tanh(np.arange(L) - 2.5)
    nan_kl = np.full(L + 1, np.nan)
    nan_overlap = np.where(np.arange(L + 1) >= 2, 1.0, 0.0)  # NaN logits "agree" with NaN logits: overlap 1
    partial_kl = kl.copy()
    partial_kl[3:5] = np.inf
    bad_cos = cos.copy()
    bad_cos[1] = np.nan
    lens = pl.concat([_lens("finite", kl, overlap), _lens("all_nan", nan_kl, nan_overlap), _lens("partly", partial_kl, overlap)])
    rc = pl.concat([_rc("finite", cos), _rc("all_nan", bad_cos), _rc("partly", cos)])
    return {"relative_contribution": rc, "logit_lens": lens}


def test_finite_model_is_estimated(tables):
    table, _ = effective_depth(tables, **PAPER, bootstrap=20)
    assert _row(table, "finite", "overlap")["ed"] == 2 and _row(table, "finite", "cos")["ed"] == 2
    assert table.filter(pl.col("model") == "finite")["reason"].null_count() == table.filter(pl.col("model") == "finite").height


def test_overlap_of_nan_logits_is_not_an_estimate(tables):
    """A finite overlap curve is not trusted when the lens it comes from produced NaN KL."""
    table, sweep = effective_depth(tables, **PAPER, bootstrap=20)
    for estimator in ("kl", "overlap"):
        for form in ("paper", "robust"):
            row = _row(table, "all_nan", estimator, form)
            assert row["ed"] is None and row["ratio"] is None and row["ci_low"] is None and row["solvable"] is None
            assert row["reason"].startswith("non-finite values in the logit-lens curve at layers 0, 1, 2, 3, 4, 5, 6")
            assert "missing layers" not in row["reason"]
    assert sweep.filter(pl.col("model") == "all_nan")["ed"].null_count() == sweep.filter(pl.col("model") == "all_nan").height
    cos = _row(table, "all_nan", "cos")
    assert cos["ed"] is None and "relative-contribution curve at layers 1 " in cos["reason"] and "cos_mlp" in cos["reason"]


def test_reason_names_the_affected_layers_only(tables):
    table, _ = effective_depth(tables, **PAPER, bootstrap=0)
    row = _row(table, "partly", "kl", "robust")
    assert row["ed"] is None and "logit-lens curve at layers 3, 4 (metrics kl)" in row["reason"] and "bfloat16" in row["reason"]
    assert _row(table, "partly", "cos")["ed"] == 2  # the other analysis of that model is unaffected


def test_one_prompt_row_is_enough_to_withhold_the_estimate():
    kl = 10.0 * np.exp(-np.arange(L + 1) / 2.0)
    lens = _lens("m", kl, np.clip(np.arange(L + 1) / L, 0, 1))
    lens = lens.with_columns(
        value=pl.when((pl.col("prompt") == 2) & (pl.col("layer") == 5) & (pl.col("metric") == "overlap"))
        .then(float("nan"))
        .otherwise(pl.col("value"))
    )
    assert nonfinite_reason(lens, "logit_lens").startswith("non-finite values in the logit-lens curve at layers 5 ")
    table, _ = effective_depth({"logit_lens": lens}, **PAPER, bootstrap=20)
    assert table["ed"].null_count() == table.height


def test_missing_layers_keep_their_own_reason():
    kl = 10.0 * np.exp(-np.arange(L + 1) / 2.0)
    lens = _lens("m", kl, np.clip(np.arange(L + 1) / L, 0, 1)).filter(~((pl.col("layer") == 2) & pl.col("prompt").is_null()))
    assert nonfinite_reason(lens, "logit_lens") is None
    table, _ = effective_depth({"logit_lens": lens}, **PAPER, bootstrap=0)
    assert set(table["reason"]) == {"missing layers in the table"}
