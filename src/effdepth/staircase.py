"""The machinery every intervention shares: one clean forward per prompt, and the "staircase" of
batched layer calls that runs many interventions of one prompt together.

Built on three facts (docs/methods.md#fast-paths):

* prefix reuse over layers — an intervention at layer s leaves h_0 .. h_s untouched, so it starts
  from the cached clean residual and runs only layers s .. L-1 (``LayerRunner``);
* prefix reuse over tokens — by causality, tokens before the first changed one keep the values of
  a run that shares that prefix, so an intervention computes only the tokens from there on,
  attending to the recorded keys/values of the shared prefix (``LayerRunner.layer(start=...)``);
* batching — all interventions that start at the same layer share batched layer calls.

The obviously-correct references (one full forward per intervention) are in ``effdepth.reference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .adapters import adapter_for
from .capture import Capture, LayerRunner, capturing, widen


@dataclass
class CleanRun:
    """A single prompt's clean forward: residuals h [L+1, T, d], a/m [L, T, d], logits [T, V]."""

    runner: LayerRunner
    h: torch.Tensor
    a: torch.Tensor
    m: torch.Tensor
    logits: torch.Tensor


def clean_run(model: nn.Module, input_ids: list[int]) -> CleanRun:
    """Forward one prompt (batch 1) capturing activations and the layer call arguments.

    Runs under ``no_grad`` rather than ``inference_mode`` so the captured rotary embeddings and
    masks may be reused in the gradient passes of integrated gradients.
    """
    adapter = adapter_for(model)
    device = next(model.parameters()).device
    ids = torch.tensor([input_ids], device=device)
    capture = Capture()
    with torch.no_grad(), capturing(model, adapter, capture, keep_kwargs=True):
        out = model(input_ids=ids, use_cache=False)
    h = torch.stack([r[0] for r in capture.residuals()])
    a = torch.stack([x[0] for x in capture.attn_out])
    m = torch.stack([x[0] for x in capture.mlp_out])
    return CleanRun(LayerRunner(model, adapter, capture), h, a, m, widen(out.logits[0]))


def plan_sweeps(starts: list[int], counts: list[int], max_alive: int) -> list[list[int]]:
    """Group start layers (ascending) into sweeps holding at most ``max_alive`` rows (at least one
    start layer each).  A sweep runs every intervention that enters the layer stack at one of its
    start layers together: layer j is applied once, in batched chunks, to all rows that entered at
    or before j — a "staircase" — and rows of later start layers are built only when the sweep
    reaches them, which bounds memory."""
    sweeps: list[list[int]] = []
    size = 0
    for layer, count in zip(starts, counts):
        if sweeps and size + count <= max_alive:
            sweeps[-1].append(layer)
            size += count
        else:
            sweeps.append([layer])
            size = count
    return sweeps


@dataclass
class Lane:
    """Rows of a staircase that carry the same window of tokens ``start .. start+width-1``."""

    start: int
    states: torch.Tensor | None = None
    origin: torch.Tensor | None = None  # [n] row ids

    def add(self, states: torch.Tensor, origin: torch.Tensor) -> None:
        self.states = states if self.states is None else torch.cat([self.states, states])
        self.origin = origin if self.origin is None else torch.cat([self.origin, origin])


def rows_per_call(max_batch: int, n_tokens: int, width: int, start: int = 0) -> int:
    """Rows of tokens ``start .. start+width-1`` per layer call: ``max_batch`` full-length rows'
    worth of tokens, where a key of the attended prefix counts a quarter of a computed token (its
    keys/values and attention scores against the MLP activations of a computed one)."""
    return max(1, max_batch * n_tokens // max(1, width, (start + width) // 4))


# Largest number of logits (rows x positions x vocabulary) materialised at once: 1 GiB in float32.
LOGIT_BUDGET = 1 << 28


def logit_rows(n_positions: int, vocab: int, cap: int) -> int:
    """Sequences whose logits at ``n_positions`` positions fit LOGIT_BUDGET (at least 1, at most cap)."""
    return max(1, min(cap, LOGIT_BUDGET // max(1, n_positions * vocab)))


def answer_positions(n_tokens: int, n_answer: int) -> torch.Tensor:
    """Positions i ∈ [T − n_a − 1, T − 2] whose next-token prediction is an answer token."""
    if n_answer < 1:
        raise ValueError("the prompt has no answer tokens; erasure and IG need a question/answer split")
    return torch.arange(n_tokens - n_answer - 1, n_tokens - 1)


def batch_size_for(options: dict, n_tokens: int) -> int:
    """Sequences per batched pass: ``max_batch``, lowered so sequences × tokens ≤ ``max_batch_tokens``."""
    return max(1, min(int(options["max_batch"]), int(options["max_batch_tokens"]) // max(n_tokens, 1)))


def alive_for(options: dict, n_tokens: int) -> int:
    """Intervened sequences held at once by the staircase: ``max_alive_tokens`` // tokens."""
    return max(1, int(options["max_alive_tokens"]) // max(n_tokens, 1))
