"""Damaged or inconsistent local model files stop the workflow while it is read (also ``-n``),
before any job, with the model's dotted key and the file, tensor or shapes at fault."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from safetensors.torch import load_file, save_file

from effdepth.testing import save_tiny_model

from .conftest import planned_jobs, snakemake, tiny_config_for, write_config

pytestmark = pytest.mark.workflow


def _truncate(directory):
    os.truncate(directory / "model.safetensors", 300_000)
    return "model.safetensors is truncated or damaged (header says"


def _widen(directory):
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "intermediate_size": 256}))
    return "model.layers.*.mlp.up_proj.weight is [128, 64] in the checkpoint (model.safetensors), the config implies [256, 64]"


def _no_tokenizer(directory):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).unlink()
    return f"no tokenizer files (tokenizer.json / tokenizer_config.json / tokenizer.model) in {directory}"


def _prefixed(directory):
    tensors = load_file(directory / "model.safetensors")
    save_file({"module." + k: v for k, v in tensors.items()}, directory / "model.safetensors", metadata={"format": "pt"})
    return "prefix 'module.'"


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


def _config(workdir, directory):
    config = tiny_config_for(workdir, directory.parent)
    config["models"] = {"tiny-qwen2": config["models"]["tiny-qwen2"]}
    return write_config(workdir, config)


def test_the_intact_model_plans_its_jobs(intact, tmp_path):
    jobs = planned_jobs(snakemake(tmp_path, "-n", "--configfile", str(_config(tmp_path, intact))).stdout)
    assert "extract" in {rule for rule, _ in jobs}


@pytest.mark.parametrize("damage", [_truncate, _widen, _no_tokenizer, _prefixed], ids=lambda f: f.__name__.strip("_"))
def test_damaged_model_files_stop_the_dry_run(damage, intact, tmp_path):
    directory = shutil.copytree(intact, tmp_path / "models" / "tiny-qwen2")
    expected = damage(directory)
    result = snakemake(tmp_path, "-n", "--configfile", str(_config(tmp_path, directory)), check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "models.tiny-qwen2.path: " in output and expected in output, output[-3000:]


def test_sdpa_asked_of_an_architecture_without_it_stops_the_dry_run(tmp_path):
    """Gemma 2 has no SDPA attention in transformers: `attn_implementation: sdpa` is refused with its
    key while the workflow is read (the default, auto, gives eager: tests/integration/test_families.py)."""
    directory = save_tiny_model(tmp_path / "models" / "tiny-gemma2", "gemma2", n_layers=2)
    config = tiny_config_for(tmp_path, tmp_path / "models")
    config["models"] = {"tiny-gemma2": {**config["models"]["tiny-qwen2"], "path": str(directory), "attn_implementation": "sdpa"}}
    result = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path, config)), check=False)
    assert result.returncode != 0
    assert (
        "models.tiny-gemma2.attn_implementation: attn_implementation 'sdpa': Gemma2ForCausalLM" in result.stdout + result.stderr
    )
