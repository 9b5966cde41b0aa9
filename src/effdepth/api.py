"""effdepth on a model already in memory: every analysis, the effective-depth table and the charts.

The workflow's jobs call these same functions (``effdepth.jobs``: read files -> this API -> write
files), so a table made here equals the workflow's table for the same model and prompts, row for
row.  Options are the config's, with the same defaults (read from the one schema,
``effdepth.config.block_options``): ``extract(top_k=10)`` is ``analyses.logit_lens.top_k: 10``,
``run(s, "layer_skip", kinds=["layer"])`` is ``analyses.layer_skip.kinds: [layer]``.

Typical use (docs/methods.md for every definition)::

    import effdepth
    m = effdepth.measure(model, tokenizer, [("2 + 3 =", " 5"), ("7 + 8 =", " 15")], name="my-model")
    m.effective_depth            # polars: one row per estimator (ED, ratio, 95 % bootstrap interval)
    m.tables["logit_lens"]       # polars: the tidy table of the workflow's results/tables/logit_lens.parquet
    m.profile_chart()            # altair: every ED curve with its threshold and estimate

Shapes and units: tables follow ``effdepth.tables`` (one row per model, task, analysis, variant,
metric, layer and prompt; ``prompt`` null on the all-prompt aggregate); layer l is the residual
stream entering decoder layer l (``effdepth`` package docstring).

What the model may be: any ``AutoModelForCausalLM`` of a supported family
(``effdepth.adapters.supported_architectures()``), on CPU or one GPU, quantised with bitsandbytes
(its compute dtype sets the proof's tolerance), or — for the forward analyses — spread over GPUs
with ``device_map`` (token ids go to the input embedding's device, statistics are computed on the
output's); interventions re-run layers and refuse a model whose layers sit on several devices.
It must be in eval mode; its weights are never copied
or changed (``requires_grad`` is switched off during a call and restored after it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from .analyses import FORWARD, FORWARD_ANALYSES, REGISTRY
from .stats import ExtractionStats
from .subjects import Prompts, Subject, check_single_device, frozen

# what measure() runs by default: every forward analysis that needs no trained artefact
DEFAULT_ANALYSES = tuple(a for a in FORWARD_ANALYSES if REGISTRY[a].artefact is None)

__all__ = [
    "ExtractionStats",
    "Measurement",
    "Subject",
    "effective_depth",
    "extract",
    "forward_table",
    "measure",
    "options",
    "run",
    "subject",
    "train_lens",
]


def options(block: str, **given: Any) -> dict[str, Any]:
    """The options of config block ``block`` (``analyses.<name>``, ``extraction``, ``effective_depth``)
    as the workflow would use them: ``given`` validated, the schema's defaults filled in.
    Raises ``effdepth.config.ConfigError`` naming each bad key."""
    from .config import block_options

    return block_options(block, given)


# Check a model and tokenizer and assemble prompts into a Subject (``Subject.from_model``: the
# forms prompts take, the checks and the errors raised).
subject = Subject.from_model


def extract(subject: Subject, *, tuned_lens: Any = None, **given: Any) -> ExtractionStats:
    """One extraction pass over the subject's prompts: the per-token statistics every forward
    analysis reads (``effdepth.extraction``; tensors and shapes there).

    ``tuned_lens``: a ``TunedLens`` of the subject's model, or the path of a stored one (a
    tuned-lens folder or an effdepth ``.safetensors`` file, ``lenses.storage.open_tuned_lens``): read
    in the same pass, for the tuned_lens analysis.  ``given``: the ``extraction`` options
    (batch_size, max_batch_tokens, store_activations) and ``top_k`` (``analyses.logit_lens.top_k``),
    defaults from the schema.  Raises what ``extract.extract_stats`` raises
    (``numerics.NonFiniteError`` naming prompt and layer) and, for a stored lens, what
    ``open_tuned_lens`` raises (``LensMismatchError`` for a lens of another model)."""
    from .extraction import extract_stats
    from .models import check_top_k, embedding_rows, pad_token_id

    top_k = given.pop("top_k", None)
    top_k = options("analyses.logit_lens", **({"top_k": top_k} if top_k is not None else {}))["top_k"]
    opts = options("extraction", **given)
    check_top_k(subject.model, top_k, subject.model_name)  # the rest of the tokenizer check ran with the subject
    lenses = {}
    if tuned_lens is not None:
        from .lenses.storage import as_tuned_lens

        lenses["tuned"] = as_tuned_lens(tuned_lens, subject.model)
    with frozen(subject.model):
        stats = extract_stats(
            subject.model,
            subject.prompts,
            pad_token_id(subject.tokenizer, embedding_rows(subject.model)),
            batch_size=opts["batch_size"],
            max_batch_tokens=opts["max_batch_tokens"],
            top_k=top_k,
            store_activations=opts["store_activations"],
            model_name=subject.model_name,
            task=subject.task,
            lenses=lenses,
        )
    stats.prompts_hash = subject.prompts_hash
    return stats


def train_lens(
    subject: Subject,
    *,
    corpus: dict[str, Any] | tuple[Sequence[str], Sequence[str]] | None = None,
    evaluation: Iterable[str] = (),
    **given: Any,
) -> Any:
    """Train a tuned lens of the subject's model (docs/methods.md#training-a-tuned-lens): the
    translators of every depth on ``corpus`` — a ``analyses.tuned_lens.corpus`` spec (default: the
    Python documentation shipped with CPython) or (training texts, held-out texts) — never on the
    subject's prompts nor any text of ``evaluation`` (refused with ``TrainingDataOverlap``).

    ``given``: the training options of ``analyses.tuned_lens`` (steps, token_budget, seq_len,
    batch_size, heldout_chunks, lr_scale, momentum, weight_decay, clip, seed, eval_every_s; the
    reference recipe by default: 250 steps × 2^18 tokens, which is hours on a CPU — give a small
    token_budget there).  Returns ``effdepth.lenses.training.TrainingResult`` (``.lens`` to pass to
    :func:`extract` / :func:`measure`; held-out KL per depth before, i.e. the logit lens's, and
    after).  Raises ``ConfigError`` for a bad option, ``CorpusError``, and what
    ``train_tuned_lens_on_texts`` raises."""
    from .lenses.corpus import corpus_texts
    from .lenses.training import train_tuned_lens_on_texts
    from .models import embedding_rows, pad_token_id

    if isinstance(corpus, tuple):
        opts = options("analyses.tuned_lens", **given)
        texts, heldout = list(corpus[0]), list(corpus[1])
    else:
        opts = options("analyses.tuned_lens", **given, **({"corpus": corpus} if corpus else {}))
        texts, heldout = corpus_texts(opts["corpus"])
    decode = subject.tokenizer.decode
    prompts = [decode(p["input_ids"], skip_special_tokens=True) for p in subject.prompts] + list(evaluation)
    train = {k: opts[k] for k in REGISTRY["tuned_lens"].artefact_options if k not in ("corpus", "seq_len", "heldout_chunks")}
    result, identity = train_tuned_lens_on_texts(
        subject.model,
        subject.tokenizer,
        texts,
        heldout,
        prompts,
        seq_len=opts["seq_len"],
        heldout_chunks=opts["heldout_chunks"],
        pad_id=pad_token_id(subject.tokenizer, embedding_rows(subject.model)),
        **train,
    )
    result.recipe["training_data"] = identity
    return result


def forward_table(stats: ExtractionStats, analysis: str, variant: str = "correct", **given: Any) -> pl.DataFrame:
    """The table of forward analysis ``analysis`` (relative_contribution, logit_lens, tuned_lens,
    block_influence) under ``variant`` from extraction statistics; ``given``: its other
    ``analyses.<analysis>`` options (``settling_threshold``), defaults from the schema.  Raises
    KeyError for an analysis that is not a forward one or whose statistics the extraction did not
    compute (a tuned lens needs ``extract(subject, tuned_lens=...)``), ``ConfigError`` for a bad
    option or a variant it does not have."""
    if analysis not in FORWARD_ANALYSES:
        raise KeyError(f"{analysis!r} is not a forward analysis (forward analyses: {', '.join(FORWARD_ANALYSES)})")
    spec = REGISTRY[analysis]
    opts = spec.job_options(options(f"analyses.{analysis}", **given, variant=variant))
    missing = [name for name in spec.statistics if name not in stats.tensors]
    if missing:
        hint = " (extract with a tuned lens: effdepth.extract(subject, tuned_lens=...))" if spec.artefact else ""
        raise KeyError(f"{analysis} reads {', '.join(missing)}, which these extraction statistics lack{hint}")
    return spec.module().table(stats, variant, opts)


def run(
    target: Subject | ExtractionStats,
    analysis: str,
    *,
    baseline: ExtractionStats | None = None,
    tuned_lens: Any = None,
    **given: Any,
) -> pl.DataFrame:
    """Analysis ``analysis`` under the options ``given`` (``analyses.<analysis>`` keys, defaults from
    the schema; ``variant`` included), as the workflow's job computes it.

    ``target``: extraction statistics for a forward analysis, a subject for an intervention (a
    subject also serves a forward analysis: it is extracted first).  ``baseline``: for
    residual_erasure, the extraction statistics of the baseline task (the mean residual it erases
    with); None erases with the subject's own prompts' statistics.  Intervention options that name
    prompts (``n_prompts``) take the first prompts of the subject.

    Returns the analysis's tidy table.  Raises ``ConfigError`` for a bad option, KeyError for an
    unknown analysis, TypeError when ``target`` is statistics and the analysis is an intervention."""
    if analysis not in REGISTRY:
        raise KeyError(f"unknown analysis {analysis!r} (analyses: {', '.join(REGISTRY)})")
    spec = REGISTRY[analysis]
    opts = options(f"analyses.{analysis}", **given)
    if spec.kind == FORWARD:
        stats = target if isinstance(target, ExtractionStats) else extract(target, tuned_lens=tuned_lens)
        table_opts = {k: v for k, v in spec.job_options(opts).items() if k != "variant"}
        return pl.concat([forward_table(stats, analysis, v, **table_opts) for v in opts["variants"]], how="diagonal_relaxed")
    if not isinstance(target, Subject):
        raise TypeError(f"{analysis} is an intervention: give it a Subject (effdepth.subject(model, tokenizer, prompts))")
    check_single_device(target.model, target.model_name, analysis)
    job = spec.job_options(opts)
    n = job.get("n_prompts")
    chosen = replace(target, prompts=target.prompts[:n] if n else target.prompts, inputs=dict(target.inputs))
    if spec.artefact == "tuned_lens" and tuned_lens is not None:
        chosen.inputs["tuned_lens"] = tuned_lens
    if spec.baseline and baseline is not None:
        chosen.inputs["baseline"] = baseline
    elif spec.baseline and "baseline" not in chosen.inputs:
        chosen.inputs["baseline"] = extract(target)
    tables = []
    for variant in opts["variants"]:
        with frozen(chosen.model):
            tables.append(spec.module().run(chosen, {**job, "variant": variant}))
    return pl.concat(tables, how="diagonal_relaxed")


def effective_depth(tables: dict[str, pl.DataFrame], **given: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(effective-depth table, threshold-sweep table) from analysis tables keyed by analysis name
    (any of relative_contribution, logit_lens, layer_skip), under the ``effective_depth`` options
    (kl_threshold, overlap_threshold, depth_fraction, bootstrap, seed, sweep; defaults from the schema).  Columns:
    ``effdepth.depth.SCHEMA``; definitions: docs/methods.md#effective-depth."""
    from .depth import effective_depth as estimate

    opts = options("effective_depth", **given)
    present = {a: t for a, t in tables.items() if t.height}
    return estimate(
        present,
        kl_threshold=opts["kl_threshold"],
        overlap_threshold=opts["overlap_threshold"],
        bootstrap=opts["bootstrap"],
        seed=opts["seed"],
        sweep=opts.get("sweep"),
        depth_fraction=opts["depth_fraction"],
    )


