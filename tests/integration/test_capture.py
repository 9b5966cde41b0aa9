"""Adapters, captured activations, batching and the cache, on tiny random models of every family."""

import pytest
import torch

from effdepth.adapters import (
    ADAPTERS,
    BLOCK_SHAPES,
    Adapter,
    UnsupportedArchitecture,
    adapter_for,
)
from effdepth.cache import CacheError, load_tensors, save_tensors
from effdepth.capture import run_captured
from effdepth.extraction import extract_stats
from effdepth.staircase import clean_run
from effdepth.testing import ARCHITECTURES, EAGER_ONLY, tiny_config

PROMPTS = ["The cat sat on the mat.", "2 + 2 = 4", "Once upon a time, in a land far away"]


def ids(tokenizer, texts=PROMPTS):
    return [tokenizer(t)["input_ids"] for t in texts]


def test_adapter_registry(family_model64):
    model = family_model64
    (architecture,) = model.config.architectures
    adapter = adapter_for(model)
    entry = ADAPTERS[architecture]
    assert adapter == (entry if isinstance(entry, Adapter) else entry(model.config))
    assert adapter.block in BLOCK_SHAPES
    assert len(adapter.decoder_layers(model)) == model.config.num_hidden_layers


def test_unknown_architecture_lists_supported():
    config = tiny_config("qwen2")
    config.architectures = ["BloomForCausalLM"]
    with pytest.raises(UnsupportedArchitecture) as info:
        adapter_for(config)
    assert "BloomForCausalLM" in str(info.value) and "LlamaForCausalLM" in str(info.value)


def test_residual_identity(family, tokenizer):
    """h_{l+1} = h_l + a_l + m_l on every real (unpadded) token of a left-padded batch, and the
    logit lens of h_L gives the model's logits.  (Eager-only families run in float32: transformers'
    eager padding mask is -inf in float64 and turns padded rows, then real ones, into NaN.)"""
    from effdepth.testing import EAGER_ONLY, tiny_model

    dtype = torch.float32 if family in EAGER_ONLY else torch.float64
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    model = tiny_model(family, seed=3, dtype=dtype)
    capture, mask = run_captured(model, adapter_for(model), ids(tokenizer), pad_id=0)
    assert not mask.all()  # the batch is padded
    h = capture.residuals()
    for layer in range(len(capture.resid_pre)):
        lhs = h[layer + 1][mask]
        rhs = (h[layer] + capture.attn_out[layer] + capture.mlp_out[layer])[mask]
        torch.testing.assert_close(lhs, rhs, rtol=0, atol=tol)
        assert capture.attn_out[layer][mask].norm() > 0.01 * h[layer][mask].norm()  # not a vanishing sublayer
        assert capture.mlp_out[layer][mask].norm() > 0.01 * h[layer][mask].norm()
    logits = adapter_for(model).logits(model, h[-1])
    torch.testing.assert_close(logits[mask], capture.logits[mask], rtol=tol, atol=tol)


def test_final_residual_is_not_hf_hidden_state(family_model64, tokenizer):
    """HF's output_hidden_states[L] is after the final norm; our h_L is the raw residual."""
    model64 = family_model64
    seq = ids(tokenizer)[:1]
    capture, _ = run_captured(model64, adapter_for(model64), seq, pad_id=0)
    out = model64(input_ids=torch.tensor(seq), output_hidden_states=True, use_cache=False)
    torch.testing.assert_close(out.hidden_states[0], capture.resid_pre[0])
    torch.testing.assert_close(out.hidden_states[-1], adapter_for(model64).norm(model64)(capture.resid_final))
    assert not torch.allclose(out.hidden_states[-1], capture.resid_final)


@pytest.mark.parametrize(
    ("family", "attn"),
    # every family with eager attention, and with SDPA where transformers implements it for the family
    [(f, a) for f in ARCHITECTURES for a in ("sdpa", "eager") if not (a == "sdpa" and f in EAGER_ONLY)],
)
def test_windowed_layer_call_equals_full_call(family, attn, tokenizer):
    """A layer run on tokens start .. stop-1 with the recorded keys/values of 0 .. start-1 gives
    those tokens' rows of the full call — for the causal masks of both attention implementations."""
    from effdepth.testing import tiny_model

    dtype = torch.float64 if attn == "sdpa" else torch.float32  # eager's softmax runs in float32
    tol = {"rtol": 1e-10, "atol": 1e-10} if attn == "sdpa" else {"rtol": 1e-5, "atol": 1e-5}
    model = tiny_model(family, seed=3, dtype=dtype, attn_implementation=attn)
    clean = clean_run(model, ids(tokenizer)[2])
    assert clean.runner.windows
    runner, n_tokens = clean.runner, clean.h.shape[1]
    for j in (0, runner.n_layers - 1):
        full, (keys, values) = runner.layer(j, clean.h[j].unsqueeze(0), record=True)
        torch.testing.assert_close(full[0], clean.h[j + 1], **tol)
        assert keys.shape[2] == values.shape[2] == n_tokens
        for start, stop in ((0, 5), (1, n_tokens), (9, 20), (n_tokens - 1, n_tokens)):
            states = clean.h[j, start:stop].unsqueeze(0).repeat(3, 1, 1)
            prefix = (keys[:, :, :start], values[:, :, :start]) if start else None
            out = runner.layer(j, states, start=start, prefix=prefix)
            for row in out:
                torch.testing.assert_close(row, clean.h[j + 1, start:stop], **tol)
        # per-row prefixes, split over chunks of 2 rows: each row attends to its own keys/values
        # (rows 1 and 3 get a perturbed prefix, so a row paired with the wrong prefix would show)
        per_row = [k.repeat(4, 1, 1, 1)[:, :, :7].clone() for k in (keys, values)]
        per_row[1][1::2] += 1.0
        out = runner.layer_chunks(j, clean.h[j, 7:].unsqueeze(0).repeat(4, 1, 1), 2, start=7, prefix=tuple(per_row))
        for row in (0, 2):
            torch.testing.assert_close(out[row], clean.h[j + 1, 7:], **tol)
        for row in (1, 3):
            assert not torch.allclose(out[row], clean.h[j + 1, 7:])
            torch.testing.assert_close(out[row], out[1])
    with pytest.raises(ValueError, match="keys/values of tokens 0 .. 3"):
        runner.layer(0, clean.h[0, 4:].unsqueeze(0), start=4)
    with pytest.raises(ValueError, match="keys/values of tokens 0 .. 3"):
        runner.layer(0, clean.h[0, 4:].unsqueeze(0), start=4, prefix=(keys[:, :, :3], values[:, :, :3]))


