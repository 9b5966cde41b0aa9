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


@pytest.mark.parametrize(
    "block, key, fragment",
    [
        ("logit_lens", "tasks", "analyses.logit_lens.tasks: empty list; remove the key to run on every task"),
        ("layer_skip", "kinds", "analyses.layer_skip.kinds: empty list; remove the key for its default"),
        ("relative_contribution", "variants", "analyses.relative_contribution.variants: empty list"),
    ],
)
def test_an_empty_list_is_refused_with_its_key(block, key, fragment):
    config = minimal()
    config["analyses"] = {block: {key: []}}
    check(config, fragment)


def test_an_empty_sweep_is_refused():
    config = minimal() | {"effective_depth": {"sweep": []}}
    check(config, "effective_depth.sweep: empty list")


@pytest.mark.parametrize(
    "path, value, fragment",
    [
        (("effective_depth", "bootstrap"), 10**9, "effective_depth.bootstrap: 1000000000 is greater than the maximum of 100000"),
        (("tasks", "add", "n_prompts"), 10**9, "tasks.add.n_prompts: 1000000000 is greater than the maximum"),
        (("analyses", "integrated_gradients", "steps"), 10**7, "analyses.integrated_gradients.steps: 10000000 is greater"),
        (("analyses", "layer_skip", "positions_per_prompt"), 10**6, "analyses.layer_skip.positions_per_prompt"),
        (("figures", "width"), 10**6, "figures.width: 1000000 is greater"),
        (("execution", "gpu_mem_gb_per_b"), 0, "execution.gpu_mem_gb_per_b: 0 is less than or equal to the minimum"),
    ],
)
def test_values_that_would_exhaust_memory_or_time_are_refused(path, value, fragment):
    config = minimal()
    block = config
    for key in path[:-1]:
        block = block.setdefault(key, {})
    block[path[-1]] = value
    check(config, fragment)


def test_the_paper_bootstrap_is_within_bounds():
    config = minimal() | {"effective_depth": {"bootstrap": 100000}}
    assert validate_config(config)["effective_depth"]["bootstrap"] == 100000


@pytest.mark.parametrize("name", ["effective_depth.csv", "logit_lens.parquet", "qwen.PARQUET", "tiny.partial"])
def test_model_names_that_collide_with_output_paths_are_refused(name):
    config = minimal()
    config["models"] = {name: {"path": "some/dir"}}
    check(config, f"models.{name}: a model name may not end with", "rename the model")


def test_model_names_with_dots_stay_allowed():
    config = minimal()
    config["models"] = {"qwen2.5-7b": {"path": "some/dir"}}
    assert "qwen2.5-7b" in validate_config(config)["models"]


def whole_text_config(analysis: str, tasks: list[str] | None = None) -> dict:
    config = minimal()
    config["tasks"]["wiki"] = {"source": "file", "path": "wiki.jsonl", "text_field": "text"}
    config["analyses"] = {analysis: {} if tasks is None else {"tasks": tasks}}
    return config


@pytest.mark.parametrize("analysis", ["integrated_gradients", "residual_erasure", "layer_deletion"])
def test_an_answer_analysis_on_a_whole_text_task_is_refused(analysis):
    config = whole_text_config(analysis)
    if analysis == "residual_erasure":
        config["analyses"][analysis]["baseline_task"] = "wiki"  # a whole-text baseline is fine
    check(
        config,
        f"analyses.{analysis}.tasks: task 'wiki' is whole text (tasks.wiki.text_field)",
        f"analyses.{analysis}.tasks defaults to every task",
    )


def test_an_answer_analysis_may_run_beside_a_whole_text_task():
    config = whole_text_config("integrated_gradients", tasks=["add"])
    config["analyses"]["logit_lens"] = {}
    checked = validate_config(config)
    assert checked["analyses"]["logit_lens"]["tasks"] == ["add", "wiki"]


def test_join_is_read_by_question_answer_tasks_only():
    config = minimal()
    config["tasks"]["qa"] = {"source": "file", "path": "qa.jsonl", "question_field": "q", "answer_field": "a", "join": " "}
    config["tasks"]["fixed"] = {"source": "fixed", "items": [{"question": "Q?", "answer": "A"}], "join": "\n"}
    assert validate_config(config)["tasks"]["qa"]["join"] == " "
    config["tasks"]["wiki"] = {"source": "file", "path": "w.jsonl", "text_field": "text", "join": " "}
    config["tasks"]["add"]["join"] = " "
    check(
        config,
        "tasks.wiki.join: joins question and answer; a text_field task has no answer",
        "tasks.add: source 'addition' does not read 'join'",
    )


def _lens_config(tmp_path) -> dict:
    config = minimal()
    config["analyses"]["tuned_lens"] = {"steps": 4, "token_budget": 256}
    return config


LENS_MISTAKES = {
    "lens-missing": (lambda c, t: c["models"]["m"].update(tuned_lens=str(t / "nowhere")), "models.m.tuned_lens: "),
    "file-without-path": (
        lambda c, t: c["analyses"]["tuned_lens"].update(corpus={"source": "file"}),
        "analyses.tuned_lens.corpus: source file needs path",
    ),
    "file-missing": (
        lambda c, t: c["analyses"]["tuned_lens"].update(corpus={"source": "file", "path": str(t / "none.txt")}),
        "analyses.tuned_lens.corpus.path: ",
    ),
    "hf-without-id": (
        lambda c, t: c["analyses"]["tuned_lens"].update(corpus={"source": "hf"}),
        "analyses.tuned_lens.corpus: source hf needs hf_id",
    ),
    "model-budget-bad-value": (
        lambda c, t: c["models"]["m"].update(lens_training={"steps": 0}),
        "models.m.lens_training.steps",
    ),
    "model-budget-unknown-key": (
        lambda c, t: c["models"]["m"].update(lens_training={"step": 3}),
        "models.m.lens_training: unknown key 'step'",
    ),
    "model-corpus-without-path": (
        lambda c, t: c["models"]["m"].update(lens_training={"corpus": {"source": "file"}}),
        "models.m.lens_training.corpus: source file needs path",
    ),
    "model-budget-and-lens": (
        lambda c, t: (
            (t / "lens.safetensors").touch()
            or c["models"]["m"].update(tuned_lens=str(t / "lens.safetensors"), lens_training={"steps": 3})
        ),
        "models.m: tuned_lens names a trained lens, so lens_training would train none",
    ),
    "model-budget-without-analysis": (
        lambda c, t: c["analyses"].pop("tuned_lens") and c["models"]["m"].update(lens_training={"steps": 3}),
        "models.m.lens_training: no analysis reads it",
    ),
}


@pytest.mark.parametrize("mistake", LENS_MISTAKES, ids=list(LENS_MISTAKES))
def test_lens_and_corpus_mistakes_name_their_key(mistake, tmp_path):
    edit, message = LENS_MISTAKES[mistake]
    config = _lens_config(tmp_path)
    edit(config, tmp_path)
    check(config, message)


def test_a_models_lens_training_overrides_only_the_keys_it_names(tmp_path):
    config = _lens_config(tmp_path)
    config["models"]["m"]["lens_training"] = {"token_budget": 1024}
    checked = validate_config(config)
    assert checked["models"]["m"]["lens_training"] == {"token_budget": 1024}  # no defaults filled in
    assert checked["analyses"]["tuned_lens"]["token_budget"] == 256
