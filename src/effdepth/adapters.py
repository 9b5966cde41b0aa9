"""Architecture adapters: where a decoder-only LM keeps its layers and what its residual stream is made of.

Every supported layer is a residual block h_{l+1} = h_l + a_l + m_l (docs/methods.md#block-shapes);
an adapter says which module's output is the attention contribution a_l and the MLP contribution
m_l, how to recompute m_l from the residual the MLP reads, and how the model maps
its last residual to logits (the logit lens, docs/methods.md#logit-lens).  Three block shapes:

* ``sequential`` (pre-norm): a_l = s·Attn(N_1(h_l)), m_l = s·MLP(N_2(h_l + a_l)) — Llama, Qwen2/3,
  Mistral, Gemma 1, GPT-2, Phi-3, Granite (s = ``residual_multiplier``), the MoE models (MLP = the
  routed, weighted sum of experts plus any shared expert);
* ``sandwich``: as sequential but each sublayer output passes a norm before it is added — Gemma 2/3
  (pre- and post-norms) and OLMo-2 (post-norms only); a_l is the post-attention norm's output;
* ``parallel``: a_l = Attn(N_1(h_l)), m_l = MLP(N_2(h_l)), both read h_l — GPT-NeoX/Pythia with
  ``use_parallel_residual``, Falcon, Phi-1/2, GPT-J.

The registry is keyed by ``config.architectures[0]`` (as TransformerLens does), with
``model_type`` as a fallback for configs that lack it (GGUF-loaded ones).  An adapter is only a
claim: ``effdepth.capture.verify_decomposition`` proves it on the loaded model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch only where a model is at hand: the workflow's config checks import this module
    import torch
    from torch import nn

BLOCK_SHAPES = ("sequential", "sandwich", "parallel")


@dataclass(frozen=True)
class Adapter:
    """Attribute paths (dotted; model-level ones relative to the CausalLM, the rest to one decoder layer).

    name          family name, used in messages ("llama", "gemma2", "gpt-neox-parallel", ...)
    block         one of BLOCK_SHAPES
    layers, embed, final_norm, unembed   the decoder layer list, token embedding, final norm, W_U
    attn          the module whose output (first element if a tuple), times the residual
                  multiplier, is a_l: the attention itself, or the norm applied to its output
    mlp           likewise for m_l
    mlp_path      modules applied in turn to the residual the MLP reads (h_l + a_l, or h_l for a
                  parallel block) that give m_l / multiplier: pre-norm (if any), MLP, post-norm (if any)
    residual_multiplier   config attribute scaling both sublayer outputs before they are added (Granite)
    logits_divisor        config attribute dividing the logits (Granite ``logits_scaling``)
    logit_softcap         config attribute c of the final soft-capping z -> c·tanh(z / c) (Gemma 2/3)
    """

    name: str = "llama"
    block: str = "sequential"
    layers: str = "model.layers"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    attn: str = "self_attn"
    mlp: str = "mlp"
    mlp_path: tuple[str, ...] = ("post_attention_layernorm", "mlp")
    residual_multiplier: str | None = None
    logits_divisor: str | None = None
    logit_softcap: str | None = None

    def __post_init__(self) -> None:
        if self.block not in BLOCK_SHAPES:
            raise ValueError(f"unknown block shape {self.block!r}; one of {BLOCK_SHAPES}")

    @property
    def parallel(self) -> bool:
        """Whether attention and MLP both read h_l (the MLP's input residual is h_l, not h_l + a_l)."""
        return self.block == "parallel"

    def get(self, root: nn.Module, path: str) -> nn.Module:
        """The module at a dotted ``path`` below ``root``; ``a|b`` tries the alternatives in turn
        (attribute names that changed between transformers versions).  Raises AttributeError."""
        alternatives = path.split("|")
        for i, alternative in enumerate(alternatives):
            module = root
            try:
                for part in alternative.split("."):
                    module = getattr(module, part)
            except AttributeError:
                if i == len(alternatives) - 1:
                    raise
                continue
            return module
        raise AttributeError(path)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return self.get(model, self.layers)  # type: ignore[return-value]

    def attention(self, layer: nn.Module) -> nn.Module:
        """The module whose output (× ``multiplier``) is a_l (a hook target)."""
        return self.get(layer, self.attn)

    def mlp_output(self, layer: nn.Module) -> nn.Module:
        """The module whose output (× ``multiplier``) is m_l (a hook target)."""
        return self.get(layer, self.mlp)

    def multiplier(self, model: nn.Module | None, layer: nn.Module | None = None) -> float:
        """The factor s in h_{l+1} = h_l + s·Attn(.) + s·MLP(.) (1 except for Granite): the layer's
        own attribute of that name if it keeps one, else the model config's."""
        if self.residual_multiplier is None:
            return 1.0
        if layer is not None and hasattr(layer, self.residual_multiplier):
            return float(getattr(layer, self.residual_multiplier))
        if model is None:
            raise ValueError(f"{self.name}: the residual multiplier needs the model or a layer that keeps it")
        return float(getattr(model.config, self.residual_multiplier))

    def mlp_contribution(self, model: nn.Module | None, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """m_l recomputed from the residual the MLP reads.  x: [..., T, d] -> [..., T, d].

        For a sequential or sandwich block x is h_l + a_l; for a parallel block x is h_l
        (docs/methods.md#parallel-blocks).  Norms and the residual multiplier are included, so
        ``h_l + a_l + mlp_contribution(model, layer, x)`` is the layer output.
        """
        for path in self.mlp_path:
            x = self.get(layer, path)(x)
            x = x[0] if isinstance(x, (tuple, list)) else x
        scale = self.multiplier(model, layer)
        return x if scale == 1.0 else x * scale

    def norm(self, model: nn.Module) -> nn.Module:
        return self.get(model, self.final_norm)

    def unembedding(self, model: nn.Module) -> nn.Module:
        return self.get(model, self.unembed)

    def logits(self, model: nn.Module, resid: torch.Tensor) -> torch.Tensor:
        """The logit lens: the model's own output map applied to a raw residual.  [..., d] -> [..., V]

        z = W_U · Norm_f(resid), then divided by the model's logit scaling (Granite) and soft-capped
        c·tanh(z / c) where the model configures a final soft cap (Gemma 2/3) — exactly what the
        model does to its last residual (docs/methods.md#logit-lens).
        """
        z = self.unembedding(model)(self.norm(model)(resid))
        config = model.config
        if self.logits_divisor is not None and getattr(config, self.logits_divisor, None):
            z = z / getattr(config, self.logits_divisor)
        cap = getattr(config, self.logit_softcap, None) if self.logit_softcap is not None else None
        if cap:
            z = z.div(cap).tanh().mul(cap)
        return z


# ----------------------------------------------------------------------------- the families

_LLAMA = Adapter()
_GEMMA2 = Adapter(
    name="gemma2",
    block="sandwich",
    attn="post_attention_layernorm",
    mlp="post_feedforward_layernorm",
    mlp_path=("pre_feedforward_layernorm", "mlp", "post_feedforward_layernorm"),
    logit_softcap="final_logit_softcapping",
)
_GPT2 = Adapter(
    name="gpt2",
    layers="transformer.h",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    attn="attn",
    mlp="mlp",
    mlp_path=("ln_2", "mlp"),
)
_PHI = Adapter(
    name="phi",
    block="parallel",
    final_norm="model.final_layernorm",
    mlp_path=("input_layernorm", "mlp"),
)
_GPTJ = Adapter(
    name="gptj",
    block="parallel",
    layers="transformer.h",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    attn="attn",
    mlp="mlp",
    mlp_path=("ln_1", "mlp"),
)


def _gpt_neox(config: Any) -> Adapter:
    parallel = getattr(config, "use_parallel_residual", True)
    return Adapter(
        name="gpt-neox" + ("-parallel" if parallel else ""),
        block="parallel" if parallel else "sequential",
        layers="gpt_neox.layers",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head|embed_out",
        attn="attention",
        mlp="mlp",
        mlp_path=("post_attention_layernorm", "mlp"),
    )


def _falcon(config: Any) -> Adapter:
    new = bool(getattr(config, "new_decoder_architecture", False))
    n_ln = getattr(config, "num_ln_in_parallel_attn", None) or (2 if new else None)
    common = {
        "layers": "transformer.h",
        "embed": "transformer.word_embeddings",
        "final_norm": "transformer.ln_f",
        "attn": "self_attention",
        "mlp": "mlp",
    }
    if new and n_ln == 2:
        return Adapter(name="falcon-parallel-2ln", block="parallel", mlp_path=("ln_mlp", "mlp"), **common)
    if new or getattr(config, "parallel_attn", True):
        return Adapter(name="falcon-parallel", block="parallel", mlp_path=("input_layernorm", "mlp"), **common)
    return Adapter(name="falcon", block="sequential", mlp_path=("post_attention_layernorm", "mlp"), **common)


_Resolver = Callable[[Any], Adapter]

# architecture -> adapter, or a function of the config for families whose block shape is configurable
ADAPTERS: dict[str, Adapter | _Resolver] = {
    # pre-norm sequential
    "LlamaForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": Adapter(name="qwen2"),
    "Qwen3ForCausalLM": Adapter(name="qwen3"),
    "MistralForCausalLM": Adapter(name="mistral"),
    "GemmaForCausalLM": Adapter(name="gemma"),
    "Phi3ForCausalLM": Adapter(name="phi3"),
    "GraniteForCausalLM": Adapter(name="granite", residual_multiplier="residual_multiplier", logits_divisor="logits_scaling"),
    "GPT2LMHeadModel": _GPT2,
    # mixture of experts (the MLP output is the weighted sum of experts, plus the shared expert)
    "Qwen2MoeForCausalLM": Adapter(name="qwen2-moe"),
    "Qwen3MoeForCausalLM": Adapter(name="qwen3-moe"),
    "MixtralForCausalLM": Adapter(name="mixtral"),
    # sandwich / post-norm
    "Gemma2ForCausalLM": _GEMMA2,
    "Gemma3ForCausalLM": Adapter(
        name="gemma3",
        block="sandwich",
        attn="post_attention_layernorm",
        mlp="post_feedforward_layernorm",
        mlp_path=("pre_feedforward_layernorm", "mlp", "post_feedforward_layernorm"),
        logit_softcap="final_logit_softcapping",
    ),
    "Olmo2ForCausalLM": Adapter(
        name="olmo2",
        block="sandwich",
        attn="post_attention_layernorm",
        mlp="post_feedforward_layernorm",
        mlp_path=("mlp", "post_feedforward_layernorm"),
    ),
    # parallel (or configurable)
    "GPTNeoXForCausalLM": _gpt_neox,
    "FalconForCausalLM": _falcon,
    "PhiForCausalLM": _PHI,
    "GPTJForCausalLM": _GPTJ,
}

# config.model_type -> architecture, for configs without ``architectures`` (GGUF-loaded, built in code)
MODEL_TYPES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma": "GemmaForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "granite": "GraniteForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "gpt_neox": "GPTNeoXForCausalLM",
    "falcon": "FalconForCausalLM",
    "phi": "PhiForCausalLM",
    "gptj": "GPTJForCausalLM",
}


class UnsupportedArchitecture(ValueError):
    pass


def supported_architectures() -> list[str]:
    """Sorted architecture names (``config.architectures[0]``) with an adapter."""
    return sorted(ADAPTERS)


def _unsupported(arch: str) -> UnsupportedArchitecture:
    return UnsupportedArchitecture(
        f"architecture {arch!r} is not supported; supported: {', '.join(supported_architectures())}. "
        "Add an Adapter to effdepth.adapters.ADAPTERS naming where its attention and MLP contributions "
        "come from; effdepth.capture.verify_decomposition proves it on the model."
    )


def architecture_of(model_or_config: Any) -> str:
    """``config.architectures[0]``; else the architecture of ``config.model_type``; else the class name.

    Accepts a model, a transformers config or a config dict.  Raises UnsupportedArchitecture when
    none of these names a decoder-only causal LM this package knows.
    """
    config = getattr(model_or_config, "config", model_or_config)
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    archs = get("architectures") or []
    if archs:
        return archs[0]
    model_type = get("model_type")
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    if model_or_config is not config:  # a model built from a config in code
        return type(model_or_config).__name__
    raise _unsupported(f"model_type={model_type!r} without `architectures`")


def adapter_for(model_or_config: Any) -> Adapter:
    """The adapter of a model, a transformers config or a config dict (see ``architecture_of``).

    Raises UnsupportedArchitecture (a ValueError) naming the architecture and the supported ones.
    """
    arch = architecture_of(model_or_config)
    entry = ADAPTERS.get(arch)
    if entry is None:
        raise _unsupported(arch)
    if isinstance(entry, Adapter):
        return entry
    config = getattr(model_or_config, "config", model_or_config)
    if isinstance(config, dict):
        from types import SimpleNamespace

        config = SimpleNamespace(**config)
    return entry(config)


# ----------------------------------------------------------------------------- refusing before a job runs

# GGUF ``general.architecture`` -> transformers model_type (as transformers' GGUF loader maps them).
GGUF_ARCHITECTURES: dict[str, str] = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "phi3": "phi3",
    "gpt2": "gpt2",
    "falcon": "falcon",
    "olmo2": "olmo2",
    "gptneox": "gpt_neox",
}


