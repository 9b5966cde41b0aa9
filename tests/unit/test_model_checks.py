"""Model and tokenizer checked against each other before the first forward pass."""

import pytest

from effdepth.extraction import extract_stats
from effdepth.models import ModelTokenizerError, check_model_tokenizer, check_prompt_ids, embedding_rows, pad_token_id
from effdepth.tasks import tokenize_prompt
from effdepth.testing import char_tokenizer, tiny_model

PAIRS = [("Give the answer directly: 12 + 34 = ", "46"), ("Give the answer directly: 123 + 456 = ", "579")]


@pytest.fixture
def tok():
    return char_tokenizer()  # ids 0..103


def _prompts(tok):
    return [{"id": i, "input_ids": tokenize_prompt(tok, q, a)[0]} for i, (q, a) in enumerate(PAIRS)]


def test_matching_model_and_tokenizer_pass(tok):
    model = tiny_model("llama", seed=1, vocab_size=len(tok))
    check_model_tokenizer(model, tok, "tiny", top_k=5)
    check_prompt_ids(_prompts(tok), embedding_rows(model), "tiny")
    assert pad_token_id(tok, embedding_rows(model)) == tok.pad_token_id


def test_pad_appended_after_training_pads_with_an_embedded_id(tok, caplog):
    tok.add_special_tokens({"pad_token": "[PAD]"})  # id 104, one past the 104 embedding rows
    model = tiny_model("llama", seed=1, vocab_size=104)
    assert tok.pad_token_id == embedding_rows(model) == 104
    check_model_tokenizer(model, tok, "tiny")  # the pad token is never fed: not an error
    with caplog.at_level("WARNING", logger="effdepth.models"):
        pad = pad_token_id(tok, embedding_rows(model))
    assert pad == tok.eos_token_id and "padding batches with eos id 3" in caplog.text
    prompts = _prompts(tok)
    batched = extract_stats(model, prompts, pad, batch_size=2)
    single = extract_stats(model, prompts, pad, batch_size=1)
    assert batched.tensors["lens_kl"].shape == single.tensors["lens_kl"].shape
    assert (batched.tensors["lens_kl"] - single.tensors["lens_kl"]).abs().max() < 1e-4  # padding stays masked
    with pytest.raises(ValueError, match="pad id 104 is outside the input embedding"):
        extract_stats(model, prompts, tok.pad_token_id, batch_size=2)  # the tokenizer's own pad id, unchecked


def test_pad_fallbacks(tok):
    tok.pad_token = None
    assert pad_token_id(tok) == tok.eos_token_id
    assert pad_token_id(tok, n_embeddings=3) == tok.bos_token_id  # eos id 3 is out of range too
    assert pad_token_id(tok, n_embeddings=2) == 0


def test_tokenizer_larger_than_the_embedding_is_an_error(tok):
    tok.add_tokens(["<extra>"])  # an ordinary token the embedding has no row for
    model = tiny_model("llama", seed=1, vocab_size=104)
    with pytest.raises(
        ModelTokenizerError,
        match=r"model 'tiny': the tokenizer has 1 token id\(s\) the 104-row input "
        r"embedding cannot look up \(ids \[104\], tokens \['<extra>'\]\)",
    ):
        check_model_tokenizer(model, tok, "tiny")


def test_special_ids_outside_the_embedding_are_errors(tok):
    model = tiny_model("qwen2", seed=0, vocab_size=len(tok), eos_token_id=500)
    with pytest.raises(ModelTokenizerError, match="model 'm': the model config's eos_token_id 500 is outside the 104-row"):
        check_model_tokenizer(model, tok, "m")
    small = tiny_model("qwen2", seed=0, vocab_size=3)  # the tokenizer's EOS (3) has no row either
    with pytest.raises(ModelTokenizerError, match="the tokenizer's eos_token_id 3 is outside the 3-row input embedding"):
        check_model_tokenizer(small, tok, "m")


@pytest.mark.parametrize("top_k", [0, 105])
def test_top_k_outside_the_vocabulary_is_an_error(tok, top_k):
    model = tiny_model("qwen2", seed=0, vocab_size=len(tok))
    with pytest.raises(ModelTokenizerError, match=rf"model 'm': logit_lens top_k={top_k} is outside 1\.\.104"):
        check_model_tokenizer(model, tok, "m", top_k=top_k)
    check_model_tokenizer(model, tok, "m", top_k=104)


def test_prompt_ids_outside_the_embedding_are_an_error(tok):
    prompts = _prompts(tok)
    prompts[1]["input_ids"][3] = 104
    with pytest.raises(
        ModelTokenizerError,
        match=r"model 'tiny': prompt 1 has token ids \[104\] outside the 104-row "
        r"input embedding \(1 of 2 prompts affected\)",
    ):
        check_prompt_ids(prompts, 104, "tiny")
    check_prompt_ids(prompts, 105, "tiny")
