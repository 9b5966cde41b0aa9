"""Storing tuned lenses (docs/methods.md#tuned-lens-files):

* the tuned-lens package's folder format, so existing lenses load here and ours open in its tools:
  ``config.json`` (``base_model_name_or_path``, ``d_model``, ``num_hidden_layers``, ``bias``,
  ``base_model_revision``, ``unembed_hash``, ``lens_type``) and ``params.pt``, a torch state dict of
  the translators with keys ``{l}.weight`` [d, d] and ``{l}.bias`` [d], l = 0 … L-1, read with
  ``torch.load(weights_only=True)`` (no pickled code runs);
* effdepth's own safetensors file (``effdepth.cache.save_tensors``: a checksum per tensor, written
  atomically) whose metadata carries the model's fingerprint and the training data's identity, so
  a workflow retrains exactly when either changes.

Every loader checks that the lens belongs to the model (layer count, width, unembedding hash, and
for the safetensors file the fingerprint / training data when the caller names them) and raises
``LensMismatchError`` saying what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import Adapter
from ..cache import load_tensors, save_tensors
from ..fileio import atomic_write
from .base import LensMismatchError, unembed_hash
from .tuned import TunedLens

LENS_TYPE = "linear_tuned_lens"  # the tuned-lens package's name of this lens
CONFIG_FILE, PARAMS_FILE = "config.json", "params.pt"


def _state(lens: TunedLens) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in lens.translators.state_dict().items()}


def _expected_keys(n_layers: int, bias: bool) -> set[str]:
    return {f"{i}.weight" for i in range(n_layers)} | ({f"{i}.bias" for i in range(n_layers)} if bias else set())


def _load_state(lens: TunedLens, state: dict[str, torch.Tensor], where: str) -> None:
    expected = _expected_keys(lens.n_layers, lens.bias)
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise LensMismatchError(
            f"{where}: translator tensors do not match a {lens.n_layers}-layer lens "
            f"(missing {missing[:4]}, unexpected {extra[:4]})"
        )
    for key, value in state.items():
        want = (lens.d_model, lens.d_model) if key.endswith(".weight") else (lens.d_model,)
        if tuple(value.shape) != want:
            raise LensMismatchError(f"{where}: {key} has shape {tuple(value.shape)}, the model needs {want}")
    lens.translators.load_state_dict(state)


def _check_shape(where: str, n_layers: int, d_model: int, lens_layers: int, lens_width: int) -> None:
    if lens_layers != n_layers:
        raise LensMismatchError(f"{where} was trained for {lens_layers} layers; this model has {n_layers}")
    if lens_width != d_model:
        raise LensMismatchError(f"{where} was trained for d_model = {lens_width}; this model has d_model = {d_model}")


def _check_hash(where: str, stored: str | None, actual: str, allow: bool) -> None:
    if stored and stored != actual and not allow:
        raise LensMismatchError(
            f"{where} was trained on another unembedding (unembed_hash {stored[:12]}…, this model's {actual[:12]}…): "
            "it belongs to another model or revision; pass allow_unembed_mismatch=True to load it anyway"
        )


# ----------------------------------------------------------------------------- tuned-lens folder format


def export_tuned_lens(
    lens: TunedLens, folder: Path | str, *, base_model_name_or_path: str | None = None, base_model_revision: str | None = None
) -> Path:
    """Write ``lens`` as a tuned-lens folder (``config.json`` + ``params.pt``; module docstring).

    base_model_name_or_path: default the model's ``config.name_or_path``.  Returns the folder
    (created if needed; existing files of those two names are replaced)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "base_model_name_or_path": base_model_name_or_path or str(getattr(lens.model.config, "name_or_path", "") or ""),
        "d_model": lens.d_model,
        "num_hidden_layers": lens.n_layers,
        "bias": lens.bias,
        "base_model_revision": base_model_revision,
        "unembed_hash": unembed_hash(lens.model, lens.adapter),
        "lens_type": LENS_TYPE,
    }
    state = _state(lens)
    atomic_write(folder / PARAMS_FILE, lambda tmp: torch.save(state, tmp))
    atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def read_tuned_lens_config(folder: Path | str) -> dict[str, Any]:
    """The ``config.json`` of a tuned-lens folder.  Raises FileNotFoundError, LensMismatchError for
    another lens type or a config without ``d_model`` / ``num_hidden_layers``."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a tuned-lens folder: {path} is missing")
    config = json.loads(path.read_text())
    if config.get("lens_type", LENS_TYPE) != LENS_TYPE:
        raise LensMismatchError(f"{path}: lens_type {config['lens_type']!r} is not {LENS_TYPE!r}")
    for key in ("d_model", "num_hidden_layers"):
        if not isinstance(config.get(key), int):
            raise LensMismatchError(f"{path}: {key} missing or not an integer")
    return config


def import_tuned_lens(
    folder: Path | str,
    model: nn.Module,
    adapter: Adapter | None = None,
    *,
    allow_unembed_mismatch: bool = False,
    dtype: torch.dtype | None = None,
) -> TunedLens:
    """A TunedLens of ``model`` from a tuned-lens folder (module docstring).

    Raises FileNotFoundError for a missing ``config.json`` / ``params.pt``; LensMismatchError when
    the folder's layer count or d_model differ from the model's, when its ``unembed_hash`` differs
    from ``unembed_hash(model)`` (unless ``allow_unembed_mismatch``), or when ``params.pt`` lacks or
    adds translator tensors or has wrongly shaped ones."""
    folder = Path(folder)
    config = read_tuned_lens_config(folder)
    lens = TunedLens(model, adapter, bias=bool(config.get("bias", True)), dtype=dtype)
    where = f"tuned lens {folder}"
    _check_shape(where, lens.n_layers, lens.d_model, config["num_hidden_layers"], config["d_model"])
    _check_hash(where, config.get("unembed_hash"), unembed_hash(model, lens.adapter), allow_unembed_mismatch)
    params = folder / PARAMS_FILE
    if not params.is_file():
        raise FileNotFoundError(f"not a tuned-lens folder: {params} is missing")
    state = torch.load(params, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise LensMismatchError(f"{params} is not a state dict")
    _load_state(lens, state, where)
    return lens


# ----------------------------------------------------------------------------- safetensors with provenance


def save_tuned_lens(
    lens: TunedLens,
    path: Path | str,
    *,
    model_name: str,
    training_data: str,
    model_fingerprint: str | None = None,
    revision: str = "unknown",
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``lens`` to a safetensors file (tensors ``{l}.weight``, ``{l}.bias``) with provenance.

    training_data: the identity of the training tokens (``training.training_data_identity``),
    stored as ``training_data`` (and as the cache's ``prompts_hash``).  model_fingerprint:
    ``effdepth.fingerprint.model_fingerprint`` of the model files.  metadata: more entries (the
    training recipe, held-out KL …; non-strings stored as JSON).  Byte-identical for identical
    inputs, written atomically (``effdepth.cache.save_tensors``)."""
    meta = {
        **(metadata or {}),
        "model": model_name,
        "revision": revision,
        "dtype": str(lens.dtype).replace("torch.", ""),
        "prompts_hash": training_data,
        "training_data": training_data,
        "lens": lens.kind,
        "lens_type": LENS_TYPE,
        "n_layers": str(lens.n_layers),
        "d_model": str(lens.d_model),
        "bias": str(lens.bias).lower(),
        "unembed_hash": unembed_hash(lens.model, lens.adapter),
    }
    save_tensors(path, _state(lens), meta, model_fingerprint=model_fingerprint)


