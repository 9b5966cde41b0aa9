"""Extraction refuses non-finite numbers and records which model files made its cache."""

from __future__ import annotations

import pytest
import torch

from effdepth.cache import load_tensors
from effdepth.extraction import extract_stats, run_extraction
from effdepth.fingerprint import model_fingerprint
from effdepth.numerics import NonFiniteError
from effdepth.testing import char_tokenizer, save_tiny_model, tiny_model

META = {"model": "tiny-qwen2", "task": "addition", "revision": "local", "prompts_hash": "h", "source": "test"}


def _prompts(n: int = 3, length: int = 9) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"id": f"q{i}", "input_ids": torch.randint(3, 100, (length - i,), generator=g).tolist()} for i in range(n)]


def _overflowing(dtype: torch.dtype):
    """A tiny Qwen2 whose layer-1 MLP writes ~1e5 into one residual channel (beyond float16's 65504)."""
    model = tiny_model("qwen2", seed=0, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[5] *= 1e5
    return model.to(dtype)


def test_float16_overflow_stops_extraction_at_its_layer(tmp_path):
    reference = extract_stats(_overflowing(torch.float32), _prompts(), 0, batch_size=2)
    assert all(torch.isfinite(t).all() for t in reference.tensors.values() if t.is_floating_point())
    with pytest.raises(NonFiniteError) as info:
        run_extraction(
            _overflowing(torch.float16), char_tokenizer(), _prompts(), tmp_path / "stats.safetensors", META, batch_size=2
        )
    err = info.value
    assert (err.model, err.task, err.prompt, err.layer) == ("tiny-qwen2", "addition", "q0", 1)
    assert err.sublayer == "MLP output m_l" and "dtype: bfloat16" in str(err)
    assert not (tmp_path / "stats.safetensors").exists()


def test_inf_activation_names_prompt_layer_and_sublayer():
    model = tiny_model("qwen2", seed=0)
    attention = model.model.layers[2].self_attn

    def poison(module, args, output):
        out = output[0].clone()
        out[-1, -1, 3] = float("inf")  # last prompt of the batch, its last token
        return (out, *output[1:])

    handle = attention.register_forward_hook(poison)
    try:
        with pytest.raises(NonFiniteError) as info:
            extract_stats(model, _prompts(), 0, batch_size=3, model_name="m", task="t")
    finally:
        handle.remove()
    assert (info.value.prompt, info.value.layer, info.value.sublayer) == ("q2", 2, "attention output a_l")


def test_nan_weight_is_refused_before_any_forward(tmp_path):
    """Every job loads its model through load_model, which refuses non-finite weights by name."""
    from effdepth.models import load_model

    model = tiny_model("qwen2", seed=0)
    with torch.no_grad():
        model.model.layers[3].mlp.up_proj.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "model")
    char_tokenizer().save_pretrained(tmp_path / "model")
    with pytest.raises(NonFiniteError, match="layers.3.mlp.up_proj.weight"):
        load_model(tmp_path / "model", {"device": "cpu"})


def test_cache_records_the_model_fingerprint(tmp_path):
    from effdepth.models import load_model

    directory = save_tiny_model(tmp_path / "tiny", "qwen2", seed=0)
    model, tokenizer = load_model(directory, {"device": "cpu", "dtype": "float32"})
    out = tmp_path / "stats.safetensors"
    run_extraction(model, tokenizer, _prompts(), out, META, batch_size=2)
    _, meta = load_tensors(out, ["resid_count"])
    assert meta["model_fingerprint"] == model_fingerprint(directory)
    first = out.read_bytes()
    run_extraction(model, tokenizer, _prompts(), out, META, batch_size=2)
    assert out.read_bytes() == first  # an identical rebuild changes no byte
    run_extraction(model, tokenizer, _prompts(), out, META, batch_size=2, model_fingerprint="sha256:given")
    assert load_tensors(out, ["resid_count"])[1]["model_fingerprint"] == "sha256:given"
