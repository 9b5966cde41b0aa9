"""Effective-depth estimators on curves with known answers, the bootstrap over prompts, and the
tables the effective_depth rule writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from effdepth import depth
from effdepth.depth import (
    REFERENCE_SCHEMA,
    SCHEMA,
    compare_with_reference,
    depth_score,
    ed_cosine,
    ed_kl,
    ed_overlap,
    effective_depth,
    percentile_interval,
    ratio,
    read_reference,
    resample_counts,
)

REFERENCE_CSV = Path(__file__).resolve().parents[2] / "resources" / "reference" / "reference_effective_depth.csv"

# --- estimators on synthetic curves -------------------------------------------------------------


def test_cosine_last_negative_to_non_negative_crossing():
    #              0     1     2     3     4    5
    c = np.array([-0.2, -0.1, 0.1, -0.05, 0.0, 0.3])
    assert ed_cosine(c)[0] == 3  # crossings at 1 and 3 (0.0 counts as non-negative): the last one
    assert ed_cosine(np.array([-0.3, -0.2, 0.1]))[0] == 1


def test_cosine_without_crossing_has_no_solution():
    assert np.isnan(ed_cosine(np.array([0.1, 0.2, 0.3])))[0]
    assert np.isnan(ed_cosine(np.array([-0.1, -0.2, -0.3])))[0]
    assert np.isnan(ed_cosine(np.array([0.1, -0.2])))[0]  # positive → negative is not a crossing


def test_kl_first_crossing_artefact_and_robust_form():
    """KL(0) is the maximum and KL dips at layer 1: the paper's rule says ED = 1 (the R1-Distill-1.5B /
    GSM8K artefact); the robust form waits until KL stays below τ·max."""
    kl = np.array([10.0, 4.0, 6.0, 6.0, 5.0, 3.0, 1.0])
    assert ed_kl(kl, 0.5)[0] == 1
    assert ed_kl(kl, 0.5, robust=True)[0] == 5  # 5.0 is not < 0.5 · 10
    smooth = np.array([8.0, 7.0, 5.0, 3.0, 2.0, 1.0])
    assert ed_kl(smooth, 0.5)[0] == ed_kl(smooth, 0.5, robust=True)[0] == 3


def test_kl_without_solution():
    assert np.isnan(ed_kl(np.zeros(5), 0.5))[0]  # nothing is below 0.5 · 0
    assert np.isnan(ed_kl(np.array([1.0, 0.2, 0.9]), 0.5, robust=True))[0]  # does not stay below


def test_overlap_first_above_and_robust_form():
    ov = np.array([0.0, 0.4, 0.2, 0.5, 0.6])
    assert ed_overlap(ov, 0.3)[0] == 1
    assert ed_overlap(ov, 0.3, robust=True)[0] == 3
    assert ed_overlap(ov, 0.3 + 1e-9)[0] == 1
    assert np.isnan(ed_overlap(np.array([0.1, 0.3, 0.2]), 0.3))[0]  # strictly above τ


def test_estimators_are_vectorised_over_resamples():
    curves = np.array([[-1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(ed_cosine(curves), [0.0, 1.0, np.nan])
    kl = np.array([[4.0, 1.0, 0.0], [4.0, 3.0, 1.0]])
    np.testing.assert_array_equal(ed_kl(kl, 0.5), [1.0, 2.0])


def test_ratio():
    assert ratio(16, 28) == pytest.approx(17 / 28)
    assert ratio(1, 28) == pytest.approx(2 / 28)  # the published 0.07
    np.testing.assert_allclose(ratio(np.array([0.0, 27.0]), 28), [1 / 28, 1.0])


def test_depth_score_is_the_centre_of_mass():
    assert depth_score(np.array([0.0, 0.0, 1.0, 0.0]))[0] == 2.0
    assert depth_score(np.ones(5))[0] == 2.0
    assert depth_score(np.array([3.0, 1.0]))[0] == pytest.approx(0.25)
    assert np.isnan(depth_score(np.zeros(4)))[0]


def test_percentile_interval_uses_observed_values_and_counts_solutions():
    samples = np.array([3.0, 4.0, 4.0, 5.0, np.nan] * 20)
    low, high, solvable = percentile_interval(samples)
    assert (low, high, solvable) == (3.0, 5.0, 0.8)
    assert percentile_interval(np.arange(10.0))[:2] == (0.0, 9.0)  # observed values, not interpolated (0.225, 8.775)
    assert percentile_interval(np.full(10, np.nan)) == (None, None, 0.0)
    assert percentile_interval(np.array([])) == (None, None, None)


def test_resample_counts_are_seeded_multiplicities():
    a = resample_counts(10, 200, 0, "model", "task")
    assert a.shape == (200, 10) and (a.sum(axis=1) == 10).all()
    np.testing.assert_array_equal(a, resample_counts(10, 200, 0, "model", "task"))
    assert not np.array_equal(a, resample_counts(10, 200, 1, "model", "task"))
    assert not np.array_equal(a, resample_counts(10, 200, 0, "model", "other"))


# The paper's thresholds (config.yaml: effective_depth).
PAPER = {"kl_threshold": 0.5, "overlap_threshold": 0.3}


# --- tables ---------------------------------------------------------------------------------------


def _table(
    analysis: str,
    model: str,
    task: str,
    metrics: dict[str, np.ndarray],
    weights: np.ndarray,
    variant: str = "correct",
    combine: str = "mean",
    extra: dict | None = None,
    n_layers: int = 8,
) -> pl.DataFrame:
    """Rows of one analysis: per-prompt curves [P, n] per metric, plus the aggregate row (weighted mean
    or max over prompts), like effdepth.tables builds them."""
    rows = []
    for metric, per in metrics.items():
        agg = per.max(0) if combine == "max" else (weights[:, None] * per).sum(0) / weights.sum()
        for layer in range(per.shape[1]):
            rows.append(
                {"metric": metric, "layer": layer, "prompt": None, "value": float(agg[layer]), "weight": float(weights.sum())}
            )
            rows += [
                {"metric": metric, "layer": layer, "prompt": p, "value": float(per[p, layer]), "weight": float(weights[p])}
                for p in range(per.shape[0])
            ]
    frame = pl.DataFrame(
        rows, schema={"metric": pl.Utf8, "layer": pl.Int32, "prompt": pl.Int32, "value": pl.Float64, "weight": pl.Float64}
    )
    frame = frame.with_columns(
        model=pl.lit(model),
        task=pl.lit(task),
        analysis=pl.lit(analysis),
        variant=pl.lit(variant),
        n_layers=pl.lit(n_layers, pl.Int32),
    )
    for key, value in (extra or {}).items():
        frame = frame.with_columns(value.alias(key) if isinstance(value, pl.Expr) else pl.lit(value).alias(key))
    return frame


def _skip_table(model: str, task: str, output: np.ndarray, future: np.ndarray, weights: np.ndarray, agg: str) -> pl.DataFrame:
    """layer_skip rows: output [P, L] (layer = skipped_layer), future [P, L, L] (j > s only)."""
    L = output.shape[1]
    out = _table(
        "layer_skip",
        model,
        task,
        {"output": output},
        weights,
        combine=agg,
        extra={"kind": "layer", "aggregation": agg, "skipped_layer": pl.col("layer")},
    )
    per = future.reshape(future.shape[0], L * L)
    fut = _table(
        "layer_skip",
        model,
        task,
        {"future": per},
        weights,
        combine=agg,
        extra={"kind": "layer", "aggregation": agg, "skipped_layer": (pl.col("layer") // L).cast(pl.Int32)},
    )
    fut = fut.with_columns(layer=(pl.col("layer") % L).cast(pl.Int32)).filter(pl.col("layer") > pl.col("skipped_layer"))
    return pl.concat([out, fut], how="diagonal_relaxed")


def _noisy(rng: np.random.Generator, curve: np.ndarray, n_prompts: int, noise: float) -> np.ndarray:
    return curve[None, :] + noise * rng.standard_normal((n_prompts, curve.size))


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    """One well-behaved model (L = 8) on task 'easy' and a model whose mean cosine never crosses zero."""
    rng = np.random.default_rng(0)
    L, P = 8, 10
    w = rng.integers(20, 60, P).astype(float)
    layers = np.arange(L)
    cos = 0.4 * np.tanh(layers - 4.5)  # negative up to layer 4, positive from 5: ED_cos = 4
    rc = _table(
        "relative_contribution", "good", "easy", {f"cos_{m}": _noisy(rng, cos, P, 0.01) for m in ("attention", "mlp", "layer")}, w
    )
    flat = _table(
        "relative_contribution",
        "flat",
        "easy",
        {f"cos_{m}": _noisy(rng, np.full(L, 0.3), P, 0.01) for m in ("attention", "mlp", "layer")},
        w,
    )
    lens_layers = np.arange(L + 1)
    kl = 10.0 * np.exp(-lens_layers / 2.0)  # below 5 from layer 2 on
    overlap = np.clip(lens_layers / L, 0, 1)  # above 0.3 from layer 3 on
    lens = pl.concat(
        [
            _table("logit_lens", m, "easy", {"kl": _noisy(rng, kl, P, 0.05), "overlap": _noisy(rng, overlap, P, 0.01)}, w)
            for m in ("good", "flat")
        ]
    )
    output = np.exp(-layers / 3.0)
    s, j = np.meshgrid(layers, layers, indexing="ij")
    future = np.where(j > s, np.exp(-s / 3.0), 0.0)
    skip = pl.concat(
        [
            _skip_table(
                "good",
                "easy",
                np.abs(_noisy(rng, output, P, 0.01)),
                np.abs(future[None] + 0.01 * rng.standard_normal((P, L, L))),
                w,
                agg,
            )
            for agg in ("max", "mean")
        ]
    )
    return {"relative_contribution": pl.concat([rc, flat]), "logit_lens": lens, "layer_skip": skip}


def _pick(table: pl.DataFrame, model: str, estimator: str, form: str, aggregation: str = "mean") -> dict:
    rows = table.filter(
        (pl.col("model") == model)
        & (pl.col("estimator") == estimator)
        & (pl.col("form") == form)
        & (pl.col("aggregation") == aggregation)
    ).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def test_effective_depth_table_known_answers_and_intervals(tables):
    table, _ = effective_depth(tables, **PAPER, bootstrap=200, seed=0)
    assert table.schema == pl.Schema(SCHEMA)
    cos = _pick(table, "good", "cos", "paper")
    assert cos["ed"] == 4 and cos["ratio"] == pytest.approx(5 / 8) and cos["n_layers"] == 8 and cos["n_prompts"] == 10
    assert cos["ci_low"] <= cos["ed"] <= cos["ci_high"] and cos["solvable"] == 1.0 and cos["reason"] is None
    assert cos["ratio_low"] == pytest.approx((cos["ci_low"] + 1) / 8)
    for form in ("paper", "robust"):
        kl = _pick(table, "good", "kl", form)
        assert kl["ed"] == 2 and kl["threshold"] == 0.5 and kl["ci_low"] <= 2 <= kl["ci_high"]
        ov = _pick(table, "good", "overlap", form)
        assert ov["ed"] == 3 and ov["threshold"] == 0.3
    for effect in ("output", "future"):
        for agg in ("max", "mean"):
            row = _pick(table, "good", f"depth_score_{effect}", "centre_of_mass", agg)
            assert 0 < row["ed"] < 7 and row["ci_low"] <= row["ed"] <= row["ci_high"] and row["n_resamples"] == 200


def test_depth_scores_match_their_definition(tables):
    table, _ = effective_depth(tables, **PAPER, bootstrap=0)
    skip = tables["layer_skip"].filter(pl.col("prompt").is_null() & (pl.col("aggregation") == "mean"))
    out = skip.filter(pl.col("metric") == "output").sort("skipped_layer")["value"].to_numpy()
    assert _pick(table, "good", "depth_score_output", "centre_of_mass")["ed"] == pytest.approx(
        (np.arange(8) * out).sum() / out.sum()
    )
    fut = skip.filter(pl.col("metric") == "future").group_by("skipped_layer").agg(pl.col("value").mean()).sort("skipped_layer")
    m = np.zeros(8)
    m[fut["skipped_layer"].to_numpy()] = fut["value"].to_numpy()  # m_7 = 0: no later layer
    assert _pick(table, "good", "depth_score_future", "centre_of_mass")["ed"] == pytest.approx((np.arange(8) * m).sum() / m.sum())


def test_no_crossing_is_a_null_with_a_reason(tables):
    table, _ = effective_depth(tables, **PAPER, bootstrap=50)
    row = _pick(table, "flat", "cos", "paper")
    assert row["ed"] is None and row["ratio"] is None
    assert row["reason"] == "no negative-to-non-negative crossing of the mean cosine"
    assert row["solvable"] == 0.0 and row["ci_low"] is None
    assert _pick(table, "flat", "kl", "paper")["ed"] == 2  # the other estimators of that model still work
    assert table.filter(pl.col("model") == "flat")["estimator"].str.starts_with("depth_score").sum() == 0  # no skip table for it


def test_bootstrap_is_seeded(tables):
    a, _ = effective_depth(tables, **PAPER, bootstrap=100, seed=3)
    b, _ = effective_depth(tables, **PAPER, bootstrap=100, seed=3)
    c, _ = effective_depth(tables, **PAPER, bootstrap=100, seed=4)
    assert a.equals(b)
    cols = ["ci_low", "ci_high"]
    ds = pl.col("estimator").str.starts_with("depth_score")
    assert not a.filter(ds).select(cols).equals(c.filter(ds).select(cols))


def test_resampling_all_prompts_once_reproduces_the_aggregate(tables):
    """The bootstrap re-aggregates per-prompt rows exactly like the table's aggregate rows."""
    rows = {a: t.filter(pl.col("model") == "good") for a, t in tables.items()}
    sources = depth.curves_for(rows, 8)
    for name, curves in sources.items():
        identity = np.ones((1, curves.n_prompts), dtype=np.int64)
        np.testing.assert_allclose(curves.resampled_curves(identity), curves.point_curve(), rtol=1e-12, err_msg=name)
    out_max = sources["skip_output_max"]
    only_first = np.zeros((1, out_max.n_prompts), dtype=np.int64)
    only_first[0, 0] = out_max.n_prompts
    np.testing.assert_allclose(out_max.resampled_curves(only_first)[0], out_max.values[0])


