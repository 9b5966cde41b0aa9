"""The extraction job: one pass over a task's prompts, reducing activations to per-token statistics.

What is cached per (model, task) — ``stats.safetensors``:

============================  ==========================  ===========================================
tensor                        shape                       meaning
============================  ==========================  ===========================================
layer_stats                   [N, L, 7] float32           per token and layer: metrics.LAYER_STATS
lens_kl, lens_overlap         [N, L+1] float32            logit lens of h_0 .. h_L against the output
lens_jsd                      [N, L+1] float32            JSD(output ‖ logit lens of h_l), bits
lens_{kl,overlap,jsd}.<lens>  [N, L+1] float32            the same through each further lens (``tuned``)
token_prompt, token_position  [N] int32                   prompt index and position of each token
resid_sum                     [P, L+1, d] float32         Σ over a prompt's tokens of h_l
resid_count                   [P] int32                   tokens per prompt
resid_last                    [P, L+1, d] float32         h_l at the prompt's last token
============================  ==========================  ===========================================

N = tokens over all prompts, P = prompts.  Every lens reads the residuals of the same forward pass
(docs/methods.md#lenses).  The footprint is ~(10L+3)·4 bytes per token (3(L+1)·4 more per further lens) plus
8(L+1)d bytes per prompt — about 2.3 KB/token + 2.7 MB/prompt for a 64-layer, d=5120 model —
instead of the 3·L·d·2 ≈ 2 MB/token a raw bf16 cache would take.  ``store_activations`` adds the
raw tensors (``act.{p}.resid_pre`` [L, T, d], ``attn_out``, ``mlp_out``, ``resid_final`` [T, d]).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .adapters import adapter_for
from .cache import save_tensors
from .capture import run_captured
from .lenses.base import depth_chunks
from .lenses.logit import LogitLens
from .log import get_logger, progress
from .metrics import final_distribution, layer_token_stats, lens_divergences
from .numerics import check_finite, check_layer_captures, check_tensors
from .stats import ExtractionStats
from .tables import LAYER_STATS

if TYPE_CHECKING:
    from .lenses import Lens

log = get_logger("effdepth.extraction")

LENS_STATS = ("kl", "overlap", "jsd")  # per lens: tensors lens_<stat>[.<lens>] [N, L+1]


def plan_batches(lengths: list[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Consecutive prompt indices in batches of at most ``batch_size`` prompts and, if set, at most
    ``max_batch_tokens`` prompts × longest prompt (left padding); a prompt over the cap runs alone."""
    batches: list[list[int]] = []
    for index, length in enumerate(lengths):
        if batches:
            current = batches[-1]
            longest = max(length, *(lengths[i] for i in current))
            if len(current) < batch_size and (max_batch_tokens is None or (len(current) + 1) * longest <= max_batch_tokens):
                current.append(index)
                continue
        batches.append([index])
    return batches


