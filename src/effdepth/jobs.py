"""One function per workflow rule.  Rule scripts only unpack ``snakemake.*`` and call these, so every
step can also be run and debugged from Python without Snakemake.

Conventions shared by every job: a model arrives as its directory and ``model_options`` (the
model's config entry without the metadata keys, ``effdepth.config.MODEL_METADATA``); prompts as the
frozen prompts file and ``prompt_options`` (the task's ``n_prompts`` and ``max_tokens``); the
options of an extraction or analysis as one dict holding exactly the keys the job reads
(``effdepth.analyses.Analysis.job_options``); outputs as paths chosen by the rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from .log import get_logger
from .subjects import Subject

log = get_logger("effdepth.jobs")


def download_model(hf_id: str, revision: str, output: str, trust_remote_code: bool = False) -> None:
    """Snapshot ``hf_id`` at ``revision`` into the directory ``output`` (atomically: ``.partial`` first)."""
    from .models import download

    tmp = Path(output + ".partial")
    download(hf_id, revision, tmp, trust_remote_code)
    tmp.rename(output)


def convert_gguf(gguf: dict[str, Any], output: str) -> None:
    """Dequantise the GGUF file described by ``gguf`` (config ``models.<m>.gguf``) into a Hugging Face
    directory ``output``."""
    from .models import convert_gguf as convert

    convert(gguf, output)


def prepare_prompts(task: str, spec: dict[str, Any], output: str) -> None:
    """Build every candidate prompt of ``task`` (config ``tasks.<task>``) and freeze them to ``output``."""
    from .tasks import build_prompts, write_prompts

    frame = build_prompts(task, spec)
    digest = write_prompts(frame, output, task)
    log.info("task %s: %d candidate prompts frozen to %s (hash %s)", task, frame.height, output, digest)


def _provenance(model: str, model_options: dict[str, Any], task: str, digest: str) -> dict[str, str]:
    return {
        "model": model,
        "source": model_options.get("hf_id") or model_options.get("path") or json.dumps(model_options.get("gguf")),
        "revision": model_options.get("revision", "") if model_options.get("hf_id") else "local",
        "task": task,
        "prompts_hash": digest,
    }


def _load(
    model: str,
    task: str,
    model_dir: str,
    model_options: dict[str, Any],
    prompts: str,
    prompt_options: dict[str, Any],
    n: int,
) -> Subject:
    """The subject of a job: the model and tokenizer loaded from ``model_dir`` (checked and its
    decomposition proven by ``models.load_model``), checked against each other, and the first ``n``
    frozen prompts within the task's ``max_tokens`` (``effdepth.subjects.choose_prompts``)."""
    from .models import check_model_tokenizer, load_model
    from .subjects import choose_prompts
    from .tasks import read_prompts

    net, tokenizer = load_model(model_dir, model_options)
    check_model_tokenizer(net, tokenizer, model)
    frame, digest = read_prompts(prompts)
    chosen = choose_prompts(frame, net, tokenizer, model, n, prompt_options.get("max_tokens"))
    return Subject(model, task, net, tokenizer, chosen, prompts_hash=digest)


def extract(
    model: str,
    task: str,
    model_dir: str,
    model_options: dict[str, Any],
    prompts: str,
    prompt_options: dict[str, Any],
    options: dict[str, Any],
    output: str,
    fingerprint: str | None = None,
) -> None:
    """One extraction pass over the task's prompts (``effdepth.api.extract``) -> the cache ``output``.

    ``options``: batch_size, max_batch_tokens, store_activations (config ``extraction``) and top_k
    (``analyses.logit_lens.top_k``); ``fingerprint``: the model's fingerprint file
    (``effdepth.fingerprint``), recorded in the cache metadata."""
    from . import api
    from .extraction import write_stats
    from .fingerprint import read_fingerprint

    subject = _load(model, task, model_dir, model_options, prompts, prompt_options, int(prompt_options["n_prompts"]))
    log.info(
        "%s / %s: %d prompts, %d tokens", model, task, len(subject.prompts), sum(len(p["input_ids"]) for p in subject.prompts)
    )
    stats = api.extract(subject, **options)
    write_stats(
        stats,
        output,
        _provenance(model, model_options, task, subject.prompts_hash or ""),
        model_fingerprint=read_fingerprint(fingerprint) if fingerprint else None,
    )


