"""Interventions: layer skip, residual erasure, integrated gradients — fast implementations.

Each works on one prompt at a time (no padding) and is built on three facts:

* prefix reuse over layers — an intervention at layer s leaves h_0 .. h_s untouched, so it starts
  from the cached clean residual and runs only layers s .. L-1 (``LayerRunner``);
* prefix reuse over tokens — by causality, tokens before the first changed one keep the values of
  a run that shares that prefix, so an intervention computes only the tokens from there on,
  attending to the recorded keys/values of the shared prefix (``LayerRunner.layer(start=...)``):
  the clean run's for erasure, one fully skipped run per (layer, kind) for layer skip;
* batching — all interventions that start at the same layer (skip positions × kinds, erased
  tokens, IG interpolation steps) share batched layer calls.

The obviously-correct references (one full forward per intervention) live in the tests.
"""

from __future__ import annotations

import random
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
    if not positions:
        return result
    if min(positions) < 1 or max(positions) >= n_tokens:
        raise ValueError(f"skip positions {positions} outside 1 .. {n_tokens - 1}")
    # The correct skip changes tokens 1 .. t-1 only, so tokens 0 .. t-1 of every later layer equal
    # those of the run that skips layer s on all tokens ("fully skipped", kept up to the last
    # position) and only tokens t .. T-1 are computed, attending to its recorded keys/values.  The
    # published variant changes channels of every token: its rows carry the whole prompt.
    windowed = variant == "correct" and runner.windows
    last = max(positions)
    # Row id of (kind k, skipped layer s) = s*K + k, in every lane.
    lanes = [Lane(t if windowed else 0) for t in positions]
    full = Lane(0)

    def add_rows(s: int) -> None:
        ids = torch.arange(s * n_kinds, (s + 1) * n_kinds)
        replacements = [skip_replacement(clean, s, kind, variant) for kind in kinds]
        if windowed and s < n_layers - 1:  # no later layer needs the last layer's prefix
            full.add(torch.stack([skipped_state(clean, s, last, kind, variant, r)[:last] for kind, r in zip(kinds, replacements)]), ids)
        for lane, t in zip(lanes, positions):
            if windowed:  # tokens >= t enter layer s+1 untouched
                states = clean.h[s + 1, t:].unsqueeze(0).expand(n_kinds, -1, -1).clone()
            else:
                states = torch.stack([skipped_state(clean, s, t, kind, variant, r) for kind, r in zip(kinds, replacements)])
            lane.add(states, ids)

    def record(p: int, key: str, origin: torch.Tensor, values: torch.Tensor, j: int | None = None) -> None:
        worst, mean = values.amax(-1).cpu().double(), values.mean(-1).cpu().double()
        kind, skipped = origin % n_kinds, origin.div(n_kinds, rounding_mode="floor")
        index = (kind, skipped) if j is None else (kind, skipped, torch.full_like(origin, j))
        result[f"{key}_max"].index_put_((*index, torch.full_like(origin, p)), worst)
        result[f"{key}_mean"].index_put_((*index, torch.full_like(origin, p)), mean)

    per_start = n_kinds * (n_pos + int(windowed))
    for sweep in plan_sweeps(list(range(1, n_layers + 1)), [per_start] * n_layers, max(max_alive, per_start)):
        for j in range(sweep[0], n_layers):
            if j in sweep:
                add_rows(j - 1)
            prefix = None
            if windowed:
                assert full.states is not None
                full.states, prefix = runner.layer_chunks(j, full.states, rows_per_call(max_batch, n_tokens, last), record=True)
            for p, (lane, t) in enumerate(zip(lanes, positions)):
                assert lane.states is not None and lane.origin is not None
                before = lane.states
                width = before.shape[1]
                window = None if prefix is None else (prefix[0][:, :, :t], prefix[1][:, :, :t])
                rows = rows_per_call(max_batch, n_tokens, width, lane.start)
                lane.states = runner.layer_chunks(j, before, rows, start=lane.start, prefix=window)
                skip_in = t - lane.start  # first column at a token >= t
                changed = lane.states[:, skip_in:] - before[:, skip_in:]
                record(p, "future", lane.origin, norm(widen(c[j, t:] - changed)) / c_norm[j, t:], j)
        if n_layers in sweep:  # skipping the last layer: its output is the final residual
            add_rows(n_layers - 1)
        for p, (lane, t) in enumerate(zip(lanes, positions)):
            assert lane.states is not None and lane.origin is not None
            final = lane.states[:, t - lane.start :]
            step = logit_rows(n_tokens - t, probs.shape[-1], max_batch)
            for i in range(0, final.shape[0], step):
                change = (torch.softmax(runner.logits(final[i : i + step]), -1) - probs[t:]).norm(dim=-1)
                record(p, "output", lane.origin[i : i + step], change)
            lane.states = lane.origin = None
        full.states = full.origin = None
    return result


# Windows of erased tokens per prompt (see ``residual_erasure``).
ERASURE_BUCKETS = 8


def bucket_starts(n_tokens: int, buckets: int) -> list[int]:
    """First tokens of up to ``buckets`` near-equal windows covering 0 .. n_tokens-1."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    if buckets >= n_tokens:
        return list(range(n_tokens))
    return [(i * n_tokens) // buckets for i in range(buckets)]


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
