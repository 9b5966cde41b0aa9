"""The model that runs is the model on disk: damaged files, weights the checkpoint lacks or has in
excess, shapes config.json contradicts and missing tokenizers are refused by name, both by the check
the workflow runs while it is read (``check_model_files``) and by every job's ``load_model``, before
the first forward pass."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from safetensors.torch import load_file, save_file

from effdepth import models
from effdepth.fingerprint import ModelFileError
from effdepth.models import check_model_files, load_model, load_tokenizer
from effdepth.testing import ARCHITECTURES, save_tiny_model

CPU = {"device": "cpu", "dtype": "float32"}


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("intact") / "tiny-qwen2", "qwen2")


@pytest.fixture
def copy(intact, tmp_path):
    return shutil.copytree(intact, tmp_path / "tiny-qwen2")


@pytest.fixture
def no_forward(monkeypatch):
    """Fail if the load-time proof (the first forward pass of a job) is reached."""

    def forward(*args, **kwargs):
        raise AssertionError("a forward pass ran on a model that should have been refused")

    monkeypatch.setattr(models, "verify_decomposition", forward)


def refused(directory, *fragments):
    """Both checks refuse ``directory`` with every fragment in the message; returns the message."""
    messages = []
    for check in (lambda: check_model_files(directory), lambda: load_model(directory, CPU)):
        with pytest.raises(ModelFileError) as info:
            check()
        messages.append(str(info.value))
        for fragment in fragments:
            assert fragment in messages[-1], (fragment, messages[-1])
    return messages[0]


def _edit_weights(directory, edit):
    path = directory / "model.safetensors"
    tensors = edit(load_file(path))
    save_file(tensors, path, metadata={"format": "pt"})


def _edit_config(directory, drop=(), **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    for key in drop:
        config.pop(key, None)
    path.write_text(json.dumps(config))


# ---------------------------------------------------------------- weights missing, renamed or in excess


def test_the_intact_checkpoint_passes_both_checks(intact):
    check_model_files(intact)
    model, _ = load_model(intact, CPU)
    assert model.config.num_hidden_layers == 4


def test_a_weight_missing_from_the_checkpoint_is_refused_before_any_forward(copy, no_forward):
    def drop(tensors):
        del tensors["model.layers.2.mlp.down_proj.weight"]
        return tensors

    _edit_weights(copy, drop)
    refused(
        copy, str(copy), "1 weight(s)", "missing from the checkpoint (model.layers.2.mlp.down_proj.weight)", "newly initialised"
    )


def test_config_asking_for_more_layers_than_the_weights_hold_is_refused(copy, no_forward):
    _edit_config(copy, num_hidden_layers=6, drop=["layer_types"])
    message = refused(copy, "24 weight(s)", "model.layers.4.", "not be the one on disk", "num_hidden_layers")
    assert "model.layers.3." not in message


def test_a_prefixed_checkpoint_names_the_prefix(copy, no_forward):
    """A DistributedDataParallel state dict: every name starts with module., nothing would load."""
    n = len(load_file(copy / "model.safetensors"))
    _edit_weights(copy, lambda tensors: {"module." + k: v for k, v in tensors.items()})
    refused(
        copy, f"{n} weight(s)", f"{n} tensor(s) of the checkpoint are not weights", "prefix 'module.'", "module.lm_head.weight"
    )


def test_tensors_the_model_has_no_place_for_are_refused(copy, no_forward):
    def extra(tensors):
        tensors["model.layers.7.mlp.up_proj.weight"] = tensors["model.layers.0.mlp.up_proj.weight"].clone()
        return tensors

    _edit_weights(copy, extra)
    message = refused(copy, "1 tensor(s) of the checkpoint are not weights", "model.layers.7.mlp.up_proj.weight")
    assert "missing" not in message


# ---------------------------------------------------------------- damaged and inconsistent files


def test_a_truncated_safetensors_file_is_named_with_both_sizes(copy, no_forward):
    weights = copy / "model.safetensors"
    whole = weights.stat().st_size
    os.truncate(weights, 300_000)
    refused(copy, f"{weights} is truncated or damaged (header says {whole} bytes, file has 300000 bytes); copy it again")


def test_config_shapes_that_disagree_with_the_weights_name_tensor_and_both_shapes(copy, no_forward):
    """intermediate_size 128 -> 256 in config.json; the weights keep 128.  The message (which reaches
    the job's log: it is the exception's) names the tensors, with layer indices as *, and the file."""
    _edit_config(copy, intermediate_size=256)
    refused(
        copy,
        "the weights do not match config.json",
        "model.layers.*.mlp.up_proj.weight is [128, 64] in the checkpoint (model.safetensors), the config implies [256, 64]",
        "model.layers.*.mlp.down_proj.weight is [64, 128] in the checkpoint (model.safetensors), the config implies [64, 256]",
        "Restore the config.json",
    )


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
        ({"layer_types": ["full_attention"] * 3}, "layer_types"),  # transformers >= 5 says it in its own words
        ({"num_attention_heads": 5, "num_key_value_heads": 5}, "hidden_size 64 is not a multiple of num_attention_heads 5"),
    ],
)
def test_config_inconsistent_with_itself_is_refused(copy, no_forward, changes, fragment):
    _edit_config(copy, **changes)
    with pytest.raises(ModelFileError) as info:
        check_model_files(copy)
    assert str(copy / "config.json") in str(info.value) and fragment in str(info.value)
    with pytest.raises(ModelFileError, match="config.json"):
        load_model(copy, CPU)


def test_unreadable_config_json_is_named(copy):
    (copy / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"], ')
    with pytest.raises(ModelFileError, match=f"{copy / 'config.json'} is not readable JSON"):
        check_model_files(copy)


# ---------------------------------------------------------------- tokenizer files


def test_a_directory_without_tokenizer_files_is_refused(copy, no_forward):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (copy / name).unlink()
    refused(copy, f"no tokenizer files (tokenizer.json / tokenizer_config.json / tokenizer.model) in {copy}")


def test_a_tokenizer_that_cannot_encode_text_is_refused(copy):
    """tokenizer_config.json without its vocabulary: transformers builds an empty Qwen2 tokenizer."""
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match=f"the tokenizer built from {copy} cannot encode text"):
        load_tokenizer(copy)


# ---------------------------------------------------------------- no false refusals


@pytest.mark.parametrize("family", ARCHITECTURES)
def test_every_family_saved_by_transformers_passes_the_file_checks(family, tmp_path):
    """The meta-device comparison uses transformers' own key mapping (MoE experts, tied embeddings)."""
    check_model_files(save_tiny_model(tmp_path / family, family, n_layers=2))


