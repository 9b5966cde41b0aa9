"""Interventions: the fast implementations equal slow references — one full forward (and backward)
per intervention, batch size 1, hooks written here — on tiny float64 Qwen2 and Llama models."""

import numpy as np
import polars as pl
import pytest
import torch

from effdepth.analyses.integrated_gradients import ig_baseline, integrated_gradients
from effdepth.analyses.layer_skip import layer_skip, skip_positions
from effdepth.analyses.residual_erasure import erasure_baseline, residual_erasure
from effdepth.reference import reference_erasure, reference_ig, reference_skip
from effdepth.staircase import answer_positions

TEXT = "Give the answer directly: 123 + 456 = "
ANSWER = "579"


def prompt(tokenizer):
    q = tokenizer(TEXT)["input_ids"]
    a = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    return q + a, len(a)


# ---------------------------------------------------------------- layer skip


def test_layer_skip_matches_reference(model64, tokenizer):
    ids, _ = prompt(tokenizer)
    positions = [8, 24]
    kinds = ("layer", "attention", "mlp")
    fast = layer_skip(model64, ids, positions, kinds, max_batch=4)  # 6 jobs per layer: chunks of 4
    slow = reference_skip(model64, ids, positions, kinds)
    swept = layer_skip(model64, ids, positions, kinds, max_batch=5, max_alive=6)  # one sweep per start layer
    for key in slow:
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-6, atol=1e-9, msg=key)
        torch.testing.assert_close(swept[key], slow[key], rtol=1e-6, atol=1e-9, msg=key)
    assert fast["output_max"][0, :-1].min() > 0  # the test can fail: skipping does something


def test_full_rows_without_windowed_attention(model64, tokenizer, monkeypatch):
    """Attention kernels whose masks cannot be windowed (flash attention) run full rows: same results."""
    from effdepth.capture import LayerRunner

    ids, n_answer = prompt(tokenizer)
    monkeypatch.setattr(LayerRunner, "windows", property(lambda self: False))
    skip = layer_skip(model64, ids, [8, 24], ("layer", "mlp"))
    reference = reference_skip(model64, ids, [8, 24], ("layer", "mlp"))
    for key in reference:
        torch.testing.assert_close(skip[key], reference[key], rtol=1e-6, atol=1e-9, msg=key)
    baseline = torch.zeros(model64.config.num_hidden_layers + 1, model64.config.hidden_size, dtype=torch.float64)
    torch.testing.assert_close(
        residual_erasure(model64, ids, n_answer, baseline),
        reference_erasure(model64, ids, n_answer, baseline),
        rtol=1e-6,
        atol=1e-10,
    )


@pytest.mark.parametrize("setting", ["eager-float32", "sliding-window"])
def test_windowed_interventions_other_masks(setting, tokenizer):
    """The windowed skip and erasure also match the references when the captured mask is a tensor:
    eager attention's additive float mask, and an SDPA mask with a sliding window shorter than T."""
    from effdepth.testing import tiny_model

    if setting == "eager-float32":  # eager's softmax runs in float32
        model = tiny_model("llama", seed=3, dtype=torch.float32, attn_implementation="eager")
        tol = {"rtol": 1e-4, "atol": 1e-5}
    else:
        model = tiny_model("qwen2", seed=3, dtype=torch.float64, use_sliding_window=True, sliding_window=6, max_window_layers=0)
        tol = {"rtol": 1e-6, "atol": 1e-9}
    ids, n_answer = prompt(tokenizer)
    kinds = ("layer", "attention")
    fast = layer_skip(model, ids, [8, 24], kinds, max_batch=3)
    slow = reference_skip(model, ids, [8, 24], kinds)
    for key in slow:
        torch.testing.assert_close(fast[key], slow[key].to(fast[key].dtype), **tol, msg=key)
    torch.manual_seed(0)
    baseline = torch.randn(model.config.num_hidden_layers + 1, model.config.hidden_size, dtype=model.dtype)
    torch.testing.assert_close(
        residual_erasure(model, ids, n_answer, baseline, max_batch=5), reference_erasure(model, ids, n_answer, baseline), **tol
    )


