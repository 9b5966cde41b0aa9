"""Config validation: every kind of mistake gives one clear message naming the key."""

from pathlib import Path

import pytest
import yaml

from effdepth.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[2]


def minimal() -> dict:
    return {
        "models": {"m": {"path": "some/dir"}},
        "tasks": {"add": {"source": "addition", "digits": 3}},
        "analyses": {"relative_contribution": {}},
    }


@pytest.mark.parametrize("name", ["config.yaml", "config/demo.yaml", "config/test.yaml"])
def test_shipped_configs_are_valid(name):
    config = load_config(REPO / name)
    assert config["models"] and config["tasks"] and config["analyses"]


def test_paper_config_has_the_twelve_models():
    config = load_config(REPO / "config.yaml")
    assert len(config["models"]) == 12
    assert all(m["hf_id"] and m["revision"] for m in config["models"].values())


def test_defaults_are_filled():
    config = validate_config(minimal())
    assert config["analyses"]["relative_contribution"]["variant"] == "correct"
    assert config["analyses"]["relative_contribution"]["tasks"] == ["add"]
    assert config["tasks"]["add"]["n_prompts"] == 10
    assert config["extraction"]["batch_size"] == 4


def check(config, *fragments):
    with pytest.raises(ConfigError) as info:
        validate_config(config, source="exp.yaml")
    message = str(info.value)
    assert "exp.yaml" in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_unknown_top_level_key():
    config = minimal() | {"modles": {}}
    check(config, "<top level>: unknown key 'modles'", "allowed:")


def test_unknown_model_key_names_the_path():
    config = minimal()
    config["models"]["m"]["hf_idd"] = "x/y"
    check(config, "models.m: unknown key 'hf_idd'")


def test_wrong_type():
    config = minimal()
    config["tasks"]["add"]["n_prompts"] = "ten"
    check(config, "tasks.add.n_prompts: expected integer")


def test_unknown_task_source():
    config = minimal()
    config["tasks"]["add"]["source"] = "mmlu"
    check(config, "tasks.add.source: 'mmlu' is not one of")


def test_unknown_analysis_name():
    config = minimal()
    config["analyses"]["layer_skipp"] = {}
    check(config, "analyses: unknown key 'layer_skipp'")


def test_model_without_source():
    config = minimal()
    config["models"]["m"] = {"family": "x"}
    check(config, "models.m: give exactly one of hf_id", "got none")


def test_model_with_two_sources():
    config = minimal()
    config["models"]["m"] = {"hf_id": "a/b", "path": "dir"}
    check(config, "models.m: give exactly one of", "hf_id", "path")


def test_analysis_task_must_exist():
    config = minimal()
    config["analyses"]["relative_contribution"] = {"tasks": ["gsm9k"]}
    check(config, "analyses.relative_contribution.tasks: unknown task 'gsm9k'")


def test_erasure_baseline_task_must_exist():
    config = minimal()
    config["analyses"]["residual_erasure"] = {}
    check(config, "analyses.residual_erasure.baseline_task: task 'gsm8k' is not configured")


def test_figures_primary_task_must_exist():
    config = minimal()
    config["figures"] = {"primary_task": "gsm9k"}
    check(config, "figures.primary_task: unknown task 'gsm9k'")


def test_arithmetic_needs_digits():
    config = minimal()
    del config["tasks"]["add"]["digits"]
    check(config, "tasks.add: source 'addition' needs digits")


def test_bad_variant():
    config = minimal()
    config["analyses"]["relative_contribution"] = {"variant": "fixed"}
    check(config, "analyses.relative_contribution.variant: 'fixed' is not one of 'correct', 'published'")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)