def load_tuned_lens(
    path: Path | str,
    model: nn.Module,
    adapter: Adapter | None = None,
    *,
    model_fingerprint: str | None = None,
    training_data: str | None = None,
    allow_unembed_mismatch: bool = False,
) -> tuple[TunedLens, dict[str, str]]:
    """(TunedLens of ``model``, the file's metadata) from a file written by ``save_tuned_lens``.

    model_fingerprint / training_data: when given, the file's must be equal.  Raises
    ``effdepth.cache.CacheError`` for a missing or damaged file; LensMismatchError for another layer
    count, width, unembedding (unless ``allow_unembed_mismatch``), fingerprint or training data."""
    tensors, meta = load_tensors(path)
    where = f"tuned lens {path}"
    if meta.get("lens") != TunedLens.kind:
        raise LensMismatchError(f"{where} holds lens {meta.get('lens')!r}, not a tuned lens")
    lens = TunedLens(model, adapter, bias=meta.get("bias", "true") == "true")
    _check_shape(where, lens.n_layers, lens.d_model, int(meta["n_layers"]), int(meta["d_model"]))
    _check_hash(where, meta.get("unembed_hash"), unembed_hash(model, lens.adapter), allow_unembed_mismatch)
    if model_fingerprint is not None and meta.get("model_fingerprint") != model_fingerprint:
        raise LensMismatchError(
            f"{where} was trained on model files {meta.get('model_fingerprint')}, not {model_fingerprint}: retrain it"
        )
    if training_data is not None and meta.get("training_data") != training_data:
        raise LensMismatchError(f"{where} was trained on data {meta.get('training_data')}, not {training_data}: retrain it")
    _load_state(lens, tensors, where)
    return lens, meta


def as_tuned_lens(lens: TunedLens | Path | str, model: nn.Module) -> TunedLens:
    """``lens`` itself when it is a TunedLens, else the stored lens at that path
    (``open_tuned_lens``) for ``model``: what the API and the jobs accept as a tuned lens."""
    return lens if isinstance(lens, TunedLens) else open_tuned_lens(lens, model)


def open_tuned_lens(path: Path | str, model: nn.Module, adapter: Adapter | None = None, **checks: Any) -> TunedLens:
    """A TunedLens of ``model`` from either storage: a tuned-lens folder (``import_tuned_lens``) or
    an effdepth ``.safetensors`` file (``load_tuned_lens``; ``checks`` may name its
    ``model_fingerprint`` / ``training_data``).  ``allow_unembed_mismatch`` goes to both.  Raises
    FileNotFoundError for a path that is neither, and what the loader raises."""
    path = Path(path)
    allow = bool(checks.pop("allow_unembed_mismatch", False))
    if path.is_dir():
        if checks:
            raise TypeError(f"a tuned-lens folder carries no {sorted(checks)} to check")
        return import_tuned_lens(path, model, adapter, allow_unembed_mismatch=allow)
    if path.suffix == ".safetensors" and path.is_file():
        return load_tuned_lens(path, model, adapter, allow_unembed_mismatch=allow, **checks)[0]
    raise FileNotFoundError(f"no tuned lens at {path}: neither a tuned-lens folder nor a .safetensors file")