def test_prompts_the_layer_skip_left_out_are_named_in_the_reason():
    """A prompt without skip position (weight 0, no value in the layer_skip table) is not resampled:
    the skip estimates count the prompts used and their reason says which prompt was left out."""
    import torch

    from effdepth.analyses.layer_skip import table

    def results(scale):
        future = scale * torch.tensor([[[[0.0], [0.5]], [[0.0], [0.25]]]], dtype=torch.float64)
        output = scale * torch.tensor([[[0.3], [0.1]]], dtype=torch.float64)
        return {"future_max": future, "future_mean": future, "output_max": output, "output_mean": output}

    ids = {"model": "m", "task": "t", "n_layers": 2}
    rows = table([results(1.0), {}, results(2.0), results(1.5)], [[8], [], [8], [8]], ["layer"], "correct", **ids)
    ed, _ = effective_depth({"layer_skip": rows}, **PAPER, bootstrap=20)
    assert ed.height == 4 and (ed["n_prompts"] == 3).all()
    assert ed["ed"].null_count() == 0 and ed["ci_low"].null_count() == 0
    for reason in ed["reason"]:
        assert reason == "3 of 4 prompts: prompt 1 too short for a skip position (weight 0 in the layer_skip table)"


def test_no_per_prompt_rows_means_no_interval(tables):
    aggregate_only = {a: t.filter(pl.col("prompt").is_null()) for a, t in tables.items()}
    table, _ = effective_depth(aggregate_only, **PAPER, bootstrap=100)
    row = _pick(table, "good", "cos", "paper")
    assert row["ed"] == 4 and row["ci_low"] is None and row["n_prompts"] == 0 and row["n_resamples"] == 0


