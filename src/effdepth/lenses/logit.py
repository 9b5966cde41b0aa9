"""The logit lens (nostalgebraist 2020): every residual decoded as it is (docs/methods.md#logit-lens)."""

from __future__ import annotations

import torch

from .base import Lens


class LogitLens(Lens):
    """q_l = softmax(W_U · Norm_f(h_l)) (with the model's logit scaling and soft-cap): the model's
    own output map applied to h_l unchanged.  No parameters."""

    kind = "logit"

    def transform(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """The identity: h [..., d] -> h."""
        return h
