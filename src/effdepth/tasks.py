"""Prompt sets: named benchmarks (hub or local copy), seeded arithmetic, local files, fixed prompts.

Every prompt is teacher-forced: ``text = question + answer``.  The question/answer split is kept
because residual erasure and integrated gradients measure the answer tokens.  Prompts are frozen
once to ``resources/prompts/{task}.parquet`` with a content hash that every cache records.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from .config import ARITHMETIC_SOURCES

INSTRUCTION = (
    "Given the following problem, reason and give a final answer to the problem.\n"
    "Problem: {problem}\n"
    'Your response should end with "The final answer is {slot}" where [answer] is the response to the problem.\n'
)

HUB_DATASETS = {
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "hellaswag": ("Rowan/hellaswag", None, "validation"),
    "aime24": ("Maxwell-Jia/AIME_2024", None, "train"),
}

PROMPT_SCHEMA = {"id": pl.Int64, "question": pl.Utf8, "answer": pl.Utf8, "text": pl.Utf8}


class TaskError(ValueError):
    pass


def _field(row: dict[str, Any], name: str) -> Any:
    """Case-insensitive field lookup (the hub AIME set capitalises its columns)."""
    for key, value in row.items():
        if key.lower() == name.lower():
            return value
    raise TaskError(f"field {name!r} missing; the row has {sorted(row)}")


def format_gsm8k(row: dict[str, Any]) -> tuple[str, str]:
    solution, _, final = str(_field(row, "answer")).partition("####")
    question = INSTRUCTION.format(problem=_field(row, "question"), slot="[answer]") + "\n"
    return question, f"{solution}The final answer is {final.strip()}"


def format_aime24(row: dict[str, Any]) -> tuple[str, str]:
    question = INSTRUCTION.format(problem=_field(row, "problem"), slot="\\boxed{[answer]}") + "\n"
    return question, str(_field(row, "solution"))


def format_hellaswag(row: dict[str, Any]) -> tuple[str, str]:
    ending = row["endings"][int(row["label"])]
    return str(row["ctx"]), ending if ending.startswith(",") else " " + ending


FORMATTERS = {"gsm8k": format_gsm8k, "aime24": format_aime24, "hellaswag": format_hellaswag}


def arithmetic(op: str, digits: int, n: int, seed: int) -> list[tuple[str, str]]:
    """``Give the answer directly: a + b = `` / ``a+b`` with uniform ``digits``-digit operands."""
    rng = random.Random(seed)
    low, high = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    symbol, fn = {"addition": ("+", int.__add__), "multiplication": ("*", int.__mul__)}[op]
    out = []
    for _ in range(n):
        a, b = rng.randint(low, high), rng.randint(low, high)
        out.append((f"Give the answer directly: {a} {symbol} {b} = ", str(fn(a, b))))
    return out


def task_seed(name: str, spec: dict[str, Any]) -> int:
    """Per-task seed: explicit, else derived from the task name (stable across runs and machines)."""
    if "seed" in spec:
        return int(spec["seed"])
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def read_rows(path: Path | str) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file not found: {path}")
    if path.suffix == ".parquet":
        return pl.read_parquet(path).to_dicts()
    if path.suffix in (".jsonl", ".json"):
        with path.open() as fh:
            return [json.loads(line) for line in fh if line.strip()]
    raise TaskError(f"{path}: expected a .jsonl or .parquet file")


def _load_hub(source: str, spec: dict[str, Any], n: int | None) -> list[dict[str, Any]]:
    import datasets

    hf_id, name, split = HUB_DATASETS[source]
    hf_id = spec.get("hf_id", hf_id)
    try:
        ds = datasets.load_dataset(hf_id, name, split=split)
    except Exception as exc:
        raise TaskError(
            f"could not load {hf_id} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
            f"give the task a local copy with `path:` (JSONL or Parquet)"
        ) from exc
    return [ds[i] for i in range(len(ds) if n is None else min(len(ds), n))]


def build_prompts(name: str, spec: dict[str, Any], base_dir: Path | str = ".") -> pl.DataFrame:
    """All candidate prompts of a task as a frame with columns id, question, answer, text.

    Named benchmarks return their first ``4 * n_prompts`` items, or every item when the task has a
    token-length filter (AIME24's prompts carry their full solutions: a 1024-token cap keeps about a
    third of its 30 problems); extraction keeps the
    first ``n_prompts`` that fit.
    """
    source, n = spec["source"], int(spec.get("n_prompts", 10))
    pairs: list[tuple[str, str]]
    if source in ARITHMETIC_SOURCES:
        pairs = arithmetic(source, int(spec["digits"]), n, task_seed(name, spec))
    elif source == "fixed":
        pairs = [(item["question"], item["answer"]) for item in spec["items"]]
    elif source == "file":
        rows = read_rows(Path(base_dir) / spec["path"])
        if "question_field" in spec:
            pairs = [(str(r[spec["question_field"]]), str(r[spec["answer_field"]])) for r in rows]
        else:
            pairs = [(str(r[spec["text_field"]]), "") for r in rows]
    else:
        want = None if spec.get("max_tokens") else 4 * n
        rows = read_rows(Path(base_dir) / spec["path"])[:want] if spec.get("path") else _load_hub(source, spec, want)
        pairs = [FORMATTERS[source](r) for r in rows]
    if not pairs:
        raise TaskError(f"task {name!r} produced no prompts")
    return pl.DataFrame(
        {
            "id": list(range(len(pairs))),
            "question": [q for q, _ in pairs],
            "answer": [a for _, a in pairs],
            "text": [q + a for q, a in pairs],
        },
        schema=PROMPT_SCHEMA,
    )


def prompts_hash(frame: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    for q, a in zip(frame["question"], frame["answer"]):
        digest.update(json.dumps([q, a]).encode())
    return digest.hexdigest()[:16]


def write_prompts(frame: pl.DataFrame, path: Path | str, task: str) -> str:
    """Freeze prompts to Parquet with their content hash in the file metadata; returns the hash."""
    digest = prompts_hash(frame)
    table = frame.to_arrow()
    table = table.replace_schema_metadata({b"effdepth.task": task.encode(), b"effdepth.prompts_hash": digest.encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    pq.write_table(table, tmp)
    tmp.rename(path)
    return digest


def read_prompts(path: Path | str) -> tuple[pl.DataFrame, str]:
    """Frozen prompts and their hash (recomputed and checked against the stored one)."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"prompt file not found: {path}")
    table = pq.read_table(path)
    frame = pl.from_arrow(table)
    digest = prompts_hash(frame)
    stored = (table.schema.metadata or {}).get(b"effdepth.prompts_hash", b"").decode()
    if stored and stored != digest:
        raise TaskError(f"{path}: content hash {digest} does not match the stored {stored}; delete it to rebuild")
    return frame, digest


