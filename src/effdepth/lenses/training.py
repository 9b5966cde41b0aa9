"""Training tuned lenses (Belrose et al. 2023, arXiv 2303.08112; docs/methods.md#training-a-tuned-lens).

Loss: Σ_l mean over tokens of KL(p_final ‖ q_l), l = 0 … L-1, at the same position (each
translator only sees its own layer's term).  Reference recipe (``REFERENCE_RECIPE``): 250 steps ×
2^18 tokens, SGD with Nesterov momentum 0.9, learning rate lr_scale · (1 − momentum) with
lr_scale = 1, weight decay 1e-3, linear decay to 0 without warm-up, gradient-norm clip 1.0 over
all translators.  The model is frozen for the duration (``requires_grad`` off, restored after) and
never copied: each micro-batch is one forward without gradients (``capture.run_captured``), then one
backward per layer through the model's final norm and unembedding into that layer's translator.

Training data must never contain the prompts a lens is evaluated on: ``check_disjoint``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import Adapter
from ..capture import run_captured
from ..log import get_logger, progress
from .base import depth_chunks
from .tuned import TunedLens

log = get_logger("effdepth.lenses.training")

# Belrose et al. 2023 (the tuned-lens package's defaults): docs/methods.md#training-a-tuned-lens.
REFERENCE_RECIPE: dict[str, Any] = {
    "steps": 250,
    "token_budget": 250 * 2**18,
    "lr_scale": 1.0,
    "momentum": 0.9,
    "weight_decay": 1e-3,
    "clip": 1.0,
    "seq_len": 2048,
}


class TrainingDataOverlap(ValueError):
    """The training data contains an evaluation prompt (or an evaluation prompt contains a
    training text)."""


# ----------------------------------------------------------------------------- data


def chunk_texts(tokenizer, texts: Sequence[str], seq_len: int, *, separator_id: int | None = None) -> list[list[int]]:
    """Token id chunks of exactly ``seq_len`` tokens (the last, shorter remainder is dropped) from
    ``texts`` tokenised without special tokens and concatenated, each text followed by
    ``separator_id`` (default the tokenizer's EOS id, none if it has none) — the tuned-lens
    package's chunking.  Raises ValueError for seq_len < 2 or when the texts give no full chunk."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    sep = tokenizer.eos_token_id if separator_id is None else separator_id
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if sep is not None:
            stream.append(int(sep))
    chunks = [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    if not chunks:
        raise ValueError(f"the training texts give {len(stream)} tokens, fewer than one chunk of {seq_len}")
    return chunks


def training_data_identity(sequences: Sequence[Sequence[int]]) -> str:
    """``"sha256:<hex>"`` over the token ids of ``sequences`` (each as its length then its ids,
    little-endian int64): equal exactly when the training tokens are equal, so a changed corpus,
    chunking or tokenizer changes it."""
    h = hashlib.sha256()
    for seq in sequences:
        arr = np.asarray(seq, dtype="<i8")
        h.update(np.asarray([arr.size], dtype="<i8").tobytes())
        h.update(arr.tobytes())
    return "sha256:" + h.hexdigest()


def _normal(text: str) -> str:
    return " ".join(text.split())


def _as_key(item: str | Sequence[int]) -> tuple[str, str]:
    """(searchable string, how to show it): whitespace-normalised text, or token ids as characters."""
    if isinstance(item, str):
        norm = _normal(item)
        return norm, repr(norm[:80] + ("…" if len(norm) > 80 else ""))
    ids = [int(i) for i in item]
    return "".join(map(chr, ids)), f"token ids {ids[:12]}{' …' if len(ids) > 12 else ''}"


def check_disjoint(training: Sequence[str | Sequence[int]], evaluation: Sequence[str | Sequence[int]]) -> None:
    """Refuse training data that overlaps the evaluation prompts.

    training / evaluation: texts (compared after collapsing whitespace runs) or token id sequences
    (compared as contiguous id runs); both sequences of the same kind.  Overlap: an evaluation item
    contained in a training item, or a training item contained in an evaluation item (empty items
    are ignored).  Compare raw corpus documents against prompt texts: a prompt split across two
    token chunks is only found at the text level.  Raises TrainingDataOverlap naming the first
    overlapping evaluation prompt (its index and text) and the training item."""
    train = [_as_key(t) for t in training]
    for j, item in enumerate(evaluation):
        key, shown = _as_key(item)
        if not key:
            continue
        for i, (text, text_shown) in enumerate(train):
            if text and (key in text or text in key):
                relation = "contains" if key in text else "is contained in"
                raise TrainingDataOverlap(
                    f"training item {i} ({text_shown}) {relation} evaluation prompt {j}: {shown}. "
                    "A tuned lens must never be trained on the prompts it is evaluated on; remove them from the corpus."
                )


# ----------------------------------------------------------------------------- the loss


def _batch_kl(
    lens: TunedLens, sequences: list[list[int]], pad_id: int, layers: range, backward_scale: float | None
) -> tuple[torch.Tensor, int]:
    """Σ over tokens of KL(p_final ‖ q_l) per layer in ``layers`` ([len(layers)] float64) and the
    token count of one micro-batch; with ``backward_scale`` each layer's mean KL × scale is
    back-propagated into its translator right away (memory: the logits of one chunk of layers at a
    time, ``depth_chunks``; each layer's loss reaches only its own translator, so one backward of a
    chunk's summed losses gives every layer its own gradient)."""
    with torch.no_grad():
        capture, mask = run_captured(lens.model, lens.adapter, sequences, pad_id)
        final = capture.logits[mask]
        log_p = torch.log_softmax(final if final.dtype == torch.float64 else final.float(), dim=-1)
        p = log_p.exp()
    n = int(mask.sum())
    sums = []
    for chunk in depth_chunks(layers, n, final.shape[-1]):
        h = torch.stack([capture.resid_pre[layer][mask] for layer in chunk])  # [k, n, d]
        with torch.set_grad_enabled(backward_scale is not None):
            z = lens.read_depths(h, chunk)  # [k, n, V]
            log_q = torch.log_softmax(z if z.dtype == torch.float64 else z.float(), dim=-1)
            totals = (p * (log_p - log_q)).sum(-1).sum(-1)  # [k]: Σ over tokens of each layer's KL
            if backward_scale is not None:
                (totals.sum() / n * backward_scale).backward()
        sums.extend(float(t) for t in totals.detach())
    del capture
    return torch.tensor(sums, dtype=torch.float64), n


def lens_kl_per_layer(lens: TunedLens, sequences: Sequence[Sequence[int]], pad_id: int, *, batch_size: int = 8) -> np.ndarray:
    """Token-weighted mean KL(p_final ‖ q_l) in nats over every token of ``sequences``, per depth
    l = 0 … L-1 ([L] float64; the tuned lens's loss, the held-out metric).  Works for any lens."""
    totals = np.zeros(lens.n_layers)
    count = 0
    seqs = [list(s) for s in sequences]
    for i in range(0, len(seqs), batch_size):
        sums, n = _batch_kl(lens, seqs[i : i + batch_size], pad_id, range(lens.n_layers), None)
        totals += sums.numpy()
        count += n
    if count == 0:
        raise ValueError("no tokens to evaluate the lens on")
    return totals / count


# ----------------------------------------------------------------------------- training


@dataclass
class TrainingResult:
    """What ``train_tuned_lens`` returns.

    lens              the trained TunedLens
    heldout_before    [L] held-out KL(final ‖ lens) per depth before training (nats)
    heldout_after     [L] the same after training
    steps, tokens     optimiser steps taken and training tokens seen
    seconds           wall time of the training (evaluations included)
    history           one dict per held-out evaluation: step, tokens, seconds, heldout_mean, train_loss
    recipe            the settings used (JSON-able; stored with the lens)
    """

    lens: TunedLens
    heldout_before: np.ndarray
    heldout_after: np.ndarray
    steps: int
    tokens: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)


def train_tuned_lens(
    model: nn.Module,
    train: Sequence[Sequence[int]],
    heldout: Sequence[Sequence[int]],
    pad_id: int,
    *,
    lens: TunedLens | None = None,
    adapter: Adapter | None = None,
    steps: int = REFERENCE_RECIPE["steps"],
    token_budget: int = REFERENCE_RECIPE["token_budget"],
    batch_size: int = 8,
    lr_scale: float = REFERENCE_RECIPE["lr_scale"],
    momentum: float = REFERENCE_RECIPE["momentum"],
    weight_decay: float = REFERENCE_RECIPE["weight_decay"],
    clip: float | None = REFERENCE_RECIPE["clip"],
    seed: int = 0,
    eval_every_s: float = 30.0,
    log_every_s: float = 30.0,
    logger: logging.Logger | None = None,
) -> TrainingResult:
    """Train the translators of a tuned lens of ``model`` (module docstring: loss and recipe).

    train / heldout: token id sequences (``chunk_texts``), disjoint from every evaluation prompt
    (``check_disjoint``).  pad_id: padding id of the left-padded micro-batches.  lens: the lens to
    train further (default a fresh, zero TunedLens).  steps: optimiser steps; token_budget: training
    tokens in all, so each step accumulates gradients over micro-batches of up to ``batch_size``
    sequences until it has ⌈token_budget / steps⌉ tokens (sequences taken in a seeded shuffled
    order, cycling when the budget exceeds the data, with a warning).  Learning rate
    lr_scale · (1 − momentum), linear decay to 0; ``clip`` None disables clipping.

    The held-out KL per depth is evaluated and logged before the first step, after the first step
    that ends ``eval_every_s`` seconds or more after the last evaluation, and after the last step.
    Between evaluations, at the first step boundary ``log_every_s`` seconds after the previous such
    line, the loss of the latest step (measured before its update, so on tokens the lens has not
    been trained on until the data cycles) is logged with the latest held-out mean, and
    ``effdepth.log.progress`` reports the step count at least every ``log_every_s`` seconds even
    while one step runs longer.  A held-out evaluation costs a forward over the held-out tokens and
    L unembeddings per token: keep the held-out set small or ``eval_every_s`` long where steps are
    slow.

    Returns a TrainingResult.  Raises ValueError for steps < 1, token_budget < steps or empty
    data; TypeError when ``lens`` belongs to another model.
    """
    logger = logger or log
    if steps < 1 or token_budget < steps:
        raise ValueError(f"need steps ≥ 1 and token_budget ≥ steps, got steps={steps}, token_budget={token_budget}")
    train_seqs = [list(s) for s in train if len(s)]
    if not train_seqs or not any(len(s) for s in heldout):
        raise ValueError("training and held-out data must both hold tokens")
    lens = lens if lens is not None else TunedLens(model, adapter)
    if lens.model is not model:
        raise TypeError("the lens to train belongs to another model")
    per_step = math.ceil(token_budget / steps)
    recipe = {
        "steps": steps,
        "token_budget": token_budget,
        "tokens_per_step": per_step,
        "batch_size": batch_size,
        "lr_scale": lr_scale,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "clip": clip,
        "seed": seed,
        "loss": "sum over layers of mean KL(final || lens)",
    }
    available = sum(len(s) for s in train_seqs)
    if available < per_step * steps:
        logger.warning(
            "tuned lens: the training data holds %d tokens, the budget %d: it is cycled %.1f times",
            available,
            per_step * steps,
            per_step * steps / available,
        )
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    params = list(lens.parameters())
    optimizer = torch.optim.SGD(
        params, lr=lr_scale * (1 - momentum), momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / steps))
    order = list(range(len(train_seqs)))
    rng = random.Random(seed)
    rng.shuffle(order)
    cursor = 0
    started = time.monotonic()
    history: list[dict[str, float]] = []

    def evaluate(step: int, tokens: int, train_loss: float) -> np.ndarray:
        kl = lens_kl_per_layer(lens, heldout, pad_id, batch_size=batch_size)
        seconds = time.monotonic() - started
        history.append(
            {"step": step, "tokens": tokens, "seconds": seconds, "heldout_mean": float(kl.mean()), "train_loss": train_loss}
        )
        logger.info(
            "tuned lens: step %d/%d, %d tokens, %.0f s: held-out KL(final‖lens) mean %.4f nats, by depth %s",
            step,
            steps,
            tokens,
            seconds,
            kl.mean(),
            " ".join(f"{v:.3f}" for v in kl),
        )
        return kl

    try:
        before = evaluate(0, 0, float("nan"))
        last_eval = last_log = time.monotonic()
        tokens = 0
        loss = float("nan")
        after = before
        for step in progress(range(steps), steps, "tuned lens training steps", logger, every_s=log_every_s):
            optimizer.zero_grad(set_to_none=True)
            got, total = 0, torch.zeros(lens.n_layers, dtype=torch.float64)
            while got < per_step:
                batch = []
                while len(batch) < batch_size and got + sum(len(s) for s in batch) < per_step:
                    batch.append(train_seqs[order[cursor % len(order)]])
                    cursor += 1
                n = sum(len(s) for s in batch)
                sums, _ = _batch_kl(lens, batch, pad_id, range(lens.n_layers), n / per_step)
                total += sums
                got += n
            # gradients hold Σ_batches (n_b / per_step) · mean_b KL; rescale to the step's token mean
            if got != per_step:
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(per_step / got)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            schedule.step()
            tokens += got
            loss = float(total.sum() / got)
            if step == steps - 1:
                after = evaluate(step + 1, tokens, loss)
            elif time.monotonic() - last_eval >= eval_every_s:
                evaluate(step + 1, tokens, loss)
                last_eval = last_log = time.monotonic()
            elif time.monotonic() - last_log >= log_every_s:
                logger.info(
                    "tuned lens: step %d/%d, %d tokens: loss %.4f nats on the step's tokens before its update; "
                    "last held-out KL(final‖lens) mean %.4f nats (step %d)",
                    step + 1,
                    steps,
                    tokens,
                    loss,
                    history[-1]["heldout_mean"],
                    history[-1]["step"],
                )
                last_log = time.monotonic()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        for p in params:
            p.grad = None
    return TrainingResult(
        lens=lens,
        heldout_before=before,
        heldout_after=after,
        steps=steps,
        tokens=tokens,
        seconds=time.monotonic() - started,
        history=history,
        recipe=recipe,
    )


