"""Forward-only analyses (relative contribution / cosine, logit lens, block influence):
fast extraction + tables == slow references written with plain loops in float64."""

import math

import polars as pl
import pytest
import torch

from effdepth.extract import extract_stats
from effdepth.tables import block_influence_table, logit_lens_table, relative_contribution_table

TEXTS = ["The cat sat on the mat today.", "2 + 2 = 4", "Once upon a time, in a land far away."]


def reference_activations(model, ids):
    """Batch-1 forward with hooks registered here (independent of effdepth.capture)."""
    layers = model.model.layers
    store = {"h": [None] * len(layers), "a": [None] * len(layers), "m": [None] * len(layers)}
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(lambda mod, args, kw, i=i: store["h"].__setitem__(i, (args[0] if args else kw["hidden_states"])[0]), with_kwargs=True))
        handles.append(layer.self_attn.register_forward_hook(lambda mod, args, out, i=i: store["a"].__setitem__(i, out[0][0])))
        handles.append(layer.mlp.register_forward_hook(lambda mod, args, out, i=i: store["m"].__setitem__(i, out[0])))
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0]
    finally:
        for h in handles:
            h.remove()
    h_last = store["h"][-1] + store["a"][-1] + store["m"][-1]
    return store["h"] + [h_last], store["a"], store["m"], logits


def vec_norm(v):
    return math.sqrt(sum(float(x) ** 2 for x in v))


def vec_cos(x, y):
    return sum(float(a) * float(b) for a, b in zip(x, y)) / max(vec_norm(x) * vec_norm(y), 1e-6)


def reference_rc(model, sequences):
    """Token-count mean over all tokens of all prompts, computed token by token."""
    n_layers = model.config.num_hidden_layers
    sums = {k: [0.0] * n_layers for k in ("rc_attention", "rc_mlp", "rc_layer", "cos_attention", "cos_mlp", "cos_layer")}
    for ids in sequences:
        h, a, m, _ = reference_activations(model, ids)
        for t in range(len(ids)):
            for l in range(n_layers):
                hl, al, ml = h[l][t].tolist(), a[l][t].tolist(), m[l][t].tolist()
                mid = [x + y for x, y in zip(hl, al)]
                c = [x + y for x, y in zip(al, ml)]
                sums["rc_attention"][l] += vec_norm(al) / max(vec_norm(hl), 1e-6)
                sums["rc_mlp"][l] += vec_norm(ml) / max(vec_norm(mid), 1e-6)
                sums["rc_layer"][l] += vec_norm(c) / max(vec_norm(hl), 1e-6)
                sums["cos_attention"][l] += vec_cos(al, hl)
                sums["cos_mlp"][l] += vec_cos(ml, mid)
                sums["cos_layer"][l] += vec_cos(c, hl)
    tokens = sum(len(s) for s in sequences)
    return {k: [v / tokens for v in vals] for k, vals in sums.items()}


def stats_for(model, sequences, top_k=5):
    prompts = [{"input_ids": s} for s in sequences]
    stats = extract_stats(model, prompts, pad_id=0, batch_size=2, top_k=top_k)
    meta = {"n_prompts": str(len(sequences)), "n_layers": str(model.config.num_hidden_layers), "d_model": str(model.config.hidden_size)}
    return stats, meta


def headline(table, metric):
    rows = table.filter(pl.col("prompt").is_null() & (pl.col("metric") == metric)).sort("layer")
    return rows["value"].to_list()


def test_relative_contribution_matches_reference(model64, tokenizer):
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    stats, meta = stats_for(model64, sequences)
    table = relative_contribution_table(stats, meta, "correct", model="m", task="t")
    reference = reference_rc(model64, sequences)
    for metric, values in reference.items():
        assert headline(table, metric) == pytest.approx(values, rel=1e-5, abs=1e-6), metric


def test_relative_contribution_published_divides_by_d_model(model64, tokenizer):
    """Published variant: each prompt's token sum / d_model, then the mean over prompts (reference loop)."""
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    stats, meta = stats_for(model64, sequences)
    correct = relative_contribution_table(stats, meta, "correct", model="m", task="t")
    published = relative_contribution_table(stats, meta, "published", model="m", task="t")
    d = model64.config.hidden_size
    expected = 0.0
    for ids in sequences:
        h, a, m, _ = reference_activations(model64, ids)
        c = h[2] - h[1]
        expected += sum(vec_cos(c[t].tolist(), h[1][t].tolist()) for t in range(len(ids))) / d / len(sequences)
    assert headline(published, "cos_layer")[1] == pytest.approx(expected, rel=1e-5)
    # signs (hence ED_cos) are unaffected by the normaliser
    assert [math.copysign(1, v) for v in headline(published, "cos_layer")] == [math.copysign(1, v) for v in headline(correct, "cos_layer")]


def test_published_normaliser_hand_computed():
    """Two prompts of 1 and 3 tokens, one layer, d_model = 4: correct = token mean, published = Σ/d averaged."""
    stats = {
        "layer_stats": torch.tensor([[[1.0] * 7], [[2.0] * 7], [[2.0] * 7], [[2.0] * 7]]),
        "token_prompt": torch.tensor([0, 1, 1, 1], dtype=torch.int32),
    }
    meta = {"n_prompts": "2", "n_layers": "1", "d_model": "4"}
    correct = relative_contribution_table(stats, meta, "correct", model="m", task="t")
    published = relative_contribution_table(stats, meta, "published", model="m", task="t")
    assert headline(correct, "rc_layer") == [pytest.approx(7 / 4)]
    assert headline(published, "rc_layer") == [pytest.approx((1 / 4 + 6 / 4) / 2)]


def reference_lens(model, sequences, k):
    n_layers = model.config.num_hidden_layers
    kl = [0.0] * (n_layers + 1)
    overlap = [0.0] * (n_layers + 1)
    for ids in sequences:
        h, _, _, logits = reference_activations(model, ids)
        for l in range(n_layers + 1):
            lens = model.lm_head(model.model.norm(h[l]))
            for t in range(len(ids)):
                q = torch.softmax(lens[t], -1).tolist()
                p = torch.softmax(logits[t], -1).tolist()
                kl[l] += sum(qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p) if qi > 0)
                top_q = set(sorted(range(len(q)), key=lambda i: -q[i])[:k])
                top_p = set(sorted(range(len(p)), key=lambda i: -p[i])[:k])
                overlap[l] += len(top_q & top_p) / k
    tokens = sum(len(s) for s in sequences)
    return [x / tokens for x in kl], [x / tokens for x in overlap]


def test_logit_lens_matches_reference(model64, tokenizer):
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    stats, meta = stats_for(model64, sequences, top_k=5)
    table = logit_lens_table(stats, meta, "correct", model="m", task="t")
    kl, overlap = reference_lens(model64, sequences, 5)
    assert headline(table, "kl") == pytest.approx(kl, rel=1e-5, abs=1e-7)
    assert headline(table, "overlap") == pytest.approx(overlap, abs=1e-6)  # cached as float32
    # the lens of the final residual is the model's output
    assert headline(table, "kl")[-1] == pytest.approx(0.0, abs=1e-9)
    assert headline(table, "overlap")[-1] == 1.0
    published = logit_lens_table(stats, meta, "published", model="m", task="t")
    assert headline(published, "kl") == pytest.approx(kl[:-1], rel=1e-5, abs=1e-7)


def test_block_influence_and_angular_distance(model64, tokenizer):
    sequences = [tokenizer(t)["input_ids"] for t in TEXTS]
    stats, meta = stats_for(model64, sequences)
    table = block_influence_table(stats, meta, "correct", model="m", task="t")
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