def test_staircase_planning():
    from effdepth.analyses.residual_erasure import bucket_starts
    from effdepth.staircase import plan_sweeps, rows_per_call

    assert plan_sweeps([1, 2, 3, 4], [5, 5, 5, 5], 10) == [[1, 2], [3, 4]]
    assert plan_sweeps([1, 2, 3], [5, 5, 5], 4) == [[1], [2], [3]]  # a start layer never splits
    assert plan_sweeps([0, 1, 2], [3, 3, 3], 100) == [[0, 1, 2]]
    assert rows_per_call(8, 100, 100) == 8  # full rows: max_batch
    assert rows_per_call(8, 100, 25, start=75) == 32  # same tokens in narrower rows
    assert rows_per_call(8, 100, 5, start=995) == 3  # a long attended prefix counts a quarter per key
    assert bucket_starts(22, 8) == [0, 2, 5, 8, 11, 13, 16, 19]
    assert bucket_starts(5, 8) == bucket_starts(5, 5) == [0, 1, 2, 3, 4]
    assert bucket_starts(5, 1) == [0]
    with pytest.raises(ValueError, match="buckets"):
        bucket_starts(5, 0)


def test_layer_skip_edge_positions(model64, tokenizer):
    """Positions next to both ends of the prompt (t = 1 skips nothing but token 0 is kept; t = T-1
    measures one token), one position alone, and an empty position list."""
    ids, _ = prompt(tokenizer)
    kinds = ("layer", "attention")
    for positions in ([1, len(ids) - 1], [len(ids) // 2]):
        fast = layer_skip(model64, ids, positions, kinds, max_batch=3, max_alive=1)
        slow = reference_skip(model64, ids, positions, kinds)
        for key in slow:
            torch.testing.assert_close(fast[key], slow[key], rtol=1e-6, atol=1e-9, msg=f"{positions} {key}")
    assert layer_skip(model64, ids, [1], kinds)["output_max"].abs().max() < 1e-12  # t = 1: nothing skipped
    assert layer_skip(model64, ids, [], kinds)["future_max"].shape[-1] == 0
    with pytest.raises(ValueError, match="outside"):
        layer_skip(model64, ids, [len(ids)], kinds)


def test_layer_skip_published_slices_channels(model64, tokenizer):
    ids, _ = prompt(tokenizer)
    fast = layer_skip(model64, ids, [8, 16], ("layer",), variant="published")
    slow = reference_skip(model64, ids, [8, 16], ("layer",), variant="published")
    for key in slow:
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-6, atol=1e-9, msg=key)
    correct = layer_skip(model64, ids, [8, 16], ("layer",))
    assert not torch.allclose(fast["output_max"], correct["output_max"])
    # the public code's map has its diagonal: the skipped layer's own contribution changes on future
    # tokens under the channel slice, never under the token skip
    diagonal = torch.diagonal(fast["future_max"][0], dim1=0, dim2=1)  # [P, L]
    assert (diagonal > 1e-3).all() and torch.diagonal(correct["future_max"][0], dim1=0, dim2=1).abs().max() == 0


def test_published_skip_hand_computed():
    """Channels 1..t-1 of every token take the layer input; token axis untouched otherwise."""
    from types import SimpleNamespace

    from effdepth.analyses.layer_skip import skipped_state

    h_in = torch.arange(12.0).view(3, 4)
    h_out = -torch.ones(3, 4)
    clean = SimpleNamespace(h=torch.stack([h_in, h_out]), a=None, runner=None)
    published = skipped_state(clean, 0, 3, "layer", "published")
    expected = torch.tensor([[-1.0, 1, 2, -1], [-1, 5, 6, -1], [-1, 9, 10, -1]])
    assert torch.equal(published, expected)
    correct = skipped_state(clean, 0, 3, "layer", "correct")
    assert torch.equal(correct, torch.tensor([[-1.0] * 4, [4, 5, 6, 7], [8, 9, 10, 11]]))
    with pytest.raises(ValueError, match="whole layers"):
        skipped_state(clean, 0, 3, "mlp", "published")


def test_skip_table_emits_every_cell_of_the_map():
    """The layer-skip table carries the whole L × L map the public code emits: zeros below the
    diagonal, the diagonal Δ(s, s), and the future effects above it (hand-made results, L = 2)."""
    from effdepth.analyses.layer_skip import table

    future = torch.tensor([[[[0.0], [0.5]], [[0.0], [0.25]]]], dtype=torch.float64)  # [K=1, s, j, P=1]
    output = torch.tensor([[[0.3], [0.1]]], dtype=torch.float64)
    results = [{"future_max": future, "future_mean": future, "output_max": output, "output_mean": output}]
    rows = table(results, [[8]], ["layer"], "published", model="m", task="t", n_layers=2)
    cells = rows.filter((pl.col("metric") == "future") & (pl.col("aggregation") == "max") & pl.col("prompt").is_null())
    got = {(s_, j): v for s_, j, v in cells.select("skipped_layer", "layer", "value").iter_rows()}
    assert got == {(0, 0): 0.0, (0, 1): 0.5, (1, 0): 0.0, (1, 1): 0.25}


def _hand_made_results(scale: float) -> dict:
    future = scale * torch.tensor([[[[0.0], [0.5]], [[0.0], [0.25]]]], dtype=torch.float64)  # [K=1, s, j, P=1]
    output = scale * torch.tensor([[[0.3], [0.1]]], dtype=torch.float64)
    return {"future_max": future, "future_mean": future, "output_max": output, "output_mean": output}


def test_a_prompt_without_skip_position_stays_in_the_table_with_weight_zero():
    """Prompt 1 has no skip position: it keeps its per-prompt rows (weight 0, no value), and the
    aggregates are those of prompts 0 and 2 alone."""
    from effdepth.analyses.layer_skip import table

    ids = {"model": "m", "task": "t", "n_layers": 2}
    with_short = table([_hand_made_results(1.0), {}, _hand_made_results(2.0)], [[8], [], [8]], ["layer"], "correct", **ids)
    without = table([_hand_made_results(1.0), _hand_made_results(2.0)], [[8], [8]], ["layer"], "correct", **ids)
    short = with_short.filter(pl.col("prompt") == 1)
    assert short.height > 0 and (short["weight"] == 0).all() and short["value"].null_count() == short.height
    assert set(with_short["prompt"].drop_nulls()) == {0, 1, 2}
    aggregate = pl.col("prompt").is_null()
    assert with_short.filter(aggregate).equals(without.filter(aggregate))


def test_layer_skip_names_the_prompts_too_short_for_a_skip_position(model64, tokenizer, caplog):
    import logging

    from effdepth.analyses import REGISTRY
    from effdepth.analyses.layer_skip import run
    from effdepth.config import block_options
    from effdepth.subjects import Subject

    long_ids, n_answer = prompt(tokenizer)
    short_ids = long_ids[:11]
    prompts = [
        {"id": 0, "input_ids": long_ids, "n_answer": n_answer},
        {"id": 1, "input_ids": short_ids, "n_answer": 1},
        {"id": 2, "input_ids": long_ids, "n_answer": n_answer},
    ]
    options = REGISTRY["layer_skip"].job_options(block_options("analyses.layer_skip"))
    options |= {"positions_per_prompt": 2, "position_stride": 8, "seed": 0, "kinds": ["layer"]}
    options |= {"max_batch": 64, "max_batch_tokens": 65536, "max_alive_tokens": 262144}
    with caplog.at_level(logging.WARNING, logger="effdepth"):
        rows = run(Subject("tiny", "words", model64, tokenizer, prompts), options)
    warning = " | ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "layer skip tiny/words: prompt 1 (11 tokens) too short for a skip position at position_stride 8" in warning
    assert "needs at least 13 tokens" in warning and "2 of 3 prompts skipped on" in warning
    assert rows.filter(pl.col("prompt") == 1)["weight"].sum() == 0
    with pytest.raises(ValueError, match=r"prompt 1 \(11 tokens\) too short .*0 of 1 prompts skipped on: none remain"):
        run(Subject("tiny", "words", model64, tokenizer, [prompts[1]]), options)


def test_skipping_a_zeroed_layer_changes_nothing(model64, tokenizer):
    ids, _ = prompt(tokenizer)
    layer = model64.model.layers[1]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    result = layer_skip(model64, ids, [8, 16], ("layer", "attention", "mlp"))
    assert result["output_max"][:, 1].abs().max() < 1e-12
    assert result["future_max"][:, 1].abs().max() < 1e-9
    assert result["output_max"][0, 0].min() > 1e-3  # other layers still matter


def test_skip_positions_are_seeded_and_in_range():
    first = skip_positions(60, 4, 8, seed=0, prompt_index=0)
    assert first == skip_positions(60, 4, 8, seed=0, prompt_index=0)
    assert all(p % 8 == 0 and 8 <= p < 56 for p in first) and len(first) == 4
    assert skip_positions(12, 4, 8, 0, 0) == [] and skip_positions(13, 4, 8, 0, 0) == [8]


# ---------------------------------------------------------------- residual erasure


def test_residual_erasure_matches_reference(model64, tokenizer):
    ids, n_answer = prompt(tokenizer)
    torch.manual_seed(0)
    baseline = torch.randn(model64.config.num_hidden_layers + 1, model64.config.hidden_size, dtype=torch.float64)
    fast = residual_erasure(model64, ids, n_answer, baseline, max_batch=16)
    slow = reference_erasure(model64, ids, n_answer, baseline)
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-10)
    swept = residual_erasure(model64, ids, n_answer, baseline, max_batch=7, max_alive=2 * len(ids))  # several sweeps
    torch.testing.assert_close(swept, slow, rtol=1e-6, atol=1e-10)
    assert fast[:, -1].abs().max() < 1e-12  # the last token predicts nothing that is measured
    for buckets in (1, 3, len(ids)):  # one window (whole prompt) … one window per token
        windows = residual_erasure(model64, ids, n_answer, baseline, max_batch=5, buckets=buckets)
        torch.testing.assert_close(windows, slow, rtol=1e-6, atol=1e-10, msg=f"buckets={buckets}")
    assert fast.max() > 1e-3


