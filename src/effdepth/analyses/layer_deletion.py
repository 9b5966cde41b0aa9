"""Layer deletion: does the model still predict its answer when the layers after a cut are removed?
A direct check of every effective-depth estimate (docs/methods.md#layer-deletion).

For every cut k = 0 … L (k leading layers kept) two pruned models are scored on the teacher-forced
answer tokens against the full model:

* early exit — the model's read-out (final norm + unembedding, the logit lens) applied to h_k: layers
  k … L−1 deleted; with a tuned lens (docs/methods.md#lenses) also **tuned exit**, the read-out of
  the translated h_k + A_k h_k + b_k;
* block deletion (Gromov et al. 2024, arXiv 2403.17887) — layers k … L−1−``keep_last`` deleted
  (identity), the last ``keep_last`` layers run on h_k.  Cuts k ≥ L − ``keep_last`` delete nothing.

Both reuse the clean residuals of one forward pass: early exit needs only the read-out of h_k, block
deletion runs the ``keep_last`` last layers on all cuts' h_k in batched calls.  The one-forward-per-cut
reference with identity hooks is ``effdepth.reference.reference_deletion``.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import torch
from torch import nn

from ..staircase import answer_positions, batch_size_for, clean_run, logit_rows
from ..subjects import Subject
from ..tables import frame

MODES = ("exit", "deletion")  # and "tuned_exit" when a tuned lens is given


def _score(logits: torch.Tensor, gold: torch.Tensor, full_top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL of ``gold`` [n] and top-1 agreement with ``full_top`` [n] of ``logits`` [K, n, V] -> two [K, n] float64."""
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(-1, gold.view(1, -1, 1).expand(logits.shape[0], -1, 1)).squeeze(-1)
    agree = logits.argmax(-1) == full_top
    return nll.double().cpu(), agree.double().cpu()


@torch.inference_mode()
def layer_deletion(
    model: nn.Module, input_ids: list[int], n_answer: int, keep_last: int = 1, max_batch: int = 64, lens: Any = None
) -> dict[str, torch.Tensor]:
    """Early exit and block deletion after every cut k = 0 … L of one teacher-forced prompt.

    ``input_ids``: the prompt (question then ``n_answer`` answer tokens); positions
    T − n_a − 1 … T − 2 predict the answer tokens (``effdepth.staircase.answer_positions``).
    ``keep_last``: layers at the end that block deletion keeps (0: block deletion = early exit).
    ``max_batch``: cuts per batched layer call.  ``lens``: a tuned lens of ``model``
    (``effdepth.lenses.TunedLens``), adding the tuned exit.

    Returns float64 tensors on the CPU, per cut k (row) and answer position (column):
      exit_nll, deletion_nll [L+1, n_a]      −log p̃(y_i | i) in nats
      exit_top1, deletion_top1 [L+1, n_a]    1 where argmax p̃(· | i) equals the full model's argmax
      tuned_exit_nll, tuned_exit_top1        the same for the tuned exit (with ``lens`` only)
      full_nll [n_a]                         −log p(y_i | i) of the full model
    Row k = L (nothing deleted) equals the full model.  Raises ValueError without answer tokens or
    for a negative ``keep_last``.
    """
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    clean = clean_run(model, input_ids)
    runner, n_layers = clean.runner, clean.runner.n_layers
    device = clean.h.device
    answer = answer_positions(clean.h.shape[1], n_answer).to(device)
    gold = torch.tensor(input_ids, device=device)[answer + 1]
    full_logits = clean.logits[answer]
    full_top = full_logits.argmax(-1)
    full_nll, _ = _score(full_logits.unsqueeze(0), gold, full_top)
    step = logit_rows(len(answer), full_logits.shape[-1], max_batch)
    shape = (n_layers + 1, len(answer))
    modes = (*MODES, "tuned_exit") if lens is not None else MODES
    out = {f"{mode}_{what}": torch.empty(shape, dtype=torch.float64) for mode in modes for what in ("nll", "top1")}

    def score(mode: str, cuts: range, finals: torch.Tensor) -> None:
        for i in range(0, len(cuts), step):
            nll, top1 = _score(runner.logits(finals[i : i + step]), gold, full_top)
            out[f"{mode}_nll"][cuts.start + i : cuts.start + i + len(nll)] = nll
            out[f"{mode}_top1"][cuts.start + i : cuts.start + i + len(top1)] = top1

    # early exit: the read-out of h_k at the answer positions
    score("exit", range(n_layers + 1), clean.h[:, answer])
    if lens is not None:  # the tuned exit: the read-out of the translated h_k, one depth at a time
        for k in range(n_layers + 1):
            nll, top1 = _score(lens(clean.h[k, answer], k).unsqueeze(0), gold, full_top)
            out["tuned_exit_nll"][k], out["tuned_exit_top1"][k] = nll[0], top1[0]
    # block deletion: h_{L-keep_last} := h_k, then the last keep_last layers; later cuts delete nothing
    first_kept = max(0, n_layers - keep_last)
    cuts = range(first_kept)
    for i in range(0, len(cuts), max_batch):
        final = runner.run(clean.h[cuts.start + i : min(cuts.stop, cuts.start + i + max_batch)], first_kept)
        score("deletion", range(cuts.start + i, cuts.start + i + final.shape[0]), final[:, answer])
    out["deletion_nll"][first_kept:] = full_nll
    out["deletion_top1"][first_kept:] = 1.0
    out["full_nll"] = full_nll[0]
    return out


