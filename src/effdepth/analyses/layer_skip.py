"""Layer skip: the effect of skipping a layer (or its attention or MLP) on tokens 1 … t−1 on the
computation of later layers at future tokens and on the output (docs/methods.md#layer-skip).

Definitions: Csordás, Manning & Potts (2025), arXiv 2505.13898, section 3; the paper's variant
(Hu, Zhou & Zhang 2025, arXiv 2512.14064) as ``variant="published"``."""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import torch
from torch import nn

from ..capture import widen
from ..metrics import EPS, norm
from ..staircase import CleanRun, Lane, alive_for, batch_size_for, clean_run, logit_rows, plan_sweeps, rows_per_call
from ..subjects import Subject
from ..tables import frame

SKIP_KINDS = ("layer", "attention", "mlp")


def skip_positions(n_tokens: int, count: int, stride: int, seed: int, prompt_index: int) -> list[int]:
    """Up to ``count`` positions from {stride, 2·stride, … < T−4}, by a shuffle seeded per prompt;
    none for a prompt of ``stride + 4`` tokens or fewer (:func:`min_tokens`)."""
    candidates = list(range(stride, n_tokens - 4, stride))
    random.Random(f"{seed}:{prompt_index}").shuffle(candidates)
    return sorted(candidates[:count])


def min_tokens(stride: int) -> int:
    """The fewest tokens a prompt needs for a skip position at ``stride``: T > stride + 4."""
    return stride + 5


