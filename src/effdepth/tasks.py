"""Prompt sets: named benchmarks (hub or local copy), seeded arithmetic, local files, fixed prompts.

Every prompt is teacher-forced: ``text = question + answer``.  The question/answer split is kept
because residual erasure and integrated gradients measure the answer tokens.  Prompts are frozen
once to ``resources/prompts/{task}.parquet`` with a content hash that every cache records.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import random
import re
import unicodedata
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
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
    """A task definition, a local task file or a prompt is unusable as given.

    Retrying cannot help: the input has to change.  Failures to reach the Hugging Face hub raise
    :class:`HubDownloadError` instead, which is worth retrying.
    """


class TaskFileError(TaskError):
    """A problem in one place of a local task file: ``path``, ``row`` (the line of a JSONL file, the
    1-based row of a Parquet file or JSON array; None for the whole file) and ``field`` (None when no
    single field is at fault)."""

    def __init__(self, message: str, path: Path | str | None = None, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.path, self.row, self.field = path, row, field


class HubDownloadError(RuntimeError):
    """A benchmark could not be fetched from the Hugging Face hub (network, authentication, offline
    mode): transient, so the workflow may retry it.  Deliberately not a :class:`TaskError`."""


class _Row(dict):
    """A task row that knows where it came from: ``source`` (a file, or a hub dataset), ``number``
    (line of a JSONL file, row of a Parquet file or JSON array, item of a hub split) and ``unit``
    (the word for ``number``)."""

    def __init__(self, data: dict[str, Any], source: str | None = None, number: int | None = None, unit: str = "line"):
        super().__init__(data)
        self.source, self.number, self.unit = source, number, unit

    def where(self) -> str:
        place = f"{self.unit} {self.number}" if self.number is not None else ""
        return ", ".join(p for p in (self.source, place) if p) or "task row"

    def error(self, field: str | None, message: str) -> TaskFileError:
        where = self.where() + (f", field {field!r}" if field is not None else "")
        return TaskFileError(f"{where}: {message}", self.source, self.number, field)


def _row(row: dict[str, Any]) -> _Row:
    return row if isinstance(row, _Row) else _Row(row)


def _field(row: dict[str, Any], name: str, setting: str | None = None) -> Any:
    """The value of field ``name`` of a task row: an exact key, else the one key equal ignoring case
    (the hub AIME set capitalises its columns).

    Raises TaskFileError naming the file, row and field, the fields the row has and the closest
    matches when the field is missing (``setting`` names the task option that asked for it).
    """
    if name in row:
        return row[name]
    folded = [key for key in row if str(key).lower() == name.lower()]
    if len(folded) == 1:
        return row[folded[0]]
    asked = f"{setting} {name!r}" if setting else f"field {name!r}"
    have = ", ".join(map(str, row)) or "none"
    close = difflib.get_close_matches(name, [str(k) for k in row], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    if len(folded) > 1:
        raise _row(row).error(name, f"{asked} is ambiguous: the row has {folded}")
    raise _row(row).error(name, f"{asked} is missing; the row has fields [{have}]{hint}")


def _number_text(value: float) -> str:
    """How a person writes a number read as a float: 4.0 -> "4", 0.1 -> "0.1", 1e-07 -> "0.0000001"."""
    if value.is_integer():
        return str(int(value))
    return np.format_float_positional(value, unique=True, trim="-")


def _text(row: dict[str, Any], name: str, setting: str | None = None, allow_empty: bool = False) -> str:
    """Field ``name`` of ``row`` as prompt text, strictly.

    Text stays as is; integers and integral floats become their digits (4 and 4.0 -> "4": Parquet and
    pandas exports turn an integer column with a hole into floats); other floats their shortest
    positional form; Decimals their digits.  Raises TaskFileError (file, row, field) for a missing
    field, null, NaN or infinity, a boolean, a list or mapping, and empty or whitespace-only text
    (unless ``allow_empty``).
    """
    value = _field(row, name, setting)
    if value is None:
        raise _row(row).error(name, "is null; every prompt needs this text (remove the row or fill it in)")
    if isinstance(value, bool):
        raise _row(row).error(name, f"is the boolean {value!r}, expected text")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _row(row).error(name, f"is {value!r} (a missing or invalid number), expected text")
        text = _number_text(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _row(row).error(name, f"is {value} (a missing or invalid number), expected text")
        text = format(value.normalize() if value == value.to_integral_value() else value, "f")
    elif isinstance(value, str):
        text = value
    else:
        raise _row(row).error(name, f"is a {type(value).__name__} ({_short(value)}), expected text")
    if not text.strip() and not allow_empty:
        raise _row(row).error(name, f"is empty ({text!r}); every prompt needs this text")
    return text


def _short(value: Any, limit: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def format_gsm8k(row: dict[str, Any]) -> tuple[str, str]:
    """GSM8K item -> (instruction + problem, worked solution + "The final answer is N")."""
    solution, _, final = _text(row, "answer").partition("####")
    question = INSTRUCTION.format(problem=_text(row, "question"), slot="[answer]") + "\n"
    return question, f"{solution}The final answer is {final.strip()}"


def format_aime24(row: dict[str, Any]) -> tuple[str, str]:
    """AIME 2024 item -> (instruction + problem, full solution)."""
    question = INSTRUCTION.format(problem=_text(row, "problem"), slot="\\boxed{[answer]}") + "\n"
    return question, _text(row, "solution")


def format_hellaswag(row: dict[str, Any]) -> tuple[str, str]:
    """HellaSwag item -> (context, the labelled ending with its leading space)."""
    endings, label = _field(row, "endings"), _field(row, "label")
    if not isinstance(endings, (list, tuple)) or not endings:
        raise _row(row).error("endings", f"expected a non-empty list of endings, got {_short(endings)}")
    try:
        index = int(label)
    except (TypeError, ValueError):
        raise _row(row).error("label", f"expected the index of the right ending, got {_short(label)}") from None
    if not 0 <= index < len(endings) or isinstance(label, bool):
        raise _row(row).error("label", f"{_short(label)} is not the index of one of the {len(endings)} endings")
    row = _row(row)
    ending = _text(_Row({"endings": endings[index]}, row.source, row.number, row.unit), "endings")
    return _text(row, "ctx"), ending if ending.startswith(",") else " " + ending


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


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"field {repeated[0]!r} appears twice in one object")
    return dict(pairs)


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (write null, or the number as text)")


def _parse_json(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)


def _object_row(value: Any, source: str, number: int, unit: str) -> _Row:
    if not isinstance(value, dict):
        raise TaskFileError(f"{source}, {unit} {number}: expected a JSON object ({{...}}), got {_short(value)}", source, number)
    return _Row(value, source, number, unit)


def _read_json_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise TaskFileError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); save the file as UTF-8",
            str(path),
            line,
        ) from None


def _read_json_rows(path: Path) -> list[_Row]:
    text, source = _read_json_text(path), str(path)
    if path.suffix == ".json" and text.lstrip().startswith("["):  # one JSON array of objects
        try:
            items = _parse_json(text)
        except json.JSONDecodeError as exc:
            raise TaskFileError(
                f"{source}, line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})", source, exc.lineno
            ) from None
        except ValueError as exc:
            raise TaskFileError(f"{source}: invalid JSON ({exc})", source) from None
        return [_object_row(item, source, number, "row") for number, item in enumerate(items, 1)]
    rows = []
    for number, line in enumerate(text.split("\n"), 1):  # JSON strings may hold U+2028: no splitlines()
        if not line.strip():
            continue
        try:
            value = _parse_json(line)
        except json.JSONDecodeError as exc:
            raise TaskFileError(
                f"{source}, line {number}, column {exc.colno}: invalid JSON ({exc.msg})", source, number
            ) from None
        except ValueError as exc:
            raise TaskFileError(f"{source}, line {number}: invalid JSON ({exc})", source, number) from None
        rows.append(_object_row(value, source, number, "line"))
    return rows


def read_rows(path: Path | str) -> list[dict[str, Any]]:
    """The rows of a local task file, read strictly.

    Args:
        path: a JSON Lines file (``.jsonl``; ``.json`` holding JSON lines or one array of objects) in
            UTF-8 with or without a byte-order mark, or a Parquet file (``.parquet``).

    Returns one dict per row (blank lines skipped), each remembering its file and line (JSONL) or
    1-based row (Parquet, JSON array) for error messages.

    Raises:
        TaskFileError: a missing file, an unknown suffix, bytes that are not UTF-8, invalid JSON, NaN
            or Infinity, a repeated key, a line that is not an object, an unreadable Parquet file, or
            no rows at all -- each naming the file and, where there is one, the line.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file not found: {path}", str(path))
    if path.suffix == ".parquet":
        try:
            rows = [_Row(r, str(path), i, "row") for i, r in enumerate(pl.read_parquet(path).to_dicts(), 1)]
        except Exception as exc:  # polars and arrow raise several types for a damaged file
            raise TaskFileError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})", str(path)) from exc
    elif path.suffix in (".jsonl", ".json"):
        rows = _read_json_rows(path)
    else:
        raise TaskFileError(f"{path}: expected a .jsonl, .json or .parquet file", str(path))
    if not rows:
        raise TaskFileError(f"{path}: the task file has no rows", str(path))
    return rows


