"""Architecture adapters: where a model keeps its decoder layers, sublayers, final norm and unembedding.

A registry keyed by ``config.architectures[0]`` (as TransformerLens does); each adapter is a
small declarative record of attribute paths. Only pre-norm decoders whose layer computes
``h + attn(norm(h))`` then ``+ mlp(norm(.))`` qualify: the captured attention and MLP
outputs then satisfy h_{l+1} = h_l + a_l + m_l exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Adapter:
    """Attribute paths (dotted, relative to the CausalLM / the decoder layer)."""

    layers: str = "model.layers"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    attn: str = "self_attn"  # relative to a layer
    mlp: str = "mlp"  # relative to a layer
    mlp_norm: str = "post_attention_layernorm"  # relative to a layer

    def get(self, root: nn.Module, path: str) -> nn.Module:
        module = root
        for part in path.split("."):
            module = getattr(module, part)
        return module

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return self.get(model, self.layers)  # type: ignore[return-value]

    def attention(self, layer: nn.Module) -> nn.Module:
        return self.get(layer, self.attn)

    def feed_forward(self, layer: nn.Module) -> nn.Module:
        return self.get(layer, self.mlp)

    def feed_forward_norm(self, layer: nn.Module) -> nn.Module:
        return self.get(layer, self.mlp_norm)

    def norm(self, model: nn.Module) -> nn.Module:
        return self.get(model, self.final_norm)

    def unembedding(self, model: nn.Module) -> nn.Module:
        return self.get(model, self.unembed)

    def logits(self, model: nn.Module, resid: torch.Tensor) -> torch.Tensor:
        """Final logits from a raw residual: W_U · Norm_f(resid).  [..., d] -> [..., V]"""
        return self.unembedding(model)(self.norm(model)(resid))


_LLAMA_LIKE = Adapter()

ADAPTERS: dict[str, Adapter] = {
    "Qwen2ForCausalLM": _LLAMA_LIKE,
    "LlamaForCausalLM": _LLAMA_LIKE,
    "MistralForCausalLM": _LLAMA_LIKE,
    "Qwen3ForCausalLM": _LLAMA_LIKE,
}


class UnsupportedArchitecture(ValueError):
    pass


def adapter_for(model_or_config) -> Adapter:
    """Adapter for a model (or its config) by ``config.architectures[0]``."""
    config = getattr(model_or_config, "config", model_or_config)
    archs = getattr(config, "architectures", None) or []
    if not archs:
        # A model built from a config in code has no `architectures`; fall back on the class name.
        archs = [type(model_or_config).__name__]
    arch = archs[0]
    if arch not in ADAPTERS:
        raise UnsupportedArchitecture(
            f"architecture {arch!r} is not supported; supported: {', '.join(sorted(ADAPTERS))}. "
            "Add an Adapter to effdepth.adapters.ADAPTERS if its layers are pre-norm residual blocks."
        )
    return ADAPTERS[arch]