def test_sweep_table_shape(tables):
    _, sweep = effective_depth(tables, **PAPER, bootstrap=20, sweep=[0.2, 0.5, 0.8])
    assert sweep.schema == pl.Schema(SCHEMA)
    # 2 models × 3 thresholds × (kl, overlap) × (paper, robust)
    assert sweep.height == 2 * 3 * 2 * 2
    assert sorted(sweep["threshold"].unique().to_list()) == [0.2, 0.5, 0.8]
    kl = sweep.filter((pl.col("model") == "good") & (pl.col("estimator") == "kl") & (pl.col("form") == "paper")).sort("threshold")
    assert kl["ed"].to_list() == sorted(kl["ed"].to_list(), reverse=True)  # a lower τ needs a deeper layer
    _, default = effective_depth(tables, **PAPER, bootstrap=0)
    assert default["threshold"].n_unique() == len(depth.DEFAULT_SWEEP)


def test_published_variant_logit_lens_has_no_final_layer_row(tables):
    lens = tables["logit_lens"].filter(pl.col("layer") < 8).with_columns(variant=pl.lit("published"))
    table, _ = effective_depth({"logit_lens": lens}, **PAPER, bootstrap=0)
    row = _pick(table, "good", "kl", "paper")
    assert row["n_layers"] == 8 and row["ed"] == 2 and row["variant"] == "published"


