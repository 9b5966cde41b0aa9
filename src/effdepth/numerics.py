"""Numeric guards: no NaN or ±inf may reach a cache, a table, an effective depth or a figure.

A non-finite activation makes every statistic computed from it meaningless, and some of them
silently so: the top-k of NaN logits is well defined (NaN sorts as the largest value), so a logit
lens of NaN against NaN "agrees" perfectly.  The guards therefore stop a job at the first
non-finite value and say where it appeared (model, task, prompt, layer, sublayer) and what usually
causes it — float16 overflows past ±65504 on many recent models (docs/methods.md#numerics).

The fast path is one ``torch.isfinite(x).all()`` per tensor (a single reduction on the tensor's
device); the first offending element is only located once a check has failed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger("effdepth.numerics")

FLOAT16_MAX = float(torch.finfo(torch.float16).max)  # 65504


class NumericalError(ArithmeticError):
    """Base of the numeric failures effdepth detects."""


class NonFiniteError(NumericalError):
    """A NaN or ±inf value where effdepth needs finite numbers.

    Attributes name the first offending value: ``model``, ``task``, ``prompt``, ``layer``,
    ``sublayer``, ``what``, ``index`` (its index in the checked tensor) and ``value`` (nan/inf/-inf).
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        task: str | None = None,
        prompt: Any = None,
        layer: int | None = None,
        sublayer: str | None = None,
        what: str = "",
        index: tuple[int, ...] | None = None,
        value: float | None = None,
    ) -> None:
        super().__init__(message)
        self.model, self.task, self.prompt = model, task, prompt
        self.layer, self.sublayer, self.what = layer, sublayer, what
        self.index, self.value = index, value


def dtype_hint(dtype: torch.dtype | str | None) -> str:
    """Advice for a non-finite activation computed in ``dtype``."""
    name = str(dtype).replace("torch.", "") if dtype is not None else ""
    if name == "float16":
        return (
            "float16 overflows above ±65504, which the residual stream of many models exceeds: run the model in "
            "bfloat16 or float32 by setting `dtype: bfloat16` (or `dtype: float32`) in its config entry"
        )
    return (
        "check the model's weights for NaN/inf (effdepth.numerics.check_weights) and, for a reduced-precision "
        "dtype, try `dtype: float32` in the model's config entry"
    )


def _where(model, task, prompt, layer, sublayer, what) -> str:
    parts = [
        f"model {model}" if model is not None else None,
        f"task {task}" if task is not None else None,
        f"prompt {prompt}" if prompt is not None else None,
        f"layer {layer}" if layer is not None else None,
        sublayer,
        what or None,
    ]
    return ", ".join(p for p in parts if p)


def first_nonfinite(tensor: torch.Tensor) -> tuple[tuple[int, ...], float] | None:
    """Index (row-major first) and value of the first NaN/±inf element of ``tensor``, or None."""
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return None
    flat = int(torch.nonzero(bad.reshape(-1), as_tuple=False)[0, 0])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tensor.shape))
    return index, float(tensor.reshape(-1)[flat].float())


def check_finite(
    tensor: torch.Tensor,
    *,
    model: str | None,
    task: str | None,
    prompt: Any = None,
    layer: int | None = None,
    sublayer: str | None = None,
    what: str = "",
    prompt_axis: int | None = None,
    layer_axis: int | None = None,
) -> None:
    """Raise ``NonFiniteError`` if ``tensor`` holds a NaN or ±inf.

    tensor: any shape and floating dtype (integer tensors are always finite and pass).
    model, task: names for the message (config keys).  prompt: the prompt's id, or — with
    ``prompt_axis`` — a sequence of ids, one per index along that axis.  layer: the layer index, or
    None with ``layer_axis`` naming the axis that indexes layers.  sublayer: e.g. "attention
    output".  what: the quantity (e.g. "logit lens of h_l").

    The message names the first offending element (row-major order), its value, and a dtype hint
    (``dtype_hint``).  Cost: one ``isfinite().all()`` reduction when the tensor is finite.
    """
    if not tensor.is_floating_point() and not tensor.is_complex():
        return
    if bool(torch.isfinite(tensor).all()):
        return
    found = first_nonfinite(tensor)
    assert found is not None
    index, value = found
    if prompt_axis is not None and isinstance(prompt, Sequence) and not isinstance(prompt, str):
        prompt = prompt[index[prompt_axis]]
    if layer_axis is not None and layer is None:
        layer = index[layer_axis]
    finite = tensor[torch.isfinite(tensor)]
    peak = float(finite.abs().max()) if finite.numel() else math.nan
    dtype = tensor.dtype
    hint = dtype_hint(dtype)
    message = (
        f"non-finite value ({value}) in {_where(model, task, prompt, layer, sublayer, what)} "
        f"at index {index} of a {str(dtype).replace('torch.', '')} tensor of shape {tuple(tensor.shape)} "
        f"(largest finite |x| there: {peak:.4g}); {hint}"
    )
    raise NonFiniteError(
        message, model=model, task=task, prompt=prompt, layer=layer, sublayer=sublayer, what=what, index=index, value=value
    )