def test_windowed_calls_refuse_what_they_cannot_do(model64, tokenizer, monkeypatch):
    """No silent wrong answers: an attention kernel without a windowable mask, an attention module
    that ignores the key/value cache, and an unknown token-axis layer argument are errors."""
    from effdepth.capture import LayerRunner

    clean = clean_run(model64, ids(tokenizer)[0])
    runner = clean.runner
    _, (keys, values) = runner.layer(0, clean.h[0].unsqueeze(0), record=True)
    prefix = (keys[:, :, :4], values[:, :, :4])
    runner._cache_arg = "unused_cache"  # reaches the attention as an ignored keyword
    with pytest.raises(RuntimeError, match="ignored the key/value cache"):
        runner.layer(0, clean.h[0, 4:].unsqueeze(0), start=4, prefix=prefix)
    runner = clean_run(model64, ids(tokenizer)[0]).runner
    runner.kwargs[0]["token_bias"] = torch.zeros(1, clean.h.shape[1])
    with pytest.raises(NotImplementedError, match="token_bias"):
        runner._window(0, 4, clean.h.shape[1], 1, clean.h.device, clean.h.dtype)
    assert not LayerRunner(model64, runner.adapter, _capture_with(runner)).windows
    fresh = clean_run(model64, ids(tokenizer)[0]).runner
    assert fresh.windows
    monkeypatch.setattr("effdepth.capture.WINDOWED_ATTENTION", ("flash_attention_2",))  # as if the model ran flash
    other_kernel = LayerRunner(model64, fresh.adapter, _capture_with(fresh))
    assert not other_kernel.windows
    with pytest.raises(NotImplementedError, match="windowed layer calls need attention"):
        other_kernel.layer(0, clean.h[0, 4:].unsqueeze(0), start=4, prefix=prefix)
    other_kernel.layer(0, clean.h[0].unsqueeze(0))  # full rows still run


def _capture_with(runner):
    """A Capture carrying ``runner``'s layer arguments (to build another LayerRunner from them)."""
    from effdepth.capture import Capture

    capture = Capture()
    capture.layer_kwargs = [dict(kw) for kw in runner.kwargs]
    capture.resid_pre = [torch.zeros(1, runner.n_tokens, 1)]
    return capture


def test_batched_equals_single(model32, tokenizer):
    """Left padding + attention mask + explicit position ids: batch results equal batch size 1."""
    sequences = ids(tokenizer)
    batched = extract_stats(model32, [{"input_ids": s, "id": i} for i, s in enumerate(sequences)], 0, batch_size=3)
    single = extract_stats(model32, [{"input_ids": s, "id": i} for i, s in enumerate(sequences)], 0, batch_size=1)
    capped = extract_stats(
        model32, [{"input_ids": s, "id": i} for i, s in enumerate(sequences)], 0, batch_size=3, max_batch_tokens=60
    )
    assert (batched.n_layers, batched.n_prompts, batched.prompt_ids) == (single.n_layers, 3, ("0", "1", "2"))
    for key in batched.tensors:
        torch.testing.assert_close(batched.tensors[key], single.tensors[key], rtol=1e-4, atol=1e-4, msg=key)
        torch.testing.assert_close(capped.tensors[key], single.tensors[key], rtol=1e-4, atol=1e-4, msg=key)


def test_extraction_batches_respect_the_token_cap():
    from effdepth.extraction import plan_batches

    assert plan_batches([10, 10, 10, 10, 10], 4) == [[0, 1, 2, 3], [4]]
    assert plan_batches([10, 10, 30, 10], 4, max_batch_tokens=60) == [[0, 1], [2, 3]]  # 3 prompts x 30 (padded) > 60
    assert plan_batches([100, 5, 5], 4, max_batch_tokens=60) == [[0], [1, 2]]  # over the cap: alone


def test_store_activations(model32, tokenizer):
    sequences = ids(tokenizer)
    out = extract_stats(model32, [{"input_ids": s} for s in sequences], 0, batch_size=2, store_activations=True).tensors
    n_layers, d = model32.config.num_hidden_layers, model32.config.hidden_size
    assert out["act.1.resid_pre"].shape == (n_layers, len(sequences[1]), d)
    h = torch.cat([out["act.1.resid_pre"], out["act.1.resid_final"][None]])
    torch.testing.assert_close(h[1:] - h[:-1], out["act.1.attn_out"] + out["act.1.mlp_out"], rtol=1e-4, atol=1e-4)


def test_cache_round_trip_with_metadata(tmp_path, model32, tokenizer):
    tensors = extract_stats(model32, [{"input_ids": s} for s in ids(tokenizer)], 0, batch_size=2).tensors
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
