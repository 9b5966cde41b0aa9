"""Prompt formats (on the real GSM8K / AIME24 files when present), seeding, freezing."""

import logging

import polars as pl
import pytest

from effdepth.tasks import (
    HubDownloadError,
    TaskError,
    TaskFileError,
    arithmetic,
    build_prompts,
    read_prompts,
    select_prompts,
    task_seed,
    tokenize_prompt,
    validate_task_file,
    write_prompts,
)

from ..conftest import REPO, shared_file


def test_gsm8k_format_on_real_data():
    path = shared_file("gsm8k", "test.jsonl")
    frame = build_prompts("gsm8k", {"source": "gsm8k", "n_prompts": 2, "path": str(path)})
    first = frame.row(0, named=True)
    assert first["question"].startswith(
        "Given the following problem, reason and give a final answer to the problem.\nProblem: Janet"
    )
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
    changed = (
        pl.from_arrow(table).with_columns(pl.lit("x").alias("answer")).to_arrow().replace_schema_metadata(table.schema.metadata)
    )
    pq.write_table(changed, path)
    with pytest.raises(TaskError, match="does not match the stored") as info:
        read_prompts(path)
    assert f"`snakemake --forcerun {path}`" in str(info.value) and "delete" not in str(info.value)


def test_local_file_task_and_missing_file(tmp_path):
    frame = build_prompts(
        "w",
        {
            "source": "file",
            "path": str(REPO / "tests/data/tiny_task.jsonl"),
            "question_field": "question",
            "answer_field": "answer",
        },
    )
    assert frame.height == 8 and (frame["text"] == frame["question"] + frame["answer"]).all()
    with pytest.raises(TaskError, match="task file not found"):
        build_prompts("w", {"source": "file", "path": str(tmp_path / "no.jsonl"), "text_field": "text"})


def test_tokenize_split_and_max_tokens(tokenizer):
    ids, n_answer = tokenize_prompt(tokenizer, "1 + 2 = ", "3")
    assert n_answer == 1 and tokenizer.decode(ids[-1:]) == "3"
    questions, answers = ["a" * 50, "b"], ["c", "d"]
    frame = pl.DataFrame(
        {"id": [0, 1], "question": questions, "answer": answers, "text": [q + a for q, a in zip(questions, answers)]}
    )
    chosen = select_prompts(frame, tokenizer, n=2, max_tokens=10)
    assert [c["id"] for c in chosen] == [1]  # and a warning says only 1 of 2 fit
    with pytest.raises(TaskError, match="no prompt fits"):
        select_prompts(frame, tokenizer, n=1, max_tokens=1)


def qa_frame(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": list(range(len(pairs))),
            "question": [q for q, _ in pairs],
            "answer": [a for _, a in pairs],
            "text": [q + a for q, a in pairs],
        }
    )


def test_a_prompt_beyond_the_model_context_is_dropped_with_its_length_and_the_limit(tokenizer, caplog):
    frame = qa_frame([("Problem: " + "x + " * 40 + "1 =", " 41"), ("Problem: x + 1 =", " 2")])
    long = len(tokenize_prompt(tokenizer, frame["question"][0], frame["answer"][0])[0])
    with caplog.at_level(logging.WARNING, logger="effdepth"):
        chosen = select_prompts(frame, tokenizer, n=2, context=(64, "max_position_embeddings"))
    assert [c["id"] for c in chosen] == [1]
    warnings = " | ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"prompt 0 ({long} tokens)" in warnings and long > 64
    assert "context of 64 positions (max_position_embeddings" in warnings
    assert "only 1 of the 2 requested prompts fit the model's context of 64 positions" in warnings


def test_no_prompt_within_the_context_is_an_error_naming_them(tokenizer):
    frame = qa_frame([("x" * 80, " y")])
    with pytest.raises(TaskError, match=r"no prompt fits the model's context of 64 positions .*prompt 0 \(8\d tokens\)"):
        select_prompts(frame, tokenizer, n=1, context=(64, "n_positions"))


