"""Interventions: layer skip, residual erasure, integrated gradients — fast implementations.

Each works on one prompt at a time (no padding) and is built on two facts:

* prefix reuse — an intervention at layer s leaves h_0 .. h_s untouched, so it starts from the
  cached clean residual and runs only layers s .. L-1 (``LayerRunner``);
* batching — all interventions that start at the same layer (skip positions × kinds, erased
  tokens, IG interpolation steps) share one batched pass, in chunks of ``max_batch`` sequences.

The obviously-correct references (one full forward per intervention) live in the tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .adapters import adapter_for
from .capture import Capture, LayerRunner, capturing, widen
from .metrics import EPS, norm

SKIP_KINDS = ("layer", "attention", "mlp")


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


def skip_positions(n_tokens: int, count: int, stride: int, seed: int, prompt_index: int) -> list[int]:
    """Up to ``count`` positions from {stride, 2·stride, … < T−4}, by a shuffle seeded per prompt."""
    candidates = list(range(stride, n_tokens - 4, stride))
    random.Random(f"{seed}:{prompt_index}").shuffle(candidates)
    return sorted(candidates[:count])


def skip_replacement(clean: CleanRun, s: int, kind: str, variant: str) -> torch.Tensor:
    """What layer s outputs [T, d] when it (or one sublayer) is skipped on every token.

    kind = layer: output := input (h_s); attention: a_s := 0 and the MLP re-run on h_s;
    mlp: m_s := 0.  It does not depend on the skip position, so it is computed once per layer.
    """
    if variant == "published" and kind != "layer":
        raise ValueError("the published code only skips whole layers; use variant 'correct' for sublayer skips")
    h_in = clean.h[s]
    if kind == "layer":
        replacement = h_in
    elif kind == "mlp":
        replacement = h_in + clean.a[s]
    elif kind == "attention":
        layer = clean.runner.layers[s]
        adapter = clean.runner.adapter
        replacement = h_in + adapter.feed_forward(layer)(adapter.feed_forward_norm(layer)(h_in.unsqueeze(0)))[0]
    else:
        raise ValueError(f"unknown skip kind {kind!r}; one of {SKIP_KINDS}")
    return replacement


def skipped_state(
    clean: CleanRun, s: int, t: int, kind: str, variant: str, replacement: torch.Tensor | None = None
) -> torch.Tensor:
    """h_{s+1} [T, d] with layer s (or one sublayer) skipped on tokens 1 … t−1.

    variant = published reproduces the public code, which slices *channels* 1 … t−1 of every
    token instead of tokens.  ``replacement``: ``skip_replacement(clean, s, kind, variant)``.
    """
    if replacement is None:
        replacement = skip_replacement(clean, s, kind, variant)
    state = clean.h[s + 1].clone()
    if variant == "published":
        state[:, 1:t] = replacement[:, 1:t]
    else:
        state[1:t] = replacement[1:t]
    return state


def staircase(
    runner: LayerRunner,
    starts: list[int],
    counts: list[int],
    make_states: Callable[[int], torch.Tensor],
    on_layer: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None,
    on_final: Callable[[torch.Tensor, torch.Tensor], None],
    max_batch: int,
    max_alive: int,
) -> None:
    """Run batches of interventions that enter the layer stack at different depths.

    ``make_states(l)`` returns the ``counts[i]`` intervened residuals [n_l, T, d] entering layer
    l = ``starts[i]`` (l = L: the final residual).  Layer j is applied once, in chunks of
    ``max_batch`` sequences, to every intervention that entered at or before j — a "staircase" —
    so a prompt costs L layer calls instead of one per (intervention, layer).  Start layers are
    grouped into sweeps of at most ``max_alive`` sequences and built only when their sweep reaches
    them, which bounds memory.  ``on_layer(j, before, after, origin)`` sees each layer's input and
    output; ``on_final(h_L, origin)`` the final residuals; ``origin`` [n] holds each row's index
    into the concatenation of all ``make_states(l)`` in ``starts`` order.
    """
    n_layers = runner.n_layers
    offsets = dict(zip(starts, [sum(counts[:i]) for i in range(len(counts))]))
    sizes = dict(zip(starts, counts))
    sweeps: list[list[int]] = []
    for layer in starts:
        if sweeps and sum(sizes[x] for x in sweeps[-1]) + sizes[layer] <= max_alive:
            sweeps[-1].append(layer)
        else:
            sweeps.append([layer])
    for sweep in sweeps:
        states: torch.Tensor | None = None
        origin = torch.empty(0, dtype=torch.long)
        for j in range(sweep[0], n_layers + 1):
            if j in sweep:
                fresh = make_states(j)
                rows = torch.arange(offsets[j], offsets[j] + fresh.shape[0])
                states = fresh if states is None else torch.cat([states, fresh])
                origin = torch.cat([origin, rows])
            if j == n_layers:
                break
            assert states is not None
            out = torch.cat([runner.layer(j, states[i : i + max_batch]) for i in range(0, states.shape[0], max_batch)])
            if on_layer is not None:
                on_layer(j, states, out, origin)
            states = out
        assert states is not None
        on_final(states, origin)


# Largest number of logits (rows x positions x vocabulary) materialised at once: 1 GiB in float32.
LOGIT_BUDGET = 1 << 28


def logit_rows(n_positions: int, vocab: int, cap: int) -> int:
    """Sequences whose logits at ``n_positions`` positions fit LOGIT_BUDGET (at least 1, at most cap)."""
    return max(1, min(cap, LOGIT_BUDGET // max(1, n_positions * vocab)))


def _masked_max_mean(values: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise max and mean of ``values`` [n, T] over the positions where ``keep`` [n, T] is set."""
    zero = torch.zeros_like(values)
    masked = torch.where(keep, values, zero)
    return masked.amax(-1), masked.sum(-1) / keep.sum(-1).clamp_min(1)


