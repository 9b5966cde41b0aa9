"""Prompt formats (on the real GSM8K / AIME24 files when present), seeding, freezing."""

import polars as pl
import pytest

from effdepth.tasks import (
    TaskError,
    arithmetic,
    build_prompts,
    read_prompts,
    select_prompts,
    task_seed,
    tokenize_prompt,
    write_prompts,
)

from ..conftest import REPO, shared_file


def test_gsm8k_format_on_real_data():
    path = shared_file("gsm8k", "test.jsonl")
    frame = build_prompts("gsm8k", {"source": "gsm8k", "n_prompts": 2, "path": str(path)})
    first = frame.row(0, named=True)
    assert first["question"].startswith("Given the following problem, reason and give a final answer to the problem.\nProblem: Janet")
    assert first["question"].endswith('"The final answer is [answer]" where [answer] is the response to the problem.\n\n')
    assert first["answer"].startswith("Janet sells 16 - 3 - 4")
    assert first["answer"].endswith("market.\nThe final answer is 18")
    assert "####" not in first["text"]
    assert first["text"] == first["question"] + first["answer"]
    assert frame.height == 8  # 4 x n_prompts candidates, for the token-length filter


def test_aime24_format_on_real_data():
    path = shared_file("aime24", "test.jsonl")
    frame = build_prompts("aime24", {"source": "aime24", "n_prompts": 5, "path": str(path), "max_tokens": 400})
    assert frame.height == 30  # a token filter sees every problem, not only the first 4 x n
    first = frame.row(0, named=True)
    assert "\\boxed{[answer]}" in first["question"]
    assert first["question"].startswith("Given the following problem")
    assert "Every morning Aya" in first["question"]
    assert first["answer"].startswith("$\\frac{9}{s} + t = 4$")


def test_hellaswag_format():
    from effdepth.tasks import format_hellaswag

    q, a = format_hellaswag({"ctx": "A man sits", "endings": ["x", "on a chair.", "y"], "label": "1"})
    assert q + a == "A man sits on a chair."
    q, a = format_hellaswag({"ctx": "Then", "endings": [", he stands."], "label": 0})
    assert q + a == "Then, he stands."


def test_arithmetic_digits_and_answers():
    for question, answer in arithmetic("multiplication", 6, 20, seed=1):
        a, b = question.removeprefix("Give the answer directly: ").removesuffix(" = ").split(" * ")
        assert len(a) == len(b) == 6
        assert int(a) * int(b) == int(answer)


def test_arithmetic_seeded_per_task():
    assert arithmetic("addition", 4, 5, task_seed("a", {})) == arithmetic("addition", 4, 5, task_seed("a", {}))
    assert arithmetic("addition", 4, 5, task_seed("a", {})) != arithmetic("addition", 4, 5, task_seed("b", {}))
    assert task_seed("a", {"seed": 3}) == 3


def test_frozen_prompts_round_trip_and_tamper_detection(tmp_path):
    frame = build_prompts("add", {"source": "addition", "digits": 3, "n_prompts": 4})
    path = tmp_path / "add.parquet"
    digest = write_prompts(frame, path, "add")
    again, digest2 = read_prompts(path)
    assert digest == digest2 and again.equals(frame)
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    changed = pl.from_arrow(table).with_columns(pl.lit("x").alias("answer")).to_arrow().replace_schema_metadata(table.schema.metadata)
    pq.write_table(changed, path)
    with pytest.raises(TaskError, match="does not match the stored"):
        read_prompts(path)


def test_local_file_task_and_missing_file(tmp_path):
    frame = build_prompts("w", {"source": "file", "path": str(REPO / "tests/data/tiny_task.jsonl"),
                                "question_field": "question", "answer_field": "answer"})
    assert frame.height == 8 and (frame["text"] == frame["question"] + frame["answer"]).all()
    with pytest.raises(TaskError, match="task file not found"):
        build_prompts("w", {"source": "file", "path": str(tmp_path / "no.jsonl"), "text_field": "text"})


def test_tokenize_split_and_max_tokens(tokenizer):
    ids, n_answer = tokenize_prompt(tokenizer, "1 + 2 = ", "3")
    assert n_answer == 1 and tokenizer.decode(ids[-1:]) == "3"
    frame = pl.DataFrame({"id": [0, 1], "question": ["a" * 50, "b"], "answer": ["c", "d"], "text": ["", ""]})
    chosen = select_prompts(frame, tokenizer, n=2, max_tokens=10)
    assert [c["id"] for c in chosen] == [1]  # and a warning says only 1 of 2 fit
    with pytest.raises(TaskError, match="no prompt fits"):
        select_prompts(frame, tokenizer, n=1, max_tokens=1)
