"""The analyses: one module each (algorithm, table, job entry point) and one registry.

A *forward* analysis reads the extraction cache of a (model, task) and builds its table with
``table(stats, variant, options)`` from the per-token statistics it declares (``statistics``).
An *intervention* analysis loads the model and runs ``run(subject, options)`` on the prompts of a
(model, task), returning its table.  The registry below is the one place that says which analyses
exist, what kind each is, which configuration keys its job reads and what it produces: the workflow's scheduling and parameters
(``workflow/rules/common.smk``), the figure planner (``effdepth.figures.registry``) and the tests
of the configuration schema all read it.

Adding an analysis: write ``effdepth/analyses/<name>.py``, add one ``Analysis`` line here, its
options to ``effdepth/schemas/config.schema.yaml``, and its figures to ``effdepth.figures``.
This module imports nothing heavy: Snakemake reads it while parsing the workflow.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

FORWARD = "forward"
INTERVENTION = "intervention"


@dataclass(frozen=True)
class Analysis:
    """One analysis.

    name          its key under ``analyses:`` in the config, its module and its table's name
    kind          FORWARD (reads the extraction cache) or INTERVENTION (loads the model)
    options       keys of ``analyses.<name>`` its job reads — exactly these reach the job, so an
                  edit of any other key reruns nothing (``variant`` is always read)
    kinds         for analyses with intervention kinds (layer skip): the option listing them and
                  the kinds its ``published`` variant is restricted to
    baseline      the option naming a task whose extraction cache the job also reads
    extraction    options of this analysis the extraction job reads (its statistics are computed there)
    published     whether a ``published`` variant exists (reproducing a defect of the public code,
                  docs/methods.md#published-variant); without one ``variant: published`` is refused
    needs_answer  whether it measures answer tokens, so every task it runs on needs a question/answer
                  split (a whole-text ``text_field`` task is refused while the config is validated)
    statistics    forward analyses: the extraction-cache tensors its table reads (``effdepth.extraction``)
    artefact      a per-model artefact another job makes: ``tuned_lens`` (the model's trained lens, from
                  the train_lens job or the model entry).  A forward analysis needs it (the extraction
                  of its tasks reads it); an intervention reads it on the tasks the tuned lens runs on
    artefact_options  keys of ``analyses.<name>`` the job making the artefact reads (train_lens)
    """

    name: str
    kind: str
    options: tuple[str, ...]
    kinds_option: str | None = None
    published_kinds: tuple[str, ...] | None = None
    baseline: str | None = None
    extraction: tuple[str, ...] = ()
    published: bool = True
    needs_answer: bool = False
    statistics: tuple[str, ...] = ()
    artefact: str | None = None
    artefact_options: tuple[str, ...] = ()

    def module(self) -> ModuleType:
        return importlib.import_module(f"effdepth.analyses.{self.name}")

    def job_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The validated ``analyses.<name>`` block narrowed to what the job reads."""
        return {key: options[key] for key in ("variant", *self.options) if key in options}

    def kinds(self, options: dict[str, Any]) -> tuple[str, ...]:
        """Intervention kinds the configured job produces (empty for analyses without kinds)."""
        if self.kinds_option is None:
            return ()
        if options.get("variant") == "published" and self.published_kinds is not None:
            return self.published_kinds
        return tuple(options[self.kinds_option])


# The options of analyses.tuned_lens the model's train_lens job reads (its table job reads ``options``).
LENS_TRAINING_OPTIONS = (
    "corpus",
    "steps",
    "token_budget",
    "seq_len",
    "batch_size",
    "heldout_chunks",
    "lr_scale",
    "momentum",
    "weight_decay",
    "clip",
    "seed",
    "eval_every_s",
)

_STAIRCASE = ("max_batch", "max_batch_tokens", "max_alive_tokens")

REGISTRY: dict[str, Analysis] = {
    a.name: a
    for a in (
        Analysis("relative_contribution", FORWARD, (), statistics=("layer_stats", "token_prompt")),
        Analysis(
            "logit_lens",
            FORWARD,
            ("settling_threshold",),
            extraction=("top_k",),
            statistics=("lens_kl", "lens_overlap", "lens_jsd", "token_prompt"),
        ),
        Analysis(
            "tuned_lens",
            FORWARD,
            ("settling_threshold",),
            published=False,
            statistics=("lens_kl.tuned", "lens_overlap.tuned", "lens_jsd.tuned", "token_prompt"),
            artefact="tuned_lens",
            artefact_options=LENS_TRAINING_OPTIONS,
        ),
        Analysis("block_influence", FORWARD, (), published=False, statistics=("layer_stats", "token_prompt", "resid_last")),
        Analysis(
            "layer_skip",
            INTERVENTION,
            ("positions_per_prompt", "n_prompts", "position_stride", "seed", "kinds", *_STAIRCASE),
            kinds_option="kinds",
            published_kinds=("layer",),
        ),
        Analysis("residual_erasure", INTERVENTION, ("n_prompts", *_STAIRCASE), baseline="baseline_task", needs_answer=True),
        Analysis(
            "integrated_gradients",
            INTERVENTION,
            ("rule", "steps", "min_steps", "max_steps", "n_prompts", "completeness_tolerance", "max_batch", "max_batch_tokens"),
            needs_answer=True,
        ),
        Analysis(
            "layer_deletion",
            INTERVENTION,
            ("n_prompts", "keep_last", "max_batch", "max_batch_tokens"),
            published=False,
            needs_answer=True,
            artefact="tuned_lens",
        ),
    )
}

FORWARD_ANALYSES = tuple(n for n, a in REGISTRY.items() if a.kind == FORWARD)
INTERVENTION_ANALYSES = tuple(n for n, a in REGISTRY.items() if a.kind == INTERVENTION)