@dataclass
class Measurement:
    """What :func:`measure` returns: every table it made and the effective depth read from them."""

    subject: Subject
    stats: ExtractionStats
    tables: dict[str, pl.DataFrame]
    effective_depth: pl.DataFrame
    sweep: pl.DataFrame
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def context(self) -> dict[str, Any]:
        """The figure context of these tables (``effdepth.figures.figure_context``)."""
        from .figures import figure_context

        config = {
            "models": {self.subject.model_name: {}},
            "tasks": {self.subject.task: {}},
            "analyses": {a: {**o, "tasks": [self.subject.task]} for a, o in self.options.items() if a in REGISTRY},
            "effective_depth": self.options.get("effective_depth", {}),
            "figures": options("figures"),
        }
        return figure_context(config)

    def figure(self, name: str) -> Any:
        """Figure ``name`` of the workflow (``effdepth.figures.FIGURE_BY_NAME``, or
        ``effdepth.figures.PROFILE``: this model's profile) as an altair chart (displays in Jupyter).
        Raises KeyError when a table it needs was not made."""
        from .figures import PROFILE
        from .figures.output import build_chart

        model = self.subject.model_name if name == PROFILE else None
        return build_chart(name, {**self.tables, "effective_depth": self.effective_depth}, self.context(), model=model)

    def profile_chart(self) -> Any:
        """The model's effective-depth profile page: every curve an estimator reads, its threshold,
        the estimates and their intervals (altair)."""
        from .figures import PROFILE

        return self.figure(PROFILE)