@torch.inference_mode()
def extract_stats(
    model,
    prompts: list[dict[str, Any]],
    pad_id: int,
    *,
    batch_size: int = 4,
    max_batch_tokens: int | None = None,
    top_k: int = 5,
    store_activations: bool = False,
    model_name: str | None = None,
    task: str | None = None,
    lenses: Mapping[str, Lens] | None = None,
) -> ExtractionStats:
    """Run ``prompts`` (dicts with ``input_ids`` and optionally ``id``) in left-padded batches and
    reduce to statistics: an :class:`~effdepth.stats.ExtractionStats` whose CPU tensors and shapes
    the module docstring lists, with ``n_layers``, ``d_model``, ``n_prompts``, ``top_k``, the prompt
    ids (``id``, else the index) and ``model_name`` / ``task`` (default "model" / "prompts").

    lenses: further lenses of ``model`` by name (e.g. ``{"tuned": TunedLens}``), read in the same
    pass as the logit lens: their tensors are ``lens_kl.<name>``, ``lens_overlap.<name>`` and
    ``lens_jsd.<name>``, and ``metadata["lenses"]`` lists them.  The name ``logit`` is the logit
    lens itself and is not allowed here.

    Batches hold up to ``batch_size`` consecutive prompts and, when ``max_batch_tokens`` is set, at
    most that many prompts × padded length (a longer prompt still runs, alone).

    Every prompt's captured activations (h_l, a_l, m_l over its non-padding tokens), the final
    logits and each logit-lens output are checked for NaN/±inf as they are produced; the first
    non-finite value raises ``numerics.NonFiniteError`` naming ``model_name``, ``task``, the prompt,
    layer and sublayer (docs/methods.md#numerics).  Raises ValueError when ``pad_id`` is not a row of
    the input embedding (``effdepth.models.pad_token_id`` chooses one that is)."""
    from .models import embedding_rows

    rows = embedding_rows(model)
    if not 0 <= pad_id < rows:
        raise ValueError(
            f"pad id {pad_id} is outside the input embedding (rows 0 … {rows - 1}); "
            "choose one with effdepth.models.pad_token_id(tokenizer, embedding_rows(model))"
        )
    adapter = adapter_for(model)
    further = dict(lenses or {})
    for name, lens in further.items():
        if name == "logit" or not name.isidentifier():
            raise ValueError(f"lens name {name!r}: the logit lens is always read; further lenses need another identifier")
        if lens.model is not model:
            raise ValueError(f"lens {name!r} belongs to another model than the one extracted")
    # every lens is one Lens (effdepth.lenses): the logit lens's tensors keep the paper's names
    readers = {"": (LogitLens(model, adapter), "logit lens of h_l")}
    readers.update({f".{n}": (lens, f"{n} lens of h_l") for n, lens in further.items()})
    lens_keys = [f"lens_{stat}{suffix}" for suffix in readers for stat in LENS_STATS]
    out: dict[str, list[torch.Tensor]] = {
        k: []
        for k in (
            "layer_stats",
            *lens_keys,
            "token_prompt",
            "token_position",
            "resid_sum",
            "resid_count",
            "resid_last",
        )
    }
    raw: dict[str, torch.Tensor] = {}
    batches = plan_batches([len(p["input_ids"]) for p in prompts], batch_size, max_batch_tokens)
    sizes = [sum(len(prompts[i]["input_ids"]) for i in b) for b in batches]
    label = f"extraction {model_name or 'model'}/{task or 'task'} batches"
    for first, batch in progress(
        [(b[0], [prompts[i] for i in b]) for b in batches], len(batches), label, log, sizes=sizes, unit="tokens"
    ):
        capture, mask = run_captured(model, adapter, [p["input_ids"] for p in batch], pad_id)
        final_logits = capture.logits
        # A model split over devices (device_map) leaves each layer's activations on its own device:
        # statistics are computed where the final norm and the unembedding are.
        here = final_logits.device
        resid = [r.to(here) for r in capture.residuals()]  # L+1 tensors [B, T, d]
        attn_out, mlp_out = [x.to(here) for x in capture.attn_out], [x.to(here) for x in capture.mlp_out]
        mask = mask.to(here)
        n_layers = len(capture.resid_pre)
        for row in range(len(batch)):
            index = first + row
            where = {"model": model_name, "task": task, "prompt": batch[row].get("id", index)}
            keep = mask[row]
            h = torch.stack([r[row, keep] for r in resid])  # [L+1, T_p, d]
            a = torch.stack([x[row, keep] for x in attn_out])  # [L, T_p, d]
            m = torch.stack([x[row, keep] for x in mlp_out])
            check_layer_captures(h, a, m, **where)
            out["layer_stats"].append(layer_token_stats(h[:-1], a, m, adapter.parallel).transpose(0, 1).cpu())  # [T_p, L, 7]
            z = final_logits[row, keep]
            check_finite(z, **where, layer=n_layers, sublayer="output logits")
            final = final_distribution(z, top_k)
            chunks = depth_chunks(range(n_layers + 1), len(z), z.shape[-1])  # several depths per unembedding
            for suffix, (read, what) in readers.items():
                per_chunk = []
                for layers in chunks:
                    logits = read.read_depths(h[layers[0] : layers[-1] + 1], layers)  # [k, T_p, V]
                    for i, layer in enumerate(layers):
                        check_finite(logits[i], **where, layer=layer, sublayer=what)
                    per_chunk.append(lens_divergences(logits, final, top_k))  # each [k, T_p]
                for stat, values in zip(LENS_STATS, zip(*per_chunk, strict=True), strict=True):
                    out[f"lens_{stat}{suffix}"].append(torch.cat(values).transpose(0, 1).cpu())  # [T_p, L+1]
            t_p = int(keep.sum())
            out["token_prompt"].append(torch.full((t_p,), index, dtype=torch.int32))
            out["token_position"].append(torch.arange(t_p, dtype=torch.int32))
            out["resid_sum"].append(h.float().sum(1).cpu())
            out["resid_count"].append(torch.tensor([t_p], dtype=torch.int32))
            out["resid_last"].append(h[:, -1].float().cpu())
            if store_activations:
                raw[f"act.{index}.resid_pre"] = h[:-1].cpu()
                raw[f"act.{index}.attn_out"] = a.cpu()
                raw[f"act.{index}.mlp_out"] = m.cpu()
                raw[f"act.{index}.resid_final"] = h[-1].cpu()
        del capture
    stacked = {
        "layer_stats": torch.cat(out["layer_stats"]),
        **{k: torch.cat(out[k]) for k in lens_keys},
        "token_prompt": torch.cat(out["token_prompt"]),
        "token_position": torch.cat(out["token_position"]),
        "resid_sum": torch.stack(out["resid_sum"]),
        "resid_count": torch.cat(out["resid_count"]),
        "resid_last": torch.stack(out["resid_last"]),
    }
    check_tensors(stacked, model=model_name, task=task, what="extracted statistic")
    return ExtractionStats(
        tensors={**stacked, **raw},
        n_layers=len(adapter.decoder_layers(model)),
        d_model=int(model.config.hidden_size),
        n_prompts=len(prompts),
        top_k=int(top_k),
        model=model_name or "model",
        task=task or "prompts",
        prompt_ids=tuple(str(p.get("id", i)) for i, p in enumerate(prompts)),
        metadata={
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "lenses": ",".join(["logit", *further]),
        },
    )