def test_erasing_with_own_value_changes_nothing(model64, tokenizer):
    from effdepth.staircase import clean_run

    ids, n_answer = prompt(tokenizer)
    t = 5
    baseline = clean_run(model64, ids).h[:, t]  # [L+1, d]: exactly the token's own residuals
    result = residual_erasure(model64, ids, n_answer, baseline)
    assert result[:, t].abs().max() < 1e-12
    assert result[:, t + 1].max() > 1e-6


def test_erasure_baseline_variants_hand_computed():
    # two prompts, one layer, d = 2: sums (2, 4) over 2 tokens and (6, 6) over 3 tokens
    sums = torch.tensor([[[2.0, 4.0]], [[6.0, 6.0]]])
    counts = torch.tensor([2, 3])
    assert torch.equal(erasure_baseline(sums, counts, "correct"), torch.tensor([[8 / 5, 10 / 5]]))
    assert torch.equal(erasure_baseline(sums, counts, "published"), torch.tensor([[(1 + 3) / 2, (2 + 3) / 2]]))


def test_answer_positions():
    assert answer_positions(10, 3).tolist() == [6, 7, 8]
    with pytest.raises(ValueError, match="no answer tokens"):
        answer_positions(10, 0)


# ---------------------------------------------------------------- integrated gradients


