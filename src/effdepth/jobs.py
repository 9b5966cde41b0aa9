"""One function per workflow rule.  Workflow scripts only unpack ``snakemake.*`` and call these,
so every step can also be run and debugged from Python without Snakemake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from .cache import load_tensors
from .log import get_logger

log = get_logger("effdepth.jobs")


def download_model(hf_id: str, revision: str, output: str, trust_remote_code: bool = False) -> None:
    from .models import download

    tmp = Path(output + ".partial")
    download(hf_id, revision, tmp, trust_remote_code)
    tmp.rename(output)


def convert_gguf(gguf: dict[str, Any], output: str) -> None:
    from .models import convert_gguf as convert

    convert(gguf, output)


def prepare_prompts(task: str, spec: dict[str, Any], output: str) -> None:
    from .tasks import build_prompts, write_prompts

    frame = build_prompts(task, spec)
    digest = write_prompts(frame, output, task)
    log.info("task %s: %d candidate prompts frozen to %s (hash %s)", task, frame.height, output, digest)


def _load(model_dir: str, entry: dict[str, Any]):
    from .models import load_model

    return load_model(model_dir, entry)


def _prompts(path: str, tokenizer, spec: dict[str, Any], n: int | None = None):
    from .tasks import read_prompts, select_prompts

    frame, digest = read_prompts(path)
    return select_prompts(frame, tokenizer, n or int(spec["n_prompts"]), spec.get("max_tokens")), digest


def _provenance(model: str, entry: dict[str, Any], task: str, digest: str) -> dict[str, str]:
    return {
        "model": model,
        "source": entry.get("hf_id") or entry.get("path") or json.dumps(entry.get("gguf")),
        "revision": entry.get("revision", "") if entry.get("hf_id") else "local",
        "task": task,
        "prompts_hash": digest,
    }


def extract(model: str, entry: dict[str, Any], model_dir: str, task: str, task_spec: dict[str, Any], prompts: str,
            output: str, batch_size: int, top_k: int, store_activations: bool, max_batch_tokens: int | None = None) -> None:
    from .extract import run_extraction

    net, tokenizer = _load(model_dir, entry)
    chosen, digest = _prompts(prompts, tokenizer, task_spec)
    log.info("%s / %s: %d prompts, %d tokens", model, task, len(chosen), sum(len(p["input_ids"]) for p in chosen))
    run_extraction(net, tokenizer, chosen, output, _provenance(model, entry, task, digest),
                   batch_size=batch_size, max_batch_tokens=max_batch_tokens, top_k=top_k, store_activations=store_activations)


def forward_table(analysis: str, stats: str, output: str, variant: str, model: str, task: str) -> None:
    from .tables import FORWARD_TABLES, write_table

    tensors, meta = load_tensors(stats)
    write_table(FORWARD_TABLES[analysis](tensors, meta, variant, model=model, task=task), output)


def batch_size_for(options: dict[str, Any], n_tokens: int) -> int:
    """Sequences per batched pass: ``max_batch``, lowered so sequences x tokens <= ``max_batch_tokens``."""
    return max(1, min(int(options["max_batch"]), int(options.get("max_batch_tokens", 1 << 30)) // max(n_tokens, 1)))


def alive_for(options: dict[str, Any], n_tokens: int) -> int:
    """Intervened sequences held at once by the staircase: ``max_alive_tokens`` // tokens."""
    return max(1, int(options.get("max_alive_tokens", 1 << 18)) // max(n_tokens, 1))


def _intervention_prompts(model_dir, entry, prompts, task_spec, n):
    net, tokenizer = _load(model_dir, entry)
    chosen, digest = _prompts(prompts, tokenizer, task_spec, n)
    return net, tokenizer, chosen, digest


def layer_skip(model: str, entry: dict[str, Any], model_dir: str, task: str, task_spec: dict[str, Any], prompts: str,
               output: str, options: dict[str, Any]) -> None:
    from .interventions import layer_skip as skip, skip_positions
    from .log import progress
    from .tables import layer_skip_table, write_table

    n_prompts = int(options.get("n_prompts") or task_spec["n_prompts"])
    net, _, chosen, _ = _intervention_prompts(model_dir, entry, prompts, task_spec, n_prompts)
    kinds = list(options["kinds"])
    if options["variant"] == "published" and kinds != ["layer"]:
        log.warning("variant published: the public code skips whole layers only; skipping kinds %s", [k for k in kinds if k != "layer"])
        kinds = ["layer"]
    positions, results = [], []
    for i, prompt in enumerate(progress(chosen, len(chosen), f"layer skip {model}/{task}", log)):
        pos = skip_positions(len(prompt["input_ids"]), options["positions_per_prompt"], options["position_stride"], options["seed"], i)
        positions.append(pos)
        n_tokens = len(prompt["input_ids"])
        results.append(
            skip(net, prompt["input_ids"], pos, tuple(kinds), options["variant"], batch_size_for(options, n_tokens), alive_for(options, n_tokens))
            if pos
            else {}
        )
    write_table(layer_skip_table(results, positions, kinds, options["variant"], model=model, task=task), output)


def residual_erasure(model: str, entry: dict[str, Any], model_dir: str, task: str, task_spec: dict[str, Any], prompts: str,
                     baseline_stats: str, output: str, options: dict[str, Any]) -> None:
    from .interventions import erasure_baseline, residual_erasure as erase
    from .log import progress
    from .tables import map_table, tokens_table, write_table

    net, tokenizer, chosen, _ = _intervention_prompts(model_dir, entry, prompts, task_spec, options["n_prompts"])
    tensors, _ = load_tensors(baseline_stats, ["resid_sum", "resid_count"])
    baseline = erasure_baseline(tensors["resid_sum"], tensors["resid_count"], options["variant"])
    maps = [erase(net, p["input_ids"], p["n_answer"], baseline, batch_size_for(options, len(p["input_ids"])), alive_for(options, len(p["input_ids"])))
            for p in progress(chosen, len(chosen), f"erasure {model}/{task}", log)]
    table = map_table(maps, "output_change", "residual_erasure", options["variant"], model=model, task=task)
    write_table(table, output)
    write_table(tokens_table([tokenizer.convert_ids_to_tokens(p["input_ids"]) for p in chosen], model=model, task=task),
                str(output).replace(".parquet", "_tokens.parquet"))


def integrated_gradients(model: str, entry: dict[str, Any], model_dir: str, task: str, task_spec: dict[str, Any],
                         prompts: str, output: str, options: dict[str, Any]) -> None:
    from .interventions import integrated_gradients as ig
    from .log import progress
    from .tables import frame, map_table, tokens_table, write_table

    net, tokenizer, chosen, _ = _intervention_prompts(model_dir, entry, prompts, task_spec, options["n_prompts"])
    maps, ends = [], []
    for p in progress(chosen, len(chosen), f"integrated gradients {model}/{task}", log):
        out = ig(net, p["input_ids"], p["n_answer"], options["steps"], options["variant"], batch_size_for(options, len(p["input_ids"])))
        maps.append(out["ig"])
        ends.append(out)
    table = map_table(maps, "attribution", "integrated_gradients", options["variant"], model=model, task=task)
    rows: dict[str, list] = {"metric": [], "layer": [], "prompt": [], "value": [], "weight": []}
    for p, out in enumerate(ends):
        for layer in range(len(out["f_input"])):
            for metric, value in (("f_input", out["f_input"][layer]), ("f_baseline", out["f_baseline"][layer]),
                                  ("attribution_sum", out["ig"][layer].sum())):
                for key, v in zip(rows, (metric, layer, p, float(value), 1.0)):
                    rows[key].append(v)
    table = pl.concat([table, frame(rows, analysis="integrated_gradients", variant=options["variant"], model=model, task=task)],
                      how="diagonal_relaxed")
    write_table(table, output)
    write_table(tokens_table([tokenizer.convert_ids_to_tokens(p["input_ids"]) for p in chosen], model=model, task=task),
                str(output).replace(".parquet", "_tokens.parquet"))


def aggregate(inputs: list[str], output: str) -> None:
    from .tables import write_table

    frames = [pl.read_parquet(path) for path in inputs]
    write_table(pl.concat(frames, how="diagonal_relaxed"), output)


def write_resolved_config(config: dict[str, Any], output: str) -> None:
    import yaml

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(yaml.safe_dump(config, sort_keys=False))

