"""Replacing a local model's weights is seen before any job runs: its fingerprint file is rewritten
only when the content changes, so Snakemake reruns exactly the jobs that read the model."""

from __future__ import annotations

import shutil

import pytest
from safetensors.torch import load_file, save_file

from .conftest import copy_run, planned_jobs, snakemake, tiny_config_for, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def test_replaced_weights_rewrite_the_fingerprint_and_rerun_the_models_jobs(finished_run, tiny_models, tmp_path):
    """(On a copy of the finished run: its fingerprint file is rewritten.)"""
    finished_run = copy_run(finished_run, tmp_path / "run")
    copy = tmp_path / "tiny-qwen2"
    shutil.copytree(tiny_models / "tiny-qwen2", copy)
    config = tiny_config_for(finished_run, tiny_models)
    config["models"] = {"tiny-qwen2": {**config["models"]["tiny-qwen2"], "path": str(copy)}}
    path = write_config(finished_run, config, "copied.yaml")
    fingerprint = finished_run / "results" / "fingerprints" / "tiny-qwen2.fingerprint"
    snakemake(finished_run, "-n", "--configfile", str(path))
    before = (fingerprint.read_text(), fingerprint.stat().st_mtime_ns)
    snakemake(finished_run, "-n", "--configfile", str(path))
    assert (fingerprint.read_text(), fingerprint.stat().st_mtime_ns) == before  # same files: untouched

    weights = next(copy.glob("*.safetensors"))
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, weights, metadata={"format": "pt"})
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(path)).stdout)
    assert fingerprint.read_text() != before[0]
    assert {w.get("model") for rule, w in jobs if rule in ("extract", "intervention")} == {"tiny-qwen2"}
    assert "extract" in {rule for rule, _ in jobs}
