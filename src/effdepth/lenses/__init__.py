"""Lenses: what a residual h_l predicts, read through the model's own output map (docs/methods.md#lenses).

A lens is one ``Lens`` object of one model: ``lens(h, l)`` maps a residual [..., d] at depth
l = 0 … L to logits [..., V].  Implementations, by registry name (``LENSES``):

* ``logit`` — ``LogitLens``: h_l decoded as it is (nostalgebraist 2020);
* ``tuned`` — ``TunedLens``: h_l + A_l h_l + b_l decoded, trained translators (Belrose et al. 2023).

Adding a lens: a module defining a ``Lens`` subclass (its ``kind`` and ``transform``) and one line
in ``LENSES``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..adapters import Adapter
from .base import Lens, LensMismatchError, js_divergence, kl_divergence, top_k_overlap, unembed_hash
from .logit import LogitLens
from .tuned import TunedLens

LENSES: dict[str, type[Lens]] = {
    LogitLens.kind: LogitLens,
    TunedLens.kind: TunedLens,
}


def make_lens(kind: str, model: nn.Module, adapter: Adapter | None = None, **options: Any) -> Lens:
    """A fresh lens of registry name ``kind`` for ``model`` (options go to its constructor; a fresh
    tuned lens is untrained, i.e. the logit lens).  Raises ValueError for an unknown kind."""
    if kind not in LENSES:
        raise ValueError(f"unknown lens {kind!r}; one of {sorted(LENSES)}")
    return LENSES[kind](model, adapter, **options)


__all__ = [
    "LENSES",
    "Lens",
    "LensMismatchError",
    "LogitLens",
    "TunedLens",
    "js_divergence",
    "kl_divergence",
    "make_lens",
    "top_k_overlap",
    "unembed_hash",
]
