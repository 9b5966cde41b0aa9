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


def test_gguf_assemble_needs_its_package():
    config = minimal()
    config["models"]["m"] = {"gguf": {"file": "m.gguf", "assemble": True}}
    check(config, "models.m.gguf: assemble: true needs package")


def test_analysis_task_must_exist():
    config = minimal()
    config["analyses"]["relative_contribution"] = {"tasks": ["gsm9k"]}
    check(config, "analyses.relative_contribution.tasks: unknown task 'gsm9k'")


def test_erasure_baseline_task_must_exist():
    config = minimal()
    config["analyses"]["residual_erasure"] = {}
    check(config, "analyses.residual_erasure.baseline_task: task 'gsm8k' is not configured")


def test_ig_auto_needs_min_steps_at_most_max_steps():
    config = minimal()
    config["analyses"]["integrated_gradients"] = {"rule": "auto", "min_steps": 64, "max_steps": 32}
    check(config, "analyses.integrated_gradients: min_steps (64) exceeds max_steps (32) under rule auto")
    config["analyses"]["integrated_gradients"] = {"rule": "gauss_legendre", "min_steps": 64, "max_steps": 32}
    assert validate_config(config)["analyses"]["integrated_gradients"]["rule"] == "gauss_legendre"


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


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {path: x}\ntasks:\n  t: {source: addition, digits: 3\nanalyses: {}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line [45], column \d+: not valid YAML"):
        load_config(bad)


def test_a_key_given_twice_is_an_error_not_the_last_one(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(
        "models:\n  m: {path: some/dir}\ntasks:\n  add: {source: addition, digits: 3}\n"
        "analyses:\n  logit_lens: {top_k: 5}\n  logit_lens: {top_k: 10}\n"
    )
    with pytest.raises(ConfigError, match=r"twice\.yaml, line 7: key 'logit_lens' appears twice .*first on line 6"):
        load_config(path)
    path.write_text("base: &b {x: 1}\nmerged:\n  <<: *b\n  x: 2\n")  # a merge overridden on purpose is fine
    from effdepth.config import read_yaml

    assert read_yaml(path)["merged"] == {"x": 2}


@pytest.mark.parametrize(
    ("task", "fragment"),
    [
        ({"source": "addition", "digits": 3, "path": "x.jsonl"}, "source 'addition' does not read 'path'"),
        ({"source": "gsm8k", "digits": 3}, "source 'gsm8k' does not read 'digits'"),
        ({"source": "fixed", "items": [{"question": "q", "answer": "a"}], "seed": 1}, "source 'fixed' does not read 'seed'"),
    ],
)
def test_keys_a_task_source_ignores_are_errors(task, fragment):
    config = minimal()
    config["tasks"]["add"] = task
    check(config, "tasks.add", fragment)


def test_device_and_sweep_values():
    config = minimal()
    config["models"]["m"]["device"] = "gpu0"
    check(config, "models.m.device", "gpu0")
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        config["models"]["m"]["device"] = device
        validate_config(config)
    config = minimal() | {"effective_depth": {"sweep": [0.2, 1.5]}}
    check(config, "effective_depth.sweep.1", "1.5")


def test_cuda_asked_on_a_machine_without_it_is_named():
    import torch

    from effdepth.models import ModelSourceError, pick_device

    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda"
        return
    with pytest.raises(ModelSourceError, match="device 'cuda': CUDA is not available on this machine"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


def test_command_line_check_names_the_line(tmp_path, capsys):
    from effdepth.config import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    assert main([str(bad), str(REPO / "config" / "test.yaml")]) == 1
    out = capsys.readouterr()
    assert f"{bad}, line 2" in out.err and "config/test.yaml: valid" in out.out
