"""Per-token lens trajectories: for every token and depth l = 0 … L, how far each lens's
distribution is from the model's output (docs/methods.md#lenses).

Statistics (``LENS_STATISTICS``), each [..., L+1] per lens:

=========  ==================================================================================
kl         KL(q_l ‖ p) in nats — the paper's logit-lens KL(l) (docs/methods.md#logit-lens)
kl_final   KL(p ‖ q_l) in nats — the tuned lens's training loss (Belrose et al. 2023)
overlap    |top_k(q_l) ∩ top_k(p)| / k
jsd        JSD(p ‖ q_l) in bits — the settling-depth trajectory (Chen et al. 2026)
=========  ==================================================================================

p is the model's output distribution at the token, q_l the lens's at depth l.  Every lens is
applied to the residuals captured in one forward pass per batch (``capture.run_captured``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..capture import run_captured, widen
from .base import Lens, js_divergence, kl_divergence, top_k_overlap

LENS_STATISTICS = ("kl", "kl_final", "overlap", "jsd")


def lens_statistics(lens_logits: torch.Tensor, final_logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """The four ``LENS_STATISTICS`` of one depth.  lens_logits, final_logits: [..., V] -> each [...]
    (float32, float64 for float64 logits).  Raises ValueError unless 1 ≤ k ≤ V."""
    return {
        "kl": kl_divergence(lens_logits, final_logits),
        "kl_final": kl_divergence(final_logits, lens_logits),
        "overlap": top_k_overlap(lens_logits, final_logits, k),
        "jsd": js_divergence(final_logits, lens_logits),
    }


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.inference_mode()
def lens_trajectories(
    model: nn.Module,
    lenses: Mapping[str, Lens],
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    *,
    top_k: int = 5,
    batch_size: int = 4,
) -> dict[str, torch.Tensor]:
    """Trajectories of every lens in ``lenses`` (name -> lens of ``model``) over ``sequences``
    (token id lists, run left-padded in batches of ``batch_size``; one forward per batch whatever
    the number of lenses).

    Returns a flat dict (the cache's naming): ``token_prompt`` [N] int32 (index into
    ``sequences``), ``token_position`` [N] int32, and ``lens_<stat>.<name>`` [N, L+1] float32 for
    every stat in LENS_STATISTICS and lens name, N = the tokens of all sequences in order.  For the
    logit lens, ``lens_kl.<name>`` and ``lens_overlap.<name>`` are extraction's ``lens_kl`` and
    ``lens_overlap``.  Raises ValueError for a lens of another model or an empty sequence."""
    for name, lens in lenses.items():
        if lens.model is not model:
            raise ValueError(f"lens {name!r} belongs to another model")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("an empty sequence has no tokens to read")
    adapter = next(iter(lenses.values())).adapter if lenses else None
    if adapter is None:
        from ..adapters import adapter_for

        adapter = adapter_for(model)
    out: dict[str, list[torch.Tensor]] = {"token_prompt": [], "token_position": []}
    for name in lenses:
        for stat in LENS_STATISTICS:
            out[f"lens_{stat}.{name}"] = []
    for rows in _batches(len(sequences), batch_size):
        capture, mask = run_captured(model, adapter, [list(sequences[i]) for i in rows], pad_id)
        resid = capture.residuals()
        final = widen(capture.logits[mask])
        for b, index in enumerate(rows):
            n = int(mask[b].sum())
            out["token_prompt"].append(torch.full((n,), index, dtype=torch.int32))
            out["token_position"].append(torch.arange(n, dtype=torch.int32))
        for name, lens in lenses.items():
            per_layer: dict[str, list[torch.Tensor]] = {stat: [] for stat in LENS_STATISTICS}
            for layer, h in enumerate(resid):
                stats = lens_statistics(widen(lens(h[mask], layer)), final, top_k)
                for stat, value in stats.items():
                    per_layer[stat].append(value.float().cpu())
            for stat in LENS_STATISTICS:
                out[f"lens_{stat}.{name}"].append(torch.stack(per_layer[stat], dim=-1))
        del capture
    return {key: torch.cat(values) for key, values in out.items()}
