"""Per-token metrics on residual-stream tensors.  Pure functions, any leading shape.

Norms are L2 over the last axis; every denominator is clamped at ``EPS`` (docs/methods.md#numerics).
"""

from __future__ import annotations

import torch

EPS = 1e-6


def norm(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=-1)


def cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """cos(x, y) over the last axis with the product of norms clamped at EPS."""
    return (x * y).sum(-1) / (norm(x) * norm(y)).clamp_min(EPS)


def relative(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """‖x‖ / ‖reference‖ with the denominator clamped at EPS."""
    return norm(x) / norm(reference).clamp_min(EPS)


def layer_token_stats(h: torch.Tensor, a: torch.Tensor, m: torch.Tensor, parallel: bool = False) -> torch.Tensor:
    """Relative contributions and cosines of one layer.  h, a, m: [..., d] -> [..., len(tables.LAYER_STATS)].

    RC_att = ‖a‖/‖h‖, RC_mlp = ‖m‖/‖r‖, RC_layer = ‖a+m‖/‖h‖,
    cos_att = cos(a, h), cos_mlp = cos(m, r), cos_layer = cos(a+m, h), cos_in_out = cos(h, h+a+m),
    where r, the residual the MLP reads, is h + a for a sequential block and h for a parallel one
    (docs/methods.md#parallel-blocks).  Computed in float32 whatever the model dtype.
    """
    h, a, m = h.float(), a.float(), m.float()
    mid = h if parallel else h + a
    c = a + m
    return torch.stack(
        [
            relative(a, h),
            relative(m, mid),
            relative(c, h),
            cosine(a, h),
            cosine(m, mid),
            cosine(c, h),
            cosine(h, h + c),
        ],
        dim=-1,
    )


def lens_token_stats(lens_logits: torch.Tensor, final_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit-lens KL(q ‖ p) = Σ_v q (log q − log p) and top-k overlap |topk(q) ∩ topk(p)| / k.

    lens_logits, final_logits: [..., V] -> (kl [...], overlap [...]).
    """
    log_q = torch.log_softmax(lens_logits.float(), dim=-1)
    log_p = torch.log_softmax(final_logits.float(), dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1).clamp_min(0.0)
    top_q = lens_logits.topk(k, dim=-1).indices
    top_p = final_logits.topk(k, dim=-1).indices
    overlap = (top_q.unsqueeze(-1) == top_p.unsqueeze(-2)).any(-1).sum(-1).float() / k
    return kl, overlap
