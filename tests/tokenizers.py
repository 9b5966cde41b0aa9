"""Tiny tokenizers of the families effdepth meets, built offline (no hub download).

Each mirrors the pipeline of a real ``tokenizer.json`` (normaliser, pre-tokeniser, model, decoder,
post-processor) on a vocabulary small enough to build in milliseconds:

- :func:`sentencepiece_dummy_prefix`: Llama-2 / Mistral-v0.1 (legacy): a "▁" dummy prefix is
  prepended to every text encoded, spaces become "▁", byte fallback, BOS prepended; optionally EOS
  appended (tokenizers shipped with ``add_eos_token: true``).
- :func:`byte_level_bpe`: Qwen2.5 (no BOS; digits split one by one) or, with ``bos=True``,
  DeepSeek-R1-Distill (the same family with a BOS prepended).  ``gpt2_digits=True`` uses GPT-2's
  split instead, where a space joins the digits after it (" 1458").
- :class:`PythonCharTokenizer`: a tokenizer written in Python (no character offsets), one token per
  character.
"""

from __future__ import annotations

import string
from functools import cache

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

# Words a few prompts of the tests use whole; everything else falls back to characters or bytes.
WORDS = [
    "Give",
    "the",
    "answer",
    "directly",
    "Problem",
    "how",
    "many",
    "Natalia",
    "sold",
    "clips",
    "The",
    "final",
    "is",
    "on",
    "a",
    "chair",
    "man",
    "sits",
]

# Qwen2's pre-tokeniser pattern (tokenizer.json): digits one by one, no space glued to them.
QWEN_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

CORPUS = [
    "Give the answer directly: 964 + 494 = 1458",
    "Given the following problem, reason and give a final answer to the problem.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "The final answer is 72. A man sits on a chair. Then, he stands.",
    "Problem: how many? café naïve — “quoted” 12 * 34 = 408",
]


def sentencepiece_dummy_prefix(add_eos: bool = False) -> PreTrainedTokenizerFast:
    """Llama-2-style SentencePiece tokenizer: ``<s>`` BOS (id 1), ``</s>`` EOS (id 2), ``<unk>`` (id 0)."""
    pieces = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)]
    pieces += [(f"<0x{b:02X}>", -20.0) for b in range(256)]
    pieces += [("▁", -3.0)] + [(c, -10.0) for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("▁" + w, -1.0) for w in WORDS] + [("▁=", -1.0), ("▁+", -1.0), ("▁*", -1.0)]
    core = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=True))
    core.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    core.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    single = "<s> $A </s>" if add_eos else "<s> $A"
    core.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@cache
def _trained_bpe(gpt2_digits: bool) -> str:
    specials = ["<|endoftext|>", "<｜begin▁of▁sentence｜>"]
    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    if gpt2_digits:
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        core.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    core.train_from_iterator(CORPUS * 4, trainer=trainer)
    return core.to_str()


def byte_level_bpe(bos: bool = False, gpt2_digits: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on a few sentences: ``<|endoftext|>`` is EOS and pad (id 0); with
    ``bos`` a ``<｜begin▁of▁sentence｜>`` BOS (id 1) is prepended, as R1-Distill's tokenizer does."""
    core = Tokenizer.from_str(_trained_bpe(gpt2_digits))
    steps = [processors.ByteLevel(trim_offsets=False)]
    if bos:
        steps.append(
            processors.TemplateProcessing(single="<｜begin▁of▁sentence｜> $A", special_tokens=[("<｜begin▁of▁sentence｜>", 1)])
        )
    core.post_processor = processors.Sequence(steps)
    extra = {"bos_token": "<｜begin▁of▁sentence｜>"} if bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>", **extra)


class PythonCharTokenizer(PreTrainedTokenizer):
    """One token per printable ASCII character, written in Python: no character offsets, the path
    tokenisers without a Rust backend take.  ``<s>`` BOS (id 2) is prepended, ``</s>`` EOS (id 3)."""

    def __init__(self, **kwargs):
        self._vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
        for ch in sorted(set(string.printable)):
            self._vocab.setdefault(ch, len(self._vocab))
        self._inverse = {i: t for t, i in self._vocab.items()}
        kwargs = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", **kwargs}
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return list(text)

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, self._vocab["<unk>"])

    def _convert_id_to_token(self, index: int) -> str:
        return self._inverse.get(index, "<unk>")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return [self.bos_token_id] + list(token_ids_0) + ([] if token_ids_1 is None else list(token_ids_1))


def python_char_tokenizer() -> PythonCharTokenizer:
    return PythonCharTokenizer()
