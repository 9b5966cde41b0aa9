"""Lenses in the pipeline: the tuned lens read in the extraction pass, its tables and estimators,
the settling depth and DTR against plain float64 loops, the tuned exit of layer deletion, the
training corpus and the refusal of training data that holds an evaluated prompt."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch

import effdepth
from effdepth.analyses.layer_deletion import layer_deletion
from effdepth.lenses import TunedLens
from effdepth.lenses.corpus import CorpusError, corpus_texts
from effdepth.lenses.training import TrainingDataOverlap
from effdepth.lenses.trajectories import lens_trajectories
from effdepth.metrics import final_distribution, lens_divergences
from effdepth.models import pad_token_id
from effdepth.testing import char_tokenizer, tiny_model

PAIRS = [("12 + 30 =", " 42"), ("the cat sat on", " the mat"), ("7 + 8 =", " 15"), ("a b c d", " e f")]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def subject(model, tokenizer):
    return effdepth.subject(model, tokenizer, PAIRS, name="tiny", task="t")


@pytest.fixture(scope="module")
def trained(model):
    """A tuned lens with random (non-zero) translators: a lens that is not the logit lens."""
    lens = TunedLens(model)
    with torch.no_grad():
        for i, t in enumerate(lens.translators):
            g = torch.Generator().manual_seed(i)
            t.weight.copy_(0.05 * torch.randn(t.weight.shape, generator=g))
            t.bias.copy_(0.1 * torch.randn(t.bias.shape, generator=g))
    return lens


def test_an_untrained_tuned_lens_gives_exactly_the_logit_lens_tables_and_estimates(model, tokenizer, subject):
    m = effdepth.measure(
        model, tokenizer, subject, analyses=["logit_lens", "tuned_lens"], tuned_lens=TunedLens(model), depth={"bootstrap": 30}
    )
    logit, tuned = m.tables["logit_lens"], m.tables["tuned_lens"]
    assert set(tuned["analysis"]) == {"tuned_lens"}
    assert logit.drop("analysis").equals(tuned.drop("analysis"))
    ed = m.effective_depth
    for stem in ("kl", "overlap", "settling", "dtr"):
        a = ed.filter(pl.col("estimator") == stem).drop("estimator", "lens", "reason")
        b = ed.filter(pl.col("estimator") == f"{stem}_tuned").drop("estimator", "lens", "reason")
        assert a.height and a.equals(b), stem
    assert set(ed.filter(pl.col("estimator").str.ends_with("_tuned"))["lens"]) == {"tuned"}


def test_the_extraction_reads_each_lens_as_the_independent_trajectories_do(model, subject, trained, tokenizer):
    stats = effdepth.extract(subject, tuned_lens=trained)
    assert stats.metadata["lenses"] == "logit,tuned"
    sequences = [p["input_ids"] for p in subject.prompts]
    ref = lens_trajectories(model, {"tuned": trained}, sequences, pad_token_id(tokenizer), top_k=5, batch_size=1)
    for stat in ("kl", "overlap", "jsd"):
        np.testing.assert_allclose(stats.array(f"lens_{stat}.tuned"), ref[f"lens_{stat}.tuned"], rtol=1e-4, atol=1e-5)
    # the tuned lens is not the logit lens here: its KL differs below the last depth
    assert not np.allclose(stats.array("lens_kl.tuned")[:, :-1], stats.array("lens_kl")[:, :-1])
    np.testing.assert_allclose(stats.array("lens_kl.tuned")[:, -1], stats.array("lens_kl")[:, -1])


@pytest.mark.parametrize("depths_per_chunk", [1, 2])
def test_depths_read_one_at_a_time_or_in_chunks_give_the_same_statistics(subject, trained, monkeypatch, depths_per_chunk):
    """The extraction unembeds several depths in one product where a prompt is short
    (lenses.base.LENS_CHUNK_ELEMENTS): chunks of 1 (one depth per product, as for long prompts)
    and 2 (chunks that do not divide L + 1 = 5) equal all depths at once (the tiny model's default)."""
    import effdepth.lenses.base as base

    whole = effdepth.extract(subject, tuned_lens=trained)
    longest = max(len(p["input_ids"]) for p in subject.prompts)
    monkeypatch.setattr(base, "LENS_CHUNK_ELEMENTS", depths_per_chunk * longest * subject.model.config.vocab_size)
    chunked = effdepth.extract(subject, tuned_lens=trained)
    for name in ("lens_kl", "lens_overlap", "lens_jsd", "lens_kl.tuned", "lens_overlap.tuned", "lens_jsd.tuned"):
        np.testing.assert_allclose(chunked.array(name), whole.array(name), rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_lens_read_at_several_depths_equals_one_depth_at_a_time(model, trained):
    h = torch.randn(5, 3, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    for lens in (trained, effdepth.lenses.LogitLens(model)):
        together = lens.read_depths(h[1:4], [1, 2, 3])
        one_by_one = torch.stack([lens(h[layer], layer) for layer in (1, 2, 3)])
        torch.testing.assert_close(together, one_by_one)
    with pytest.raises(IndexError, match="outside 0"):
        trained.read_depths(h[:2], [4, 5])


def test_lens_divergences_equal_a_float64_loop():
    torch.manual_seed(0)
    q, p = torch.randn(6, 40), torch.randn(6, 40)
    kl, overlap, jsd = lens_divergences(q, final_distribution(p, 3), 3)
    for i in range(6):
        pq = torch.softmax(q[i].double(), -1).tolist()
        pp = torch.softmax(p[i].double(), -1).tolist()
        mid = [(a + b) / 2 for a, b in zip(pp, pq)]
        ref_kl = sum(a * math.log(a / b) for a, b in zip(pq, pp))
        ref_jsd = 0.5 * sum(a * math.log(a / m) for a, m in zip(pp, mid)) + 0.5 * sum(
            b * math.log(b / m) for b, m in zip(pq, mid)
        )
        top_q = set(sorted(range(40), key=lambda v: -q[i, v].item())[:3])
        top_p = set(sorted(range(40), key=lambda v: -p[i, v].item())[:3])
        assert kl[i].item() == pytest.approx(ref_kl, rel=1e-4, abs=1e-6)
        assert jsd[i].item() == pytest.approx(ref_jsd / math.log(2), rel=1e-4, abs=1e-6)
        assert overlap[i].item() == pytest.approx(len(top_q & top_p) / 3)


def test_settling_depth_and_dtr_in_the_table_equal_plain_loops_over_tokens(model, tokenizer, subject, trained):
    g, rho = 0.3, 0.5
    m = effdepth.measure(
        model,
        tokenizer,
        subject,
        analyses={"logit_lens": {"settling_threshold": g}, "tuned_lens": {"settling_threshold": g}},
        tuned_lens=trained,
        depth={"bootstrap": 0, "depth_fraction": rho},
    )
    stats, L = m.stats, m.stats.n_layers
    for lens, suffix in (("logit", ""), ("tuned", ".tuned")):
        jsd = np.asarray(m.stats.array(f"lens_jsd{suffix}"), dtype=np.float64)
        depths = []
        for row in jsd:  # the first depth l >= 1 below g
            depths.append(next(l for l in range(1, L + 1) if row[l] < g))
        mean_depth = sum(depths) / len(depths)
        deep = sum(d >= math.ceil(rho * L) for d in depths) / len(depths)
        ed = m.effective_depth.filter(pl.col("lens") == lens)
        name = "" if lens == "logit" else "_tuned"
        assert ed.filter(pl.col("estimator") == f"settling{name}")["ed"][0] == pytest.approx(mean_depth, rel=1e-9)
        assert ed.filter(pl.col("estimator") == f"dtr{name}")["ed"][0] == pytest.approx(deep, rel=1e-9)
        assert ed.filter(pl.col("estimator") == f"dtr{name}")["ratio"][0] is None  # a share, not a depth
    assert stats.n_prompts == len(PAIRS)


def test_a_forward_table_of_a_lens_the_extraction_did_not_read_says_what_to_do(subject):
    stats = effdepth.extract(subject)
    with pytest.raises(KeyError, match=r"tuned_lens reads lens_kl\.tuned.*tuned_lens=") as caught:
        effdepth.forward_table(stats, "tuned_lens")
    assert "lens_jsd.tuned" in str(caught.value)
    with pytest.raises(ValueError, match="needs a lens"):
        effdepth.measure(subject.model, subject.tokenizer, subject, analyses=["tuned_lens"])


def test_the_tuned_exit_of_an_untrained_lens_is_the_early_exit(model, tokenizer, subject, trained):
    ids = subject.prompts[0]["input_ids"]
    n_answer = subject.prompts[0]["n_answer"]
    plain = layer_deletion(model, ids, n_answer, lens=TunedLens(model))
    torch.testing.assert_close(plain["tuned_exit_nll"], plain["exit_nll"])
    torch.testing.assert_close(plain["tuned_exit_top1"], plain["exit_top1"])
    table = effdepth.run(subject, "layer_deletion", tuned_lens=trained)
    assert {"tuned_exit_loss", "tuned_exit_agreement"} <= set(table["metric"])
    moved = layer_deletion(model, ids, n_answer, lens=trained)
    assert not torch.allclose(moved["tuned_exit_nll"][:-1], moved["exit_nll"][:-1])
    torch.testing.assert_close(moved["tuned_exit_nll"][-1], moved["exit_nll"][-1])  # h_L: the output itself


def test_training_refuses_a_corpus_holding_an_evaluated_prompt(subject):
    texts = ["some unrelated prose about rivers and hills " * 4] * 6
    leaked = texts + ["notes: 12 + 30 = 42 was the answer"]
    with pytest.raises(TrainingDataOverlap, match="evaluation prompt 0"):
        effdepth.train_lens(subject, corpus=(leaked, texts[:2]), steps=1, token_budget=64, seq_len=16, heldout_chunks=1)


def test_training_lowers_the_held_out_kl(subject):
    train, heldout = corpus_texts({"source": "python_docs", "max_texts": 30})
    result = effdepth.train_lens(
        subject, corpus=(train, heldout), steps=6, token_budget=6 * 256, seq_len=64, batch_size=4, heldout_chunks=4
    )
    assert result.heldout_after.mean() < result.heldout_before.mean()
    assert result.recipe["training_data"].startswith("sha256:")


def test_corpus_files_name_the_line_that_is_wrong(tmp_path):
    good = tmp_path / "c.jsonl"
    good.write_text("\n".join(json.dumps({"text": f"text {i}"}) for i in range(20)) + "\n")
    train, heldout = corpus_texts({"source": "file", "path": str(good), "heldout_every": 5})
    assert len(train) == 16 and len(heldout) == 4 and heldout[0] == "text 4"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"body": "b"}) + "\n")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: no text field 'text'"):
        corpus_texts({"source": "file", "path": str(bad)})
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{not json\n')
    with pytest.raises(CorpusError, match=r"broken\.jsonl:2: not JSON"):
        corpus_texts({"source": "file", "path": str(broken)})
    plain = tmp_path / "c.txt"
    plain.write_text("one\n\ntwo\n\n\nthree\n")
    assert corpus_texts({"source": "file", "path": str(plain), "heldout_every": 3}) == (["one", "two"], ["three"])
    with pytest.raises(CorpusError, match="not found"):
        corpus_texts({"source": "file", "path": str(tmp_path / "missing.txt")})
    with pytest.raises(CorpusError, match="too few"):
        corpus_texts({"source": "file", "path": str(plain), "heldout_every": 10})


def test_a_hub_corpus_streams_through_the_datasets_code(tmp_path, monkeypatch):
    """source hf runs datasets.load_dataset(..., streaming=True), the code a hub id takes, here on a
    local dataset directory (hub downloads are not reachable offline)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "prose"
    data.mkdir()
    rows = [{"text": f"paragraph {i} about rivers and hills", "id": i} for i in range(30)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (data / "test.jsonl").write_text(json.dumps({"text": "a test-split text", "id": -1}) + "\n")
    spec = {"source": "hf", "hf_id": str(data), "split": "train", "revision": "main", "max_texts": 20, "heldout_every": 5}
    train, heldout = corpus_texts(spec)
    want = [r["text"] for r in rows[:20]]
    assert train == [t for i, t in enumerate(want) if i % 5 != 4] and heldout == want[4::5]
    with pytest.raises(CorpusError, match=r"prose \(train\) row 1: no text field 'body' \(fields: text, id\)"):
        corpus_texts({**spec, "text_field": "body"})
    with pytest.raises(CorpusError, match=r"could not be opened.*hf_id may be a dataset directory"):
        corpus_texts({**spec, "hf_id": "effdepth-tests/no-such-dataset"})
