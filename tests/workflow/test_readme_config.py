"""The README's example for "my local model, my JSONL file" is a working experiment as written."""

from __future__ import annotations

import json
import re

import pytest

from effdepth.config import load_config
from effdepth.tasks import validate_task_file
from effdepth.testing import save_tiny_model

from .conftest import REPO, planned_jobs, snakemake

pytestmark = pytest.mark.workflow


def readme_config() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if b.startswith("# my.yaml")]
    return block


def test_the_readme_example_config_validates_and_dry_runs(tmp_path):
    (tmp_path / "my.yaml").write_text(readme_config())
    save_tiny_model(tmp_path / "models" / "my-model", "qwen2", seed=0)
    (tmp_path / "data").mkdir()
    rows = [{"question": "What is the capital of France?", "answer": "Paris"}] * 3
    (tmp_path / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    config = load_config(tmp_path / "my.yaml")
    assert validate_task_file("qa", config["tasks"]["qa"], base_dir=tmp_path) == []  # join: " " set, no warning
    dry = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "my.yaml"))
    rules = {rule for rule, _ in planned_jobs(dry.stdout)}
    assert {"prepare_prompts", "extract", "forward_tables", "intervention", "effective_depth", "figures"} <= rules
