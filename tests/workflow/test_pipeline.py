"""The workflow end to end on the tiny test configuration, dry runs of the paper's DAG, lint,
incremental rebuilds and clear errors."""

from __future__ import annotations

import polars as pl
import pytest
from pypdf import PdfReader

from effdepth.analyses import REGISTRY
from effdepth.cache import load_tensors
from effdepth.config import load_config

from .conftest import REPO, both_variants, expected_pages, planned_jobs, snakemake, tiny_config_for, write_config

pytestmark = pytest.mark.workflow

PER_MODEL_RULES = {"extract", "forward_tables", "intervention"}
GPU_RULES = {"extract", "intervention"}


def test_end_to_end_outputs(finished_run):
    """Every analysis of the registry (layer deletion included) has its table from both models, every
    configured variant, finite values; all.pdf has exactly the title page, one page per figure the
    config plans and a profile per model."""
    tables = finished_run / "results" / "tables"
    config = load_config(finished_run / "config.yaml")
    assert set(config["analyses"]) == set(REGISTRY)  # the test configuration runs every analysis
    for analysis in REGISTRY:
        table = pl.read_parquet(tables / f"{analysis}.parquet")
        assert set(table["model"]) == {"tiny-qwen2", "tiny-llama"}, analysis
        assert set(table["variant"]) == set(config["analyses"][analysis]["variants"]), analysis
        assert {"model", "task", "analysis", "metric", "layer", "value"} <= set(table.columns)
        assert table["value"].is_finite().all(), analysis
    pdf = PdfReader(finished_run / "results" / "figures" / "all.pdf")
    assert len(pdf.pages) == expected_pages(finished_run / "config.yaml")
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


def _run_config(finished_run, tiny_models) -> dict:
    """The configuration the finished run ran (the test configuration under both variants)."""
    return both_variants(tiny_config_for(finished_run, tiny_models))


def test_figure_style_change_reruns_only_figures(finished_run, tiny_models):
    config = _run_config(finished_run, tiny_models)
    config["figures"] = {"width": 250}
    path = write_config(finished_run, config, "styled.yaml")
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(path)).stdout)
    rules = {rule for rule, _ in jobs}
    assert "figures" in rules
    assert not rules & (PER_MODEL_RULES | {"aggregate", "prepare_prompts"}), rules


def test_adding_a_model_schedules_only_its_jobs(finished_run, tiny_models):
    config = _run_config(finished_run, tiny_models)
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


# Keys read only by figures (or resource requests): the task's difficulty, a model's family, a Q2
# (long-CoT, base) pair, a model's size.
METADATA_EDITS = {
    "task difficulty": lambda c: c["tasks"]["words"].update(difficulty=7),
    "model family": lambda c: c["models"]["tiny-qwen2"].update(family="renamed"),
    "Q2 pair": lambda c: c["models"]["tiny-llama"].update(training="long-cot", base_model="tiny-qwen2"),
    "model size": lambda c: c["models"]["tiny-qwen2"].update(size_b=0.5),
}


def test_metadata_edits_schedule_no_gpu_job(finished_run, tiny_models):
    """Every metadata edit at once reruns no extraction, analysis, prompt or aggregation job (one dry
    run: a job reruns when its own inputs or params change, so the jobs the edits rerun together
    include those each one reruns alone), and the figures job reads them."""
    config = _run_config(finished_run, tiny_models)
    for edit in METADATA_EDITS.values():
        edit(config)
    rules = {rule for rule, _ in _planned(finished_run, config, "metadata.yaml")}
    assert not rules & (PER_MODEL_RULES | {"prepare_prompts", "aggregate"}), rules
    assert "figures" in rules, rules


def test_adding_a_task_to_an_analysis_schedules_only_that_task(finished_run, tiny_models):
    config = _run_config(finished_run, tiny_models)
    config["analyses"]["integrated_gradients"]["tasks"] = ["addition_3", "words"]
    jobs = _planned(finished_run, config, "more_tasks.yaml")
    gpu = [(rule, w) for rule, w in jobs if rule in GPU_RULES]
    assert gpu and all(w == {**w, "analysis": "integrated_gradients", "task": "words"} for _, w in gpu), gpu
    assert {w["model"] for _, w in gpu} == {"tiny-qwen2", "tiny-llama"}
    assert "aggregate" in {rule for rule, _ in jobs}


def test_paper_dry_run_lists_all_twelve_models(paper_dry_run):
    jobs = planned_jobs(paper_dry_run)
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


def test_every_analysis_under_both_variants(finished_run, tiny_models, tmp_path):
    """The test configuration with every analysis that has a published variant at
    `variants: [published, correct]` plans all.pdf: one extraction per (model, task) serves both
    variants, the figures show the published one (so the attention- and MLP-only skip maps, which the
    published skip does not produce, are not scheduled), and the errata compare the two (a dry run).
    The finished run, which ran both variants (the correct one shown), has both in its tables and the
    errata.  Known answer: the published relative-contribution normaliser rescales the cosines without
    changing their signs, so ED_cos is the same under both variants."""
    config = both_variants(tiny_config_for(tmp_path, tiny_models), first="published")
    path = write_config(tmp_path, config)
    plan = snakemake(tmp_path, "-n", "--configfile", str(path)).stdout
    jobs = planned_jobs(plan)
    assert {"figures", "errata"} <= {rule for rule, _ in jobs}
    for figure in ("skip_map", "errata"):
        assert f"results/figures/{figure}.pdf" in plan, figure
    for figure in ("skip_map_attention", "skip_map_mlp"):
        assert f"results/figures/{figure}.pdf" not in plan, figure
    extracts = [w for rule, w in jobs if rule == "extract"]
    assert extracts and len(extracts) == len({(w["model"], w["task"]) for w in extracts})  # never once per variant

    tables = finished_run / "results" / "tables"
    ran = load_config(finished_run / "config.yaml")["analyses"]
    for analysis, options in config["analyses"].items():
        table = pl.read_parquet(tables / f"{analysis}.parquet")
        assert set(table["variant"]) == set(options["variants"]) == set(ran[analysis]["variants"]), analysis
    errata = pl.read_parquet(tables / "errata.parquet")
    cos = errata.filter(pl.col("estimator") == "cos")
    assert cos.height and (cos["ed_difference"].fill_null(0) == 0).all(), cos
    assert set(errata["analysis"]) >= {"relative_contribution", "logit_lens", "residual_erasure", "integrated_gradients"}
    questions = pl.read_csv(tables / "errata_questions.csv")
    assert set(questions["question"]) == {"Q1 scale", "Q2 training", "Q3 difficulty"}
    assert (finished_run / "results" / "figures" / "errata.pdf").is_file()
    assert (finished_run / "results" / "figures" / "all.pdf").is_file()


def test_table_jobs_import_neither_torch_nor_transformers(finished_run):
    """The jobs that only read caches and tables (forward tables, aggregation, effective depth,
    figures) pay no torch or transformers import: run each job function in a fresh interpreter."""
    import subprocess
    import sys

    cache = finished_run / "results/cache/tiny-qwen2/words/stats.safetensors"
    ran = load_config(finished_run / "config.yaml")["analyses"]
    variants = {a: ran[a]["variants"] for a in ("relative_contribution", "logit_lens", "block_influence")}
    code = f"""
import sys
from effdepth.jobs import aggregate, forward_tables
from effdepth.depth import run
import effdepth.figures
forward_tables({variants!r},
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
