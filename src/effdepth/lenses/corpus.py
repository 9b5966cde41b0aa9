"""Training text for tuned lenses (docs/methods.md#training-a-tuned-lens): config
``analyses.tuned_lens.corpus`` -> (training texts, held-out texts).

Sources: ``python_docs`` — the Python documentation's topic pages shipped with CPython as
``pydoc_data.topics`` (the Language Reference pages ``help()`` shows; Python Software Foundation
License Version 2), available offline; ``file`` — a local ``.txt`` (texts separated by blank lines)
or ``.jsonl`` file (one object per line, the text under ``text_field``); ``hf`` — a Hugging Face
dataset read as a stream (the first ``max_texts`` texts of ``split``).  Every ``heldout_every``-th
text is held out to measure the lens; the rest trains it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class CorpusError(ValueError):
    """The configured corpus cannot be read (file, line and field named)."""


def _python_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def _file_texts(path: Path, text_field: str) -> list[str]:
    if not path.is_file():
        raise CorpusError(f"corpus file not found: {path}")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{number}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise CorpusError(f"{path}:{number}: no text field {text_field!r} (a JSON object with a string under it)")
            texts.append(row[text_field])
        return texts
    return [block.strip() for block in raw.split("\n\n") if block.strip()]


def _hf_texts(spec: dict[str, Any]) -> list[str]:
    """The first ``max_texts`` texts of a Hugging Face dataset, streamed (``hf_id`` may also be a local
    dataset directory, read by the same code)."""
    from datasets import load_dataset

    name, split = spec["hf_id"], spec.get("split", "train")
    try:
        stream = load_dataset(name, spec.get("config"), split=split, revision=spec.get("revision"), streaming=True)
    except (OSError, ValueError) as error:  # unreachable or unknown on the hub, no such split or config
        raise CorpusError(
            f"corpus hf_id {name!r} (split {split!r}) could not be opened: {error}. Offline, give a local copy: "
            "hf_id may be a dataset directory, or use source: file"
        ) from None
    field, texts = spec.get("text_field", "text"), []
    for number, row in enumerate(stream, start=1):
        if len(texts) >= spec.get("max_texts", 100000):
            break
        if not isinstance(row.get(field), str):
            raise CorpusError(f"{name} ({split}) row {number}: no text field {field!r} (fields: {', '.join(row)})")
        texts.append(row[field])
    return texts


def corpus_texts(spec: dict[str, Any] | None = None) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts) of the corpus ``spec`` (``analyses.tuned_lens.corpus``;
    default python_docs), non-empty texts only, split by ``heldout_every`` (default 10).  Raises
    CorpusError for a missing file, a bad line or field, an unknown source, or a corpus of fewer
    than two texts."""
    spec = dict(spec or {"source": "python_docs"})
    source = spec.get("source")
    if source == "python_docs":
        texts = _python_docs()
    elif source == "file":
        if "path" not in spec:
            raise CorpusError("corpus source file needs `path`")
        texts = _file_texts(Path(spec["path"]), spec.get("text_field", "text"))
    elif source == "hf":
        if "hf_id" not in spec:
            raise CorpusError("corpus source hf needs `hf_id`")
        texts = _hf_texts(spec)
    else:
        raise CorpusError(f"unknown corpus source {source!r} (python_docs, file, hf)")
    texts = [t for t in texts if t.strip()][: spec.get("max_texts", 100000)]
    every = int(spec.get("heldout_every", 10))
    train = [t for i, t in enumerate(texts) if i % every != every - 1]
    heldout = [t for i, t in enumerate(texts) if i % every == every - 1]
    if not train or not heldout:
        raise CorpusError(f"the corpus holds {len(texts)} texts: too few to train on and hold out every {every}-th")
    return train, heldout


def corpus_identity(spec: dict[str, Any] | None) -> str:
    """A short description of the corpus for provenance (source and its key)."""
    spec = dict(spec or {"source": "python_docs"})
    if spec.get("source") == "file":
        return f"file:{spec.get('path')}"
    if spec.get("source") == "hf":
        return f"hf:{spec.get('hf_id')}/{spec.get('config') or ''}/{spec.get('split', 'train')}@{spec.get('revision', 'main')}"
    return "python_docs:pydoc_data.topics"
