"""Residual erasure: how much the answer distribution changes when one token's residual at one
layer is replaced by a baseline (docs/methods.md#residual-erasure).

Definition: Csordás, Manning & Potts (2025), arXiv 2505.13898; baseline b_l = token mean of h_l
over a baseline task (the public code's normaliser as ``variant="published"``)."""

from __future__ import annotations

from typing import Any

import polars as pl
import torch
from torch import nn

from ..staircase import Lane, alive_for, answer_positions, batch_size_for, clean_run, logit_rows, plan_sweeps, rows_per_call
from ..stats import ExtractionStats
from ..subjects import Subject
from ..tables import map_table

# Windows of erased tokens per prompt (see ``residual_erasure``).
ERASURE_BUCKETS = 8


def bucket_starts(n_tokens: int, buckets: int) -> list[int]:
    """First tokens of up to ``buckets`` near-equal windows covering 0 .. n_tokens-1."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    if buckets >= n_tokens:
        return list(range(n_tokens))
    return [(i * n_tokens) // buckets for i in range(buckets)]


@torch.inference_mode()
def residual_erasure(
    model: nn.Module,
    input_ids: list[int],
    n_answer: int,
    baseline: torch.Tensor,
    max_batch: int = 64,
    max_alive: int = 4096,
    buckets: int = ERASURE_BUCKETS,
) -> torch.Tensor:
    """E(l, t) = max_i ‖p(·|i) − p̃(·|i)‖ after setting h_l[t] := baseline[l].  Returns [L+1, T].

    baseline: [L+1, d] erasure values (token means of a baseline task).  Only the answer positions'
    logits are computed; all (layer, token) erasures share a staircase of batched layer calls, one
    per layer and window of erased tokens (``buckets`` windows: more windows compute fewer clean
    tokens, in more calls).
    """
    clean = clean_run(model, input_ids)
    runner, n_layers = clean.runner, clean.runner.n_layers
    n_tokens = clean.h.shape[1]
    answer = answer_positions(n_tokens, n_answer).to(clean.h.device)
    clean_probs = torch.softmax(clean.logits[answer], -1)
    baseline = baseline.to(clean.h.device, clean.h.dtype)
    # Erasing token t changes nothing before t, and nothing reaches an answer position from the
    # last token: E(l, T-1) = 0.  A row erasing t carries tokens b .. T-2 for a bucket start b <= t
    # (tokens b .. t-1 stay clean) and attends to the clean keys/values of tokens 0 .. b-1.
    stop = int(answer[-1]) + 1
    result = torch.zeros(n_layers + 1, n_tokens, dtype=torch.float64)
    bounds = bucket_starts(stop, buckets if runner.windows else 1)
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def clean_prefix(j: int, b: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if b == 0:
            return None
        if j not in kv:
            kv[j] = runner.layer(j, clean.h[j, :stop].unsqueeze(0), record=True)[1]
        keys, values = kv[j]
        return keys[:, :, :b], values[:, :, :b]

    for sweep in plan_sweeps(list(range(n_layers + 1)), [stop] * (n_layers + 1), max(max_alive, stop)):
        lanes = [Lane(b) for b in bounds]
        for j in range(sweep[0], n_layers + 1):
            if j in sweep:
                for lane, end in zip(lanes, [*bounds[1:], stop]):
                    erased = torch.arange(lane.start, end)
                    states = clean.h[j, lane.start : stop].unsqueeze(0).repeat(len(erased), 1, 1)
                    states[torch.arange(len(erased)), erased - lane.start] = baseline[j]
                    lane.add(states, j * n_tokens + erased)
            if j == n_layers:
                break
            for lane in lanes:
                assert lane.states is not None
                rows = rows_per_call(max_batch, n_tokens, lane.states.shape[1], lane.start)
                lane.states = runner.layer_chunks(j, lane.states, rows, start=lane.start, prefix=clean_prefix(j, lane.start))
        for lane in lanes:
            assert lane.states is not None and lane.origin is not None
            step = logit_rows(len(answer), clean_probs.shape[-1], max_batch)
            seen = answer >= lane.start  # earlier answer positions precede every erased token here
            columns = answer[seen] - lane.start
            for i in range(0, lane.states.shape[0], step):
                probs = torch.softmax(runner.logits(lane.states[i : i + step, columns]), -1)
                change = (probs - clean_probs[seen]).norm(dim=-1).amax(-1)
                result.view(-1)[lane.origin[i : i + step]] = change.cpu().double()
    return result


def erasure_baseline(resid_sum: torch.Tensor, resid_count: torch.Tensor, variant: str = "correct") -> torch.Tensor:
    """Erasure values b_l [L+1, d] from a baseline task's cached sums.

    correct: Σ_p Σ_t h_l / total tokens.  published: the public code divides each prompt's sum by
    d_model instead of its token count, then averages prompts (close to zero-ablation).
    """
    if variant == "published":
        d_model = resid_sum.shape[-1]
        return (resid_sum / d_model).mean(0)
    return resid_sum.sum(0) / resid_count.sum().clamp_min(1)


def run(subject: Subject, options: dict[str, Any]) -> pl.DataFrame:
    """The erasure job: an (L+1) × T map per prompt of ``subject``, erasing with the token means of
    the baseline task's extraction statistics ``subject.inputs['baseline']`` (an ``ExtractionStats``,
    or the path of its cache)."""
    stats = subject.inputs["baseline"]
    if not isinstance(stats, ExtractionStats):
        stats = ExtractionStats.from_cache(stats, ["resid_sum", "resid_count"])
    resid_sum, resid_count = (torch.as_tensor(stats.array(k)) for k in ("resid_sum", "resid_count"))
    baseline = erasure_baseline(resid_sum, resid_count, options["variant"])
    maps = []
    for p, prompt in enumerate(subject.progress("residual erasure")):
        ids = prompt["input_ids"]
        maps.append(
            residual_erasure(
                subject.model, ids, prompt["n_answer"], baseline, batch_size_for(options, len(ids)), alive_for(options, len(ids))
            )
        )
        subject.check(maps[-1], "residual-erasure map", p)
    return map_table(maps, "output_change", "residual_erasure", options["variant"], **subject.ids)
