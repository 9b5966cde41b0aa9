"""What every analysis works on: one loaded model, its tokenizer and the chosen prompts of one task.

A :class:`Subject` is built either by a workflow job (``effdepth.jobs``: model loaded from its
directory by ``effdepth.models.load_model``) or from a model already in memory
(:meth:`Subject.from_model`, what ``effdepth.api`` uses).  Both paths run the same checks before
the first forward (docs/methods.md#block-shapes, #prompts and #numerics):

- the architecture has an adapter, the model is in eval mode and has no weight on the meta device;
- no weight is NaN or infinite (``numerics.check_weights``);
- the adapter's decomposition h_{l+1} = h_l + a_l + m_l is proven on a probe (``capture.verify_decomposition``);
- model and tokenizer fit together, and every prompt's ids have an embedding row (``effdepth.models``);
- prompts are assembled and round-trip checked as the workflow does (``tasks.select_prompts``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from .log import get_logger

log = get_logger("effdepth.subjects")


class ModelStateError(ValueError):
    """A model object is not in a state effdepth can measure (training mode, weights not loaded)."""


def check_model_object(model: Any, name: str, *, verify: bool = True) -> None:
    """The checks every model gets before its first measured forward, on the object as given.

    ``verify``: prove the adapter's decomposition on a short probe (``capture.verify_decomposition``;
    a few forwards of 24 tokens).  Never changes the model.

    Raises:
        ModelStateError: the model is in training mode (dropout would change every number: call
            ``model.eval()``) or holds parameters on the meta device (not loaded, or offloaded to
            disk by ``device_map``: load it with a device map that keeps every weight in memory).
        effdepth.adapters.UnsupportedArchitecture: no adapter for the architecture.
        effdepth.numerics.NonFiniteError: a NaN or infinite weight, named.
        effdepth.capture.DecompositionError: the adapter fails the proof.
    """
    from .adapters import adapter_for
    from .capture import verify_decomposition
    from .numerics import check_weights

    adapter_for(model)
    if model.training:
        raise ModelStateError(f"model {name!r} is in training mode (dropout is active); call model.eval() first")
    on_meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if on_meta:
        raise ModelStateError(
            f"model {name!r}: {len(on_meta)} parameters are on the meta device (e.g. {on_meta[0]}): they were never "
            "loaded or are offloaded to disk; load the model with a device_map that keeps every weight on a GPU or the CPU"
        )
    check_weights(model, name=name)
    if verify:
        with frozen(model):
            report = verify_decomposition(model)
        log.info("decomposition proven: %s", report.summary())


def check_single_device(model: Any, name: str, analysis: str) -> None:
    """Refuse an intervention on a model whose decoder layers sit on several devices.

    Interventions re-run decoder layers on intervened residuals (``capture.LayerRunner``), which
    assumes one device for every layer; the forward analyses (one extraction pass) support a split
    model.  Raises ModelStateError naming the devices and what to do."""
    from .adapters import adapter_for

    devices = sorted({str(p.device) for layer in adapter_for(model).decoder_layers(model) for p in layer.parameters()})
    if len(devices) > 1:
        raise ModelStateError(
            f"model {name!r}: {analysis} re-runs decoder layers, which are spread over {', '.join(devices)}; load the "
            "model with all decoder layers on one device (device_map={'': 0}, with load_in_8bit/4bit if it must shrink) "
            "for interventions, or run the forward analyses, which support a split model"
        )


@contextmanager
def frozen(model: Any) -> Iterator[Any]:
    """``model`` with ``requires_grad`` off on every parameter, restored on exit (also on error).

    Integrated gradients differentiate with respect to activations only: parameters that require
    grad would accumulate ``.grad`` on the user's model and cost a gradient buffer per weight."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


Prompts = Sequence[str] | Sequence[tuple[str, str]] | pl.DataFrame


