"""Tiny random models and tokenizers built from configs, for tests, benchmarks and the test config.

No download: a character-level tokenizer over printable ASCII and random-init models of every
supported family (``ARCHITECTURES``).
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

# Tiny families, one per supported block shape and published variant (see effdepth.adapters).
ARCHITECTURES = (
    "qwen2",
    "llama",
    "qwen3",
    "mistral",
    "gemma",
    "phi3",
    "granite",
    "gpt2",  # pre-norm sequential
    "qwen2_moe",
    "qwen3_moe",
    "mixtral",  # mixture of experts
    "gemma2",
    "gemma3",
    "olmo2",  # sandwich / post-norm
    "gpt_neox",
    "gpt_neox_sequential",
    "falcon",
    "falcon_new",
    "phi",
    "gptj",  # parallel (and NeoX / Falcon sequential)
)
# Written by ``python -m effdepth.testing`` (the test configuration's models).
DEMO_ARCHITECTURES = ("qwen2", "llama")
# Also written by ``python -m effdepth.testing``: one model per block shape beyond the pre-norm
# sequential one (sandwich / post-norm, parallel attention + MLP, mixture of experts), which the
# workflow test runs end to end.
SHAPE_ARCHITECTURES = ("gemma3", "gpt_neox", "qwen2_moe")
# Mixture-of-experts families: built with the eager (per-expert loop) kernel, which runs in float64.
MOE_ARCHITECTURES = ("qwen2_moe", "qwen3_moe", "mixtral")
# Families whose attention has no SDPA kernel in transformers (soft-capped attention logits).
EAGER_ONLY = ("gemma2",)


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
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tiny_config(arch: str = "qwen2", n_layers: int = 4, d_model: int = 64, vocab_size: int = 128, **overrides):
    """A transformers config of a tiny ``arch`` (one of ARCHITECTURES): ``n_layers`` layers of width
    ``d_model``, 4 heads of 16 dimensions (2 key/value heads where the family has grouped queries),
    ``config.architectures`` set.  Non-default settings exercise what the adapters must handle:
    Granite multipliers, Gemma 2/3 sliding windows of 8 tokens and final soft-capping, 4 experts
    with 2 active.  ``overrides`` go to the config class.  Raises ValueError for an unknown ``arch``."""
    import transformers as tf

    heads = 4
    llama_like = {
        "vocab_size": vocab_size,
        "hidden_size": d_model,
        "intermediate_size": 2 * d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }
    head_dim = {"head_dim": d_model // heads}
    moe = {"num_experts_per_tok": 2, "moe_intermediate_size": d_model // 2}
    sliding = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    gpt_like = {"vocab_size": vocab_size, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3, "tie_word_embeddings": False}
    neox = dict(
        **gpt_like,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        max_position_embeddings=512,
    )
    falcon = dict(
        **gpt_like,
        hidden_size=d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        alibi=False,
        max_position_embeddings=512,
    )
    families = {
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", llama_like),
        "llama": ("LlamaConfig", "LlamaForCausalLM", llama_like),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**llama_like, **head_dim}),
        "mistral": ("MistralConfig", "MistralForCausalLM", llama_like),
        "gemma": ("GemmaConfig", "GemmaForCausalLM", {**llama_like, **head_dim}),
        "phi3": ("Phi3Config", "Phi3ForCausalLM", llama_like),
        "granite": (
            "GraniteConfig",
            "GraniteForCausalLM",
            {
                **llama_like,
                "residual_multiplier": 0.5,
                "embedding_multiplier": 3.0,
                "logits_scaling": 4.0,
                "attention_multiplier": 0.2,
            },
        ),
        "gpt2": (
            "GPT2Config",
            "GPT2LMHeadModel",
            {**gpt_like, "n_embd": d_model, "n_layer": n_layers, "n_head": heads, "n_positions": 512},
        ),
        "qwen2_moe": (
            "Qwen2MoeConfig",
            "Qwen2MoeForCausalLM",
            {**llama_like, **moe, "num_experts": 4, "shared_expert_intermediate_size": d_model, "decoder_sparse_step": 1},
        ),
        "qwen3_moe": (
            "Qwen3MoeConfig",
            "Qwen3MoeForCausalLM",
            {**llama_like, **head_dim, **moe, "num_experts": 4, "decoder_sparse_step": 1},
        ),
        "mixtral": ("MixtralConfig", "MixtralForCausalLM", {**llama_like, "num_local_experts": 4, "num_experts_per_tok": 2}),
        "gemma2": (
            "Gemma2Config",
            "Gemma2ForCausalLM",
            {**llama_like, **head_dim, "sliding_window": 8, "layer_types": sliding, "final_logit_softcapping": 30.0},
        ),
        "gemma3": (
            "Gemma3TextConfig",
            "Gemma3ForCausalLM",
            {**llama_like, **head_dim, "sliding_window": 8, "layer_types": sliding, "final_logit_softcapping": 30.0},
        ),
        "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", llama_like),
        "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {**neox, "use_parallel_residual": True, "rotary_pct": 0.5}),
        "gpt_neox_sequential": (
            "GPTNeoXConfig",
            "GPTNeoXForCausalLM",
            {**neox, "use_parallel_residual": False, "rotary_pct": 0.5},
        ),
        "falcon": (
            "FalconConfig",
            "FalconForCausalLM",
            {**falcon, "new_decoder_architecture": False, "parallel_attn": True, "multi_query": True},
        ),
        "falcon_new": ("FalconConfig", "FalconForCausalLM", {**falcon, "new_decoder_architecture": True, "num_kv_heads": 2}),
        "phi": (
            "PhiConfig",
            "PhiForCausalLM",
            {**neox, "partial_rotary_factor": 0.5, "num_key_value_heads": heads},
        ),
        "gptj": (
            "GPTJConfig",
            "GPTJForCausalLM",
            {**gpt_like, "n_embd": d_model, "n_layer": n_layers, "n_head": heads, "rotary_dim": 8, "n_positions": 512},
        ),
    }
    if arch not in families:
        raise ValueError(f"unknown tiny architecture {arch!r}; one of {ARCHITECTURES}")
    config_class, architecture, kwargs = families[arch]
    config = getattr(tf, config_class)(**{**kwargs, **overrides})
    config.architectures = [architecture]
    return config


def tiny_model(
    arch: str = "qwen2", seed: int = 0, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa", **config_overrides
):
    """A random-init causal LM in eval mode (``arch``: one of ARCHITECTURES).

    sdpa by default: transformers' eager mask overflows to -inf in float64 and padded rows turn NaN.
    Families in EAGER_ONLY always get eager attention.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(arch, **config_overrides)
    if arch in EAGER_ONLY:
        attn_implementation = "eager"
    extra = {"experts_implementation": "eager"} if arch in MOE_ARCHITECTURES else {}
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation, **extra)
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
    """``python -m effdepth.testing DIR``: write the tiny model directories tiny-qwen2, tiny-llama (the
    test configuration's models), tiny-gemma3, tiny-gpt_neox and tiny-qwen2_moe under DIR."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    for arch in DEMO_ARCHITECTURES + SHAPE_ARCHITECTURES:
        target = args.directory / f"tiny-{arch}"
        if not (target / "config.json").is_file():
            save_tiny_model(target, arch, seed=1 if arch == "llama" else 0)
        print(target)


if __name__ == "__main__":
    main()
