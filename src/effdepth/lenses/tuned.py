"""The tuned lens (Belrose et al. 2023, arXiv 2303.08112; docs/methods.md#lenses).

One affine translator per depth l = 0 … L-1, applied residually, T_l(h) = h + A_l h + b_l, then the
model's own output map: q_l = softmax(W_U · Norm_f(T_l(h_l))).  h_L (the last residual) needs no
translator: the lens there is the model's output.  A_l [d, d] and b_l [d] start at zero, so an
untrained tuned lens is the logit lens exactly (0 · h + 0 adds an exact zero).  Training:
``effdepth.lenses.training.train_tuned_lens``; storage: ``effdepth.lenses.storage``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..adapters import Adapter
from .base import Lens


def default_translator_dtype(model: nn.Module) -> torch.dtype:
    """float64 for a float64 model (exact references), float32 otherwise (half-precision models
    get float32 translators; the translated residual is cast back to the model's dtype)."""
    return torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32


class TunedLens(Lens):
    """Translators ``translators[l]`` (``nn.Linear(d, d)``: weight = A_l, bias = b_l), l = 0 … L-1.

    ``translators.state_dict()`` has the tuned-lens package's keys ``{l}.weight`` / ``{l}.bias``.
    bias: whether the translators have b_l (the package's ``bias`` option; default True).
    dtype: the translators' dtype (default ``default_translator_dtype``); device: the model's.
    """

    kind = "tuned"

    def __init__(self, model: nn.Module, adapter: Adapter | None = None, *, bias: bool = True, dtype: torch.dtype | None = None):
        super().__init__(model, adapter)
        dtype = dtype or default_translator_dtype(model)
        device = next(model.parameters()).device
        self.bias = bias
        self.translators = nn.ModuleList(
            [nn.Linear(self.d_model, self.d_model, bias=bias, dtype=dtype, device=device) for _ in range(self.n_layers)]
        )
        with torch.no_grad():
            for translator in self.translators:
                translator.weight.zero_()
                if translator.bias is not None:
                    translator.bias.zero_()

    @property
    def dtype(self) -> torch.dtype:
        return self.translators[0].weight.dtype if len(self.translators) else torch.float32

    def transform(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """T_l(h) = h + A_l h + b_l for l < L (computed in the translators' dtype, returned in h's
        dtype); h itself for l = L.  h: [..., d] -> [..., d].  Raises IndexError outside 0 … L."""
        self.check_layer(layer)
        if layer == self.n_layers:
            return h
        x = h.to(self.dtype)
        return (x + self.translators[layer](x)).to(h.dtype)

    def is_identity(self) -> bool:
        """Whether every A_l and b_l is exactly zero (an untrained lens: the logit lens)."""
        return all(not p.detach().any() for p in self.parameters())
