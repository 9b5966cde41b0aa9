"""A prompt's ids are its text encoded once, as the model reads it, for every tokenizer family.

Encoding question and answer separately and concatenating the ids is not the text: a SentencePiece
tokenizer prepends its dummy "▁" to the answer too (a token the text does not have, which erasure
and integrated gradients would then score as the first answer token), and a tokenizer that appends
EOS puts EOS between question and answer.
"""

import polars as pl
import pytest

from effdepth.tasks import TaskError, arithmetic, select_prompts, tokenize_prompt
from effdepth.testing import char_tokenizer

from ..tokenizers import byte_level_bpe, python_char_tokenizer, sentencepiece_dummy_prefix

TOKENIZERS = {
    "sentencepiece": sentencepiece_dummy_prefix,
    "sentencepiece+eos": lambda: sentencepiece_dummy_prefix(add_eos=True),
    "byte-bpe": byte_level_bpe,
    "byte-bpe+bos": lambda: byte_level_bpe(bos=True),
    "byte-bpe-gpt2-digits": lambda: byte_level_bpe(gpt2_digits=True),
    "python-char": python_char_tokenizer,
    "char": char_tokenizer,
}

PROMPTS = [
    arithmetic("addition", 3, 1, 0)[0],  # "Give the answer directly: 964 + 494 = " + "1458"
    ("Problem: how many?\n\n", "Natalia sold 48 clips."),
    ("A man sits", " on a chair."),
    ("5 + 7 + 5 + 3 + 1 + 7 = ", "28"),
    ("The final answer is ", "72"),
]


@pytest.fixture(params=list(TOKENIZERS), scope="module")
def tok(request):
    return TOKENIZERS[request.param]()


def _content(tok, text):
    """The text's ids without special tokens (what the model reads after its BOS)."""
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("question, answer", PROMPTS)
def test_ids_are_the_text_encoded_once(tok, question, answer):
    ids, n_answer = tokenize_prompt(tok, question, answer)
    text = question + answer
    bos = [tok.bos_token_id] if tok.bos_token_id is not None and tok(text)["input_ids"][:1] == [tok.bos_token_id] else []
    assert ids == bos + _content(tok, text)
    assert 0 < n_answer < len(ids)
    assert tok.eos_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) in (text, text.lstrip(" "))


@pytest.mark.parametrize("question, answer", PROMPTS)
def test_answer_span_decodes_to_the_answer(tok, question, answer):
    ids, n_answer = tokenize_prompt(tok, question, answer)
    span = tok.decode(ids[-n_answer:])
    # the span is the answer, possibly led by the question's last space when one token holds both
    # (GPT-2's " 1458"); a SentencePiece decoder strips the leading space of a decoded piece.  One
    # token more would add the question's last word, one fewer drop the answer's first.
    assert span.strip() == answer.strip()


def test_sentencepiece_answer_has_no_dummy_prefix_token():
    tok = sentencepiece_dummy_prefix()
    ids, n_answer = tokenize_prompt(tok, "Give the answer directly: 964 + 494 = ", "1458")
    assert tok.convert_ids_to_tokens(ids[-n_answer - 2 :]) == ["▁=", "▁", "1", "4", "5", "8"]
    assert n_answer == 4
    ids, n_answer = tokenize_prompt(tok, "Problem: how many?\n\n", "Natalia sold 48 clips.")
    assert tok.decode(ids, skip_special_tokens=True) == "Problem: how many?\n\nNatalia sold 48 clips."
    assert tok.convert_ids_to_tokens(ids[-n_answer:])[0] == "N"  # "Natalia" mid-text, not "▁Natalia"


def test_appended_eos_is_dropped_and_bos_kept_once():
    tok = sentencepiece_dummy_prefix(add_eos=True)
    text = "Give the answer directly: 964 + 494 = 1458"
    assert tok(text)["input_ids"][-1] == tok.eos_token_id  # the tokenizer does append EOS
    ids, n_answer = tokenize_prompt(tok, "Give the answer directly: 964 + 494 = ", "1458")
    assert tok.eos_token_id not in ids and ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert n_answer == 4