def test_the_refusal_reaches_the_job_log(copy, tmp_path):
    """A job (effdepth.log.setup_job, as every workflow script starts) that loads a model whose
    config.json disagrees with its weights ends its own log with the shapes, not with a pointer to a
    report printed on the console only."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    _edit_config(copy, intermediate_size=256)
    log = tmp_path / "logs" / "extract.log"
    log.parent.mkdir()  # as Snakemake does before a job
    script = textwrap.dedent(f"""
        import types
        from effdepth.log import setup_job
        from effdepth.models import load_model
        setup_job(types.SimpleNamespace(log=[{str(log)!r}], threads=1, rule="extract",
                                        wildcards={{"model": "tiny-qwen2", "task": "words"}}, output=["out"]))
        load_model({str(copy)!r}, {{"device": "cpu"}})
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    text = log.read_text()
    assert "failed after" in text and "ModelFileError" in text
    assert (
        "model.layers.*.mlp.up_proj.weight is [128, 64] in the checkpoint (model.safetensors), the config implies [256, 64]"
        in text
    )
    assert "above report" not in text


@pytest.mark.parametrize("family", ["qwen2", "gpt2", "gemma3"])
def test_tied_embeddings_are_not_missing_weights(family, tmp_path):
    """A tied output layer is not in the checkpoint (Qwen2.5-1.5B, GPT-2, Gemma): not a missing weight."""
    directory = save_tiny_model(tmp_path / family, family, n_layers=2, tie_word_embeddings=True)
    check_model_files(directory)
    model, _ = load_model(directory, CPU)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_constant_buffers_older_versions_saved_are_logged_not_refused(tmp_path, caplog):
    import logging

    import torch

    directory = save_tiny_model(tmp_path / "gpt2", "gpt2", n_layers=2)
    _edit_weights(directory, lambda t: {**t, "transformer.h.0.attn.masked_bias": torch.tensor(-1e4)})
    with caplog.at_level(logging.INFO, logger="effdepth"):
        check_model_files(directory)
    assert "1 constant buffer(s) older transformers saved are not used (transformer.h.0.attn.masked_bias)" in caplog.text
    _edit_weights(directory, lambda t: {**t, "transformer.h.0.attn.extra.weight": torch.ones(2)})
    with pytest.raises(ModelFileError, match=r"1 tensor\(s\) of the checkpoint are not weights .*attn.extra.weight"):
        check_model_files(directory)


def test_a_gguf_load_missing_a_weight_is_refused(tmp_path):
    """The GGUF dequantisation checks transformers' report of the GGUF load the same way (the
    conversion of the demo's intact file: tests/integration/test_models.py)."""
    from effdepth.models import check_load_report

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    info = {"missing_keys": {"model.layers.0.mlp.up_proj.weight"}, "unexpected_keys": set(), "mismatched_keys": []}
    with pytest.raises(ModelFileError, match=r"1 weight\(s\) of the model the GGUF file's metadata describes are missing"):
        check_load_report(info, gguf)
    check_load_report({"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": [], "error_msgs": []}, gguf)