@torch.inference_mode()
def layer_skip(
    model: nn.Module,
    input_ids: list[int],
    positions: list[int],
    kinds: tuple[str, ...] = SKIP_KINDS,
    variant: str = "correct",
    max_batch: int = 64,
    max_alive: int = 4096,
) -> dict[str, torch.Tensor]:
    """Effect of skipping each layer on tokens 1 … t−1 for every t in ``positions``.

    Returns float64 tensors (K = len(kinds), P = len(positions), L layers):
      future_max [K, L, L, P]  max_{τ≥t} ‖c_j[τ] − c̃_j[τ]‖ / ‖c_j[τ]‖ (index [kind, s, j, t]; 0 for j ≤ s)
      future_mean [K, L, L, P] the same, mean over τ ≥ t
      output_max [K, L, P]     max_{τ≥t} ‖softmax(z̃[τ]) − softmax(z[τ])‖
      output_mean [K, L, P]
    """
    clean = clean_run(model, input_ids)
    runner, n_layers = clean.runner, clean.runner.n_layers
    n_tokens = clean.h.shape[1]
    c = clean.h[1:] - clean.h[:-1]  # [L, T, d] clean contributions
    c_norm = norm(widen(c)).clamp_min(EPS)
    probs = torch.softmax(clean.logits, -1)
    n_kinds, n_pos = len(kinds), len(positions)
    shape = (n_kinds, n_layers, n_layers, n_pos)
    result = {k: torch.zeros(shape, dtype=torch.float64) for k in ("future_max", "future_mean")}
    result.update({k: torch.zeros(shape[:2] + shape[3:], dtype=torch.float64) for k in ("output_max", "output_mean")})
    # Row r of the staircase: skipped layer s = r // (K·P) (entering layer s+1), kind, position.
    per_layer = n_kinds * n_pos
    row_kind = torch.arange(per_layer).div(n_pos, rounding_mode="floor").repeat(n_layers)
    row_pos = torch.arange(n_pos).repeat(n_kinds * n_layers)
    row_skip = torch.arange(n_layers).repeat_interleave(per_layer)
    t_of_pos = torch.tensor(positions, dtype=torch.long)
    future = torch.arange(n_tokens).unsqueeze(0) >= t_of_pos[row_pos].unsqueeze(1)  # [rows, T]

    def make_states(layer: int) -> torch.Tensor:
        s = layer - 1
        replacements = {kind: skip_replacement(clean, s, kind, variant) for kind in kinds}
        return torch.stack([skipped_state(clean, s, t, kind, variant, replacements[kind]) for kind in kinds for t in positions])

    def on_layer(j: int, before: torch.Tensor, after: torch.Tensor, origin: torch.Tensor) -> None:
        rel = norm(widen(c[j] - (after - before))) / c_norm[j]  # [n, T]
        worst, mean = _masked_max_mean(rel.cpu().double(), future[origin])
        index = (row_kind[origin], row_skip[origin], torch.full_like(origin, j), row_pos[origin])
        result["future_max"].index_put_(index, worst)
        result["future_mean"].index_put_(index, mean)

    def on_final(final: torch.Tensor, origin: torch.Tensor) -> None:
        first = min(positions)
        step = logit_rows(n_tokens - first, probs.shape[-1], max_batch)
        for i in range(0, final.shape[0], step):
            rows = origin[i : i + step]
            change = (torch.softmax(runner.logits(final[i : i + step, first:]), -1) - probs[first:]).norm(dim=-1)
            worst, mean = _masked_max_mean(change.cpu().double(), future[rows][:, first:])
            index = (row_kind[rows], row_skip[rows], row_pos[rows])
            result["output_max"].index_put_(index, worst)
            result["output_mean"].index_put_(index, mean)

    starts = list(range(1, n_layers + 1))
    staircase(runner, starts, [per_layer] * n_layers, make_states, on_layer, on_final, max_batch, max(max_alive, per_layer))
    return result


