"""The extraction statistics of one (model, task): tensors plus typed shape and identity.

:class:`ExtractionStats` is what :func:`effdepth.extraction.extract_stats` returns and what
:meth:`ExtractionStats.from_cache` reads back from ``stats.safetensors``; every forward analysis's
``table()`` takes it.  The tensors and their shapes are listed in ``effdepth.extraction``.  This module
imports neither torch nor transformers, so the forward-table job stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# metadata keys the dataclass holds as typed fields (the rest stays in ``metadata``)
_TYPED = ("n_layers", "d_model", "n_prompts", "top_k", "model", "task", "prompt_ids", "prompts_hash")


@dataclass
class ExtractionStats:
    """Per-token statistics of one extraction pass (docs/methods.md, extraction cache).

    tensors       name -> array ([N, L, 7] ``layer_stats``, [N, L+1] ``lens_kl`` … , see
                  ``effdepth.extraction``); numpy arrays when read from a cache, CPU torch tensors when
                  fresh from an extraction
    n_layers      L, decoder layers of the model
    d_model       width of the residual stream
    n_prompts     P, prompts in the pass (token rows say which with ``token_prompt``)
    top_k         k of the logit lens's top-k overlap
    model, task   names written into every table row
    prompt_ids    the ``id`` of each prompt as text, in order (ids of the frozen prompts file)
    prompts_hash  content hash of the prompts (``effdepth.tasks.prompts_hash``), if known
    metadata      further provenance (source, revision, dtype, fingerprint, …), as strings
    """

    tensors: dict[str, Any]
    n_layers: int
    d_model: int
    n_prompts: int
    top_k: int
    model: str = "model"
    task: str = "prompts"
    prompt_ids: tuple[str, ...] = ()
    prompts_hash: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> dict[str, Any]:
        """The identifying columns of every table row built from these statistics."""
        return {"model": self.model, "task": self.task, "n_layers": self.n_layers}

    def array(self, name: str) -> Any:
        """Tensor ``name`` as a numpy array (no copy for CPU tensors).  Raises KeyError naming what exists."""
        import numpy as np

        if name not in self.tensors:
            raise KeyError(f"extraction statistics hold no {name!r} (they hold {sorted(self.tensors)})")
        return np.asarray(self.tensors[name])

    def cache_metadata(self) -> dict[str, str]:
        """Everything but the tensors, as the string map a safetensors cache stores."""
        typed = {
            "n_layers": str(self.n_layers),
            "d_model": str(self.d_model),
            "n_prompts": str(self.n_prompts),
            "top_k": str(self.top_k),
            "model": self.model,
            "task": self.task,
            "prompt_ids": ",".join(map(str, self.prompt_ids)),
        }
        if self.prompts_hash is not None:
            typed["prompts_hash"] = self.prompts_hash
        return {**self.metadata, **typed}

    @classmethod
    def from_metadata(cls, tensors: dict[str, Any], meta: dict[str, str]) -> ExtractionStats:
        """Statistics from tensors and the string metadata of a cache (``cache.load_tensors``).

        Raises ``effdepth.cache.CacheError`` when a key the tables need is missing or not a number."""
        from .cache import CacheError

        try:
            ids = meta.get("prompt_ids", "")
            return cls(
                tensors=tensors,
                n_layers=int(meta["n_layers"]),
                d_model=int(meta["d_model"]),
                n_prompts=int(meta["n_prompts"]),
                top_k=int(meta.get("top_k", 0)),
                model=meta.get("model", "model"),
                task=meta.get("task", "prompts"),
                prompt_ids=tuple(ids.split(",")) if ids else (),
                prompts_hash=meta.get("prompts_hash"),
                metadata={k: v for k, v in meta.items() if k not in _TYPED},
            )
        except (KeyError, ValueError) as error:
            raise CacheError(f"the cache's metadata lacks a usable {error}") from None

    @classmethod
    def from_cache(cls, path: Path | str, names: list[str] | None = None) -> ExtractionStats:
        """Read a cache written by ``effdepth.extraction.run_extraction`` as numpy arrays (every tensor
        checked against its checksum; ``names`` limits which are read).  Raises ``CacheError``."""
        from .cache import load_tensors

        tensors, meta = load_tensors(path, names, numpy=True)
        return cls.from_metadata(tensors, meta)
