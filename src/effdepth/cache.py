"""Safetensors caches with provenance metadata and a checksum per tensor.

Layout of the safetensors metadata: a single entry ``effdepth`` holding canonical JSON (sorted
keys) ``{"metadata": {...}, "sha256": {tensor name: digest}, "check": digest of the other two}``.  One entry because safetensors
stores its metadata map in hash order, which differs from run to run: with several entries two
identical caches had different bytes and Snakemake reran every consumer of a rebuilt cache.

``metadata`` holds the provenance: model, source, revision, dtype, task, prompts_hash,
effdepth_version and, when known, model_fingerprint (``effdepth.fingerprint``), plus what the
writer adds.  Each tensor's digest covers its dtype, shape and bytes, so a truncated, bit-flipped
or hand-edited cache raises ``CacheError`` on read instead of loading different numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import safe_open

from . import __version__
from .fileio import atomic_write

if TYPE_CHECKING:
    import torch

REQUIRED_METADATA = ("model", "revision", "dtype", "prompts_hash", "effdepth_version")
METADATA_KEY = "effdepth"


class CacheError(RuntimeError):
    """A cache file is missing, unreadable, damaged, or lacks what is asked of it."""


def rebuild_hint(path: Path | str) -> str:
    """How to rebuild a damaged cache and everything made from it.  (Deleting the file is not enough:
    Snakemake does not rebuild a missing intermediate file whose consumers are up to date.)"""
    return (
        f"rebuild it and every table made from it with `snakemake --forcerun {path}` plus your usual options "
        "(--cores N, a target, --configfile FILE last); `snakemake --forcerun extract` rebuilds every cache"
    )


def tensor_digest(tensor: torch.Tensor | np.ndarray) -> str:
    """Hex SHA-256 of a tensor's (or array's) dtype name, shape and bytes; a torch tensor and the
    numpy array of the same values give the same digest (any torch dtype, bfloat16 included)."""
    if isinstance(tensor, np.ndarray):
        data, dtype, shape = np.ascontiguousarray(tensor), str(tensor.dtype), list(tensor.shape)
        raw = data.reshape(-1).view(np.uint8).data
    else:
        import torch

        t = tensor.detach().contiguous().cpu()
        dtype, shape = str(t.dtype).replace("torch.", ""), list(t.shape)
        raw = t.reshape(-1).view(torch.uint8).numpy().data
    h = hashlib.sha256(f"{dtype}{shape}".encode())
    if len(raw):
        h.update(raw)
    return h.hexdigest()


def _stringify(metadata: dict[str, Any]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _record_check(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({"metadata": record["metadata"], "sha256": record["sha256"]}).encode()).hexdigest()


def save_tensors(
    path: Path | str,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    *,
    model_fingerprint: str | None = None,
) -> None:
    """Write ``tensors`` and provenance ``metadata`` to a safetensors cache.

    metadata: at least ``REQUIRED_METADATA`` but effdepth_version (added here); non-string values
    are stored as JSON.  model_fingerprint: ``effdepth.fingerprint.model_fingerprint`` of the model
    files, stored as ``model_fingerprint``.

    The file is byte-identical for identical inputs, carries a SHA-256 per tensor, is written
    atomically (``.partial`` then rename: a killed job never leaves a valid-looking file) and gets
    the umask's ordinary mode (0644 under umask 022).  Raises ``CacheError`` if metadata is missing.
    """
    meta = {"effdepth_version": __version__, **_stringify(metadata)}
    if model_fingerprint is not None:
        meta["model_fingerprint"] = model_fingerprint
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise CacheError(f"cache metadata lacks {missing}")
    from safetensors.torch import save_file

    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    record: dict[str, Any] = {"metadata": meta, "sha256": {k: tensor_digest(v) for k, v in cpu.items()}}
    record["check"] = _record_check(record)
    header = {METADATA_KEY: _canonical(record)}
    atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=header))


def _record(path: Path, raw: dict[str, str] | None) -> dict[str, Any]:
    text = (raw or {}).get(METADATA_KEY)
    if text is None:
        raise CacheError(f"{path} has no effdepth checksums (written by an older effdepth or another tool); {rebuild_hint(path)}")
    try:
        record = json.loads(text)
        if not isinstance(record.get("metadata"), dict) or not isinstance(record.get("sha256"), dict):
            raise ValueError("metadata or sha256 missing")
        if record.get("check") != _record_check(record):
            raise ValueError("checksum mismatch of the metadata")
    except (ValueError, AttributeError) as exc:
        raise CacheError(f"{path} has damaged metadata ({exc}); {rebuild_hint(path)}") from exc
    return record


@contextmanager
def _opened(path: Path, framework: str = "pt") -> Iterator[Any]:
    """``safe_open`` of a cache, with every failure of the file itself as a ``CacheError``."""
    if not path.is_file():
        raise CacheError(f"cache file not found: {path}")
    try:
        with safe_open(str(path), framework=framework) as fh:
            yield fh
    except CacheError:
        raise
    except Exception as exc:  # safetensors raises SafetensorError, OSError or ValueError on damage
        raise CacheError(
            f"{path} is not a readable safetensors cache ({type(exc).__name__}: {exc}); {rebuild_hint(path)}"
        ) from exc


def read_metadata(path: Path | str) -> dict[str, str]:
    """Provenance metadata of a cache without reading its tensors.  Raises ``CacheError``."""
    path = Path(path)
    with _opened(path) as fh:
        raw = fh.metadata()
    return dict(_record(path, raw)["metadata"])


def load_tensors(
    path: Path | str, names: list[str] | None = None, *, numpy: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors (all, or only ``names``) and the provenance metadata of a cache file; with ``numpy``
    as numpy arrays, without importing torch (the jobs that only turn caches into tables).

    Each tensor read is checked against the SHA-256 stored when the file was written.  Raises
    ``CacheError`` naming the path and how to rebuild it if the file is missing, truncated, damaged,
    lacks checksums or lacks a requested tensor.
    """
    path = Path(path)
    with _opened(path, "numpy" if numpy else "pt") as fh:
        raw = fh.metadata()
        available = set(fh.keys())
        keys = sorted(available) if names is None else list(names)
        absent = [k for k in keys if k not in available]
        if absent:
            raise CacheError(f"{path} has no tensors {absent}")
        tensors = {k: fh.get_tensor(k) for k in keys}
    record = _record(path, raw)
    sums = record["sha256"]
    if set(sums) != available:
        raise CacheError(f"{path} holds tensors {sorted(available ^ set(sums))} its checksums do not list; {rebuild_hint(path)}")
    bad = [k for k in keys if tensor_digest(tensors[k]) != sums[k]]
    if bad:
        raise CacheError(f"{path} is damaged: checksum mismatch for tensors {bad}; {rebuild_hint(path)}")
    return tensors, dict(record["metadata"])
