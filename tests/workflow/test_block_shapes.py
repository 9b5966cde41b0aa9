"""The test configuration end to end on one tiny model of each block shape beyond pre-norm: sandwich /
post-norm (Gemma 3), parallel attention + MLP (GPT-NeoX) and mixture of experts (Qwen2-MoE)."""

from __future__ import annotations

import polars as pl
import pytest
from pypdf import PdfReader

from effdepth.analyses import REGISTRY
from effdepth.testing import SHAPE_ARCHITECTURES

from .conftest import expected_pages, snakemake, tiny_config_for, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def test_every_block_shape_end_to_end(tmp_path, tiny_models):
    """Every analysis of the registry on the three families: every table has their rows, all finite,
    the effective depth of each, and all.pdf with exactly its planned pages.  One task (the erasure's
    baseline is the task itself), two prompts, one skipped position per prompt and 8 IG steps keep
    it cheap (2 CPU cores); the two-task test configuration runs in tests/workflow/conftest.py."""
    config = tiny_config_for(tmp_path, tiny_models)
    names = [f"tiny-{arch}" for arch in SHAPE_ARCHITECTURES]
    config["models"] = {
        name: {"path": str(tiny_models / name), "family": arch, "size_b": 0.001, "training": "base"}
        for name, arch in zip(names, SHAPE_ARCHITECTURES, strict=True)
    }
    config["tasks"] = {"addition_3": {**config["tasks"]["addition_3"], "n_prompts": 2}}
    for options in config["analyses"].values():
        options.pop("tasks", None)
    config["analyses"]["residual_erasure"]["baseline_task"] = "addition_3"
    assert set(config["analyses"]) == set(REGISTRY)
    config["analyses"]["integrated_gradients"]["steps"] = 8
    config["analyses"]["layer_skip"]["positions_per_prompt"] = 1
    config["effective_depth"]["bootstrap"] = 20
    path = write_config(tmp_path, config)
    snakemake(tmp_path, "--cores", "2", "--configfile", str(path))
    tables = tmp_path / "results" / "tables"
    for analysis in REGISTRY:
        table = pl.read_parquet(tables / f"{analysis}.parquet")
        assert set(table["model"]) == set(names), analysis
        assert table["value"].is_finite().all(), analysis
        for name in names:
            assert table.filter(pl.col("model") == name).height > 0, (analysis, name)
    depth = pl.read_parquet(tables / "effective_depth.parquet")
    assert set(depth["model"]) == set(names)
    assert len(PdfReader(tmp_path / "results" / "figures" / "all.pdf").pages) == expected_pages(path)