def table(results: list[dict[str, torch.Tensor]], variant: str, **ids: Any) -> pl.DataFrame:
    """Metrics exit_loss, exit_agreement, deletion_loss, deletion_agreement (and tuned_exit_loss,
    tuned_exit_agreement when a tuned lens was given; layer = cut k = 0 … L) and full_loss (layer = L):
    means over answer positions — per prompt (weight = its answer tokens) and over all answer tokens
    of all prompts (prompt null, weight = their total)."""
    rows: dict[str, list[Any]] = {k: [] for k in ("metric", "layer", "prompt", "value", "weight")}

    def add(metric: str, layer: int, prompt: int | None, value: float, weight: float) -> None:
        for key, v in zip(rows, (metric, layer, prompt, value, weight)):
            rows[key].append(v)

    if not results:
        raise ValueError("no prompt to score")
    n_layers = results[0]["exit_nll"].shape[0] - 1
    metrics = {
        "exit_loss": "exit_nll",
        "exit_agreement": "exit_top1",
        "deletion_loss": "deletion_nll",
        "deletion_agreement": "deletion_top1",
    }
    if "tuned_exit_nll" in results[0]:
        metrics |= {"tuned_exit_loss": "tuned_exit_nll", "tuned_exit_agreement": "tuned_exit_top1"}
    total = float(sum(r["full_nll"].numel() for r in results))
    for metric, key in metrics.items():
        everything = torch.cat([r[key] for r in results], -1)  # [L+1, Σ n_a]
        for k in range(n_layers + 1):
            add(metric, k, None, float(everything[k].mean()), total)
            for p, r in enumerate(results):
                add(metric, k, p, float(r[key][k].mean()), float(r[key].shape[-1]))
    add("full_loss", n_layers, None, float(torch.cat([r["full_nll"] for r in results]).mean()), total)
    for p, r in enumerate(results):
        add("full_loss", n_layers, p, float(r["full_nll"].mean()), float(r["full_nll"].numel()))
    return frame(rows, analysis="layer_deletion", variant=variant, **ids)


def run(subject: Subject, options: dict[str, Any]) -> pl.DataFrame:
    """The layer-deletion job: early exit and block deletion (``options['keep_last']`` layers kept) after
    every cut, on every prompt of ``subject`` (``effdepth.subjects.Subject``).  Both variants compute the
    same: the analysis has no published counterpart.  ``subject.inputs["tuned_lens"]`` (a TunedLens
    or a stored lens's path), when present, adds the tuned exit.  Raises ValueError for a prompt
    without answer tokens; stops (``Subject.check``) at a non-finite loss."""
    lens = subject.inputs.get("tuned_lens")
    if lens is not None:
        from ..lenses.storage import as_tuned_lens

        lens = as_tuned_lens(lens, subject.model)
    results = []
    for p, prompt in enumerate(subject.progress("layer deletion")):
        ids = prompt["input_ids"]
        result = layer_deletion(
            subject.model, ids, prompt["n_answer"], options["keep_last"], batch_size_for(options, len(ids)), lens
        )
        for key in [k for k in ("exit_nll", "deletion_nll", "tuned_exit_nll") if k in result]:
            subject.check(result[key], f"layer-deletion {key}", p)
        results.append(result)
    return table(results, options["variant"], **subject.ids)
