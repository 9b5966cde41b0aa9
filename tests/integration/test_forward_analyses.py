"""Forward-only analyses (relative contribution / cosine, logit lens, block influence):
fast extraction + tables == slow references written with plain loops in float64."""

import math

import polars as pl
import pytest
import torch

from effdepth.analyses.block_influence import table as block_influence_table
from effdepth.analyses.logit_lens import table as logit_lens_table
from effdepth.analyses.relative_contribution import table as relative_contribution_table
from effdepth.extraction import extract_stats
from effdepth.reference import reference_activations, reference_lens, reference_rc, vec_cos
from effdepth.stats import ExtractionStats

TEXTS = ["The cat sat on the mat today.", "2 + 2 = 4", "Once upon a time, in a land far away."]


def stats_for(model, sequences, top_k=5):
    prompts = [{"input_ids": s} for s in sequences]
    stats = extract_stats(model, prompts, pad_id=0, batch_size=2, top_k=top_k)
    assert (stats.n_prompts, stats.n_layers, stats.d_model) == (
        len(sequences),
        model.config.num_hidden_layers,
        model.config.hidden_size,
    )
    return stats


def headline(table, metric):
    rows = table.filter(pl.col("prompt").is_null() & (pl.col("metric") == metric)).sort("layer")
    return rows["value"].to_list()


def test_relative_contribution_matches_reference(model64, tokenizer):
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    stats = stats_for(model64, sequences)
    table = relative_contribution_table(stats, "correct")
    reference = reference_rc(model64, sequences)
    for metric, values in reference.items():
        assert headline(table, metric) == pytest.approx(values, rel=1e-5, abs=1e-6), metric


def test_relative_contribution_published_divides_by_d_model(model64, tokenizer):
    """Published variant: each prompt's token sum / d_model, then the mean over prompts (reference loop)."""
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    stats = stats_for(model64, sequences)
    correct = relative_contribution_table(stats, "correct")
    published = relative_contribution_table(stats, "published")
    d = model64.config.hidden_size
    expected = 0.0
    for ids in sequences:
        h, a, m, _ = reference_activations(model64, ids)
        c = h[2] - h[1]
        expected += sum(vec_cos(c[t].tolist(), h[1][t].tolist()) for t in range(len(ids))) / d / len(sequences)
    assert headline(published, "cos_layer")[1] == pytest.approx(expected, rel=1e-5)
    # signs (hence ED_cos) are unaffected by the normaliser
    assert [math.copysign(1, v) for v in headline(published, "cos_layer")] == [
        math.copysign(1, v) for v in headline(correct, "cos_layer")
    ]


def test_published_normaliser_hand_computed():
    """Two prompts of 1 and 3 tokens, one layer, d_model = 4: correct = token mean, published = Σ/d averaged."""
    tensors = {
        "layer_stats": torch.tensor([[[1.0] * 7], [[2.0] * 7], [[2.0] * 7], [[2.0] * 7]]),
        "token_prompt": torch.tensor([0, 1, 1, 1], dtype=torch.int32),
    }
    stats = ExtractionStats(tensors, n_layers=1, d_model=4, n_prompts=2, top_k=5)
    correct = relative_contribution_table(stats, "correct")
    published = relative_contribution_table(stats, "published")
    assert headline(correct, "rc_layer") == [pytest.approx(7 / 4)]
    assert headline(published, "rc_layer") == [pytest.approx((1 / 4 + 6 / 4) / 2)]


def test_logit_lens_matches_reference(model64, tokenizer):
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    stats = stats_for(model64, sequences, top_k=5)
    table = logit_lens_table(stats, "correct")
    kl, overlap = reference_lens(model64, sequences, 5)
    assert headline(table, "kl") == pytest.approx(kl, rel=1e-5, abs=1e-7)
    assert headline(table, "overlap") == pytest.approx(overlap, abs=1e-6)  # cached as float32
    # the lens of the final residual is the model's output
    assert headline(table, "kl")[-1] == pytest.approx(0.0, abs=1e-9)
    assert headline(table, "overlap")[-1] == 1.0
    published = logit_lens_table(stats, "published")
    assert headline(published, "kl") == pytest.approx(kl[:-1], rel=1e-5, abs=1e-7)


def test_block_influence_and_angular_distance(model64, tokenizer):
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    stats = stats_for(model64, sequences)
    table = block_influence_table(stats, "correct")
    n_layers = model64.config.num_hidden_layers
    bi = [0.0] * n_layers
    dist = {}
    for ids in sequences:
        h, _, _, _ = reference_activations(model64, ids)
        for l in range(n_layers):
            bi[l] += sum(1 - vec_cos(h[l][t].tolist(), h[l + 1][t].tolist()) for t in range(len(ids)))
        for span in range(1, n_layers + 1):
            for l in range(n_layers + 1 - span):
                cos = max(-1.0, min(1.0, vec_cos(h[l][-1].tolist(), h[l + span][-1].tolist())))
                dist[(l, span)] = dist.get((l, span), 0.0) + math.acos(cos) / math.pi / len(sequences)
    tokens = sum(len(s) for s in sequences)
    assert headline(table, "block_influence") == pytest.approx([x / tokens for x in bi], rel=1e-5, abs=1e-7)
    rows = table.filter(pl.col("prompt").is_null() & (pl.col("metric") == "angular_distance"))
    got = {(r["layer"], r["span"]): r["value"] for r in rows.iter_rows(named=True)}
    assert got.keys() == dist.keys()
    for key, value in dist.items():
        assert got[key] == pytest.approx(value, abs=1e-6)