def gguf_architecture(path: str | Path) -> str:
    """``general.architecture`` of a GGUF file, read from its header (the ``gguf`` package, which
    transformers' GGUF loading needs anyway; ``effdepth.fingerprint.read_gguf``).

    Raises effdepth.fingerprint.ModelFileError (the file is not a GGUF file, or is truncated or
    damaged), UnsupportedArchitecture (no ``general.architecture`` field)."""
    from .fingerprint import read_gguf

    field = read_gguf(path).get_field("general.architecture")
    if field is None:
        raise UnsupportedArchitecture(f"{path} has no general.architecture field")
    return bytes(field.parts[field.data[0]]).decode()


def check_model_config(config: str | Path | dict[str, Any]) -> str:
    """Refuse an unsupported architecture before any job runs; return its adapter's name.

    ``config``: a config dict, a ``config.json`` path, a model directory holding one, or a
    ``.gguf`` file (its ``general.architecture`` is mapped through GGUF_ARCHITECTURES to a
    ``model_type``; a GGUF-loaded config has no ``architectures``, e.g. Gemma 3 is ``gemma3_text``).
    Only the config is read: no weights, no network.  That the adapter really decomposes the model
    is proven when it is loaded (``effdepth.models.load_model`` calls
    ``effdepth.capture.verify_decomposition``).

    Raises UnsupportedArchitecture (a ValueError) naming the architecture and the supported
    families; FileNotFoundError if the path does not exist; effdepth.fingerprint.ModelFileError for
    a truncated or damaged GGUF file.
    """
    import json

    if isinstance(config, dict):
        data = config
    else:
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"model config not found: {path}")
        if path.suffix == ".gguf":
            arch = gguf_architecture(path)
            if arch not in GGUF_ARCHITECTURES:
                raise _unsupported(f"GGUF architecture {arch}")
            data = {"model_type": GGUF_ARCHITECTURES[arch]}
        else:
            data = json.loads(path.read_text())
    return adapter_for(data).name


