"""The test configuration end to end on one tiny model of each block shape beyond pre-norm: sandwich /
post-norm (Gemma 3), parallel attention + MLP (GPT-NeoX) and mixture of experts (Qwen2-MoE)."""

from __future__ import annotations

import polars as pl
import pytest
from pypdf import PdfReader

from effdepth.testing import SHAPE_ARCHITECTURES

from .conftest import snakemake, tiny_config_for, write_config

pytestmark = pytest.mark.workflow

ANALYSES = (
    "relative_contribution",
    "logit_lens",
    "block_influence",
    "layer_skip",
    "residual_erasure",
    "integrated_gradients",
)


def test_every_block_shape_end_to_end(tmp_path, tiny_models):
    """All analyses on the three families: every table has their rows, all finite, and all.pdf exists.
    Two prompts per task, one skipped position per prompt and 8 IG steps keep it cheap (2 CPU cores)."""
    config = tiny_config_for(tmp_path, tiny_models)
    names = [f"tiny-{arch}" for arch in SHAPE_ARCHITECTURES]
    config["models"] = {
        name: {"path": str(tiny_models / name), "family": arch, "size_b": 0.001, "training": "base"}
        for name, arch in zip(names, SHAPE_ARCHITECTURES, strict=True)
    }
    for task in config["tasks"].values():
        task["n_prompts"] = 2
    config["analyses"]["integrated_gradients"]["steps"] = 8
    config["analyses"]["layer_skip"]["positions_per_prompt"] = 1
    config["effective_depth"]["bootstrap"] = 20
    snakemake(tmp_path, "--cores", "2", "--configfile", str(write_config(tmp_path, config)))
    tables = tmp_path / "results" / "tables"
    for analysis in ANALYSES:
        table = pl.read_parquet(tables / f"{analysis}.parquet")
        assert set(table["model"]) == set(names), analysis
        assert table["value"].is_finite().all(), analysis
        for name in names:
            assert table.filter(pl.col("model") == name).height > 0, (analysis, name)
    depth = pl.read_parquet(tables / "effective_depth.parquet")
    assert set(depth["model"]) == set(names)
    assert len(PdfReader(tmp_path / "results" / "figures" / "all.pdf").pages) >= 3