def train_tuned_lens_on_texts(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    heldout_texts: Sequence[str],
    evaluation_prompts: Sequence[str],
    *,
    seq_len: int = REFERENCE_RECIPE["seq_len"],
    heldout_chunks: int | None = None,
    pad_id: int | None = None,
    **options: Any,
) -> tuple[TrainingResult, str]:
    """The training job in one call: refuse overlap of ``texts`` or ``heldout_texts`` with
    ``evaluation_prompts`` (``check_disjoint``, on the raw texts), cut both corpora into
    ``seq_len``-token chunks (``chunk_texts``; at most ``heldout_chunks`` held-out chunks), and
    ``train_tuned_lens`` on them (``options``: its keyword arguments).

    pad_id: default ``effdepth.models.pad_token_id(tokenizer, embedding_rows(model))``.  Returns
    (TrainingResult, ``training_data_identity`` of the training chunks) — the identity to store
    with the lens (``storage.save_tuned_lens``).  Raises TrainingDataOverlap, and what
    ``chunk_texts`` / ``train_tuned_lens`` raise."""
    check_disjoint(texts, evaluation_prompts)
    check_disjoint(heldout_texts, evaluation_prompts)
    train = chunk_texts(tokenizer, texts, seq_len)
    heldout = chunk_texts(tokenizer, heldout_texts, seq_len)
    if heldout_chunks is not None:
        heldout = heldout[:heldout_chunks]
    if pad_id is None:
        from ..models import embedding_rows, pad_token_id

        pad_id = pad_token_id(tokenizer, embedding_rows(model))
    result = train_tuned_lens(model, train, heldout, pad_id, **options)
    return result, training_data_identity(train)
