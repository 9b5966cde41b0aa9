"""Training tuned lenses: the fast loss against a float64 plain loop, the first two optimiser steps
against the reference recipe written out by hand, training lowering held-out KL, the model left
frozen and unchanged, and refusal of training data that overlaps the evaluation prompts."""

import logging
import math

import pytest
import torch

from effdepth.lenses import LogitLens, TunedLens
from effdepth.lenses.training import (
    REFERENCE_RECIPE,
    TrainingDataOverlap,
    check_disjoint,
    chunk_texts,
    lens_kl_per_layer,
    train_tuned_lens,
    training_data_identity,
)
from effdepth.reference import reference_activations
from effdepth.testing import char_tokenizer, tiny_model

SEQUENCES = [[5 + (11 * i + 3 * j) % 90 for i in range(9 + 2 * j)] for j in range(3)]
CORPUS = [f"Line {i}: the quick brown fox jumps over the lazy dog while {i * 7 % 13} hens count to {i % 5}." for i in range(40)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (several threads on a loaded machine spin-wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise(lens, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def plain_layer_kl_sums(model, lens, sequences):
    """Σ over tokens of KL(p_final ‖ q_l) per depth l < L, token by token (float64, differentiable
    in the translators), from unpadded single-prompt forwards; and the token count."""
    n_layers = lens.n_layers
    sums = [torch.zeros((), dtype=torch.float64) for _ in range(n_layers)]
    count = 0
    for ids in sequences:
        h, _, _, logits = reference_activations(model, ids)
        for t in range(len(ids)):
            e = torch.exp(logits[t] - logits[t].max())
            p = e / e.sum()
            for layer in range(n_layers):
                W, b = lens.translators[layer].weight, lens.translators[layer].bias
                x = h[layer][t] + W @ h[layer][t] + b
                z = model.lm_head(model.model.norm(x))
                log_q = z - z.max() - torch.log(torch.exp(z - z.max()).sum())
                log_p = torch.log(p)
                sums[layer] = sums[layer] + (p * (log_p - log_q)).sum()
            count += 1
    return sums, count


def test_fast_loss_equals_a_plain_float64_loop(model64):
    lens = TunedLens(model64)
    _randomise(lens, seed=1)
    fast = lens_kl_per_layer(lens, SEQUENCES, 0, batch_size=2)  # left-padded batches
    sums, count = plain_layer_kl_sums(model64, lens, SEQUENCES)
    for layer in range(lens.n_layers):
        assert fast[layer] == pytest.approx(float(sums[layer].detach()) / count, rel=1e-9, abs=1e-12)
    # and the untrained tuned lens has the logit lens's held-out KL
    assert (lens_kl_per_layer(TunedLens(model64), SEQUENCES, 0) == lens_kl_per_layer(LogitLens(model64), SEQUENCES, 0)).all()


def _clip(grads, max_norm):
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
    coef = min(1.0, max_norm / (norm + 1e-6))
    return [g * coef for g in grads]


@pytest.mark.parametrize("one_layer_per_product", [False, True], ids=["layers-together", "one-layer-at-a-time"])
def test_two_steps_follow_the_reference_recipe_written_out(model64, monkeypatch, one_layer_per_product):
    """Nesterov SGD (μ = 0.9, lr = 1 · (1 − μ), weight decay 1e-3, clip 1.0, linear decay over
    2 steps) on the plain loop's gradient; each step sees every sequence once.  The same whether
    the layers' logits share one unembedding (short batches) or are read one layer at a time
    (lenses.base.LENS_CHUNK_ELEMENTS)."""
    if one_layer_per_product:
        import effdepth.lenses.base as base

        monkeypatch.setattr(base, "LENS_CHUNK_ELEMENTS", 1)
    tokens = sum(len(s) for s in SEQUENCES)
    result = train_tuned_lens(model64, SEQUENCES, SEQUENCES[:1], 0, steps=2, token_budget=2 * tokens, batch_size=16)
    ref = TunedLens(model64)
    params = list(ref.parameters())
    mu, wd, lr0 = REFERENCE_RECIPE["momentum"], REFERENCE_RECIPE["weight_decay"], REFERENCE_RECIPE["lr_scale"] * 0.1
    bufs = None
    for step in range(2):
        sums, count = plain_layer_kl_sums(model64, ref, SEQUENCES)
        loss = sum(sums) / count
        grads = _clip(list(torch.autograd.grad(loss, params)), 1.0)
        lr = lr0 * (1 - step / 2)
        with torch.no_grad():
            d = [g + wd * p for g, p in zip(grads, params)]
            bufs = d if bufs is None else [mu * b + x for b, x in zip(bufs, d)]
            for p, x, b in zip(params, d, bufs):
                p -= lr * (x + mu * b)
    assert result.steps == 2 and result.tokens == 2 * tokens
    for (name, got), want in zip(result.lens.named_parameters(), params):
        assert torch.allclose(got, want, atol=1e-12, rtol=1e-9), name
    assert not result.lens.is_identity()


def test_training_lowers_heldout_kl_and_leaves_the_model_alone(caplog):
    torch.manual_seed(0)
    model = tiny_model("qwen2", seed=2)
    model.model.embed_tokens.weight.requires_grad_(True)  # a flag that must be restored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokenizer = char_tokenizer()
    chunks = chunk_texts(tokenizer, CORPUS, 48)
    train, heldout = chunks[:-3], chunks[-3:]
    with caplog.at_level(logging.INFO, logger="effdepth"):
        result = train_tuned_lens(model, train, heldout, 0, steps=12, token_budget=12 * 192, batch_size=4, eval_every_s=0.0)
    assert (result.heldout_after < result.heldout_before).all(), (result.heldout_before, result.heldout_after)
    assert result.heldout_after.mean() < 0.8 * result.heldout_before.mean()
    # held-out loss logged before, during (eval_every_s = 0: after every step) and after training
    logged = [r for r in caplog.records if "held-out KL" in r.getMessage()]
    assert len(logged) == 13 and len(result.history) == 13
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.model.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for n, p in model.named_parameters() if n != "model.embed_tokens.weight")
    assert result.recipe["tokens_per_step"] == 192 and result.recipe["momentum"] == 0.9


def test_between_evaluations_the_step_loss_is_logged(model64, caplog):
    with caplog.at_level(logging.INFO, logger="effdepth"):
        train_tuned_lens(model64, SEQUENCES, SEQUENCES[:1], 0, steps=3, token_budget=60, eval_every_s=1e9, log_every_s=0.0)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("held-out KL(final‖lens) mean" in m and "by depth" in m for m in messages) == 2  # before and after
    assert sum("on the step's tokens before its update" in m for m in messages) == 2  # steps 1 and 2


def test_training_refuses_an_empty_budget(model64):
    with pytest.raises(ValueError, match="token_budget ≥ steps"):
        train_tuned_lens(model64, SEQUENCES, SEQUENCES, 0, steps=10, token_budget=5)
    with pytest.raises(TypeError, match="another model"):
        train_tuned_lens(model64, SEQUENCES, SEQUENCES, 0, lens=TunedLens(tiny_model("qwen2", seed=5, dtype=torch.float64)))


# ---------------------------------------------------------------- data


def test_overlap_with_evaluation_prompts_is_refused_naming_the_prompt():
    corpus = ["A long document.\nIt says: What is  12 + 34? 46 and more.", "Another one."]
    with pytest.raises(TrainingDataOverlap, match=r"training item 0 .* contains evaluation prompt 1: 'What is 12 \+ 34\? 46'"):
        check_disjoint(corpus, ["Unrelated question", "What is 12 + 34? 46"])
    with pytest.raises(TrainingDataOverlap, match="training item 1 .* is contained in evaluation prompt 0"):
        check_disjoint(corpus, ["Another one. And its answer"])
    check_disjoint(corpus, ["What is 12 + 35? 47", ""])  # no overlap: passes
    with pytest.raises(TrainingDataOverlap, match=r"token ids \[7, 8\]"):
        check_disjoint([[1, 2, 7, 8, 9]], [[7, 8]])
    check_disjoint([[1, 2, 7, 8, 9]], [[8, 7]])


def test_chunks_and_training_data_identity():
    tokenizer = char_tokenizer()
    chunks = chunk_texts(tokenizer, ["abc", "de"], 3)
    eos = tokenizer.eos_token_id
    ids = tokenizer("abc", add_special_tokens=False)["input_ids"]
    assert chunks == [ids, [eos, *tokenizer("de", add_special_tokens=False)["input_ids"]]]
    with pytest.raises(ValueError, match="fewer than one chunk"):
        chunk_texts(tokenizer, ["ab"], 10)
    a = training_data_identity([[1, 2], [3]])
    assert a == training_data_identity([[1, 2], [3]]) and a.startswith("sha256:")
    assert a != training_data_identity([[1], [2, 3]]) != training_data_identity([[1, 2], [4]])


def test_training_on_texts_checks_the_evaluation_prompts_first():
    from effdepth.lenses.training import train_tuned_lens_on_texts

    model = tiny_model("qwen2", seed=2)
    tokenizer = char_tokenizer()
    with pytest.raises(TrainingDataOverlap, match="evaluation prompt 0: 'Line 3: the quick"):
        train_tuned_lens_on_texts(model, tokenizer, CORPUS, CORPUS[-2:], [CORPUS[3][:30]], seq_len=48, steps=1, token_budget=48)
    with pytest.raises(TrainingDataOverlap):  # the held-out texts are checked too
        train_tuned_lens_on_texts(model, tokenizer, CORPUS[:5], CORPUS[30:], [CORPUS[35]], seq_len=48, steps=1, token_budget=48)
    result, identity = train_tuned_lens_on_texts(
        model, tokenizer, CORPUS[:30], CORPUS[30:], ["What is 2 + 2?"], seq_len=48, heldout_chunks=2, steps=2, token_budget=96
    )
    assert result.steps == 2 and result.tokens == 96
    assert identity == training_data_identity(chunk_texts(tokenizer, CORPUS[:30], 48))