def measure(
    model: Any,
    tokenizer: Any,
    prompts: Prompts | dict[str, Any] | Subject,
    *,
    analyses: Iterable[str] | dict[str, dict[str, Any]] = DEFAULT_ANALYSES,
    name: str | None = None,
    task: str = "prompts",
    n_prompts: int | None = None,
    max_tokens: int | None = None,
    extraction: dict[str, Any] | None = None,
    depth: dict[str, Any] | None = None,
    tuned_lens: Any = None,
) -> Measurement:
    """The workflow's pipeline for one model and one prompt set, in memory: checks, one extraction
    pass, every analysis of ``analyses`` (names, or name -> options as under ``analyses:`` in the
    config), and the effective-depth table with bootstrap intervals.

    ``prompts``: see :func:`subject` (or a ready Subject, whose model and tokenizer are used);
    ``extraction`` / ``depth``: the ``extraction`` and ``effective_depth`` options; ``tuned_lens``: a
    lens or stored lens for the tuned_lens analysis (:func:`extract`; ``effdepth.train_lens`` trains
    one).  Interventions
    are costly (layer skip and IG: many forwards per prompt); their ``n_prompts`` default is the
    config's.  Raises what :func:`subject`, :func:`extract` and :func:`run` raise."""
    chosen = (
        prompts
        if isinstance(prompts, Subject)
        else subject(model, tokenizer, prompts, name=name, task=task, n_prompts=n_prompts, max_tokens=max_tokens)
    )
    wanted = dict(analyses) if isinstance(analyses, dict) else {a: {} for a in _names(analyses)}
    given = {a: dict(o or {}) for a, o in wanted.items()}
    lens = given.get("logit_lens", {})
    if "tuned_lens" in given and tuned_lens is None:
        raise ValueError("the tuned_lens analysis needs a lens: measure(..., tuned_lens=effdepth.train_lens(...) or a path)")
    stats = extract(chosen, tuned_lens=tuned_lens, **(extraction or {}), **({"top_k": lens["top_k"]} if "top_k" in lens else {}))
    tables = {
        a: run(stats if REGISTRY[a].kind == FORWARD else chosen, a, baseline=stats, tuned_lens=tuned_lens, **o)
        for a, o in given.items()
    }
    ed, sweep = effective_depth(tables, **(depth or {}))
    resolved = {a: options(f"analyses.{a}", **o) for a, o in given.items()}
    resolved["effective_depth"] = options("effective_depth", **(depth or {}))
    return Measurement(chosen, stats, tables, ed, sweep, resolved)


def _names(analyses: Iterable[str]) -> Sequence[str]:
    names = [analyses] if isinstance(analyses, str) else list(analyses)
    unknown = [a for a in names if a not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown analyses {unknown} (analyses: {', '.join(REGISTRY)})")
    return names