# --- comparison with the paper and the rule's outputs ---------------------------------------------


def test_reference_comparison(tmp_path):
    ref_csv = tmp_path / "ref.csv"
    ref_csv.write_text(
        "model,hf_id,n_layers,dataset,ed_cosine,ed_kl,ed_overlap\nM,org/M,28,gsm8k,16,1,23\nN,org/N,28,gsm8k,10,10,10\n"
    )
    reference = read_reference(ref_csv)
    assert reference.height == 6 and set(reference["estimator"]) == {"cos", "kl", "overlap"}
    ours = pl.DataFrame(
        [
            {
                "model": "M",
                "task": "gsm8k",
                "estimator": "kl",
                "form": "paper",
                "ed": 1.0,
                "ci_low": 1.0,
                "ci_high": 3.0,
                "n_layers": 28,
            },
            {
                "model": "M",
                "task": "gsm8k",
                "estimator": "kl",
                "form": "robust",
                "ed": 20.0,
                "ci_low": 19.0,
                "ci_high": 21.0,
                "n_layers": 28,
            },
            {
                "model": "M",
                "task": "hellaswag",
                "estimator": "kl",
                "form": "paper",
                "ed": 5.0,
                "ci_low": 4.0,
                "ci_high": 6.0,
                "n_layers": 28,
            },
        ],
        schema={k: SCHEMA[k] for k in ("model", "task", "estimator", "form", "ed", "ci_low", "ci_high", "n_layers")},
    ).with_columns(ratio=(pl.col("ed") + 1) / 28, reason=pl.lit(None, pl.Utf8), variant=pl.lit("correct"))
    cmp = compare_with_reference(ours, reference)
    assert cmp.schema == pl.Schema(REFERENCE_SCHEMA)
    assert cmp.select("form", "published_ed", "difference", "published_in_ci").rows() == [
        ("paper", 1.0, 0.0, True),
        ("robust", 1.0, 19.0, False),
    ]
    assert cmp["published_ratio"][0] == pytest.approx(2 / 28)
    empty = compare_with_reference(ours.with_columns(model=pl.lit("other")), reference)
    assert empty.height == 0 and empty.schema == pl.Schema(REFERENCE_SCHEMA)


