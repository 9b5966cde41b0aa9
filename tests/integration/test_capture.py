"""Adapters, captured activations, batching and the cache, on tiny random Qwen2 and Llama models."""

import pytest
import torch

from effdepth.adapters import ADAPTERS, UnsupportedArchitecture, adapter_for
from effdepth.cache import CacheError, load_tensors, save_tensors
from effdepth.capture import run_captured
from effdepth.extract import extract_stats
from effdepth.testing import tiny_config

PROMPTS = ["The cat sat on the mat.", "2 + 2 = 4", "Once upon a time, in a land far away"]


def ids(tokenizer, texts=PROMPTS):
    return [tokenizer(t)["input_ids"] for t in texts]


def test_adapter_registry(model32, arch):
    expected = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[arch]
    assert model32.config.architectures == [expected]
    adapter = adapter_for(model32)
    assert adapter is ADAPTERS[expected]
    assert len(adapter.decoder_layers(model32)) == model32.config.num_hidden_layers


def test_unknown_architecture_lists_supported():
    config = tiny_config("qwen2")
    config.architectures = ["GPT2LMHeadModel"]
    with pytest.raises(UnsupportedArchitecture) as info:
        adapter_for(config)
    assert "GPT2LMHeadModel" in str(info.value) and "LlamaForCausalLM" in str(info.value)


def test_residual_identity(model64, tokenizer):
    """h_{l+1} = h_l + a_l + m_l on every real (unpadded) token, and the logits come from h_L."""
    capture, mask = run_captured(model64, adapter_for(model64), ids(tokenizer), pad_id=0)
    h = capture.residuals()
    for layer in range(len(capture.resid_pre)):
        lhs = h[layer + 1][mask]
        rhs = (h[layer] + capture.attn_out[layer] + capture.mlp_out[layer])[mask]
        torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)
    logits = adapter_for(model64).logits(model64, h[-1])
    torch.testing.assert_close(logits[mask], capture.logits[mask], rtol=1e-10, atol=1e-10)


def test_final_residual_is_not_hf_hidden_state(model64, tokenizer):
    """HF's output_hidden_states[L] is after the final norm; our h_L is the raw residual."""
    seq = ids(tokenizer)[:1]
    capture, _ = run_captured(model64, adapter_for(model64), seq, pad_id=0)
    out = model64(input_ids=torch.tensor(seq), output_hidden_states=True, use_cache=False)
    torch.testing.assert_close(out.hidden_states[0], capture.resid_pre[0])
    torch.testing.assert_close(out.hidden_states[-1], model64.model.norm(capture.resid_final))
    assert not torch.allclose(out.hidden_states[-1], capture.resid_final)


def test_batched_equals_single(model32, tokenizer):
    """Left padding + attention mask + explicit position ids: batch results equal batch size 1."""
    sequences = ids(tokenizer)
    batched = extract_stats(model32, [{"input_ids": s, "id": i} for i, s in enumerate(sequences)], 0, batch_size=3)
    single = extract_stats(model32, [{"input_ids": s, "id": i} for i, s in enumerate(sequences)], 0, batch_size=1)
    for key in batched:
        torch.testing.assert_close(batched[key], single[key], rtol=1e-4, atol=1e-4, msg=key)


def test_store_activations(model32, tokenizer):
    sequences = ids(tokenizer)
    out = extract_stats(model32, [{"input_ids": s} for s in sequences], 0, batch_size=2, store_activations=True)
    n_layers, d = model32.config.num_hidden_layers, model32.config.hidden_size
    assert out["act.1.resid_pre"].shape == (n_layers, len(sequences[1]), d)
    h = torch.cat([out["act.1.resid_pre"], out["act.1.resid_final"][None]])
    torch.testing.assert_close(h[1:] - h[:-1], out["act.1.attn_out"] + out["act.1.mlp_out"], rtol=1e-4, atol=1e-4)


def test_cache_round_trip_with_metadata(tmp_path, model32, tokenizer):
    tensors = extract_stats(model32, [{"input_ids": s} for s in ids(tokenizer)], 0, batch_size=2)
    path = tmp_path / "stats.safetensors"
    meta = {"model": "tiny", "revision": "local", "dtype": "float32", "prompts_hash": "abc"}
    save_tensors(path, tensors, meta)
    loaded, loaded_meta = load_tensors(path)
    assert set(loaded) == set(tensors)
    for key in tensors:
        assert torch.equal(loaded[key], tensors[key])
    assert {k: loaded_meta[k] for k in meta} == meta and loaded_meta["effdepth_version"]
    assert not (tmp_path / "stats.safetensors.partial").exists()
    with pytest.raises(CacheError, match="lacks"):
        save_tensors(path, tensors, {"model": "tiny"})
    with pytest.raises(CacheError, match="not found"):
        load_tensors(tmp_path / "missing.safetensors")
