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
    lens: str | None = None,
) -> None:
    """One extraction pass over the task's prompts (``effdepth.api.extract``) -> the cache ``output``.

    ``options``: batch_size, max_batch_tokens, store_activations (config ``extraction``) and top_k
    (``analyses.logit_lens.top_k``); ``fingerprint``: the model's fingerprint file
    (``effdepth.fingerprint``), recorded in the cache metadata; ``lens``: the model's tuned lens (a
    train_lens output, checked against the fingerprint, or the folder / file the model entry
    names), read in the same pass."""
    from . import api
    from .extraction import write_stats
    from .fingerprint import read_fingerprint

    subject = _load(model, task, model_dir, model_options, prompts, prompt_options, int(prompt_options["n_prompts"]))
    log.info(
        "%s / %s: %d prompts, %d tokens", model, task, len(subject.prompts), sum(len(p["input_ids"]) for p in subject.prompts)
    )
    tuned = None
    if lens:
        from .lenses.storage import open_tuned_lens

        checks = {"model_fingerprint": read_fingerprint(fingerprint)} if fingerprint and lens.endswith(".safetensors") else {}
        tuned = open_tuned_lens(lens, subject.model, **checks)
        log.info("%s: tuned lens %s read in the same pass", model, lens)
    stats = api.extract(subject, tuned_lens=tuned, **options)
    if lens:
        stats.metadata["tuned_lens"] = lens
    write_stats(
        stats,
        output,
        _provenance(model, model_options, task, subject.prompts_hash or ""),
        model_fingerprint=read_fingerprint(fingerprint) if fingerprint else None,
    )


def forward_tables(
    variants: dict[str, list[str]],
    stats: str,
    output: str,
    model: str,
    task: str,
    options: dict[str, dict[str, Any]] | None = None,
) -> None:
    """The tables of every forward analysis and variant in ``variants`` (analysis -> variants) from one
    extraction cache, in one file (rows told apart by the ``analysis`` and ``variant`` columns);
    ``options``: analysis -> the options its table reads (``Analysis.job_options``).  Reads only the
    tensors the analyses declare (``Analysis.statistics``), as numpy arrays: neither torch nor
    transformers is imported, so the job costs little more than its Python start."""
    from .analyses import REGISTRY
    from .api import forward_table
    from .cache import CacheError, rebuild_hint
    from .stats import ExtractionStats
    from .tables import write_table

    names = sorted({n for a in variants for n in REGISTRY[a].statistics})
    read = ExtractionStats.from_cache(stats, names)
    if (read.model, read.task) != (model, task):
        raise CacheError(f"{stats} holds {read.model} / {read.task}, not {model} / {task}; {rebuild_hint(stats)}")
    opts = options or {}
    tables = [
        forward_table(read, a, v, **{k: o for k, o in opts.get(a, {}).items() if k != "variant"})
        for a, vs in sorted(variants.items())
        for v in vs
    ]
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


def train_lens(
    model: str,
    model_dir: str,
    model_options: dict[str, Any],
    options: dict[str, Any],
    evaluation: list[str],
    outputs: dict[str, str],
    fingerprint: str | None = None,
) -> None:
    """Train the tuned lens of ``model`` (``effdepth.api.train_lens``) on the corpus of ``options``
    (the training options of ``analyses.tuned_lens``), refusing any overlap with the frozen prompts
    ``evaluation`` (every task the lens is evaluated on).  Writes ``outputs['lens']`` (safetensors
    with the model's fingerprint, the training data's identity, the recipe and the held-out KL),
    ``outputs['folder']`` (the same lens as a tuned-lens folder, for the tuned-lens package) and
    ``outputs['heldout']`` (per depth, the held-out KL(final ‖ lens) of the logit lens — the
    untrained lens — and of the trained one: model, lens, layer, kl, tokens, seconds)."""
    from . import api
    from .fingerprint import read_fingerprint
    from .lenses.corpus import corpus_identity
    from .lenses.storage import export_tuned_lens, save_tuned_lens
    from .models import check_model_tokenizer, load_model
    from .tables import write_table
    from .tasks import read_prompts

    net, tokenizer = load_model(model_dir, model_options)
    check_model_tokenizer(net, tokenizer, model)
    texts = [t for path in evaluation for t in read_prompts(path)[0]["text"].to_list()]
    subject = Subject(model, "corpus", net, tokenizer, [])
    log.info(
        "%s: training a tuned lens on %s, disjoint from %d evaluation prompts",
        model,
        corpus_identity(options.get("corpus")),
        len(texts),
    )
    result = api.train_lens(subject, evaluation=texts, **options)
    save_tuned_lens(
        result.lens,
        outputs["lens"],
        model_name=model,
        training_data=result.recipe["training_data"],
        model_fingerprint=read_fingerprint(fingerprint) if fingerprint else None,
        metadata={
            "recipe": result.recipe,
            "corpus": corpus_identity(options.get("corpus")),
            "heldout_before": [float(v) for v in result.heldout_before],
            "heldout_after": [float(v) for v in result.heldout_after],
            "seconds": result.seconds,
        },
    )
    export_tuned_lens(result.lens, outputs["folder"], base_model_name_or_path=model_options.get("hf_id") or model)
    n = len(result.heldout_before)
    rows = pl.DataFrame(
        {
            "model": [model] * 2 * n,
            "lens": ["logit"] * n + ["tuned"] * n,
            "layer": list(range(n)) * 2,
            "kl": [float(v) for v in (*result.heldout_before, *result.heldout_after)],
            "tokens": [result.tokens] * 2 * n,
            "seconds": [result.seconds] * 2 * n,
        },
        schema={
            "model": pl.Utf8,
            "lens": pl.Utf8,
            "layer": pl.Int32,
            "kl": pl.Float64,
            "tokens": pl.Int64,
            "seconds": pl.Float64,
        },
    )
    write_table(rows, outputs["heldout"])
    log.info(
        "%s: tuned lens trained (%d steps, %d tokens, %.0f s): held-out KL mean %.3f -> %.3f nats",
        model,
        result.steps,
        result.tokens,
        result.seconds,
        float(result.heldout_before.mean()),
        float(result.heldout_after.mean()),
    )


def concat_tables(inputs: list[str], output: str) -> None:
    """The rows of every table in ``inputs``, in order, as one table."""
    from .tables import write_table

    write_table(pl.concat([pl.read_parquet(p) for p in inputs], how="diagonal_relaxed"), output)


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
