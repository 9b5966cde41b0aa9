"""Capture the residual stream and sublayer outputs of every decoder layer in one forward pass,
and re-run a suffix of the layers on modified residuals (for interventions).

Hooks read the layer input whether transformers passes it positionally or as the keyword
``hidden_states``, and accept a layer output that is a bare tensor (transformers >= 4.54)
or a tuple whose first element is the hidden state (older versions).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .adapters import Adapter


def _first_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _hidden_from_call(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _positional_names(layer: nn.Module) -> list[str]:
    """Names of ``layer.forward``'s positional parameters, the hidden states first."""
    params = inspect.signature(layer.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@dataclass
class Capture:
    """Activations of one batch.  Every tensor is [B, T, d]; lists are indexed by layer.

    resid_pre[l] = h_l, attn_out[l] = a_l, mlp_out[l] = m_l, resid_final = h_L (before final norm).
    layer_kwargs[l] = keyword arguments the model passed to layer l (masks, rotary embeddings, ...).
    """

    resid_pre: list[torch.Tensor] = field(default_factory=list)
    attn_out: list[torch.Tensor] = field(default_factory=list)
    mlp_out: list[torch.Tensor] = field(default_factory=list)
    resid_final: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    layer_kwargs: list[dict[str, Any]] = field(default_factory=list)

    def residuals(self) -> list[torch.Tensor]:
        """[h_0, ..., h_L]"""
        assert self.resid_final is not None
        return [*self.resid_pre, self.resid_final]


@contextlib.contextmanager
def capturing(model: nn.Module, adapter: Adapter, capture: Capture, *, keep_kwargs: bool = False) -> Iterator[Capture]:
    """Register hooks filling ``capture`` during forwards inside the block; always removed on exit.

    a_l and m_l are the outputs of ``adapter.attention(layer)`` and ``adapter.mlp_output(layer)``
    times the adapter's residual multiplier, so that h_{l+1} = h_l + a_l + m_l for every block
    shape (docs/methods.md#block-shapes; proven per model by
    ``effdepth.capture.verify_decomposition``).
    """
    layers = adapter.decoder_layers(model)
    n = len(layers)
    capture.resid_pre[:] = [None] * n  # type: ignore[list-item]
    capture.attn_out[:] = [None] * n  # type: ignore[list-item]
    capture.mlp_out[:] = [None] * n  # type: ignore[list-item]
    capture.layer_kwargs[:] = [{} for _ in range(n)]
    handles = []

    for i, layer in enumerate(layers):
        names = _positional_names(layer)
        scale = adapter.multiplier(model, layer)

        def pre_hook(module, args, kwargs, i=i, names=names):
            capture.resid_pre[i] = _hidden_from_call(args, kwargs).detach()
            if keep_kwargs:
                # Arguments some models pass positionally (GPT-2: cache, mask) are kept by name.
                bound = dict(zip(names[1:], args[1:]))
                bound.update((k, v) for k, v in kwargs.items() if k != "hidden_states")
                capture.layer_kwargs[i] = bound

        # Clones: a model may add to a sublayer output in place (Falcon adds a_l to m_l).
        def attn_hook(module, args, output, i=i, scale=scale):
            out = _first_tensor(output).detach()
            capture.attn_out[i] = out.clone() if scale == 1.0 else out * scale

        def mlp_hook(module, args, output, i=i, scale=scale):
            out = _first_tensor(output).detach()
            capture.mlp_out[i] = out.clone() if scale == 1.0 else out * scale

        handles.append(layer.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(adapter.attention(layer).register_forward_hook(attn_hook))
        handles.append(adapter.mlp_output(layer).register_forward_hook(mlp_hook))

    def last_hook(module, args, output):
        capture.resid_final = _first_tensor(output).detach()

    handles.append(layers[n - 1].register_forward_hook(last_hook))
    try:
        yield capture
    finally:
        for h in handles:
            h.remove()


def left_pad(sequences: list[list[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Left-pad token id lists.  Returns input_ids [B, T], attention_mask [B, T], position_ids [B, T]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), position_ids.to(device)


def input_device(model: nn.Module) -> torch.device:
    """Where token ids go: the device of the input embedding (with ``device_map`` across GPUs the
    first parameter need not live there)."""
    return model.get_input_embeddings().weight.device


def run_captured(
    model: nn.Module, adapter: Adapter, sequences: list[list[int]], pad_id: int, *, keep_kwargs: bool = False
) -> tuple[Capture, torch.Tensor]:
    """One batched forward over ``sequences`` (left-padded).  Returns the capture and the mask [B, T]."""
    ids, mask, pos = left_pad(sequences, pad_id, input_device(model))
    capture = Capture()
    with capturing(model, adapter, capture, keep_kwargs=keep_kwargs):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    capture.logits = out.logits
    return capture, mask.bool()


def widen(x: torch.Tensor) -> torch.Tensor:
    """float32 for bf16/fp16/fp32 tensors; float64 stays float64 (exact references in tests)."""
    return x if x.dtype == torch.float64 else x.float()


def _expand(value: Any, batch: int) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dim() >= 1 and value.shape[0] == 1 and batch != 1:
            return value.expand(batch, *value.shape[1:])
        return value
    if isinstance(value, tuple):
        return tuple(_expand(v, batch) for v in value)
    return value


class KVPrefix:
    """Stands in for a transformers ``Cache`` during one layer call.

    The attention module hands it the keys/values of the tokens being computed (after rotary
    embedding); it returns them behind ``keys``/``values`` of earlier tokens, and keeps what it was
    given in ``seen`` so a caller can record a layer's keys/values.
    """

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        self.keys, self.values = keys, values
        self.seen: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.seen = (key_states, value_states)
        if self.keys is None or self.keys.shape[2] == 0:
            return key_states, value_states
        batch = key_states.shape[0]
        keys = torch.cat([self.keys.expand(batch, -1, -1, -1), key_states], dim=2)
        values = torch.cat([self.values.expand(batch, -1, -1, -1), value_states], dim=2)  # type: ignore[union-attr]
        return keys, values


# Attention implementations whose masks LayerRunner can window (see LayerRunner.windows).
WINDOWED_ATTENTION = ("sdpa", "eager")

# Names under which decoder layers take their key/value cache.
_CACHE_ARGS = ("cache", "past_key_values", "layer_past")

# Layer keyword arguments that carry the token axis, and where: sliced for a window of tokens.
_TOKEN_AXIS_KWARGS = {"position_ids": -1, "cache_position": 0}
_WINDOWED_KWARGS = {"attention_mask", "position_embeddings", *_TOKEN_AXIS_KWARGS}


def _has_tensor(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return isinstance(value, torch.Tensor)


class LayerRunner:
    """Run decoder layers ``start .. L-1`` of a model on arbitrary residual states of one prompt.

    Built from a clean single-prompt forward (batch 1, no padding); the layer keyword arguments
    captured there (causal mask, rotary embeddings, position ids) are broadcast to any batch of
    states of the same length.  This is what lets an intervention at layer s start from the
    cached residual h_s instead of re-running layers 0 .. s-1.

    A call may also cover only a window of tokens ``start .. stop-1``: the keys and values of tokens
    0 .. start-1 then come from ``prefix`` (recorded from another call with ``record=True``), which
    is how an intervention that leaves a prefix of the prompt untouched computes only the rest.
    """

    def __init__(self, model: nn.Module, adapter: Adapter, capture: Capture):
        self.model = model
        self.adapter = adapter
        self.layers = adapter.decoder_layers(model)
        self.n_layers = len(self.layers)
        self.kwargs = capture.layer_kwargs
        self.n_tokens = capture.resid_pre[0].shape[1]
        for kw in self.kwargs:
            kw.pop("use_cache", None)
            kw.pop("past_key_values", None)
            kw.pop("past_key_value", None)
            kw.pop("cache", None)
            kw.pop("layer_past", None)
        params = inspect.signature(self.layers[0].forward).parameters
        self._cache_arg = next((name for name in _CACHE_ARGS if name in params), None)
        self._windowable = (
            getattr(model.config, "_attn_implementation", None) in WINDOWED_ATTENTION
            and self._cache_arg is not None
            and all(key in _WINDOWED_KWARGS or not _has_tensor(value) for kw in self.kwargs for key, value in kw.items())
        )

    @property
    def windows(self) -> bool:
        """Whether layer calls over a window of tokens are supported: the attention is SDPA or eager
        (whose causal masks are built here; other kernels such as flash attention take full rows),
        the layer takes a key/value cache argument, and every captured layer argument is one this
        class knows how to window."""
        return self._windowable

    def _window(self, index: int, start: int, stop: int, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """Layer ``index``'s keyword arguments for queries ``start .. stop-1`` over keys ``0 .. stop-1``."""
        if start == 0 and stop == self.n_tokens:
            return {k: _expand(v, batch) for k, v in self.kwargs[index].items()}
        out: dict[str, Any] = {}
        for key, value in self.kwargs[index].items():
            if key == "position_embeddings":
                value = tuple(v[:, start:stop] for v in value)
            elif key == "attention_mask":
                if value is None and start > 0:
                    # SDPA's own causal flag aligns queries to the first key; spell the mask out.
                    allowed = torch.ones(stop - start, stop, dtype=torch.bool, device=device).tril(start)[None, None]
                    if self.model.config._attn_implementation == "eager":  # eager adds its mask to the scores
                        value = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
                            ~allowed, torch.finfo(dtype).min
                        )
                    else:
                        value = allowed
                elif value is not None:
                    value = value[..., start:stop, :stop]
            elif key in _TOKEN_AXIS_KWARGS and isinstance(value, torch.Tensor):
                value = value.narrow(_TOKEN_AXIS_KWARGS[key] % value.dim(), start, stop - start)
            elif _has_tensor(value):
                raise NotImplementedError(f"cannot window the layer argument {key!r} to a token range")
            out[key] = _expand(value, batch)
        return out

    def layer(
        self,
        index: int,
        hidden: torch.Tensor,
        *,
        start: int = 0,
        prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
        record: bool = False,
    ) -> Any:
        """Layer ``index`` applied to ``hidden`` [K, n, d], the residuals of tokens start .. start+n-1.

        ``prefix``: keys/values [K or 1, H_kv, start, head_dim] of tokens 0 .. start-1 at this layer
        (required when start > 0).  With ``record`` returns ``(output, (keys, values))`` where the
        keys/values [K, H_kv, n, head_dim] are those of the tokens computed here.
        """
        batch, width = hidden.shape[0], hidden.shape[1]
        if (start > 0 or prefix is not None or record) and not self.windows:
            raise NotImplementedError(
                f"windowed layer calls need attention {WINDOWED_ATTENTION} (this model: "
                f"{self.model.config._attn_implementation!r}) and a layer that takes a key/value cache"
            )
        if start > 0 and (prefix is None or prefix[0].shape[2] != start):
            raise ValueError(f"a window starting at token {start} needs the keys/values of tokens 0 .. {start - 1}")
        kwargs = self._window(index, start, start + width, batch, hidden.device, hidden.dtype)
        if start == 0 and prefix is None and not record:
            return _first_tensor(self.layers[index](hidden, use_cache=False, **kwargs))
        cache = KVPrefix(*(prefix or (None, None)))
        ignored = "the attention module ignored the key/value cache; windowed layer calls are unsupported for this model"
        try:
            out = _first_tensor(self.layers[index](hidden, use_cache=False, **{self._cache_arg: cache}, **kwargs))
        except RuntimeError as error:  # typically a mask/key length mismatch
            if cache.seen is None:
                raise RuntimeError(ignored) from error
            raise
        if cache.seen is None:
            raise RuntimeError(ignored)
        return (out, cache.seen) if record else out

    def layer_chunks(
        self,
        index: int,
        hidden: torch.Tensor,
        rows: int,
        *,
        start: int = 0,
        prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
        record: bool = False,
    ) -> Any:
        """``layer`` over ``hidden`` in chunks of ``rows`` sequences; a per-row ``prefix`` is chunked along."""
        outs, keys, values = [], [], []
        for i in range(0, hidden.shape[0], rows):
            pre = None if prefix is None else tuple(p if p.shape[0] == 1 else p[i : i + rows] for p in prefix)
            result = self.layer(index, hidden[i : i + rows], start=start, prefix=pre, record=record)  # type: ignore[arg-type]
            if record:
                result, (k, v) = result
                keys.append(k)
                values.append(v)
            outs.append(result)
        out = torch.cat(outs)
        return (out, (torch.cat(keys), torch.cat(values))) if record else out

    def run(self, hidden: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        """Apply layers start .. stop-1 (default: to the end) to h_start [K, T, d]; returns h_stop."""
        for index in range(start, self.n_layers if stop is None else stop):
            hidden = self.layer(index, hidden)
        return hidden

    def logits(self, resid_final: torch.Tensor) -> torch.Tensor:
        """[..., d] raw last residual -> [..., V] logits (float32, or float64 for a float64 model)."""
        return widen(self.adapter.logits(self.model, resid_final))


# ----------------------------------------------------------------------------- the load-time proof

# Largest accepted relative error (per token: ‖error‖ / ‖reference‖) of the proof, by model dtype.
# Half precision rounds h_l + a_l and then + m_l once each (about 2^-8 of the residual norm each).
PROOF_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


class DecompositionError(RuntimeError):
    """An adapter's decomposition does not reproduce the model (see ``verify_decomposition``)."""


@dataclass
class DecompositionReport:
    """Outcome of ``verify_decomposition``: per-layer maxima over the probe's tokens of
    ‖error‖ / ‖reference‖ (float), and the tolerance they were held to.

    identity[l]  h_{l+1} against h_l + a_l + m_l
    runner[l]    h_{l+1} against LayerRunner.layer(l, h_l) (full rows)
    window[l]    the same for a windowed call over the second half of the probe (None: not windowable)
    lens         logit lens of h_L against the model's logits
    """

    adapter: str
    architecture: str
    dtype: str
    n_tokens: int
    rtol: float
    identity: list[float]
    runner: list[float]
    window: list[float] | None
    lens: float

    def summary(self) -> str:
        window = "n/a (full rows only)" if self.window is None else f"{max(self.window):.2e}"
        return (
            f"{self.architecture} via adapter {self.adapter!r} ({self.dtype}, {len(self.identity)} layers, "
            f"{self.n_tokens}-token probe): max relative error identity {max(self.identity):.2e}, "
            f"layer re-run {max(self.runner):.2e}, windowed {window}, logit lens {self.lens:.2e} "
            f"(tolerance {self.rtol:.0e})"
        )


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max over tokens of ‖value − reference‖ / ‖reference‖ (float64; NaN stays NaN)."""
    value, reference = value.double(), reference.to(value.device).double()
    err = (value - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(1e-12)
    return float(err.max()) if err.numel() else 0.0


def probe_ids(vocab_size: int, n_tokens: int = 24) -> list[int]:
    """A fixed probe sequence of ``n_tokens`` ids spread over the vocabulary (ids 4 and up)."""
    span = max(1, vocab_size - 4)
    return [4 + (7919 * i + 11) % span for i in range(n_tokens)]


@torch.no_grad()
def verify_decomposition(
    model: nn.Module,
    adapter: Adapter | None = None,
    *,
    input_ids: list[int] | None = None,
    rtol: float | None = None,
    check_runner: bool = True,
) -> DecompositionReport:
    """Prove on one short probe that ``adapter`` decomposes ``model`` (docs/methods.md#block-shapes and "Logit lens"):

    * for every layer l, h_{l+1} = h_l + a_l + m_l on every token;
    * the logit lens of the final residual, ``adapter.logits(model, h_L)``, equals the model's logits;
    * with ``check_runner``: ``LayerRunner`` re-runs every layer from the captured h_l to h_{l+1},
      and — where the attention supports windowed calls — a call over the probe's second half,
      attending to the recorded keys/values of the first, gives the same rows.

    ``adapter``: default ``adapter_for(model)``.  ``input_ids``: the probe (default ``probe_ids``,
    24 tokens, batch 1, no padding).  ``rtol``: the largest accepted per-token relative error
    ‖error‖ / ‖reference‖; default PROOF_RTOL of the model's dtype.

    Returns a DecompositionReport.  Raises DecompositionError naming the adapter, the layer and the
    size of the error when a check fails (a hook that never ran counts as a failure);
    UnsupportedArchitecture when ``adapter`` is None and the architecture has none.
    """
    from .adapters import adapter_for, architecture_of

    adapter = adapter or adapter_for(model)
    try:
        arch = architecture_of(model)
    except ValueError:
        arch = type(model).__name__
    dtype = next(model.parameters()).dtype
    if dtype not in PROOF_RTOL:  # quantised weights: held to the compute dtype's tolerance
        dtype = getattr(model, "dtype", torch.float32)
    tol = rtol if rtol is not None else PROOF_RTOL.get(dtype, PROOF_RTOL[torch.bfloat16])
    ids = input_ids or probe_ids(int(model.config.vocab_size))
    capture = Capture()
    with capturing(model, adapter, capture, keep_kwargs=True):
        out = model(input_ids=torch.tensor([ids], device=input_device(model)), use_cache=False)
    where = f"{arch} via adapter {adapter.name!r}"

    def fail(layer: int | None, what: str, error: float) -> DecompositionError:
        at = "the logit lens" if layer is None else f"layer {layer}"
        return DecompositionError(
            f"{where}: {what} fails at {at}: relative error {error:.3g} > tolerance {tol:.0e} "
            f"({str(dtype).replace('torch.', '')}). The adapter does not describe this model's "
            "blocks; fix or add its entry in effdepth.adapters.ADAPTERS."
        )

    n_layers = len(capture.resid_pre)
    for l in range(n_layers):
        for name, value in (
            ("resid_pre", capture.resid_pre[l]),
            ("attn_out", capture.attn_out[l]),
            ("mlp_out", capture.mlp_out[l]),
        ):
            if value is None:
                raise DecompositionError(f"{where}: no {name} captured at layer {l}: its hook never ran")
    if capture.resid_final is None:
        raise DecompositionError(f"{where}: the final residual was not captured")
    h = capture.residuals()
    identity = []
    for l in range(n_layers):
        target = h[l + 1]
        total = (
            widen(h[l]).to(target.device)
            + widen(capture.attn_out[l]).to(target.device)
            + widen(capture.mlp_out[l]).to(target.device)
        )
        error = _relative_error(total, widen(target))
        identity.append(error)
        if not error <= tol:
            raise fail(l, "h_{l+1} = h_l + a_l + m_l", error)
    logits = out.logits
    lens = _relative_error(widen(adapter.logits(model, h[-1].to(logits.device))), widen(logits))
    if not lens <= tol:
        raise fail(None, "logit lens of h_L = model logits", lens)
    runner_errors: list[float] = []
    window_errors: list[float] | None = None
    if check_runner:
        runner = LayerRunner(model, adapter, capture)
        window_errors = [] if runner.windows else None
        start = len(ids) // 2
        for l in range(n_layers):
            target = widen(h[l + 1][0])
            if runner.windows:
                full, (keys, values) = runner.layer(l, h[l], record=True)
                windowed = runner.layer(l, h[l][:, start:], start=start, prefix=(keys[:, :, :start], values[:, :, :start]))
                error = _relative_error(widen(windowed[0]), target[start:])
                window_errors.append(error)  # type: ignore[union-attr]
                if not error <= tol:
                    raise fail(l, "a windowed layer call (LayerRunner, second half of the probe)", error)
            else:
                full = runner.layer(l, h[l])
            error = _relative_error(widen(full[0]), target)
            runner_errors.append(error)
            if not error <= tol:
                raise fail(l, "re-running the layer (LayerRunner)", error)
    return DecompositionReport(
        adapter=adapter.name,
        architecture=arch,
        dtype=str(dtype).replace("torch.", ""),
        n_tokens=len(ids),
        rtol=tol,
        identity=identity,
        runner=runner_errors,
        window=window_errors,
        lens=lens,
    )