def test_a_prompt_exactly_at_the_context_is_kept(tokenizer):
    frame = qa_frame([("ab", "c")])
    length = len(tokenize_prompt(tokenizer, "ab", "c")[0])
    assert len(select_prompts(frame, tokenizer, n=1, context=(length, "max_position_embeddings"))) == 1


def test_context_limit_reads_the_config_key_that_bounds_positions():
    from types import SimpleNamespace

    from effdepth.tasks import context_limit

    assert context_limit(SimpleNamespace(max_position_embeddings=64, sliding_window=8)) == (64, "max_position_embeddings")
    assert context_limit(SimpleNamespace(n_positions=1024)) == (1024, "n_positions")
    assert context_limit(SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=32))) == (
        32,
        "max_position_embeddings",
    )
    assert context_limit(SimpleNamespace(hidden_size=8)) is None


def test_select_prompts_rejects_text_that_is_not_question_plus_answer(tokenizer):
    frame = pl.DataFrame({"id": [7], "question": ["1 + 2 = "], "answer": ["3"], "text": ["1 + 2 = 4"]})
    with pytest.raises(TaskError, match="prompt 7: its text '1 \\+ 2 = 4' is not question \\+ answer"):
        select_prompts(frame, tokenizer, n=1)


# --- local task files are read strictly: every problem names file, line or row, and field ---


