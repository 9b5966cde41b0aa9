"""The workflow end to end on the tiny test configuration, dry runs of the paper's DAG, lint,
incremental rebuilds and clear errors."""

from __future__ import annotations

import polars as pl
import pytest
from pypdf import PdfReader

from effdepth.cache import load_tensors

from .conftest import REPO, planned_jobs, snakemake, tiny_config_for, write_config

pytestmark = pytest.mark.workflow

PER_MODEL_RULES = {"extract", "forward_tables", "intervention"}
GPU_RULES = {"extract", "intervention"}


def test_end_to_end_outputs(finished_run):
    tables = finished_run / "results" / "tables"
    for analysis in (
        "relative_contribution",
        "logit_lens",
        "block_influence",
        "layer_skip",
        "residual_erasure",
        "integrated_gradients",
    ):
        table = pl.read_parquet(tables / f"{analysis}.parquet")
        assert set(table["model"]) == {"tiny-qwen2", "tiny-llama"}, analysis
        assert {"model", "task", "analysis", "metric", "layer", "value"} <= set(table.columns)
        assert table["value"].is_finite().all(), analysis
    pdf = PdfReader(finished_run / "results" / "figures" / "all.pdf")
    assert len(pdf.pages) == 1 + 27 + 2  # title page, the 27 figures of the test configuration, a profile per model
    _, meta = load_tensors(finished_run / "results/cache/tiny-qwen2/words/stats.safetensors", ["resid_sum"])
    assert meta["model"] == "tiny-qwen2" and meta["dtype"] == "float32" and len(meta["prompts_hash"]) == 16
    assert (finished_run / "results" / "config.resolved.yaml").is_file()


def test_every_job_writes_a_benchmark_file_next_to_its_log(finished_run):
    """logs/X.log of every job has logs/benchmark/X.tsv (wall and CPU time), so a run's time per rule
    can be read back (benchmarks/rule_times.py)."""
    logs = finished_run / "logs"
    jobs = {p.relative_to(logs).with_suffix("") for p in logs.rglob("*.log")}
    timed = {p.relative_to(logs / "benchmark").with_suffix("") for p in (logs / "benchmark").rglob("*.tsv")}
    assert jobs and jobs == timed, (sorted(jobs - timed), sorted(timed - jobs))


def test_nothing_to_do_after_a_run(finished_run):
    out = snakemake(finished_run, "-n", "--configfile", str(finished_run / "config.yaml")).stdout
    assert "Nothing to be done" in out, out[-2000:]


def test_figure_style_change_reruns_only_figures(finished_run, tiny_models):
    config = tiny_config_for(finished_run, tiny_models)
    config["figures"] = {"width": 250}
    path = write_config(finished_run, config, "styled.yaml")
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(path)).stdout)
    rules = {rule for rule, _ in jobs}
    assert "figures" in rules
    assert not rules & (PER_MODEL_RULES | {"aggregate", "prepare_prompts"}), rules


def test_adding_a_model_schedules_only_its_jobs(finished_run, tiny_models):
    config = tiny_config_for(finished_run, tiny_models)
    config["models"]["tiny-qwen2-copy"] = dict(config["models"]["tiny-qwen2"])
    path = write_config(finished_run, config, "more.yaml")
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(path)).stdout)
    per_model = [(rule, w) for rule, w in jobs if rule in PER_MODEL_RULES]
    assert per_model and all(w["model"] == "tiny-qwen2-copy" for _, w in per_model), per_model
    assert "aggregate" in {rule for rule, _ in jobs}
    assert "prepare_prompts" not in {rule for rule, _ in jobs}


def _planned(workdir, config, name):
    path = write_config(workdir, config, name)
    return planned_jobs(snakemake(workdir, "-n", "--configfile", str(path)).stdout)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda c: c["tasks"]["words"].update(difficulty=7), id="task difficulty"),
        pytest.param(lambda c: c["models"]["tiny-qwen2"].update(family="renamed"), id="model family"),
        pytest.param(lambda c: c["models"]["tiny-llama"].update(training="long-cot", base_model="tiny-qwen2"), id="Q2 pair"),
        pytest.param(lambda c: c["models"]["tiny-qwen2"].update(size_b=0.5), id="model size"),
    ],
)
def test_metadata_edits_schedule_no_gpu_job(finished_run, tiny_models, edit):
    """Keys read only by figures (or resource requests) rerun no extraction, analysis or prompt job."""
    config = tiny_config_for(finished_run, tiny_models)
    edit(config)
    rules = {rule for rule, _ in _planned(finished_run, config, "metadata.yaml")}
    assert not rules & (PER_MODEL_RULES | {"prepare_prompts", "aggregate"}), rules


def test_adding_a_task_to_an_analysis_schedules_only_that_task(finished_run, tiny_models):
    config = tiny_config_for(finished_run, tiny_models)
    config["analyses"]["integrated_gradients"]["tasks"] = ["addition_3", "words"]
    jobs = _planned(finished_run, config, "more_tasks.yaml")
    gpu = [(rule, w) for rule, w in jobs if rule in GPU_RULES]
    assert gpu and all(w == {**w, "analysis": "integrated_gradients", "task": "words"} for _, w in gpu), gpu
    assert {w["model"] for _, w in gpu} == {"tiny-qwen2", "tiny-llama"}
    assert "aggregate" in {rule for rule, _ in jobs}


