"""Tuned lenses in the workflow: one train_lens job per model, the extraction of the tuned lens's
tasks reads it, a model entry may name a lens instead (no training then), and a bad lens or corpus
stops the workflow while it is read."""

from __future__ import annotations

import polars as pl
import pytest

from effdepth.lenses.storage import read_tuned_lens_config
from effdepth.stats import ExtractionStats

from .conftest import both_variants, planned_jobs, snakemake, tiny_config_for, write_config

pytestmark = pytest.mark.workflow


def test_the_finished_run_trained_a_lens_per_model_and_read_it_in_the_extraction(finished_run):
    heldout = pl.read_parquet(finished_run / "results/tables/lens_heldout.parquet")
    assert set(heldout["model"]) == {"tiny-qwen2", "tiny-llama"} and set(heldout["lens"]) == {"logit", "tuned"}
    for model in ("tiny-qwen2", "tiny-llama"):
        folder = finished_run / f"results/lenses/{model}/tuned_lens"
        assert read_tuned_lens_config(folder)["num_hidden_layers"] == 4
        read = ExtractionStats.from_cache(finished_run / f"results/cache/{model}/addition_3/stats.safetensors")
        assert read.metadata["lenses"] == "logit,tuned" and "lens_jsd.tuned" in read.tensors
        plain = ExtractionStats.from_cache(finished_run / f"results/cache/{model}/words/stats.safetensors")
        assert plain.metadata["lenses"] == "logit"  # words is not a task of analyses.tuned_lens
    ed = pl.read_parquet(finished_run / "results/tables/effective_depth.parquet")
    tuned = ed.filter(pl.col("lens") == "tuned")
    assert set(tuned["task"]) == {"addition_3"}
    assert {"kl_tuned", "overlap_tuned", "settling_tuned", "dtr_tuned"} <= set(tuned["estimator"])
    sweep = pl.read_parquet(finished_run / "results/tables/effective_depth_sweep.parquet")
    assert {"kl_tuned", "overlap_tuned"} <= set(sweep["estimator"])  # depths under each lens; not the DTR (a share)
    assert not sweep.filter(pl.col("estimator").str.starts_with("dtr")).height
    deletion = pl.read_parquet(finished_run / "results/tables/layer_deletion.parquet")
    assert "tuned_exit_loss" in set(deletion["metric"])
    for page in ("lens_comparison", "lens_curves", "settling_depth"):
        assert (finished_run / f"results/figures/{page}.pdf").is_file()


def test_a_model_entry_naming_a_lens_is_not_trained(finished_run, tiny_models, tmp_path):
    config = tiny_config_for(tmp_path, tiny_models)
    config["models"]["tiny-qwen2"]["tuned_lens"] = str(finished_run / "results/lenses/tiny-qwen2/tuned_lens")
    out = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path, config))).stdout
    jobs = planned_jobs(out)
    trained = {w["model"] for rule, w in jobs if rule == "train_lens"}
    assert trained == {"tiny-llama"}
    assert str(finished_run / "results/lenses/tiny-qwen2/tuned_lens") in out  # an input of its extraction


def test_a_models_own_lens_budget_retrains_only_its_lens(finished_run, tiny_models):
    """models.<m>.lens_training: that model's lens is retrained and the extraction that reads it is
    rerun; no job of the other model, and no extraction of a task the lens does not read."""
    config = both_variants(tiny_config_for(finished_run, tiny_models))
    config["models"]["tiny-qwen2"]["lens_training"] = {"steps": 3, "token_budget": 96}
    path = write_config(finished_run, config, "lens-budget.yaml")
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(path)).stdout)
    assert {w["model"] for rule, w in jobs if rule == "train_lens"} == {"tiny-qwen2"}
    assert {(w["model"], w["task"]) for rule, w in jobs if rule == "extract"} == {("tiny-qwen2", "addition_3")}
    assert all(w.get("model") != "tiny-llama" for _, w in jobs), jobs


def test_a_bad_lens_stops_the_dry_run(tiny_models, tmp_path):
    """The workflow reads its config through effdepth.config (tests/unit/test_config.py has every
    lens and corpus mistake): a lens path that is not a lens stops it before any job."""
    config = tiny_config_for(tmp_path, tiny_models)
    config["models"]["tiny-qwen2"]["tuned_lens"] = str(tmp_path / "nowhere")
    result = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path, config)), check=False)
    assert result.returncode != 0
    assert "models.tiny-qwen2.tuned_lens: " in result.stdout + result.stderr