def run_extraction(
    model,
    tokenizer,
    prompts: list[dict[str, Any]],
    output: Path | str,
    metadata: dict[str, Any],
    *,
    batch_size: int = 4,
    max_batch_tokens: int | None = None,
    top_k: int = 5,
    store_activations: bool = False,
    model_fingerprint: str | None = None,
) -> ExtractionStats:
    """Extract statistics for ``prompts`` (:func:`extract_stats`) and write them to the cache
    ``output`` (:func:`write_stats`); returns them.

    metadata: provenance (``cache.REQUIRED_METADATA``; ``model`` and ``task`` also name the model and
    task in error messages).  Raises ``numerics.NonFiniteError`` for a non-finite activation (nothing
    is written then; non-finite weights are refused when the model is loaded, ``models.load_model``).
    """
    from .models import embedding_rows, pad_token_id

    stats = extract_stats(
        model,
        prompts,
        pad_token_id(tokenizer, embedding_rows(model)),
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        top_k=top_k,
        store_activations=store_activations,
        model_name=metadata.get("model"),
        task=metadata.get("task"),
    )
    source = getattr(model, "name_or_path", "") or ""
    write_stats(
        stats, output, metadata, model_fingerprint=model_fingerprint, model_dir=source if Path(source or "\0").is_dir() else None
    )
    return stats


def write_stats(
    stats: ExtractionStats,
    output: Path | str,
    metadata: dict[str, Any],
    *,
    model_fingerprint: str | None = None,
    model_dir: Path | str | None = None,
) -> None:
    """Write extraction statistics to the cache ``output`` with the provenance ``metadata``
    (``cache.REQUIRED_METADATA``; its prompts_hash is the statistics' own when they carry one).

    model_fingerprint: ``fingerprint.model_fingerprint`` of the model files; if None and
    ``model_dir`` is given, computed from that directory.  Raises ``cache.CacheError`` when
    provenance is missing."""
    if model_fingerprint is None and model_dir is not None:
        from .fingerprint import model_fingerprint as fingerprint_of

        model_fingerprint = fingerprint_of(model_dir)
    stats.prompts_hash = metadata.get("prompts_hash") or stats.prompts_hash
    provenance = {k: str(v) for k, v in metadata.items() if k not in ("model", "task", "prompts_hash")}
    stats.metadata = {**stats.metadata, **provenance, "layer_stats_columns": ",".join(LAYER_STATS)}
    save_tensors(output, stats.tensors, stats.cache_metadata(), model_fingerprint=model_fingerprint)
    log.info("wrote %s (%d tokens, %d prompts)", output, stats.tensors["token_prompt"].numel(), stats.n_prompts)