def short_prompts_message(label: str, lengths: dict[Any, int], stride: int, given: int) -> str:
    """The warning for prompts too short for a skip position: which (id and tokens), why, and how
    many prompts remain of those given."""
    shown = ", ".join(f"prompt {p} ({n} tokens)" for p, n in list(lengths.items())[:10])
    more = f" and {len(lengths) - 10} more" if len(lengths) > 10 else ""
    return (
        f"layer skip {label}: {shown}{more} too short for a skip position at position_stride {stride} "
        f"(needs at least {min_tokens(stride)} tokens); left out (weight 0 in the table), "
        f"{given - len(lengths)} of {given} prompts skipped on"
    )


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
        replacement = h_in + adapter.mlp_contribution(clean.runner.model, layer, h_in.unsqueeze(0))[0]
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
      future_max [K, L, L, P]  max_{τ≥t} ‖c_j[τ] − c̃_j[τ]‖ / ‖c_j[τ]‖ (index [kind, s, j, t]; 0 for j < s; on the
                               diagonal the skipped layer's own change: 0 for the correct skip)
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
            full.add(
                torch.stack([skipped_state(clean, s, last, kind, variant, r)[:last] for kind, r in zip(kinds, replacements)]), ids
            )
        for p, (lane, t) in enumerate(zip(lanes, positions)):
            if windowed:  # tokens >= t enter layer s+1 untouched
                states = clean.h[s + 1, t:].unsqueeze(0).expand(n_kinds, -1, -1).clone()
            else:
                states = torch.stack([skipped_state(clean, s, t, kind, variant, r) for kind, r in zip(kinds, replacements)])
                # The skipped layer's own contribution on future tokens (Δ(s, s)): zero for the correct
                # skip, which leaves tokens >= t alone; the published channel slice changes it.
                own = states[:, t - lane.start :] - clean.h[s, t:]
                record(p, "future", ids, norm(widen(c[s, t:] - own)) / c_norm[s, t:], s)
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


def table(
    results: list[dict[str, torch.Tensor]], positions: list[list[int]], kinds: list[str], variant: str, **ids: str
) -> pl.DataFrame:
    """Skip effects: metric ``future`` (layer = effect layer j, skipped_layer = s) and ``output``
    (layer = skipped layer), each with aggregation max (the paper) and mean, over positions and
    prompts.  Per-prompt rows aggregate that prompt's positions; a prompt without a skip position
    (too short) keeps its per-prompt rows with weight 0 and a null value, so the table records every
    prompt the analysis was given and which it used.

    Raises ValueError when no prompt has a skip position."""
    rows: dict[str, list[Any]] = {
        k: [] for k in ("metric", "kind", "aggregation", "skipped_layer", "layer", "prompt", "value", "weight")
    }

    def add(metric, kind, agg, s, j, p, value, weight):
        for key, v in zip(rows, (metric, kind, agg, s, j, p, value, weight)):
            rows[key].append(v)

    valid = [i for i, pos in enumerate(positions) if pos]
    if not valid:
        raise ValueError("no prompt is long enough for a skip position (need T > stride + 4 tokens)")
    n_layers = results[valid[0]]["output_max"].shape[1]
    for ki, kind in enumerate(kinds):
        for agg in ("max", "mean"):
            per_prompt_future = [results[i][f"future_{agg}"][ki] for i in valid]  # [L, L, P_i]
            per_prompt_output = [results[i][f"output_{agg}"][ki] for i in valid]  # [L, P_i]
            reduce = (lambda x: x.amax(-1)) if agg == "max" else (lambda x: x.mean(-1))
            all_future = reduce(torch.cat(per_prompt_future, -1))
            all_output = reduce(torch.cat(per_prompt_output, -1))
            for s in range(n_layers):
                for p in [i for i, pos in enumerate(positions) if not pos]:  # left out: weight 0, no value
                    add("output", kind, agg, s, s, p, None, 0.0)
                    for j in range(n_layers):
                        add("future", kind, agg, s, j, p, None, 0.0)
                for p in [None, *valid]:
                    out = all_output[s] if p is None else reduce(per_prompt_output[valid.index(p)])[s]
                    add(
                        "output",
                        kind,
                        agg,
                        s,
                        s,
                        p,
                        float(out),
                        float(len(positions[p]) if p is not None else sum(map(len, positions))),
                    )
                    fut = all_future[s] if p is None else reduce(per_prompt_future[valid.index(p)])[s]
                    for j in range(n_layers):  # the whole L × L map: 0 for j < s, Δ(s, s) on the diagonal
                        add(
                            "future",
                            kind,
                            agg,
                            s,
                            j,
                            p,
                            float(fut[j]),
                            float(len(positions[p]) if p is not None else sum(map(len, positions))),
                        )
    return frame(rows, analysis="layer_skip", variant=variant, **ids)


def run(subject: Subject, options: dict[str, Any]) -> pl.DataFrame:
    """The layer-skip job: every prompt of ``subject`` (``effdepth.subjects.Subject``) at up to
    ``positions_per_prompt`` skip positions, for every kind ``REGISTRY['layer_skip'].kinds(options)``.

    Prompts too short for a skip position (:func:`min_tokens`) are named in a warning and kept in
    the table with weight 0.  Raises ValueError when no prompt is long enough for a skip position."""
    from . import REGISTRY

    kinds = list(REGISTRY["layer_skip"].kinds(options))
    if kinds != list(options["kinds"]):
        subject.log.warning(
            "variant published: the public code skips whole layers only; not running kinds %s",
            [k for k in options["kinds"] if k not in kinds],
        )
    positions, results = [], []
    for i, prompt in enumerate(subject.progress("layer skip")):
        n_tokens = len(prompt["input_ids"])
        pos = skip_positions(n_tokens, options["positions_per_prompt"], options["position_stride"], options["seed"], i)
        positions.append(pos)
        result = {}
        if pos:
            result = layer_skip(
                subject.model,
                prompt["input_ids"],
                pos,
                tuple(kinds),
                options["variant"],
                batch_size_for(options, n_tokens),
                alive_for(options, n_tokens),
            )
            for key in ("future_max", "output_max"):  # [K, L, (L,) P]: the layer is axis 1
                subject.check(result[key], f"layer-skip {key}", i, layer_axis=1)
        results.append(result)
    short = {subject.prompts[i].get("id", i): len(subject.prompts[i]["input_ids"]) for i, pos in enumerate(positions) if not pos}
    label = f"{subject.model_name}/{subject.task}"
    if short and len(short) == len(positions):
        raise ValueError(short_prompts_message(label, short, options["position_stride"], len(positions)) + ": none remain")
    if short:
        subject.log.warning(short_prompts_message(label, short, options["position_stride"], len(positions)))
    return table(results, positions, kinds, options["variant"], **subject.ids)