def _jsonl(tmp_path, *lines: str, name: str = "task.jsonl", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


def _file_task(path, **fields):
    return {
        "source": "file",
        "path": str(path),
        "n_prompts": 3,
        **(fields or {"question_field": "question", "answer_field": "answer"}),
    }


@pytest.mark.parametrize("field, line", [("answer", 2), ("question", 3)])
def test_null_text_is_an_error_naming_file_line_and_field(tmp_path, field, line):
    rows = [
        '{"question": "What is 2 + 2? ", "answer": "4"}',
        '{"question": "What is 3 + 5? ", "answer": "8"}',
        '{"question": "What is 4 + 5? ", "answer": "9"}',
    ]
    rows[line - 1] = rows[line - 1].replace(f'"{field}": "', f'"{field}": null, "x": "')
    path = _jsonl(tmp_path, *rows)
    with pytest.raises(TaskFileError, match=f"task 't': .*task.jsonl, line {line}, field '{field}': is null") as caught:
        build_prompts("t", _file_task(path))
    assert (caught.value.path, caught.value.row, caught.value.field) == (str(path), line, field)


@pytest.mark.parametrize("value", ['""', '"   "', "true", "[1, 2]", '{"a": 1}'])
def test_empty_or_non_text_values_are_errors(tmp_path, value):
    path = _jsonl(tmp_path, '{"question": "q ", "answer": "4"}', f'{{"question": "q ", "answer": {value}}}')
    with pytest.raises(TaskFileError, match="line 2, field 'answer': is (empty|the boolean|a list|a dict)"):
        build_prompts("t", _file_task(path))


def test_numbers_keep_the_text_a_person_writes(tmp_path):
    path = _jsonl(
        tmp_path,
        '{"question": 12, "answer": 4}',
        '{"question": "q ", "answer": 4.0}',
        '{"question": "q ", "answer": 0.5}',
        '{"question": "q ", "answer": 1e-7}',
        '{"question": "q ", "answer": 12345678901234567890}',
    )
    frame = build_prompts("t", _file_task(path))
    assert frame["answer"].to_list() == ["4", "4", "0.5", "0.0000001", "12345678901234567890"]
    assert frame["question"][0] == "12"


def test_parquet_integer_column_with_a_hole_reads_as_digits_and_the_hole_is_an_error(tmp_path):
    path = tmp_path / "task.parquet"
    pl.DataFrame({"question": ["a ", "b "], "answer": [4.0, 5.0]}).write_parquet(path)
    assert build_prompts("t", _file_task(path))["answer"].to_list() == ["4", "5"]
    pl.DataFrame({"question": ["a ", "b ", "c "], "answer": [4.0, float("nan"), None]}).write_parquet(path)
    with pytest.raises(TaskFileError, match="task.parquet, row 2, field 'answer': is nan"):
        build_prompts("t", _file_task(path))


def test_misspelt_field_lists_the_fields_and_the_close_match(tmp_path):
    path = _jsonl(tmp_path, '{"question": "What is 2 + 2? ", "answer": "4"}')
    spec = _file_task(path, question_field="question", answer_field="answr")
    with pytest.raises(
        TaskFileError,
        match=r"task 'my_task': .*line 1, field 'answr': answer_field 'answr' is missing; "
        r"the row has fields \[question, answer\]; did you mean 'answer'\?",
    ):
        build_prompts("my_task", spec)


def test_utf8_with_byte_order_mark_is_read(tmp_path):
    path = _jsonl(tmp_path, '{"question": "What is 2 + 2? ", "answer": "4"}', encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert build_prompts("t", _file_task(path))["text"].to_list() == ["What is 2 + 2? 4"]


def test_invalid_json_and_non_utf8_name_file_and_line(tmp_path):
    path = _jsonl(tmp_path, '{"question": "a ", "answer": "1"}', "", '{"question": "b ", "answer": "2",}')
    with pytest.raises(TaskFileError, match=r"task.jsonl, line 3, column \d+: invalid JSON") as caught:
        build_prompts("t", _file_task(path))
    assert caught.value.row == 3
    path.write_bytes(b'{"question": "a ", "answer": "1"}\n{"question": "caf\xe9 ", "answer": "2"}\n')
    with pytest.raises(TaskFileError, match=r"task.jsonl, line 2: not UTF-8 text \(byte 0xe9 at column 18\)"):
        build_prompts("t", _file_task(path))
    path.write_text('{"question": "a ", "answer": NaN}\n')
    with pytest.raises(TaskFileError, match="line 1: invalid JSON .*NaN is not JSON"):
        build_prompts("t", _file_task(path))
    path.write_text('["a ", "1"]\n')
    with pytest.raises(TaskFileError, match="line 1: expected a JSON object"):
        build_prompts("t", _file_task(path))
    path.write_text("\n\n")
    with pytest.raises(TaskFileError, match="has no rows"):
        build_prompts("t", _file_task(path))


def test_json_array_file(tmp_path):
    path = tmp_path / "task.json"
    path.write_text('[{"question": "a ", "answer": "1"},\n {"question": "b ", "answer": null}]')
    with pytest.raises(TaskFileError, match="task.json, row 2, field 'answer': is null"):
        build_prompts("t", _file_task(path))


def test_named_benchmark_copy_and_fixed_items_are_strict(tmp_path):
    good = '{"question": "Janet has 3 eggs.", "answer": "3 + 1 = 4\\n#### 4"}'
    path = _jsonl(tmp_path, *[good] * 4, '{"question": "Q?", "answr": "x"}')
    spec = {"source": "gsm8k", "n_prompts": 1, "path": str(path)}
    frame = build_prompts("gsm8k", spec)  # the first 4 x n_prompts rows are formatted
    assert frame.height == 4 and frame["answer"][0] == "3 + 1 = 4\nThe final answer is 4"
    with pytest.raises(TaskFileError, match=r"line 5, field 'answer': field 'answer' is missing.*did you mean 'answr'"):
        validate_task_file("gsm8k", spec)  # validation reads every row
    fixed = {"source": "fixed", "items": [{"question": "5 + 7 = ", "answer": 12}, {"question": "1 + 1 = ", "answer": None}]}
    with pytest.raises(TaskFileError, match=r"task 'f': tasks.f.items, item 2, field 'answer': is null"):
        validate_task_file("f", fixed)
    fixed["items"].pop()
    assert build_prompts("f", fixed)["text"].to_list() == ["5 + 7 = 12"]


def test_validate_task_file_checks_every_row_without_the_network(tmp_path, monkeypatch):
    import effdepth.tasks as tasks

    monkeypatch.setattr(tasks, "_load_hub", lambda *a: pytest.fail("validation must not reach the hub"))
    path = _jsonl(tmp_path, *['{"question": "q ", "answer": "1"}'] * 5, '{"question": "q ", "answer": ""}')
    with pytest.raises(TaskFileError, match="line 6, field 'answer': is empty"):
        validate_task_file("t", _file_task(path))
    assert validate_task_file("g", {"source": "gsm8k", "n_prompts": 2}) == []  # no local copy: nothing to check
    assert validate_task_file("a", {"source": "addition", "digits": 2, "n_prompts": 2}) == []
    assert (
        validate_task_file(
            "w",
            {
                "source": "file",
                "path": str(REPO / "tests/data/tiny_task.jsonl"),
                "question_field": "question",
                "answer_field": "answer",
            },
        )
        == []
    )


def test_hub_failure_is_not_a_task_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HubDownloadError, match="could not load openai/gsm8k") as caught:
        build_prompts("gsm8k", {"source": "gsm8k", "n_prompts": 1})
    assert not isinstance(caught.value, TaskError)


@pytest.mark.parametrize(
    "question, answer, expected",
    [
        ("What is the capital of France?", "Paris", True),
        ("The cat", "sat", True),
        ("What is the capital of France? ", "Paris", False),
        ("What is the capital of France?", " Paris", False),
        ("Give the answer directly: 2 + 2 =", "4", False),
        ("2+2=", "4", False),
        ("He said", ", then left", False),
        ("北京是", "中国的首都", False),
    ],
)
def test_glued_finds_two_words_that_meet_without_whitespace(question, answer, expected):
    from effdepth.tasks import glued

    assert glued(question, answer) is expected


def qa_file(tmp_path, rows) -> str:
    import json

    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in rows))
    return str(path)


