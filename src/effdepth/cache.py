"""Safetensors caches with provenance metadata (model, revision, dtype, prompts hash, version)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__

REQUIRED_METADATA = ("model", "revision", "dtype", "prompts_hash", "effdepth_version")


class CacheError(RuntimeError):
    pass


def save_tensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write atomically (``.partial`` then rename) so a killed job never leaves a valid-looking file."""
    meta = {"effdepth_version": __version__, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise CacheError(f"cache metadata lacks {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_tensors(path: Path | str, names: list[str] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (all, or only ``names``) and the metadata of a cache file."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"cache file not found: {path}")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        keys = list(fh.keys()) if names is None else names
        absent = [k for k in keys if k not in fh.keys()]
        if absent:
            raise CacheError(f"{path} has no tensors {absent}")
        tensors = {k: fh.get_tensor(k) for k in keys}
    return tensors, meta
