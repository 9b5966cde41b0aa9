"""Tuned lens: the logit lens's table read through trained affine translators (Belrose et al. 2023,
arXiv 2303.08112; docs/methods.md#lenses).  The translators come from the model's train_lens job
(``effdepth.lenses.training``) or a lens the model entry names; the extraction reads them in the
same pass as the logit lens (``lens_*.tuned`` tensors), so this table is ``lens_table`` of them."""

from __future__ import annotations

from typing import Any

import polars as pl

from ..stats import ExtractionStats
from .logit_lens import lens_table


def table(stats: ExtractionStats, variant: str, options: dict[str, Any] | None = None) -> pl.DataFrame:
    """KL, overlap, JSD and settled rows of the tuned lens (``logit_lens.lens_table``).  Raises
    KeyError when the extraction read no tuned lens."""
    return lens_table(stats, variant, "tuned", options)
