"""The lens interface: a residual h_l [..., d] at depth l -> logits [..., V] over the vocabulary.

Every lens decodes through the model's own output map, ``Adapter.logits`` (final norm recomputed on
the lens's input, unembedding, Granite's logit scaling and Gemma 2/3's final soft-cap;
docs/methods.md#logit-lens); a lens only chooses what it feeds that map (docs/methods.md#lenses).

Depth convention of the package (docs/methods.md#layers): h_l enters layer l, l = 0 .. L-1, and
h_L is the last residual; a lens reads every depth l = 0 .. L, and at l = L every lens is the
model's own output.

Also here: the divergences a lens is judged by (KL in both directions, Jensen–Shannon) and the
tuned-lens package's unembedding hash.
"""

from __future__ import annotations

import abc
import hashlib
import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..adapters import Adapter, adapter_for

# Logit elements (depths x tokens x vocabulary) of one lens unembedding (``Lens.read_depths``): the
# depths of a short batch share one matrix product, which reads W_U once for all of them (about twice
# as fast at Gemma 3's 262k vocabulary, benchmarks/README.md); a batch with more tokens x V than this
# is read one depth at a time.  The statistics of the extraction (and the loss of the training) hold
# a few tensors of this size: at most ~1.6 GB beyond what one depth at a time holds.
LENS_CHUNK_ELEMENTS = 2**26