def check_layer_captures(
    resid: torch.Tensor,
    attn: torch.Tensor,
    mlp: torch.Tensor,
    *,
    model: str | None,
    task: str | None,
    prompt: Any = None,
) -> None:
    """Check one prompt's captured activations in forward order and name the first non-finite one.

    resid: [L+1, T, d] residual stream h_0 .. h_L; attn, mlp: [L, T, d] sublayer outputs a_l, m_l
    (layer convention of ``effdepth``: h_{l+1} = h_l + a_l + m_l).  Order checked: h_0, a_0, m_0,
    h_1, ..., h_L, so the error names the sublayer where the value first appeared, not a later layer
    it propagated to.  Raises ``NonFiniteError``.
    """
    if all(bool(torch.isfinite(x).all()) for x in (resid, attn, mlp)):
        return
    for layer in range(attn.shape[0]):
        for tensor, sublayer in (
            (resid[layer], "residual stream input h_l"),
            (attn[layer], "attention output a_l"),
            (mlp[layer], "MLP output m_l"),
        ):
            check_finite(tensor, model=model, task=task, prompt=prompt, layer=layer, sublayer=sublayer)
    check_finite(
        resid[-1],
        model=model,
        task=task,
        prompt=prompt,
        layer=attn.shape[0],
        sublayer="final residual h_L (before the final norm)",
    )


def check_weights(model: torch.nn.Module, *, name: str | None) -> None:
    """Raise ``NonFiniteError`` naming the first parameter or buffer of ``model`` holding NaN/±inf.

    A corrupted download or a failed conversion shows up here instead of as NaN tables.  Cost: one
    reduction per parameter on its own device (seconds for a 70B model on GPU).
    """
    for what, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            found = first_nonfinite(tensor.detach())
            assert found is not None
            raise NonFiniteError(
                f"non-finite weight ({found[1]}) in model {name}: {what}{list(found[0])}; the model files are corrupt "
                "or were converted wrongly — delete the model directory (or fix `path:`) and let the workflow fetch or "
                "convert it again",
                model=name,
                what=what,
                index=found[0],
                value=found[1],
            )


def check_tensors(tensors: dict[str, torch.Tensor], *, model: str | None, task: str | None, what: str) -> None:
    """``check_finite`` on every tensor of a mapping (e.g. the tensors about to be cached), in key order."""
    for key in sorted(tensors):
        check_finite(tensors[key], model=model, task=task, what=f"{what} {key}")


def completeness_gap(attribution_sum: float, f_input: float, f_baseline: float) -> float:
    """Relative completeness gap of integrated gradients, |Σ IG − (F(x) − F(x'))| / |F(x) − F(x')|.

    Sundararajan et al. (2017), "Axiomatic attribution for deep networks", completeness axiom: the
    attributions sum to F(x) − F(x') exactly in the limit of infinitely many steps; a quadrature with
    finitely many nodes leaves this gap (docs/methods.md#integrated-gradients).  Returns inf when
    F(x) = F(x') but the attributions do not sum to 0, and 0 when both are 0.  Non-finite inputs
    give NaN.
    """
    delta = f_input - f_baseline
    gap = abs(attribution_sum - delta)
    if not all(map(math.isfinite, (attribution_sum, f_input, f_baseline))):
        return math.nan
    if delta == 0:
        return 0.0 if gap == 0 else math.inf
    return gap / abs(delta)


def check_completeness(
    attribution_sum: float,
    f_input: float,
    f_baseline: float,
    *,
    model: str | None,
    task: str | None,
    prompt: Any,
    layer: int,
    steps: int,
    tolerance: float = 0.05,
    logger: logging.Logger | None = None,
    knob: str | None = "steps",
    knob_value: int | None = None,
) -> float:
    """Warn when integrated gradients miss completeness by more than ``tolerance`` (relative).

    attribution_sum: Σ_t IG(l, t) for one prompt and layer; f_input, f_baseline: F(x), F(x') of that
    layer's path (``effdepth.analyses.integrated_gradients`` returns both); steps: the nodes the
    layer used.  Logs a warning naming the model, task, prompt, layer and nodes, and suggesting to
    raise the option ``knob`` (``steps``, or ``max_steps`` under the automatic rule), now
    ``knob_value`` (default: ``steps``); ``knob=None`` when no option can help (the published
    variant's fixed sum).  Raises ``NonFiniteError`` if any of the three is non-finite.  Returns the
    relative gap (``completeness_gap``).
    """
    for value, what in ((attribution_sum, "sum of attributions"), (f_input, "F(x)"), (f_baseline, "F(x')")):
        if not math.isfinite(value):
            raise NonFiniteError(
                f"non-finite integrated-gradients {what} ({value}) in {_where(model, task, prompt, layer, None, '')}; "
                f"{dtype_hint(None)}",
                model=model,
                task=task,
                prompt=prompt,
                layer=layer,
                what=what,
                value=value,
            )
    gap = completeness_gap(attribution_sum, f_input, f_baseline)
    if gap > tolerance:
        if knob:
            hint = f"raise `{knob}` (now {steps if knob_value is None else knob_value})"
        else:
            hint = (
                "the published variant always uses the paper's 256-step sum; variant correct with rule auto refines where needed"
            )
        (logger or log).warning(
            "integrated gradients incomplete for %s: sum of attributions %.4g vs F(x) - F(x') = %.4g "
            "(gap %.3g %% > %.3g %%, %d nodes); %s",
            _where(model, task, prompt, layer, None, ""),
            attribution_sum,
            f_input - f_baseline,
            100 * gap,
            100 * tolerance,
            steps,
            hint,
        )
    return gap