def answer_positions(n_tokens: int, n_answer: int) -> torch.Tensor:
    """Positions i ∈ [T − n_a − 1, T − 2] whose next-token prediction is an answer token."""
    if n_answer < 1:
        raise ValueError("the prompt has no answer tokens; erasure and IG need a question/answer split")
    return torch.arange(n_tokens - n_answer - 1, n_tokens - 1)


@torch.inference_mode()
def residual_erasure(
    model: nn.Module,
    input_ids: list[int],
    n_answer: int,
    baseline: torch.Tensor,
    max_batch: int = 64,
    max_alive: int = 4096,
) -> torch.Tensor:
    """E(l, t) = max_i ‖p(·|i) − p̃(·|i)‖ after setting h_l[t] := baseline[l].  Returns [L+1, T].

    baseline: [L+1, d] erasure values (token means of a baseline task).  Only the answer positions'
    logits are computed; all (layer, token) erasures share one staircase of batched layer calls.
    """
    clean = clean_run(model, input_ids)
    runner, n_layers = clean.runner, clean.runner.n_layers
    n_tokens = clean.h.shape[1]
    answer = answer_positions(n_tokens, n_answer).to(clean.h.device)
    clean_probs = torch.softmax(clean.logits[answer], -1)
    baseline = baseline.to(clean.h.device, clean.h.dtype)
    result = torch.zeros((n_layers + 1) * n_tokens, dtype=torch.float64)
    diagonal = torch.arange(n_tokens)

    def make_states(layer: int) -> torch.Tensor:
        states = clean.h[layer].unsqueeze(0).repeat(n_tokens, 1, 1)
        states[diagonal, diagonal] = baseline[layer]
        return states

    def on_final(final: torch.Tensor, origin: torch.Tensor) -> None:
        step = logit_rows(len(answer), clean_probs.shape[-1], max_batch)
        for i in range(0, final.shape[0], step):
            probs = torch.softmax(runner.logits(final[i : i + step, answer]), -1)
            result[origin[i : i + step]] = (probs - clean_probs).norm(dim=-1).amax(-1).cpu().double()

    starts = list(range(n_layers + 1))
    staircase(runner, starts, [n_tokens] * len(starts), make_states, None, on_final, max_batch, max(max_alive, n_tokens))
    return result.view(n_layers + 1, n_tokens)