def depth_chunks(depths: range, tokens: int, vocab: int) -> list[list[int]]:
    """``depths`` in consecutive chunks of at most max(1, LENS_CHUNK_ELEMENTS // (tokens × vocab)):
    the depths one ``Lens.read_depths`` call reads."""
    step = max(1, LENS_CHUNK_ELEMENTS // max(1, tokens * vocab))
    items = list(depths)
    return [items[i : i + step] for i in range(0, len(items), step)]


class LensMismatchError(ValueError):
    """A stored lens does not belong to the model it is applied to (layer count, width,
    unembedding, fingerprint or training data differ)."""


class Lens(nn.Module, abc.ABC):
    """One lens of one model.  Subclasses implement ``transform``; ``forward`` decodes.

    The model is held by reference (not a submodule): it is never copied, its weights are not in
    the lens's ``parameters()`` or ``state_dict()``, and training a lens cannot change it.

    Attributes: ``kind`` (the registry name), ``adapter``, ``n_layers`` (L), ``d_model`` (d).
    """

    kind: ClassVar[str] = ""

    def __init__(self, model: nn.Module, adapter: Adapter | None = None):
        super().__init__()
        object.__setattr__(self, "_model", model)  # a reference, not a registered submodule
        self.adapter = adapter or adapter_for(model)
        self.n_layers = len(self.adapter.decoder_layers(model))
        self.d_model = int(model.config.hidden_size)

    @property
    def model(self) -> nn.Module:
        return self._model  # type: ignore[attr-defined]

    def check_layer(self, layer: int) -> None:
        """Raise IndexError unless 0 ≤ layer ≤ L."""
        if not 0 <= int(layer) <= self.n_layers:
            raise IndexError(f"lens depth {layer} is outside 0 … {self.n_layers} (the model has {self.n_layers} layers)")

    @abc.abstractmethod
    def transform(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """The residual the output map reads for h_l.  h: [..., d] -> [..., d], dtype of h."""

    def forward(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Logits of the lens at depth ``layer`` (0 … L).  h: [..., d] -> [..., V] in the model's
        output dtype (float32 logits need ``capture.widen``).  Raises IndexError for a depth outside
        0 … L."""
        self.check_layer(layer)
        return self.adapter.logits(self.model, self.transform(h, layer))

    def read_depths(self, h: torch.Tensor, layers: list[int]) -> torch.Tensor:
        """The lens at several depths in one unembedding: h [k, ..., d] holds the residuals of depths
        ``layers`` (k of them) -> logits [k, ..., V], equal to ``stack([self(h[i], l) for i, l in
        enumerate(layers)])``.  One matrix product over all k depths reads W_U once instead of k
        times (the extraction's lens statistics; docs/methods.md#lenses).  Raises IndexError for a
        depth outside 0 … L."""
        if len(layers) != h.shape[0]:
            raise ValueError(f"read_depths: {h.shape[0]} residuals for {len(layers)} depths")
        for layer in layers:
            self.check_layer(layer)
        return self.adapter.logits(self.model, torch.stack([self.transform(x, layer) for x, layer in zip(h, layers)]))

    def describe(self) -> dict[str, Any]:
        """A small JSON-able description (kind, layers, width) for logs and metadata."""
        return {"lens": self.kind, "n_layers": self.n_layers, "d_model": self.d_model}


# ----------------------------------------------------------------------------- divergences


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    x = logits if logits.dtype == torch.float64 else logits.float()
    return torch.log_softmax(x, dim=-1)


def _plogp_ratio(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Σ_v p (log p − log q) with 0 · log 0 = 0 (a vocabulary entry of probability 0 adds nothing)."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros((), dtype=p.dtype, device=p.device))
    return terms.sum(-1)


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v)) in nats of the softmaxes of two logit tensors
    [..., V] -> [...], clamped below at 0 against rounding; float32 (float64 for float64 inputs).

    The tuned lens's training loss is ``kl_divergence(final, lens)`` (Belrose et al. 2023,
    arXiv 2303.08112); the paper's logit-lens statistic is ``kl_divergence(lens, final)``
    (docs/methods.md#logit-lens)."""
    return _plogp_ratio(_log_probs(p_logits), _log_probs(q_logits)).clamp_min(0.0)


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence in bits, ½ KL(p ‖ m) + ½ KL(q ‖ m) with m = ½ (p + q), of the
    softmaxes of two logit tensors [..., V] -> [...]; in [0, 1], symmetric, clamped to [0, 1]
    against rounding.  The settling-depth trajectory of Chen et al. 2026 (arXiv 2602.13517;
    docs/methods.md#settling-depth)."""
    log_p, log_q = _log_probs(p_logits), _log_probs(q_logits)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    nats = 0.5 * (_plogp_ratio(log_p, log_m) + _plogp_ratio(log_q, log_m))
    return (nats / math.log(2.0)).clamp(0.0, 1.0)


def top_k_overlap(p_logits: torch.Tensor, q_logits: torch.Tensor, k: int) -> torch.Tensor:
    """|top_k(p) ∩ top_k(q)| / k of two logit tensors [..., V] -> [...] (float32), the top-k sets
    taken on logits (docs/methods.md#logit-lens).  Raises ValueError unless 1 ≤ k ≤ V."""
    if not 1 <= k <= p_logits.shape[-1]:
        raise ValueError(f"top-k overlap needs 1 ≤ k ≤ {p_logits.shape[-1]} (vocabulary), got {k}")
    top_p = p_logits.topk(k, dim=-1).indices
    top_q = q_logits.topk(k, dim=-1).indices
    return (top_p.unsqueeze(-1) == top_q.unsqueeze(-2)).any(-1).sum(-1).float() / k


# ----------------------------------------------------------------------------- the unembedding hash


def unembed_hash(model: nn.Module, adapter: Adapter | None = None) -> str:
    """The tuned-lens package's identity of a model's unembedding: the hex SHA-256 of numpy's
    ``array_str`` of W_U [V, d] at precision 1 under numpy's default print options (which summarise
    a large matrix by its corners), so it is the same for the model in any floating dtype.
    Stored as ``unembed_hash`` in a tuned-lens ``config.json`` (docs/methods.md#tuned-lens-files)."""
    adapter = adapter or adapter_for(model)
    weight = adapter.unembedding(model).weight.detach().float().cpu().numpy()
    with np.printoptions(precision=1, threshold=1000, edgeitems=3, linewidth=75, suppress=False):
        text = np.array_str(weight, precision=1)
    return hashlib.sha256(text.encode()).hexdigest()