def test_paper_dry_run_lists_all_twelve_models(tmp_path):
    out = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config.yaml")).stdout
    jobs = planned_jobs(out)
    models = {w["model"] for rule, w in jobs if rule == "extract"}
    assert len(models) == 12
    downloads = {w["model"] for rule, w in jobs if rule == "download_model"}
    assert downloads == models
    for analysis in ("layer_skip", "residual_erasure", "integrated_gradients"):
        assert {w["model"] for r, w in jobs if r == "intervention" and w["analysis"] == analysis} == models, analysis
    assert any(rule == "figures" for rule, _ in jobs)


def test_lint_passes():
    result = snakemake(REPO, "--lint", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_invalid_config_fails_before_any_job(tmp_path, tiny_models):
    config = tiny_config_for(tmp_path, tiny_models)
    config["tasks"]["words"]["n_promts"] = 3
    path = write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "tasks.words: unknown key 'n_promts'" in result.stdout + result.stderr


def test_a_key_given_twice_fails_before_any_job_with_its_line(tmp_path, tiny_models):
    path = write_config(tmp_path, tiny_config_for(tmp_path, tiny_models))
    path.write_text(path.read_text() + "extraction:\n  batch_size: 3\n")  # extraction is already set above
    result = snakemake(tmp_path, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "key 'extraction' appears twice" in result.stdout + result.stderr
    assert "Job stats" not in result.stdout


def test_missing_local_model_is_named(tmp_path, tiny_models):
    config = tiny_config_for(tmp_path, tiny_models)
    config["models"]["tiny-qwen2"]["path"] = str(tmp_path / "nowhere")
    path = write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "models.tiny-qwen2.path" in result.stdout + result.stderr and "nowhere" in result.stdout + result.stderr


def test_every_analysis_under_both_variants_end_to_end(tmp_path, tiny_models):
    """The test configuration with every analysis that has a published variant at
    `variants: [published, correct]` runs to all.pdf: one extraction per (model, task) serves both
    variants, the tables hold both, the figures show the published one (so the attention- and
    MLP-only skip maps, which the published skip does not produce, are not scheduled), and the errata
    compare the two.  Known answer: the published relative-contribution normaliser rescales the
    cosines without changing their signs, so ED_cos is the same under both variants."""
    from effdepth.analyses import REGISTRY

    config = tiny_config_for(tmp_path, tiny_models)
    for name, options in config["analyses"].items():
        options.pop("variant", None)
        options["variants"] = ["published", "correct"] if REGISTRY[name].published else ["correct"]
    path = write_config(tmp_path, config)
    plan = snakemake(tmp_path, "-n", "--configfile", str(path)).stdout
    jobs = planned_jobs(plan)
    assert {"figures", "errata"} <= {rule for rule, _ in jobs}
    for figure in ("skip_map", "errata"):
        assert f"results/figures/{figure}.pdf" in plan, figure
    for figure in ("skip_map_attention", "skip_map_mlp"):
        assert f"results/figures/{figure}.pdf" not in plan, figure
    extracts = [w for rule, w in jobs if rule == "extract"]
    assert len(extracts) == len({(w["model"], w["task"]) for w in extracts})  # never once per variant
    snakemake(tmp_path, "--cores", "2", "--configfile", str(path))
    tables = tmp_path / "results" / "tables"
    for analysis, options in config["analyses"].items():
        table = pl.read_parquet(tables / f"{analysis}.parquet")
        assert set(table["variant"]) == set(options["variants"]), analysis
    errata = pl.read_parquet(tables / "errata.parquet")
    cos = errata.filter(pl.col("estimator") == "cos")
    assert cos.height and (cos["ed_difference"].fill_null(0) == 0).all(), cos
    assert set(errata["analysis"]) >= {"relative_contribution", "logit_lens", "residual_erasure", "integrated_gradients"}
    questions = pl.read_csv(tables / "errata_questions.csv")
    assert set(questions["question"]) == {"Q1 scale", "Q2 training", "Q3 difficulty"}
    assert (tmp_path / "results" / "figures" / "errata.pdf").is_file()
    assert (tmp_path / "results" / "figures" / "all.pdf").is_file()


def test_table_jobs_import_neither_torch_nor_transformers(finished_run):
    """The jobs that only read caches and tables (forward tables, aggregation, effective depth,
    figures) pay no torch or transformers import: run each job function in a fresh interpreter."""
    import subprocess
    import sys

    cache = finished_run / "results/cache/tiny-qwen2/words/stats.safetensors"
    code = f"""
import sys
from effdepth.jobs import aggregate, forward_tables
from effdepth.depth import run
import effdepth.figures
forward_tables({{"relative_contribution": ["correct"], "logit_lens": ["correct"], "block_influence": ["correct"]}},
               {str(cache)!r}, {str(finished_run / "forward_check.parquet")!r}, "tiny-qwen2", "words")
aggregate([{str(finished_run / "forward_check.parquet")!r}], {str(finished_run / "aggregate_check.parquet")!r}, "logit_lens")
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(REPO / "src")}
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
    combined = pl.read_parquet(finished_run / "forward_check.parquet")
    assert set(combined["analysis"]) == {"relative_contribution", "logit_lens", "block_influence"}
    lens = pl.read_parquet(finished_run / "aggregate_check.parquet")
    assert set(lens["analysis"]) == {"logit_lens"} and "span" not in lens.columns
    assert lens.sort(lens.columns).equals(
        pl.read_parquet(finished_run / "results/tables/logit_lens.parquet")
        .filter((pl.col("model") == "tiny-qwen2") & (pl.col("task") == "words"))
        .sort(lens.columns)
    )