def tokenize_prompt(tokenizer, question: str, answer: str) -> tuple[list[int], int]:
    """Token ids of question (with the tokenizer's special prefix, e.g. BOS) + answer; and n_answer.

    Question and answer are tokenised separately so the answer's tokens are exactly known.
    """
    q_ids = tokenizer(question, add_special_tokens=True)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
    return list(q_ids) + list(a_ids), len(a_ids)


def select_prompts(frame: pl.DataFrame, tokenizer, n: int, max_tokens: int | None = None) -> list[dict[str, Any]]:
    """The first ``n`` prompts whose token count is within ``max_tokens``, tokenised."""
    chosen = []
    for row in frame.iter_rows(named=True):
        ids, n_answer = tokenize_prompt(tokenizer, row["question"], row["answer"])
        if max_tokens is not None and len(ids) > max_tokens:
            continue
        chosen.append({**row, "input_ids": ids, "n_answer": n_answer})
        if len(chosen) == n:
            break
    if not chosen:
        raise TaskError(f"no prompt fits max_tokens={max_tokens}")
    if len(chosen) < n:
        from .log import get_logger

        get_logger("effdepth.tasks").warning(
            "only %d of the %d requested prompts fit max_tokens=%s (of %d candidates)", len(chosen), n, max_tokens, frame.height
        )
    return chosen