# ----------------------------------------------------------------------------- attention implementation

ATTENTION_IMPLEMENTATIONS = ("auto", "sdpa", "eager")


class AttentionImplementationError(ValueError):
    """The configured ``attn_implementation`` is one the model's architecture does not have."""


def _model_class(config: Any) -> type | None:
    import transformers

    arch = architecture_of(config)
    return getattr(transformers, arch, None)


def attention_implementation(model_or_config: Any, requested: str = "auto") -> str:
    """The attention implementation every job loads a model with (``models.<m>.attn_implementation``).

    ``auto``: ``sdpa`` (PyTorch's scaled_dot_product_attention, exact in float64) where transformers
    has it for the architecture, else ``eager`` -- e.g. Gemma 2, whose soft-capped attention logits
    have no SDPA kernel.  ``sdpa`` or ``eager``: that one, if the architecture has it.  Both
    implementations compute the same attention; the decomposition proof runs with the one chosen.

    Accepts a model, a transformers config or a config dict (see ``architecture_of``).
    Raises AttentionImplementationError (a ValueError) for an unknown value or ``sdpa`` on an
    architecture without it (naming the architecture and what to set instead);
    UnsupportedArchitecture where the architecture is not known.
    """
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise AttentionImplementationError(f"attn_implementation {requested!r}: one of {', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if requested == "eager":
        return "eager"
    cls = _model_class(getattr(model_or_config, "config", model_or_config))
    supported = True if cls is None else bool(getattr(cls, "_supports_sdpa", False))  # remote code: transformers decides
    if requested == "sdpa" and not supported:
        import transformers

        raise AttentionImplementationError(
            f"attn_implementation 'sdpa': {cls.__name__} has no scaled_dot_product_attention implementation in "
            f"transformers {transformers.__version__}; set attn_implementation: auto (or eager)"
        )
    return "sdpa" if supported else "eager"
