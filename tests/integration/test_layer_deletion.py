"""Layer deletion: the fast early exit and block deletion equal one full forward per cut with identity
hooks (``effdepth.reference.reference_deletion``) on tiny float64 models of several block shapes, and
known answers: deleting zeroed layers costs nothing, deleting the layer that carries the answer loses it."""

import polars as pl
import pytest
import torch

from effdepth.analyses.layer_deletion import layer_deletion, table
from effdepth.reference import reference_deletion
from effdepth.testing import tiny_model

TEXT = "Give the answer directly: 123 + 456 = "
ANSWER = "579"
KEYS = ("exit_nll", "exit_top1", "deletion_nll", "deletion_top1", "full_nll")


def prompt(tokenizer):
    q = tokenizer(TEXT)["input_ids"]
    a = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    return q + a, len(a)


def assert_same(fast, slow, msg=""):
    for key in KEYS:
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-7, atol=1e-9, msg=f"{msg} {key}")


# sequential pre-norm (Qwen2, Llama), parallel (GPT-NeoX, Falcon), sandwich norms (Gemma 2 / 3, OLMo 2)
FAMILIES = ("qwen2", "llama", "gpt_neox", "falcon", "gemma2", "gemma3", "olmo2")


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_path_matches_reference(family, tokenizer):
    model = tiny_model(family, seed=3, dtype=torch.float64, n_layers=5)
    ids, n_answer = prompt(tokenizer)
    for keep_last in (1, 2):
        fast = layer_deletion(model, ids, n_answer, keep_last=keep_last, max_batch=2)  # several batched calls
        assert_same(fast, reference_deletion(model, ids, n_answer, keep_last=keep_last), f"{family} keep_last={keep_last}")
    assert fast["exit_nll"][0].sub(fast["full_nll"]).abs().max() > 1e-3  # the test can fail: deletion does something
    assert fast["deletion_nll"][:3].sub(fast["full_nll"]).abs().amax(-1).min() > 1e-6


def test_cut_at_the_end_is_the_full_model_and_keep_last_conventions(tokenizer):
    model = tiny_model("qwen2", seed=3, dtype=torch.float64)
    ids, n_answer = prompt(tokenizer)
    out = layer_deletion(model, ids, n_answer)
    n_layers = model.config.num_hidden_layers
    for mode in ("exit", "deletion"):
        torch.testing.assert_close(out[f"{mode}_nll"][n_layers], out["full_nll"], rtol=1e-9, atol=1e-10)
        assert out[f"{mode}_top1"][n_layers].eq(1).all()
    assert out["deletion_top1"][n_layers - 1].eq(1).all()  # keep_last = 1: the cut L-1 deletes nothing
    none_kept = layer_deletion(model, ids, n_answer, keep_last=0)
    torch.testing.assert_close(none_kept["deletion_nll"], out["exit_nll"], rtol=1e-9, atol=1e-10)
    all_kept = layer_deletion(model, ids, n_answer, keep_last=n_layers + 3)
    assert all_kept["deletion_top1"].eq(1).all()
    torch.testing.assert_close(all_kept["deletion_nll"], out["full_nll"].expand(n_layers + 1, -1))
    with pytest.raises(ValueError, match="keep_last"):
        layer_deletion(model, ids, n_answer, keep_last=-1)
    with pytest.raises(ValueError, match="no answer tokens"):
        layer_deletion(model, ids, 0)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_deleting_zeroed_last_layers_loses_nothing(arch, tokenizer):
    model = tiny_model(arch, seed=3, dtype=torch.float64, n_layers=6)
    for layer in model.model.layers[-3:]:  # output projections 0: each of the last three layers is the identity
        with torch.no_grad():
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    ids, n_answer = prompt(tokenizer)
    out = layer_deletion(model, ids, n_answer)
    for k in (3, 4, 5, 6):
        torch.testing.assert_close(out["exit_nll"][k], out["full_nll"], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(out["deletion_nll"][k], out["full_nll"], rtol=1e-9, atol=1e-10)
        assert out["exit_top1"][k].eq(1).all() and out["deletion_top1"][k].eq(1).all()
    assert (out["exit_nll"][2] - out["full_nll"]).abs().max() > 1e-3  # layer 2 is not zeroed: deleting it matters


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_deleting_the_layer_that_carries_the_answer_loses_it(arch, tokenizer):
    model = tiny_model(arch, seed=3, dtype=torch.float64, n_layers=4)
    with torch.no_grad():  # the last layer's MLP output dominates the final residual
        model.model.layers[-1].mlp.down_proj.weight.mul_(200.0)
    ids, n_answer = prompt(tokenizer)
    out = layer_deletion(model, ids, n_answer, keep_last=1)
    n_layers = 4
    assert out["exit_top1"][n_layers - 1].mean() < 0.5  # early exit before the last layer: a different prediction
    assert (out["exit_nll"][n_layers - 1] - out["full_nll"]).mean().abs() > 0.5
    assert out["deletion_top1"][:n_layers].mean() > out["exit_top1"][:n_layers].mean()  # keeping it keeps the answer


def test_table_per_prompt_rows_reaggregate_to_the_headline(tokenizer):
    model = tiny_model("llama", seed=3, dtype=torch.float64)
    ids, n_answer = prompt(tokenizer)
    results = [layer_deletion(model, ids, n_answer), layer_deletion(model, ids[:-1], n_answer - 1)]
    out = table(results, "correct", model="m", task="t", n_layers=4)
    assert set(out["metric"]) == {"exit_loss", "exit_agreement", "deletion_loss", "deletion_agreement", "full_loss"}
    assert out.filter(pl.col("metric") == "full_loss")["layer"].unique().to_list() == [4]
    assert sorted(out.filter(pl.col("metric") == "exit_loss")["layer"].unique().to_list()) == list(range(5))
    per = out.filter(pl.col("prompt").is_not_null())
    again = per.group_by("metric", "layer").agg(((pl.col("value") * pl.col("weight")).sum() / pl.col("weight").sum()).alias("v"))
    head = out.filter(pl.col("prompt").is_null()).join(again, on=["metric", "layer"])
    assert head.height == 4 * 5 + 1
    assert (head["value"] - head["v"]).abs().max() < 1e-12
    assert per.filter(pl.col("prompt") == 1)["weight"].unique().to_list() == [float(n_answer - 1)]
