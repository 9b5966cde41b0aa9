"""Model fingerprints follow the content of the model files, not their timestamps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from effdepth import fingerprint
from effdepth.fingerprint import (
    FingerprintError,
    check_once,
    model_fingerprint,
    read_fingerprint,
    refresh_fingerprint,
)


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


def test_a_passed_check_is_not_repeated_until_what_it_read_changes(model_dir, tmp_path, monkeypatch):
    record = tmp_path / "fp" / ".tiny.checked.json"
    runs = []
    options = {"entry": {"path": str(model_dir)}}
    assert check_once(model_dir, record, lambda: runs.append(1), options) is True
    assert check_once(model_dir, record, lambda: runs.append(1), options) is False
    assert check_once(model_dir, None, lambda: runs.append(1), options) is True  # no record: always
    assert len(runs) == 2
    os.utime(model_dir / "config.json")  # any write (or touch) of a file: checked again
    assert check_once(model_dir, record, lambda: runs.append(1), options) is True
    assert check_once(model_dir, record, lambda: runs.append(1), {"entry": {"trust_remote_code": True}}) is True
    versions = fingerprint._package_versions()
    monkeypatch.setattr(fingerprint, "_package_versions", lambda: {**versions, "transformers": "0.0"})
    assert check_once(model_dir, record, lambda: runs.append(1), options) is True  # another library
    monkeypatch.setattr(fingerprint, "_source_digest", lambda: "0" * 64)
    assert check_once(model_dir, record, lambda: runs.append(1), options) is True  # another effdepth
    assert check_once(model_dir, record, lambda: runs.append(1), options) is False
    assert len(runs) == 6
    record.write_text("{not json")
    assert check_once(model_dir, record, lambda: runs.append(1), options) is True  # a damaged record


def test_a_failed_check_is_not_recorded(model_dir, tmp_path):
    record = tmp_path / ".tiny.checked.json"

    def bad():
        raise fingerprint.ModelFileError("model.safetensors is truncated")

    for _ in range(2):
        with pytest.raises(fingerprint.ModelFileError, match="truncated"):
            check_once(model_dir, record, bad, {})
    assert not record.exists()
    with pytest.raises(FingerprintError, match="not found"):
        check_once(tmp_path / "missing", record, lambda: None, {})


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


# ---------------------------------------------------------------- headers: damaged files are named


def _safetensors(path: Path) -> int:
    import torch
    from safetensors.torch import save_file

    save_file({"a.weight": torch.zeros(8, 4), "b.bias": torch.ones(3)}, path, metadata={"format": "pt"})
    return path.stat().st_size


def test_safetensors_header_gives_every_shape(tmp_path):
    path = tmp_path / "model.safetensors"
    _safetensors(path)
    assert fingerprint.safetensors_shapes(path) == {"a.weight": [8, 4], "b.bias": [3]}


@pytest.mark.parametrize("keep", [0.6, 0.999])
def test_truncated_safetensors_names_both_sizes(tmp_path, keep):
    """A file cut anywhere in its data says how long it should be, and how long it is."""
    path = tmp_path / "model.safetensors"
    whole = _safetensors(path)
    cut = int(whole * keep)
    os.truncate(path, cut)
    with pytest.raises(fingerprint.ModelFileError) as info:
        fingerprint.safetensors_shapes(path)
    assert f"{path} is truncated or damaged (header says {whole} bytes, file has {cut} bytes); copy it again" in str(info.value)


def test_safetensors_cut_inside_its_header_or_grown(tmp_path):
    path = tmp_path / "model.safetensors"
    whole = _safetensors(path)
    os.truncate(path, 20)
    with pytest.raises(fingerprint.ModelFileError, match=r"its header alone says \d+ bytes, file has 20 bytes"):
        fingerprint.safetensors_shapes(path)
    _safetensors(path)
    with open(path, "ab") as fh:
        fh.write(b"\0" * 16)
    with pytest.raises(
        fingerprint.ModelFileError, match=rf"longer than its tensors\) \(header says {whole} bytes, file has {whole + 16}"
    ):
        fingerprint.safetensors_shapes(path)
    path.write_bytes(b"\x04\0\0\0\0\0\0\0nope")
    with pytest.raises(fingerprint.ModelFileError, match="is damaged .its header is not a safetensors header"):
        fingerprint.safetensors_shapes(path)


def test_shard_index_must_match_the_shards(tmp_path):
    import json

    _safetensors(tmp_path / "model-00001-of-00001.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    shard = "model-00001-of-00001.safetensors"
    index.write_text(json.dumps({"weight_map": {"a.weight": shard, "b.bias": shard}}))
    assert fingerprint.checkpoint_shapes(tmp_path) == {"a.weight": (shard, [8, 4]), "b.bias": (shard, [3])}
    index.write_text(json.dumps({"weight_map": {"a.weight": shard, "c.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(fingerprint.ModelFileError, match="names the shard model-00002-of-00002.safetensors, which is not in"):
        fingerprint.checkpoint_shapes(tmp_path)
    index.write_text(json.dumps({"weight_map": {"a.weight": shard, "c.weight": shard}}))
    with pytest.raises(fingerprint.ModelFileError, match=f"places tensor c.weight in {shard}, which does not hold it"):
        fingerprint.checkpoint_shapes(tmp_path)


def _gguf(path: Path) -> int:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(64 * 16, dtype=np.float32).reshape(64, 16))
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.stat().st_size


def test_gguf_header_and_tensor_extents(tmp_path):
    path = tmp_path / "m.gguf"
    whole = _gguf(path)
    reader = fingerprint.read_gguf(path)
    assert sorted(t.name for t in reader.tensors) == ["output_norm.weight", "token_embd.weight"]
    for cut in (whole - 10, whole // 2, 40):
        os.truncate(path, cut)
        with pytest.raises(
            fingerprint.ModelFileError, match=rf"{path} is truncated or damaged \(.*file has {cut} bytes.*copy or download"
        ):
            fingerprint.read_gguf(path)
    path.write_bytes(b"PK\3\4 not a gguf")
    with pytest.raises(fingerprint.ModelFileError, match="is not a GGUF file"):
        fingerprint.read_gguf(path)


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