@pytest.mark.parametrize("make", [sentencepiece_dummy_prefix, lambda: byte_level_bpe(bos=True)])
def test_text_starting_with_bos_gets_one_bos(make):
    tok = make()
    ids, n_answer = tokenize_prompt(tok, tok.bos_token + "Give the answer directly: 12 + 34 = ", "46")
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert tok.decode(ids[-n_answer:]) == "46"


def test_no_bos_when_the_tokenizer_has_none():
    tok = byte_level_bpe()
    ids, _ = tokenize_prompt(tok, "The final answer is ", "72")
    assert ids == _content(tok, "The final answer is 72")


@pytest.mark.parametrize("make", [sentencepiece_dummy_prefix, byte_level_bpe, python_char_tokenizer, char_tokenizer])
def test_eos_inside_the_text_is_an_error(make):
    tok = make()
    with pytest.raises(TaskError, match=r"prompt 3: the text contains the end-of-sequence token"):
        tokenize_prompt(tok, f"Give the answer directly: 1 + 2 = {tok.eos_token}", "3", index=3)


def test_answer_inside_a_token_is_an_error_naming_prompt_and_strings():
    tok = byte_level_bpe(gpt2_digits=True)  # " 1458" is pre-tokenised as one piece
    assert tok.convert_ids_to_tokens(_content(tok, " 1458")) == ["Ġ145", "8"]
    with pytest.raises(TaskError, match=r"prompt 5: the answer tokens decode to '.*', not to the answer '58'"):
        tokenize_prompt(tok, "Give the answer directly: 964 + 494 = 14", "58", index=5)
    tok = python_char_tokenizer()  # without offsets the same check holds
    ids, n_answer = tokenize_prompt(tok, "Give 12 = ", "12")
    assert n_answer == 2


def test_ids_that_do_not_decode_to_the_text_are_an_error():
    class Lossy:
        """A tokenizer whose decoding loses a character: the check must notice."""

        def __init__(self):
            self.inner = char_tokenizer()

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

        def decode(self, ids, **kwargs):
            return self.inner.decode(ids, **kwargs).replace("7", "")

    with pytest.raises(TaskError, match=r"prompt 1: the token ids decode to '5 \+  = 1', not to the text '5 \+ 7 = 1'"):
        tokenize_prompt(Lossy(), "5 + 7 = ", "1", index=1)


def test_unknown_characters_stand_for_one_character_each():
    tok = char_tokenizer()  # printable ASCII only: "é" and "“" become <unk>
    ids, n_answer = tokenize_prompt(tok, "café? ", "“no”")
    assert n_answer == 4 and tok.convert_ids_to_tokens(ids[-4:]) == ["<unk>", "n", "o", "<unk>"]


def test_select_prompts_keeps_its_format_and_names_the_failing_prompt():
    tok = sentencepiece_dummy_prefix(add_eos=True)
    pairs = [("Give the answer directly: 12 + 34 = ", "46"), ("The final answer is ", "72")]
    frame = pl.DataFrame(
        {"id": [0, 1], "question": [q for q, _ in pairs], "answer": [a for _, a in pairs], "text": [q + a for q, a in pairs]}
    )
    chosen = select_prompts(frame, tok, n=2)
    assert [sorted(c) for c in chosen] == [["answer", "id", "input_ids", "n_answer", "question", "text"]] * 2
    assert [c["n_answer"] for c in chosen] == [2, 2]
    assert all(tok.eos_token_id not in c["input_ids"] for c in chosen)
    bad = frame.with_columns(pl.Series("answer", ["46", "7</s>"]), pl.Series("text", [pairs[0][0] + "46", pairs[1][0] + "7</s>"]))
    with pytest.raises(TaskError, match="prompt 1: the text contains the end-of-sequence token"):
        select_prompts(bad, tok, n=2)


@pytest.mark.parametrize("question, answer", PROMPTS + [("café? ", "“no” ü"), ("x" * 300 + " = ", "y " * 200)])
def test_python_tokenizer_finds_the_same_answer_span_as_offsets(question, answer):
    fast, slow = char_tokenizer(), python_char_tokenizer()  # the same characters, with and without offsets
    fast_ids, fast_n = tokenize_prompt(fast, question, answer)
    slow_ids, slow_n = tokenize_prompt(slow, question, answer)
    assert slow_n == fast_n == len(answer)
    assert slow.convert_ids_to_tokens(slow_ids[1:]) == fast.convert_ids_to_tokens(fast_ids)  # after the BOS