def forward_tables(variants: dict[str, list[str]], stats: str, output: str, model: str, task: str) -> None:
    """The tables of every forward analysis and variant in ``variants`` (analysis -> variants) from one
    extraction cache, in one file (rows told apart by the ``analysis`` and ``variant`` columns).  Reads the cache as numpy arrays:
    neither torch nor transformers is imported, so the job costs little more than its Python start."""
    from .api import forward_table
    from .cache import CacheError, rebuild_hint
    from .stats import ExtractionStats
    from .tables import write_table

    read = ExtractionStats.from_cache(stats)
    if (read.model, read.task) != (model, task):
        raise CacheError(f"{stats} holds {read.model} / {read.task}, not {model} / {task}; {rebuild_hint(stats)}")
    tables = [forward_table(read, a, v) for a, vs in sorted(variants.items()) for v in vs]
    log.info("%s / %s: %s from the %s prompts of the cache", model, task, ", ".join(sorted(variants)), read.n_prompts)
    write_table(pl.concat(tables, how="diagonal_relaxed"), output)


def intervention(
    analysis: str,
    model: str,
    task: str,
    model_dir: str,
    model_options: dict[str, Any],
    prompts: str,
    prompt_options: dict[str, Any],
    options: dict[str, Any],
    outputs: dict[str, str],
    inputs: dict[str, str] | None = None,
) -> None:
    """Run the intervention analysis ``analysis`` on (model, task) (``effdepth.api.run``) and write
    ``outputs['table']`` and ``outputs['tokens']`` (the token strings of its prompts, to label
    layer × token maps).

    Prompts: the first ``options['n_prompts']`` (default: the task's ``n_prompts``) that fit the
    task's ``max_tokens``; ``inputs``: artefacts of other jobs by name (``baseline``: a cache path)."""
    from . import api
    from .tables import tokens_table, write_table

    n = int(options.get("n_prompts") or prompt_options["n_prompts"])
    subject = _load(model, task, model_dir, model_options, prompts, prompt_options, n)
    subject.inputs.update(inputs or {})
    table = api.run(subject, analysis, **options)
    used = table.filter(pl.col("prompt").is_not_null() & (pl.col("weight") > 0))["prompt"].n_unique()
    log.info(
        "%s %s/%s: used %d of the %d prompts it was given (%d requested)", analysis, model, task, used, len(subject.prompts), n
    )
    write_table(table, outputs["table"])
    tokens = [subject.tokenizer.convert_ids_to_tokens(p["input_ids"]) for p in subject.prompts]
    write_table(tokens_table(tokens, model=model, task=task), outputs["tokens"])


def aggregate(inputs: list[str], output: str, analysis: str) -> None:
    """The rows of ``analysis`` from every (model, task) table in ``inputs``, in their order, as one
    table (the forward analyses of a task share one input file); index columns (``EXTRA_SCHEMA``) no
    row of the analysis uses are dropped."""
    from .tables import EXTRA_SCHEMA, write_table

    frames = [pl.read_parquet(path).filter(pl.col("analysis") == analysis) for path in inputs]
    table = pl.concat(frames, how="diagonal_relaxed")
    unused = [c for c in EXTRA_SCHEMA if c in table.columns and table[c].null_count() == table.height]
    write_table(table.drop(unused), output)


def write_resolved_config(config: dict[str, Any], output: str) -> None:
    """The validated configuration, defaults filled in, as YAML."""
    import yaml

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(yaml.safe_dump(config, sort_keys=False))
