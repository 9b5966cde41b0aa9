"""Model fingerprints follow the content of the model files, not their timestamps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from effdepth import fingerprint
from effdepth.fingerprint import FingerprintError, model_fingerprint, read_fingerprint, refresh_fingerprint


@pytest.fixture
def model_dir(tmp_path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"hidden_size": 64}')
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (d / "tokenizer.json").write_text('{"vocab": {}}')
    return d


def test_format_and_stability(model_dir):
    fp = model_fingerprint(model_dir)
    assert fp.startswith("sha256:") and len(fp) == 7 + 64
    assert model_fingerprint(model_dir) == fp


def test_same_size_in_place_replacement_with_old_mtime_changes_it(model_dir, tmp_path):
    memo = tmp_path / "memo.json"
    before = model_fingerprint(model_dir, memo)
    weights = model_dir / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a change in the middle of the file, same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if copied with its old timestamp
    os.utime(model_dir, ns=(model_dir.stat().st_atime_ns, model_dir.stat().st_mtime_ns))
    assert model_fingerprint(model_dir, memo) != before
    assert model_fingerprint(model_dir) == model_fingerprint(model_dir, memo)


@pytest.mark.parametrize("change", ["tokenizer", "config", "new_file", "rename"])
def test_any_file_counts(model_dir, change):
    before = model_fingerprint(model_dir)
    if change == "tokenizer":
        (model_dir / "tokenizer.json").write_text('{"vocab": {"a": 0}}')
    elif change == "config":
        (model_dir / "config.json").write_text('{"hidden_size": 65}')
    elif change == "new_file":
        (model_dir / "model-00002.safetensors").write_bytes(b"x")
    else:
        (model_dir / "tokenizer.json").rename(model_dir / "tokenizer2.json")
    assert model_fingerprint(model_dir) != before


def test_touch_and_hidden_files_do_not_count(model_dir):
    before = model_fingerprint(model_dir)
    os.utime(model_dir / "model.safetensors")
    (model_dir / ".cache" / "huggingface").mkdir(parents=True)
    (model_dir / ".cache" / "huggingface" / "x.metadata").write_text("etag")
    assert model_fingerprint(model_dir) == before


def test_single_file_content_only(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF" + bytes(100))
    b.write_bytes(b"GGUF" + bytes(100))
    assert model_fingerprint(a) == model_fingerprint(b)
    b.write_bytes(b"GGUF" + bytes(99) + b"\x01")
    assert model_fingerprint(a) != model_fingerprint(b)


def test_memo_avoids_rereading_unchanged_files(model_dir, tmp_path, monkeypatch):
    memo = tmp_path / "memo.json"
    model_fingerprint(model_dir, memo)
    reads = []
    original = fingerprint.file_digest
    monkeypatch.setattr(fingerprint, "file_digest", lambda p: reads.append(Path(p).name) or original(p))
    model_fingerprint(model_dir, memo)
    assert reads == []
    (model_dir / "config.json").write_text('{"hidden_size": 66}')
    model_fingerprint(model_dir, memo)
    assert reads == ["config.json"]


def test_refresh_rewrites_the_file_only_on_real_change(model_dir, tmp_path):
    out = tmp_path / "fp" / "tiny.fingerprint"
    fp = refresh_fingerprint(model_dir, out)
    assert read_fingerprint(out) == fp and "model.safetensors" in out.read_text()
    os.utime(out, ns=(1_000_000_000, 1_000_000_000))
    os.utime(model_dir / "model.safetensors")  # touched, content unchanged
    assert refresh_fingerprint(model_dir, out) == fp
    assert out.stat().st_mtime_ns == 1_000_000_000
    (model_dir / "model.safetensors").write_bytes(b"new weights")
    assert refresh_fingerprint(model_dir, out) != fp
    assert out.stat().st_mtime_ns != 1_000_000_000


def test_missing_or_empty_source(tmp_path):
    with pytest.raises(FingerprintError, match="not found"):
        model_fingerprint(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FingerprintError, match="no model files"):
        model_fingerprint(tmp_path / "empty")


def test_a_task_file_edited_with_its_old_mtime_rewrites_its_fingerprint(tmp_path):
    from effdepth.fingerprint import refresh_task_fingerprint

    task = tmp_path / "t.jsonl"
    task.write_text('{"question": "a old cat", "answer": " sat"}\n')
    old = task.stat()
    os.utime(task, ns=(old.st_atime_ns, old.st_mtime_ns - 10**12))  # an old task file
    output = tmp_path / "results" / "fingerprints" / "tasks" / "t.fingerprint"
    first = refresh_task_fingerprint(task, output)
    # written for the first time, it is as old as the task file: prompts built before are not stale
    assert output.stat().st_mtime_ns == task.stat().st_mtime_ns
    before = output.stat().st_mtime_ns
    assert refresh_task_fingerprint(task, output) == first and output.stat().st_mtime_ns == before

    stat = task.stat()
    task.write_text('{"question": "a old cat", "answer": " zzz"}\n')  # same size, mtime restored (cp -p)
    os.utime(task, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert refresh_task_fingerprint(task, output) != first
    assert output.stat().st_mtime_ns > before


def test_a_missing_task_file_is_named(tmp_path):
    from effdepth.fingerprint import refresh_task_fingerprint

    with pytest.raises(FingerprintError, match="task file not found: .*gone.jsonl"):
        refresh_task_fingerprint(tmp_path / "gone.jsonl", tmp_path / "t.fingerprint")


def test_writable_directory_tries_a_write(tmp_path, monkeypatch):
    import errno
    import tempfile

    from effdepth.fileio import writable_directory

    assert writable_directory(tmp_path / "results") and (tmp_path / "results").is_dir()
    assert list((tmp_path / "results").iterdir()) == []  # the probe leaves nothing behind

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # a read-only mount refuses root as well
    assert not writable_directory(tmp_path / "results")
