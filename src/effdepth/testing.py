"""Tiny random models and tokenizers built from configs, for tests, benchmarks and the test config.

No download: a character-level tokenizer over printable ASCII and a random-init Qwen2 or Llama.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

ARCHITECTURES = ("qwen2", "llama")


def char_tokenizer():
    """A PreTrainedTokenizerFast splitting text into characters (unknown characters -> <unk>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable))
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_config(arch: str = "qwen2", n_layers: int = 4, d_model: int = 64, vocab_size: int = 128, **overrides):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    common.update(overrides)
    if arch == "qwen2":
        config = Qwen2Config(**common)
        config.architectures = ["Qwen2ForCausalLM"]
    elif arch == "llama":
        config = LlamaConfig(**common)
        config.architectures = ["LlamaForCausalLM"]
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; one of {ARCHITECTURES}")
    return config


def tiny_model(
    arch: str = "qwen2", seed: int = 0, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa", **config_overrides
):
    """A random-init causal LM in eval mode.

    sdpa by default: transformers' eager mask overflows to -inf in float64 and padded rows turn NaN.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(arch, **config_overrides)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    # Random init gives tiny weights: scale them up so layers do visible computation.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    model.eval().requires_grad_(False)
    return model


def save_tiny_model(directory: Path | str, arch: str = "qwen2", seed: int = 0, **config_overrides) -> Path:
    """Write a tiny model + char tokenizer as a local Hugging Face directory."""
    directory = Path(directory)
    model = tiny_model(arch, seed, **config_overrides)
    model.save_pretrained(directory)
    char_tokenizer().save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> None:
    """``python -m effdepth.testing DIR``: write tiny-qwen2 and tiny-llama model directories under DIR."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    for arch in ARCHITECTURES:
        target = args.directory / f"tiny-{arch}"
        if not (target / "config.json").is_file():
            save_tiny_model(target, arch, seed=1 if arch == "llama" else 0)
        print(target)


if __name__ == "__main__":
    main()