def test_a_glued_question_and_answer_is_warned_about_and_join_puts_the_space(tmp_path):
    path = qa_file(tmp_path, [("What is the capital of France?", "Paris"), ("2 + 2 =", " 4")])
    spec = {"source": "file", "path": path, "question_field": "q", "answer_field": "a", "n_prompts": 2}
    (warning,) = validate_task_file("qa", spec)
    assert warning.startswith("tasks.qa: 1 of 2 prompts join question and answer with no whitespace")
    assert "France?Paris" in warning and "set tasks.qa.join: ' '" in warning
    assert build_prompts("qa", spec)["text"][0] == "What is the capital of France?Paris"  # the default: as given

    joined = {**spec, "join": " "}
    assert validate_task_file("qa", joined) == []
    frame = build_prompts("qa", joined)
    assert frame["text"].to_list() == ["What is the capital of France? Paris", "2 + 2 =  4"]
    assert frame["question"][0] == "What is the capital of France? " and frame["answer"][0] == "Paris"
    assert validate_task_file("qa", {**spec, "join": ""}) == []  # explicitly as given: no warning


def test_join_on_fixed_items_and_its_answer_tokens(tokenizer):
    spec = {"source": "fixed", "items": [{"question": "Capital of France?", "answer": "Paris"}], "join": "\nA: "}
    frame = build_prompts("f", spec)
    assert frame["text"][0] == "Capital of France?\nA: Paris"
    ids, n_answer = tokenize_prompt(tokenizer, frame["question"][0], frame["answer"][0])
    assert tokenizer.decode(ids[-n_answer:]) == "Paris"
    assert validate_task_file("f", {**spec, "join": ""}) == []
    assert validate_task_file("f", {k: spec[k] for k in ("source", "items")})  # no join: glued, warned about