def test_the_shipped_reference_table_has_the_papers_36_values():
    reference = read_reference(REFERENCE_CSV)
    assert reference.height == 36 * 3
    artefact = reference.filter(
        (pl.col("model") == "DeepSeek-R1-Distill-Qwen-1.5B") & (pl.col("task") == "gsm8k") & (pl.col("estimator") == "kl")
    )
    assert artefact["published_ed"].item() == 1 and artefact["published_ratio"].item() == pytest.approx(0.07, abs=0.005)
    assert ("Qwen2.5-7B-Instruct", "aime24") in depth.reference_pairs(REFERENCE_CSV)


def test_run_writes_every_output(tables, tmp_path):
    paths = []
    for name, table in tables.items():
        path = tmp_path / f"{name}.parquet"
        table.write_parquet(path)
        paths.append(str(path))
    outputs = {
        k: str(tmp_path / f"out_{k}.{ext}")
        for k, ext in (
            ("table", "parquet"),
            ("csv", "csv"),
            ("sweep", "parquet"),
            ("reference", "parquet"),
            ("reference_csv", "csv"),
        )
    }
    depth.run(paths, REFERENCE_CSV, {"bootstrap": 20, "seed": 0, "kl_threshold": 0.5, "overlap_threshold": 0.3}, outputs)
    written = pl.read_parquet(outputs["table"])
    assert written.height > 0 and {"ed", "ratio", "ci_low", "ci_high", "n_layers", "n_prompts", "variant", "reason"} <= set(
        written.columns
    )
    assert pl.read_csv(outputs["csv"]).height == written.height
    reference = pl.read_parquet(outputs["reference"])
    assert reference.height == 0 and reference.columns == list(REFERENCE_SCHEMA)  # no paper model in the fixture
    assert pl.read_csv(outputs["reference_csv"]).columns == list(REFERENCE_SCHEMA)
