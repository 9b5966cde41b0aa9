"""One code path: the test configuration run through Snakemake, and the same models and task specs
through effdepth.api in this process, give the same tables."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import effdepth
from effdepth.analyses import REGISTRY
from effdepth.config import MODEL_METADATA, job_entry, load_config
from effdepth.models import load_model

pytestmark = pytest.mark.workflow


def _sorted(table: pl.DataFrame) -> pl.DataFrame:
    table = table.select(sorted(table.columns))
    return table.sort([c for c in table.columns if c != "value"], nulls_last=True)


def test_api_tables_equal_the_workflow_tables(finished_run):
    config = load_config(finished_run / "config.yaml")
    results = finished_run / "results" / "tables"
    workflow = {a: pl.read_parquet(results / f"{a}.parquet") for a in REGISTRY}
    workflow_ed = pl.read_parquet(results / "effective_depth.parquet")
    api_tables: dict[str, list[pl.DataFrame]] = {a: [] for a in REGISTRY}
    api_ed = []
    for model, entry in config["models"].items():
        net, tokenizer = load_model(entry["path"], job_entry(entry, MODEL_METADATA))
        baselines = {}
        for task, spec in config["tasks"].items():
            analyses = {a: o for a, o in config["analyses"].items() if task in o["tasks"]}
            forward = {
                a: {k: v for k, v in o.items() if k in ("variants", *REGISTRY[a].options)}
                for a, o in analyses.items()
                if REGISTRY[a].kind == "forward"
            }
            # the lens the workflow trained for the model, on the tasks the tuned lens runs on
            tuned = "tuned_lens" in analyses
            lens_file = finished_run / f"results/lenses/{model}/tuned_lens.safetensors" if tuned else None
            lens = config["analyses"]["logit_lens"]
            m = effdepth.measure(
                net,
                tokenizer,
                {k: v for k, v in spec.items() if k != "difficulty"},
                analyses=forward,
                name=model,
                task=task,
                n_prompts=spec["n_prompts"],
                max_tokens=spec.get("max_tokens"),
                extraction={**config["extraction"], "top_k": lens["top_k"]},
                depth={k: v for k, v in config["effective_depth"].items()},
                tuned_lens=lens_file,
            )
            baselines[task] = m.stats
            tables = dict(m.tables)
            for a, options in analyses.items():
                if REGISTRY[a].kind == "forward":
                    continue
                given = {k: v for k, v in options.items() if k in REGISTRY[a].options or k == "variants"}
                n = given.get("n_prompts") or spec["n_prompts"]
                subject = effdepth.subject(net, tokenizer, spec | {"n_prompts": n}, name=model, task=task, n_prompts=n)
                baseline = baselines.get(options.get("baseline_task")) if REGISTRY[a].baseline else None
                if REGISTRY[a].baseline and baseline is None:  # the baseline task comes later in the config
                    other = config["tasks"][options["baseline_task"]]
                    baseline = effdepth.extract(
                        effdepth.subject(net, tokenizer, other, name=model, task=options["baseline_task"]),
                        **config["extraction"],
                        top_k=lens["top_k"],
                    )
                reads_lens = lens_file if REGISTRY[a].artefact else None
                tables[a] = effdepth.run(subject, a, baseline=baseline, tuned_lens=reads_lens, **given)
            for a, table in tables.items():
                api_tables[a].append(table)
            api_ed.append(effdepth.effective_depth(tables, **config["effective_depth"])[0])
    for a in REGISTRY:
        ours = pl.concat(api_tables[a], how="diagonal_relaxed")
        theirs = workflow[a]
        ours = ours.select([c for c in theirs.columns])
        assert_frame_equal(_sorted(ours), _sorted(theirs), check_exact=False, rel_tol=1e-6, abs_tol=1e-9)
    assert_frame_equal(_sorted(pl.concat(api_ed)), _sorted(workflow_ed), check_exact=False, rel_tol=1e-6, abs_tol=1e-9)