@pytest.mark.parametrize("variant", ["correct", "published"])
def test_integrated_gradients_matches_reference(model64, tokenizer, variant):
    ids, n_answer = prompt(tokenizer)
    fast = integrated_gradients(model64, ids, n_answer, steps=8, variant=variant, max_batch=3)
    slow = reference_ig(model64, ids, n_answer, steps=8, variant=variant)
    torch.testing.assert_close(fast["ig"], slow, rtol=1e-6, atol=1e-10)
    assert fast["ig"].abs().max() > 1e-6


def test_integrated_gradients_completeness(model64, tokenizer):
    """Σ_t IG(l, t) → F(x) − F(x′); the left Riemann sum's error shrinks ~1/steps."""
    ids, n_answer = prompt(tokenizer)
    coarse = integrated_gradients(model64, ids, n_answer, steps=16)
    fine = integrated_gradients(model64, ids, n_answer, steps=512, max_batch=128)
    gap = fine["f_input"] - fine["f_baseline"]
    err_fine = (fine["ig"].sum(-1) - gap).abs()
    err_coarse = (coarse["ig"].sum(-1) - gap).abs()
    assert err_fine.max() < 0.02 * gap.abs().max() + 1e-4
    assert (err_fine <= err_coarse + 1e-9).all()


def test_gauss_legendre_ig_matches_reference(model64, tokenizer):
    """The fast path with Gauss–Legendre nodes (two passes of 3 points) equals the slow reference
    fed the same nodes and weights, taken from numpy here."""
    ids, n_answer = prompt(tokenizer)
    xi, omega = np.polynomial.legendre.leggauss(6)
    fast = integrated_gradients(model64, ids, n_answer, steps=6, rule="gauss_legendre", max_batch=4)
    slow = reference_ig(model64, ids, n_answer, steps=0, nodes=(xi + 1) / 2, weights=omega / 2)
    torch.testing.assert_close(fast["ig"], slow, rtol=1e-6, atol=1e-10)
    assert fast["steps"].tolist() == [6] * model64.config.num_hidden_layers
    assert fast["ig"].abs().max() > 1e-6