def ig_baseline(x: torch.Tensor, variant: str = "correct") -> torch.Tensor:
    """IG baseline for a layer output x [T, d]: its token mean (correct), or — as the public code —
    the mean over the hidden dimension of each token, broadcast to d (published)."""
    if variant == "published":
        return x.mean(-1, keepdim=True).expand_as(x)
    return x.mean(0, keepdim=True).expand_as(x)


def answer_probability(runner: LayerRunner, final: torch.Tensor, answer: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """F = Σ_i p(gold_i | i) over answer positions, per sequence.  final [B, T, d] -> [B]"""
    probs = torch.softmax(runner.logits(final[:, answer]), -1)  # [B, n_a, V]
    return probs.gather(-1, gold.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(-1).sum(-1)


def integrated_gradients(
    model: nn.Module,
    input_ids: list[int],
    n_answer: int,
    steps: int = 256,
    variant: str = "correct",
    max_batch: int = 32,
) -> dict[str, torch.Tensor]:
    """IG(l, t) = (1/S) Σ_k Σ_d (x − x′)[t, d] · ∂F/∂x[t, d] at x′ + (k/S)(x − x′), k = 0 … S−1.

    x = output of layer l (h_{l+1}), x′ = ig_baseline(x).  Returns ``ig`` [L, T] (signed) and the
    endpoints ``f_input`` [L] = F(x), ``f_baseline`` [L] = F(x′) for the completeness check.
    """
    clean = clean_run(model, input_ids)
    runner, n_layers = clean.runner, clean.runner.n_layers
    n_tokens = clean.h.shape[1]
    device = clean.h.device
    answer = answer_positions(n_tokens, n_answer).to(device)
    gold = torch.tensor(input_ids, device=device)[answer + 1]
    ig = torch.zeros(n_layers, n_tokens, dtype=torch.float64)
    f_input, f_baseline = torch.zeros(n_layers, dtype=torch.float64), torch.zeros(n_layers, dtype=torch.float64)
    alphas = torch.arange(steps, device=device, dtype=torch.float64) / steps
    accumulate = torch.float64 if clean.h.dtype == torch.float64 else torch.float32
    for layer in range(n_layers):
        x = clean.h[layer + 1]
        x0 = ig_baseline(x, variant)
        diff = x - x0
        grad_sum = torch.zeros_like(x, dtype=accumulate)
        for start in range(0, steps, max_batch):
            alpha = alphas[start : start + max_batch].to(x.dtype).view(-1, 1, 1)
            with torch.enable_grad():
                states = (x0 + alpha * diff).detach().requires_grad_(True)
                target = answer_probability(runner, runner.run(states, layer + 1), answer, gold)
                (grad,) = torch.autograd.grad(target.sum(), states)
            grad_sum += grad.to(accumulate).sum(0)
        ig[layer] = (diff.to(accumulate) * grad_sum).sum(-1).cpu() / steps
        with torch.no_grad():
            ends = answer_probability(runner, runner.run(torch.stack([x, x0]), layer + 1), answer, gold)
        f_input[layer], f_baseline[layer] = ends[0].cpu(), ends[1].cpu()
    return {"ig": ig, "f_input": f_input, "f_baseline": f_baseline}


def erasure_baseline(resid_sum: torch.Tensor, resid_count: torch.Tensor, variant: str = "correct") -> torch.Tensor:
    """Erasure values b_l [L+1, d] from a baseline task's cached sums.

    correct: Σ_p Σ_t h_l / total tokens.  published: the public code divides each prompt's sum by
    d_model instead of its token count, then averages prompts (close to zero-ablation).
    """
    if variant == "published":
        d_model = resid_sum.shape[-1]
        return (resid_sum / d_model).mean(0)
    return resid_sum.sum(0) / resid_count.sum().clamp_min(1)
