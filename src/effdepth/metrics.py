"""Per-token metrics on residual-stream tensors.  Pure functions, any leading shape.

Norms are L2 over the last axis; every denominator is clamped at ``EPS`` (docs/methods.md#numerics).
"""

from __future__ import annotations

import math

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


def final_distribution(final_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p [..., V] float32, p [..., V] float32, top-k indices [..., k]) of the model's output
    logits, computed once per prompt for ``lens_divergences``."""
    log_p = torch.log_softmax(final_logits.float(), dim=-1)
    return log_p, log_p.exp(), final_logits.topk(k, dim=-1).indices


def lens_divergences(
    lens_logits: torch.Tensor, final: tuple[torch.Tensor, torch.Tensor, torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a lens's distribution q at one depth is judged by against the output p
    (``final = final_distribution(final_logits, k)``): (KL(q ‖ p) nats, top-k overlap,
    JSD(p ‖ q) bits), each [...] float32 from lens_logits [..., V] (docs/methods.md#logit-lens,
    #settling-depth), p's log-softmax and top-k shared across depths and lenses.
    JSD = ½ Σ p log(p/m) + ½ Σ q log(q/m), m = ½ (p + q), 0 · log 0 = 0, clamped to [0, 1].

    The logits are finite (the extraction refuses others), so log q and log p are finite and a
    probability that underflows to 0 contributes 0 · (finite) = 0; m is floored at the smallest
    normal float before its log, for the entries where both underflow.  Each term is a local
    difference (not H(m) − ½H(p) − ½H(q), which cancels badly where q ≈ p)."""
    log_p, p, top_p = final
    log_q = torch.log_softmax(lens_logits.float(), dim=-1)  # the op of log p: q = p gives exactly 0
    q = log_q.exp()
    kl = (q * (log_q - log_p)).sum(-1).clamp_min(0.0)
    top_q = lens_logits.topk(k, dim=-1).indices
    overlap = (top_q.unsqueeze(-1) == top_p.unsqueeze(-2)).any(-1).sum(-1).float() / k
    log_m = (p + q).mul_(0.5).clamp_min_(torch.finfo(torch.float32).tiny).log_()
    nats = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1))
    return kl, overlap, (nats / math.log(2.0)).clamp(0.0, 1.0)