def worst_relative_gap(out) -> float:
    delta = out["f_input"] - out["f_baseline"]
    return float(((out["ig"].sum(-1) - delta).abs() / delta.abs()).max())


def test_gauss_legendre_at_32_nodes_beats_the_256_step_riemann_sum(model64, tokenizer):
    """Worst relative completeness gap over layers, measured: Qwen2 256-step left Riemann 7.1e-2,
    32-node Gauss–Legendre 4.0e-3; Llama 5.6e-3 and 1.3e-3.  Asserted with a factor-2 margin."""
    ids, n_answer = prompt(tokenizer)
    riemann = integrated_gradients(model64, ids, n_answer, steps=256, max_batch=128)
    gauss = integrated_gradients(model64, ids, n_answer, steps=32, rule="gauss_legendre", max_batch=32)
    assert worst_relative_gap(gauss) < 0.5 * worst_relative_gap(riemann)


def test_ig_baseline_variants_hand_computed():
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    assert torch.equal(ig_baseline(x, "correct"), torch.tensor([[3.0, 5.0], [3.0, 5.0]]))
    assert torch.equal(ig_baseline(x, "published"), torch.tensor([[2.0, 2.0], [6.0, 6.0]]))


def test_logit_chunking_does_not_change_results(model64, tokenizer, monkeypatch):
    """With a one-element logit budget every sequence's logits are computed alone."""
    import effdepth.staircase as staircase

    ids, n_answer = prompt(tokenizer)
    baseline = torch.zeros(model64.config.num_hidden_layers + 1, model64.config.hidden_size, dtype=torch.float64)
    wide_skip = layer_skip(model64, ids, [8, 16], ("layer",))
    wide_erase = residual_erasure(model64, ids, n_answer, baseline)
    monkeypatch.setattr(staircase, "LOGIT_BUDGET", 1)
    assert staircase.logit_rows(10, 100, 64) == 1
    narrow_skip = layer_skip(model64, ids, [8, 16], ("layer",))
    torch.testing.assert_close(narrow_skip["output_max"], wide_skip["output_max"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(residual_erasure(model64, ids, n_answer, baseline), wide_erase, rtol=1e-9, atol=1e-12)


def test_bos_token_is_never_skipped(model64, tokenizer):
    """With a BOS (attention-sink) token first, the correct skip leaves position 0 as computed."""
    from effdepth.analyses.layer_skip import skipped_state
    from effdepth.staircase import clean_run

    ids, _ = prompt(tokenizer)
    ids = [tokenizer.bos_token_id, *ids]
    clean = clean_run(model64, ids)
    for kind in ("layer", "attention", "mlp"):
        state = skipped_state(clean, 1, 16, kind, "correct")
        assert torch.equal(state[0], clean.h[2][0]) and torch.equal(state[16:], clean.h[2][16:])
        assert not torch.equal(state[1:16], clean.h[2][1:16])


def test_known_answers_hold_in_bfloat16(arch, tokenizer):
    """The exact-zero identities survive bf16, the GPU default (no batching noise floor)."""
    from effdepth.staircase import clean_run
    from effdepth.testing import tiny_model

    model = tiny_model(arch, seed=3, dtype=torch.bfloat16)
    ids, n_answer = prompt(tokenizer)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    skip = layer_skip(model, ids, [8, 16], ("layer", "mlp"))
    assert skip["output_max"][:, 1].abs().max() == 0 and skip["output_max"][0, 0].max() > 0
    t = 5
    erased = residual_erasure(model, ids, n_answer, clean_run(model, ids).h[:, t])
    assert erased[:, t].abs().max() == 0 and erased[:, t + 1].max() > 0


def test_ig_job_stores_the_completeness_gap_and_warns_when_steps_are_too_few(tokenizer, caplog):
    """The IG job compares Σ_t IG with F(x) − F(x′) per layer: the signed gap is a row of its table,
    and a relative gap above the tolerance is a warning naming the layer and the steps.  Tiny Qwen2
    (seed 0), one 3-digit addition: at 16 steps one layer misses by more than half, at 256 none by 5 %."""
    import logging

    import polars as pl

    from effdepth.analyses.integrated_gradients import run
    from effdepth.subjects import Subject
    from effdepth.tasks import arithmetic, tokenize_prompt
    from effdepth.testing import tiny_model

    model = tiny_model("qwen2", seed=0)
    question, answer = arithmetic("addition", 3, 1, 1)[0]
    ids, n_answer = tokenize_prompt(tokenizer, question, answer)
    subject = Subject("tiny-qwen2", "addition_3", model, tokenizer, [{"id": 0, "input_ids": ids, "n_answer": n_answer}])
    options = {"variant": "correct", "steps": 16, "completeness_tolerance": 0.05, "max_batch": 64, "max_batch_tokens": 1 << 20}
    for steps, incomplete in ((16, True), (256, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="effdepth"):
            table = run(subject, {**options, "steps": steps})
        terms = table.filter(pl.col("position").is_null()).pivot("metric", index="layer", values="value").sort("layer")
        gap = terms["attribution_sum"] - (terms["f_input"] - terms["f_baseline"])
        assert terms["completeness_gap"].to_list() == pytest.approx(gap.to_list(), abs=1e-12)
        relative = (gap.abs() / (terms["f_input"] - terms["f_baseline"]).abs()).to_list()
        warned = [r for r in caplog.records if "integrated gradients incomplete" in r.getMessage()]
        assert bool(warned) == incomplete, (steps, relative)
        assert (max(relative) > 0.5) == incomplete, (steps, relative)
        if incomplete:
            assert "layer" in warned[0].getMessage() and "steps" in warned[0].getMessage()


def test_ig_job_auto_rule_reaches_the_tolerance_and_reports_its_node_counts(tokenizer, caplog):
    """``rule: auto`` bisects Gauss–Legendre panels of ``min_steps`` nodes per layer until the relative
    gap is ≤ the tolerance; the table's ``steps`` rows say how many nodes each layer evaluated.  Tiny
    Qwen2 (seed 0), one 3-digit addition, tolerance 1 %, 4 nodes a panel: layers need 28, 12, 20, 4
    (measured); with 8 fewer each missed it.  With ``max_steps`` 12 and tolerance 0.1 % layer 0
    stops at the cap and warns."""
    import logging

    import polars as pl

    from effdepth.analyses.integrated_gradients import run
    from effdepth.subjects import Subject
    from effdepth.tasks import arithmetic, tokenize_prompt
    from effdepth.testing import tiny_model

    model = tiny_model("qwen2", seed=0)
    question, answer = arithmetic("addition", 3, 1, 1)[0]
    ids, n_answer = tokenize_prompt(tokenizer, question, answer)
    subject = Subject("tiny-qwen2", "addition_3", model, tokenizer, [{"id": 0, "input_ids": ids, "n_answer": n_answer}])
    options = {
        "variant": "correct",
        "rule": "auto",
        "steps": 256,
        "min_steps": 4,
        "max_steps": 128,
        "completeness_tolerance": 0.01,
        "max_batch_tokens": 1 << 20,
    }

    def terms(table):
        return table.filter(pl.col("position").is_null()).pivot("metric", index="layer", values="value").sort("layer")

    with caplog.at_level(logging.WARNING, logger="effdepth"):
        auto = terms(run(subject, options))
    assert not [r for r in caplog.records if "integrated gradients incomplete" in r.getMessage()]
    relative = (auto["completeness_gap"].abs() / (auto["f_input"] - auto["f_baseline"]).abs()).to_list()
    assert max(relative) <= 0.01, relative
    steps = [int(n) for n in auto["steps"]]
    assert steps == [28, 12, 20, 4], (steps, relative)
    for layer, n in enumerate(steps):
        if n > 4:
            fewer = integrated_gradients(
                model,
                ids,
                n_answer,
                4,
                max_batch=(1 << 20) // len(ids),
                rule="auto",
                tolerance=0.01,
                max_steps=n - 8,
                layers=[layer],
            )
            assert worst_relative_gap({k: v[[layer]] for k, v in fewer.items()}) > 0.01, (layer, n)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="effdepth"):
        capped = terms(run(subject, {**options, "max_steps": 12, "completeness_tolerance": 0.001}))
    assert int(capped["steps"][0]) == 12
    warned = [r.getMessage() for r in caplog.records if "integrated gradients incomplete" in r.getMessage()]
    assert warned and "layer 0" in warned[0] and "`max_steps` (now 12)" in warned[0]


def test_ig_refuses_layers_outside_the_model_and_auto_panels_it_cannot_judge(model64, tokenizer):
    """A negative layer would silently attribute h_0 (the embedding output); one past the end would
    fail deep inside.  Rule auto needs ≥ 3 nodes per panel (its indicator reads two Legendre
    coefficients) and no more per panel than its cap."""
    ids, n_answer = prompt(tokenizer)
    for layers in ([-1], [model64.config.num_hidden_layers]):
        with pytest.raises(ValueError, match="outside 0"):
            integrated_gradients(model64, ids, n_answer, 8, layers=layers)
    for steps, cap in ((2, 256), (8, 4)):
        with pytest.raises(ValueError, match="3 <= steps"):
            integrated_gradients(model64, ids, n_answer, steps, rule="auto", max_steps=cap)


def test_auto_ig_is_the_adaptive_rule_applied_to_the_reference_integrand(model64, tokenizer):
    """Per layer, ``rule: auto`` equals ``adaptive_gauss_legendre`` run on the slow reference: every
    node α evaluated by ``reference_ig`` (one forward and backward, float64), the same stopping rule."""
    from effdepth.analyses.integrated_gradients import adaptive_gauss_legendre
    from effdepth.numerics import completeness_gap

    ids, n_answer = prompt(tokenizer)
    fast = integrated_gradients(model64, ids, n_answer, 4, rule="auto", tolerance=1e-4, max_steps=64, max_batch=8)
    assert fast["steps"].max() > 4  # some layer needed panels
    for layer in range(model64.config.num_hidden_layers):

        def g(alpha, layer=layer):
            return torch.stack([reference_ig(model64, ids, n_answer, 0, nodes=[float(a)], weights=[1.0])[layer] for a in alpha])

        delta = float(fast["f_input"][layer] - fast["f_baseline"][layer])
        slow, used = adaptive_gauss_legendre(g, 4, 64, lambda s, d=delta: completeness_gap(float(s.sum()), d, 0.0) <= 1e-4, 8)
        assert used == int(fast["steps"][layer])
        torch.testing.assert_close(fast["ig"][layer], slow, rtol=1e-6, atol=1e-10)


def test_jobs_drop_prompts_beyond_the_context_and_log_how_many_prompts_they_used(tmp_path, caplog):
    """The job path (effdepth.jobs): a prompt longer than the model's max_position_embeddings is
    dropped with its length and the limit; the layer skip logs how many prompts it used of those
    it was given and records the short one with weight 0."""
    import logging

    from effdepth.analyses import REGISTRY
    from effdepth.config import MODEL_METADATA, job_entry, validate_config
    from effdepth.jobs import intervention
    from effdepth.tasks import build_prompts, write_prompts
    from effdepth.testing import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "ctx48", "qwen2", seed=0, max_position_embeddings=48)
    items = [
        {"question": "a old cat", "answer": " sat"},  # 13 tokens
        {"question": "two sat", "answer": " red"},  # 11: too short for a skip position
        {"question": "x + " * 20 + "1 =", "answer": " 21"},  # 86: beyond the context of 48
        {"question": "two sat river red cat on", "answer": " cat old cat two"},
    ]
    config = validate_config(
        {
            "models": {"m": {"path": str(model_dir), "device": "cpu"}},
            "tasks": {"words": {"source": "fixed", "items": items, "n_prompts": 4}},
            "analyses": {"layer_skip": {"kinds": ["layer"], "positions_per_prompt": 2}},
        }
    )
    prompts = tmp_path / "words.parquet"
    write_prompts(build_prompts("words", config["tasks"]["words"]), prompts, "words")
    options = REGISTRY["layer_skip"].job_options(config["analyses"]["layer_skip"])
    outputs = {"table": str(tmp_path / "skip.parquet"), "tokens": str(tmp_path / "tokens.parquet")}
    with caplog.at_level(logging.INFO, logger="effdepth"):
        intervention(
            "layer_skip",
            "m",
            "words",
            str(model_dir),
            job_entry(config["models"]["m"], MODEL_METADATA),
            str(prompts),
            {"n_prompts": 4},
            options,
            outputs,
        )
    log = " | ".join(r.getMessage() for r in caplog.records)
    assert "prompt 2 (86 tokens)" in log and "context of 48 positions (max_position_embeddings" in log
    assert "prompt 1 (11 tokens) too short for a skip position" in log
    assert "layer_skip m/words: used 2 of the 3 prompts it was given (4 requested)" in log
    table = pl.read_parquet(outputs["table"])
    assert sorted(table["prompt"].drop_nulls().unique()) == [0, 1, 2]  # indices of the 3 prompts it was given
    assert table.filter(pl.col("prompt") == 1)["weight"].sum() == 0