def _load_hub(source: str, spec: dict[str, Any], n: int | None) -> list[dict[str, Any]]:
    import datasets

    hf_id, name, split = HUB_DATASETS[source]
    hf_id = spec.get("hf_id", hf_id)
    try:
        ds = datasets.load_dataset(hf_id, name, split=split)
    except Exception as exc:
        raise HubDownloadError(
            f"could not load {hf_id} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
            f"give the task a local copy with `path:` (JSONL or Parquet)"
        ) from exc
    return [_Row(ds[i], f"{hf_id} ({split})", i + 1, "item") for i in range(len(ds) if n is None else min(len(ds), n))]


def _file_pairs(spec: dict[str, Any], rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    if "question_field" in spec:
        join = spec.get("join", "")
        return [
            (_text(r, spec["question_field"], "question_field") + join, _text(r, spec["answer_field"], "answer_field"))
            for r in rows
        ]
    return [(_text(r, spec["text_field"], "text_field"), "") for r in rows]


def _pairs(name: str, spec: dict[str, Any], base_dir: Path | str, complete: bool) -> list[tuple[str, str]] | None:
    """(question, answer) pairs of a task; ``complete``: every row of a local file, never the hub
    (None for a benchmark that has no local copy)."""
    source, n = spec["source"], int(spec.get("n_prompts", 10))
    if source in ARITHMETIC_SOURCES:
        return arithmetic(source, int(spec["digits"]), n, task_seed(name, spec))
    if source == "fixed":
        items = [
            _Row(item if isinstance(item, dict) else {"item": item}, f"tasks.{name}.items", i, "item")
            for i, item in enumerate(spec["items"], 1)
        ]
        return [(_text(item, "question") + spec.get("join", ""), _text(item, "answer")) for item in items]
    if source == "file":
        return _file_pairs(spec, read_rows(Path(base_dir) / spec["path"]))
    if spec.get("path"):
        rows = read_rows(Path(base_dir) / spec["path"])
        want = None if complete or spec.get("max_tokens") else 4 * n
        return [FORMATTERS[source](r) for r in rows[:want]]
    if complete:
        return None
    return [FORMATTERS[source](r) for r in _load_hub(source, spec, None if spec.get("max_tokens") else 4 * n)]


_CLOSES_A_WORD = set(".?!:;,)]}\"'")


def _spaced_script(char: str) -> bool:
    """Whether ``char`` belongs to a script that separates words with spaces (not CJK, kana, Thai)."""
    return char.isalnum() and not ("\u0e00" <= char <= "\u0e7f" or "\u2e80" <= char <= "\ud7ff" or "\uf900" <= char <= "\uffef")


def glued(question: str, answer: str) -> bool:
    """Whether question and answer meet with no whitespace between two words: the question ends with
    a letter, digit or closing punctuation, the answer starts with a letter or digit, both in a
    script that puts spaces between words (``France?`` + ``Paris``; not ``2+2=`` + ``4``)."""
    if not question or not answer or question[-1].isspace() or answer[0].isspace():
        return False
    end, start = question[-1], answer[0]
    return _spaced_script(start) and (_spaced_script(end) or end in _CLOSES_A_WORD)


def join_warning(name: str, spec: dict[str, Any], pairs: list[tuple[str, str]]) -> str | None:
    """The warning for a question/answer task without ``join`` whose prompts glue question and
    answer together (:func:`glued`), naming how many and the first; None when ``join`` is set, the
    task is not a question/answer file or fixed task, or no prompt is glued."""
    if "join" in spec or not (spec["source"] == "fixed" or "question_field" in spec):
        return None
    stuck = [i for i, (q, a) in enumerate(pairs) if glued(q, a)]
    if not stuck:
        return None
    q, a = pairs[stuck[0]]
    return (
        f"tasks.{name}: {len(stuck)} of {len(pairs)} prompts join question and answer with no whitespace where two words "
        f"meet (prompt {stuck[0]}: {_short(q[-30:], 40)} + {_short(a[:30], 40)} is read as {_short(q[-20:] + a[:20], 50)}); "
        f"set tasks.{name}.join: ' ' to put a space between them (or join: '' to keep them as they are and silence this)"
    )


def _for_task(name: str, error: TaskError) -> TaskError:
    if isinstance(error, TaskFileError):
        return TaskFileError(f"task {name!r}: {error}", error.path, error.row, error.field)
    return TaskError(f"task {name!r}: {error}")


def build_prompts(name: str, spec: dict[str, Any], base_dir: Path | str = ".") -> pl.DataFrame:
    """All candidate prompts of a task as a frame with columns id, question, answer, text.

    Named benchmarks return their first ``4 * n_prompts`` items, or every item when the task has a
    token-length filter (AIME24's prompts carry their full solutions: a 1024-token cap keeps about a
    third of its 30 problems); extraction keeps the first ``n_prompts`` that fit.  Prompt formats
    and the teacher-forced text ``question + answer`` follow docs/methods.md; ``join`` (file and
    fixed tasks) ends every question.  Logs :func:`join_warning` when question and answer are glued.

    Args:
        name: the task's name in the config (seeds arithmetic tasks; names the task in errors).
        spec: the task's config block (``source`` and the options of that source).
        base_dir: directory that relative ``path`` values are relative to.

    Raises:
        TaskFileError: a local task file or a ``fixed`` item is unusable (file, row and field named;
            see :func:`read_rows` and :func:`validate_task_file`).
        TaskError: the task produced no prompts.
        HubDownloadError: a benchmark without a local copy could not be fetched from the hub.
    """
    try:
        pairs = _pairs(name, spec, base_dir, complete=False) or []
    except TaskError as exc:
        raise _for_task(name, exc) from None
    if not pairs:
        raise TaskError(f"task {name!r} produced no prompts")
    if warning := join_warning(name, spec, pairs):
        from .log import get_logger

        get_logger("effdepth.tasks").warning(warning)
    return pl.DataFrame(
        {
            "id": list(range(len(pairs))),
            "question": [q for q, _ in pairs],
            "answer": [a for _, a in pairs],
            "text": [q + a for q, a in pairs],
        },
        schema=PROMPT_SCHEMA,
    )


def validate_task_file(name: str, spec: dict[str, Any], base_dir: Path | str = ".") -> list[str]:
    """Check everything local about a task without a tokenizer, a model or the network.

    Meant for workflow parse time, before any job runs: a bad local file then fails once, with its
    message, instead of inside a (retried) job.  Every row of a local file (``source: file``, or a
    named benchmark's ``path:`` copy) is read and formatted exactly as :func:`build_prompts` would;
    ``fixed`` items are checked the same way; arithmetic tasks and benchmarks without a local copy
    have nothing local to check.

    Returns the warnings about the task (:func:`join_warning`), for the workflow to show.

    Args:
        name: the task's name in the config.
        spec: the task's config block.
        base_dir: directory that relative ``path`` values are relative to.

    Raises:
        TaskFileError (a TaskError): the first problem found, naming task, file, line or row, and
            field -- invalid JSON or UTF-8, a missing field (with the fields that exist and close
            matches), null, NaN, a boolean, a list, or empty text.  Never raises HubDownloadError.
    """
    try:
        pairs = _pairs(name, spec, base_dir, complete=True)
    except TaskError as exc:
        raise _for_task(name, exc) from None
    warning = join_warning(name, spec, pairs or [])
    return [warning] if warning else []


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
        raise TaskError(
            f"{path}: content hash {digest} does not match the stored {stored} (the file was altered); rebuild it and "
            f"everything made from it with `snakemake --forcerun {path}` plus your usual options (--configfile FILE last)"
        )
    return frame, digest


def _decode(tokenizer, ids: list[int], added: set[int]) -> str:
    """The text of ``ids`` as the tokenizer reads text: split at its added tokens (BOS, chat markers),
    each piece between them decoded on its own (a SentencePiece tokenizer prefixes every such piece
    with its dummy "▁", and its decoder strips it again from each piece).  ``added``: the ids of
    those tokens (see ``_added_ids``)."""
    parts, run = [], []
    for token in ids:
        if token in added:
            parts += [tokenizer.decode(run, clean_up_tokenization_spaces=False), tokenizer.convert_ids_to_tokens(token)]
            run = []
        else:
            run.append(token)
    parts.append(tokenizer.decode(run, clean_up_tokenization_spaces=False))
    return "".join(parts)


def _added_ids(tokenizer) -> set[int]:
    return {i for i in tokenizer.added_tokens_decoder if i != tokenizer.unk_token_id}


def _same_text(decoded: str, expected: str, unk_token: str | None, at_start: bool = False) -> bool:
    """Whether ``decoded`` is ``expected`` up to what tokenizers do to text on their own: Unicode
    normalisation (NFC/NFKC), characters outside the vocabulary decoded as the unknown token, and
    (``at_start``) the one leading space a SentencePiece decoder strips.  Each unknown token stands
    for one character."""
    for got, want in ((decoded, expected), (unicodedata.normalize("NFKC", decoded), unicodedata.normalize("NFKC", expected))):
        candidates = [want, want[1:]] if at_start and want.startswith(" ") else [want]
        if got in candidates:
            return True
        if unk_token and unk_token in got:
            pattern = "(.)".join(re.escape(part) for part in got.split(unk_token))
            if any(re.fullmatch(pattern, c, re.DOTALL) for c in candidates):
                return True
    return False


def _answer_start(
    tokenizer, content: list[int], offsets: list[tuple[int, int]] | None, question: str, answer: str, added: set[int]
) -> int:
    """Index of the first answer token in ``content`` (the text's tokens without special tokens).

    With character offsets (fast tokenizers): the first token that ends inside the answer.  Without
    (Python tokenizers): the shortest token suffix whose decoding is the answer, possibly led by
    whitespace that ends the question.
    """
    if not answer:
        return len(content)
    if offsets is not None:
        return next((j for j, (_, end) in enumerate(offsets) if end > len(question)), len(content))
    decoded = _decode(tokenizer, content, added)

    def tail(k: int) -> str | None:  # the text of content[k:], None where decoding is not prefix-stable
        head = _decode(tokenizer, content[:k], added)
        return decoded[len(head) :] if decoded.startswith(head) else None

    # Start from the largest k whose tail is nearly as long as the answer (binary search: tails grow
    # as k falls), then step back until the tail is longer than the answer, the question's trailing
    # whitespace and unknown-token names allow: a few decodes, not one per token of a long prompt.
    alone = _decode(tokenizer, list(tokenizer(answer, add_special_tokens=False)["input_ids"]), added)
    shortest = min(len(alone), len(answer)) - 2
    longest = (len(answer) + len(question) - len(question.rstrip())) * max(1, len(tokenizer.unk_token or ""))
    low, high = 0, len(content)  # invariant: tail(low) is at least `shortest` long
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if len(tail(middle) or "") >= shortest else (low, middle)
    for k in range(low, -1, -1):
        text = tail(k)
        if text is not None and len(text) > longest:
            break
        if text is not None and _is_answer(text, question, answer, tokenizer.unk_token):
            return k
    return len(content)


def _is_answer(decoded: str, question: str, answer: str, unk_token: str | None) -> bool:
    """``decoded`` is the answer, or the answer led by whitespace that ends the question (a token
    such as " 1" that joins the question's last space to the answer's first digit)."""
    borrowed = decoded[: len(decoded) - len(decoded.lstrip())]
    return _same_text(decoded, answer, unk_token) or (
        bool(borrowed) and question.endswith(borrowed) and _same_text(decoded[len(borrowed) :], answer, unk_token)
    )


def tokenize_prompt(tokenizer, question: str, answer: str, index: int | None = None) -> tuple[list[int], int]:
    """Token ids of the teacher-forced text ``question + answer`` and the number of answer tokens.

    The whole text is encoded once, as the model reads it (docs/methods.md: prompts are
    teacher-forced); the answer tokens are the last ``n_answer`` ids, located from character offsets
    (fast tokenizers) or by decoding token suffixes (Python tokenizers).  The tokenizer's leading
    special tokens (e.g. BOS) are kept, a BOS the text itself starts with is not doubled, and the
    special tokens it appends (e.g. EOS) are dropped: the prompt is the text, not a finished sequence.

    Every prompt is verified: its ids decode to the text (up to the tokenizer's own normalisation,
    see ``_same_text``) and its answer ids decode to the answer.

    Args:
        tokenizer: a Hugging Face tokenizer (fast or Python).
        question: the prompt's question (may end with the space before the answer).
        answer: the answer; empty for text-only prompts (``n_answer`` is then 0).
        index: the prompt's id, named in errors.

    Raises:
        TaskError (naming the prompt and both strings): the ids do not decode to the text; the answer
            begins inside a token (e.g. a question ending in "is" and an answer "n't" merged into one
            token); the text holds the end-of-sequence token or a beginning-of-sequence token after
            its start; the tokenizer encodes the text differently with and without special tokens.
    """
    text, label = question + answer, f"prompt {index}" if index is not None else "prompt"
    if not text:
        raise TaskError(f"{label}: empty text")
    with_specials = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        content, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    else:
        content, offsets = list(tokenizer(text, add_special_tokens=False)["input_ids"]), None
    start = next(
        (i for i in range(len(with_specials) - len(content) + 1) if with_specials[i : i + len(content)] == content), None
    )
    if start is None:
        raise TaskError(f"{label}: the tokenizer encodes the text differently with and without its special tokens: {text!r}")
    prefix = with_specials[:start]  # e.g. BOS; what follows the text (e.g. EOS) is dropped
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is not None and content[:1] == [bos]:
        prefix = [t for t in prefix if t != bos]  # the text starts with BOS itself: keep one
    if eos is not None and eos in content:
        raise TaskError(f"{label}: the text contains the end-of-sequence token {tokenizer.eos_token!r}: {text!r}")
    if bos is not None and bos in content[1:]:
        raise TaskError(
            f"{label}: the text contains the beginning-of-sequence token {tokenizer.bos_token!r} after its start: {text!r}"
        )
    added = _added_ids(tokenizer)
    decoded = _decode(tokenizer, content, added)
    if not _same_text(decoded, text, tokenizer.unk_token, at_start=True):
        raise TaskError(f"{label}: the token ids decode to {decoded!r}, not to the text {text!r}")
    k = _answer_start(tokenizer, content, offsets, question, answer, added)
    if answer:
        head = _decode(tokenizer, content[:k], added)
        got = decoded[len(head) :] if decoded.startswith(head) else _decode(tokenizer, content[k:], added)
        if not _is_answer(got, question, answer, tokenizer.unk_token):
            raise TaskError(
                f"{label}: the answer tokens decode to {got!r}, not to the answer {answer!r} "
                f"(the answer does not start on a token boundary of the text {text!r})"
            )
    return prefix + content, len(content) - k


# Config keys that bound the positions a model can read, by architecture (the first present wins).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_limit(model_config: Any) -> tuple[int, str] | None:
    """(the most positions a model reads, the config key that says so), or None when its config
    names none.

    ``model_config``: a transformers ``PretrainedConfig`` (or anything with those attributes).  The
    limit is the first of ``CONTEXT_KEYS`` the config sets; for a decoder with a text sub-config
    (multimodal families) that sub-config is read.  A sliding window is no limit: those layers are
    trained to attend within their window over longer inputs.  RoPE scaling is already counted in
    ``max_position_embeddings`` by the families that use it (Llama 3, Qwen2.5 with YaRN configs
    state the extended length).
    """
    text = getattr(model_config, "text_config", None)
    for config in (model_config, text):
        for key in CONTEXT_KEYS:
            value = getattr(config, key, None) if config is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, key
    return None


def select_prompts(
    frame: pl.DataFrame,
    tokenizer,
    n: int,
    max_tokens: int | None = None,
    context: tuple[int, str] | None = None,
) -> list[dict[str, Any]]:
    """The first ``n`` prompts within ``max_tokens`` and the model's context, tokenised.

    Args:
        frame: frozen prompts (columns id, question, answer, text; see :func:`build_prompts`).
        tokenizer: the model's tokenizer.
        n: how many prompts to keep.
        max_tokens: longest prompt kept, in tokens (with BOS); None keeps all.
        context: the model's position limit and the config key that sets it (:func:`context_limit`);
            a longer prompt would run past the positions the model was trained on and is dropped,
            with a warning naming it, its length and the limit.  None: no limit.

    Returns ``{**row, "input_ids": ids, "n_answer": k}`` per kept prompt (see :func:`tokenize_prompt`).
    Logs a warning naming every prompt dropped for the context, one when fewer than ``n`` fit, and
    one when prompts hold characters the tokenizer maps to its unknown token.

    Raises:
        TaskError: a prompt whose text is not question + answer, a prompt that fails the checks of
            :func:`tokenize_prompt` (naming its id), or no prompt within ``max_tokens`` and the context.
    """
    from .log import get_logger

    log = get_logger("effdepth.tasks")
    chosen, with_unknown, too_long = [], 0, []
    for row in frame.iter_rows(named=True):
        if row["text"] != row["question"] + row["answer"]:
            raise TaskError(
                f"prompt {row['id']}: its text {row['text']!r} is not question + answer {row['question'] + row['answer']!r}"
            )
        ids, n_answer = tokenize_prompt(tokenizer, row["question"], row["answer"], index=row["id"])
        if max_tokens is not None and len(ids) > max_tokens:
            continue
        if context is not None and len(ids) > context[0]:
            too_long.append(f"prompt {row['id']} ({len(ids)} tokens)")
            continue
        with_unknown += tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids
        chosen.append({**row, "input_ids": ids, "n_answer": n_answer})
        if len(chosen) == n:
            break
    limits = " and ".join(
        ([f"max_tokens={max_tokens}"] if max_tokens is not None else [])
        + ([f"the model's context of {context[0]} positions ({context[1]})"] if context is not None else [])
    )
    if too_long:
        shown = ", ".join(too_long[:5]) + (f" and {len(too_long) - 5} more" if len(too_long) > 5 else "")
        log.warning(
            "dropped %d prompt(s) longer than the model's context of %d positions (%s in its config.json): %s; "
            "set the task's max_tokens, shorten them, or use a model with a longer context",
            len(too_long),
            context[0],
            context[1],
            shown,
        )
    if not chosen:
        raise TaskError(f"no prompt fits {limits or 'the task'}" + (f" (longer: {', '.join(too_long[:5])})" if too_long else ""))
    if with_unknown:
        log.warning(
            "%d of the %d prompts hold characters the tokenizer maps to %s", with_unknown, len(chosen), tokenizer.unk_token
        )
    if len(chosen) < n:
        log.warning("only %d of the %d requested prompts fit %s (of %d candidates)", len(chosen), n, limits, frame.height)
    return chosen