def prompt_frame(prompts: Prompts | dict[str, Any], task: str = "prompts") -> pl.DataFrame:
    """Prompts in the frozen-prompts schema (id, question, answer, text; ``tasks.PROMPT_SCHEMA``).

    ``prompts``: texts (each a whole teacher-forced text: question = text, answer empty, so
    analyses that read the answer tokens have none), (question, answer) pairs joined as a task file's
    rows are (docs/methods.md#prompts), a task spec as in the config's ``tasks:`` (built by
    ``tasks.build_prompts``), or a frame with those columns.  Raises TaskError when empty or mixed."""
    from .tasks import PROMPT_SCHEMA, TaskError, build_prompts

    if isinstance(prompts, pl.DataFrame):
        return prompts
    if isinstance(prompts, dict):
        return build_prompts(task, prompts)
    if isinstance(prompts, str) or not len(prompts):
        raise TaskError("prompts: give a non-empty list of texts or (question, answer) pairs, or a task spec dict")
    if all(isinstance(p, str) for p in prompts):
        if not all(p.strip() for p in prompts):
            raise TaskError("prompts: a text is empty")
        n = len(prompts)
        return pl.DataFrame(
            {"id": list(range(n)), "question": list(prompts), "answer": [""] * n, "text": list(prompts)}, schema=PROMPT_SCHEMA
        )
    if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in prompts):
        spec = {"source": "fixed", "items": [{"question": q, "answer": a} for q, a in prompts]}
    else:
        raise TaskError("prompts: every item must be a text, or every item a (question, answer) pair")
    frame = build_prompts(task, spec)
    return frame.cast(PROMPT_SCHEMA)


def choose_prompts(
    frame: pl.DataFrame, model: Any, tokenizer: Any, name: str, n: int, max_tokens: int | None
) -> list[dict[str, Any]]:
    """The first ``n`` prompts of ``frame`` within ``max_tokens`` and the model's context, tokenised and
    checked against the model's embedding (``tasks.select_prompts``, ``models.check_prompt_ids``)."""
    from .models import check_prompt_ids, embedding_rows
    from .tasks import context_limit, select_prompts

    chosen = select_prompts(frame, tokenizer, n, max_tokens, context_limit(model.config))
    check_prompt_ids(chosen, embedding_rows(model), name)
    return chosen


@dataclass
class Subject:
    """One loaded model and the chosen prompts of one task: what every analysis runs on.

    ``prompts``: dicts with ``input_ids`` (list[int]), ``n_answer`` (answer tokens at the end) and
    ``id``; ``inputs``: artefacts of other jobs by name (``baseline``: the extraction statistics
    of the baseline task, an :class:`~effdepth.stats.ExtractionStats` or a cache path).
    """

    model_name: str
    task: str
    model: Any
    tokenizer: Any
    prompts: list[dict[str, Any]]
    inputs: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = log
    prompts_hash: str | None = None

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        prompts: Prompts | dict[str, Any],
        *,
        name: str | None = None,
        task: str = "prompts",
        n_prompts: int | None = None,
        max_tokens: int | None = None,
        top_k: int | None = None,
        verify: bool = True,
    ) -> Subject:
        """A subject from a model already in memory (any device, ``device_map`` or quantisation).

        ``prompts``: see :func:`prompt_frame`; ``name``: the model's name in the tables (default
        its ``name_or_path``); ``n_prompts``: keep the first n (default all) within ``max_tokens``;
        ``top_k``: checked against the vocabulary when the logit lens will run.  Runs
        :func:`check_model_object` and ``models.check_model_tokenizer``: the errors they raise,
        and ``tasks.TaskError`` for a prompt that fails assembly."""
        from .models import check_model_tokenizer
        from .tasks import prompts_hash

        name = name or str(getattr(model, "name_or_path", "") or type(model).__name__)
        check_model_object(model, name, verify=verify)
        check_model_tokenizer(model, tokenizer, name, top_k=top_k)
        frame = prompt_frame(prompts, task)
        chosen = choose_prompts(frame, model, tokenizer, name, n_prompts or frame.height, max_tokens)
        return cls(name, task, model, tokenizer, chosen, prompts_hash=prompts_hash(frame))

    @property
    def n_layers(self) -> int:
        from .adapters import adapter_for

        return len(adapter_for(self.model).decoder_layers(self.model))

    @property
    def ids(self) -> dict[str, Any]:
        """The identifying columns of every table row: model, task, n_layers."""
        return {"model": self.model_name, "task": self.task, "n_layers": self.n_layers}

    def progress(self, what: str) -> Iterator[dict[str, Any]]:
        """The prompts, logging progress (prompts and tokens done, time left) at least every 30 s."""
        from .log import progress

        sizes = [len(p["input_ids"]) for p in self.prompts]
        return progress(
            self.prompts, len(self.prompts), f"{what} {self.model_name}/{self.task}", self.log, sizes=sizes, unit="tokens"
        )

    def check(self, tensor: Any, what: str, prompt: int, layer_axis: int | None = 0) -> None:
        """Stop with model, task, prompt and layer named at the first non-finite value of a result."""
        from .numerics import check_finite

        check_finite(
            tensor,
            model=self.model_name,
            task=self.task,
            prompt=self.prompts[prompt].get("id", prompt),
            layer_axis=layer_axis,
            what=what,
        )
