"""Caches: reproducible bytes, provenance with the model fingerprint, checksums, file modes."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from effdepth.cache import CacheError, load_tensors, read_metadata, save_tensors

META = {
    "model": "tiny",
    "revision": "local",
    "dtype": "float32",
    "prompts_hash": "abc",
    "task": "words",
    **{f"extra_{c}": c for c in "qwertyuiopasdfgh"},
    "list": [1, 2],
}
FP = "sha256:" + "0" * 64


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "b": torch.randn(3, 5, generator=g),
        "a": torch.arange(7, dtype=torch.int32),
        "half": torch.randn(4, generator=g).to(torch.bfloat16),
        "empty": torch.zeros(0, 3),
    }


def _write(path: Path) -> bytes:
    save_tensors(path, _tensors(), META, model_fingerprint=FP)
    return path.read_bytes()


def test_round_trip_with_provenance(tmp_path):
    path = tmp_path / "c.safetensors"
    _write(path)
    tensors, meta = load_tensors(path)
    for key, value in _tensors().items():
        assert torch.equal(tensors[key], value) and tensors[key].dtype == value.dtype
    assert meta["model_fingerprint"] == FP and meta["list"] == "[1, 2]" and meta["effdepth_version"]
    assert read_metadata(path) == meta
    only, _ = load_tensors(path, ["a"])
    assert list(only) == ["a"]


def test_identical_inputs_give_identical_bytes_across_processes(tmp_path):
    first = _write(tmp_path / "one.safetensors")
    assert _write(tmp_path / "two.safetensors") == first
    script = (
        "import sys; from pathlib import Path; from tests.unit.test_cache import _write; "
        "sys.stdout.write(__import__('hashlib').sha256(_write(Path(sys.argv[1]))).hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "three.safetensors")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=root,
    )
    assert out.stdout == hashlib.sha256(first).hexdigest()


def test_outputs_are_readable_by_the_group_under_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "c.safetensors"
        _write(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not (tmp_path / "c.safetensors.partial").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip_data", "flip_header", "empty"])
def test_damaged_cache_is_a_cache_error_with_path_and_rebuild_hint(tmp_path, damage):
    path = tmp_path / "stats.safetensors"
    data = bytearray(_write(path))
    header_len = int.from_bytes(data[:8], "little")
    if damage == "truncate":
        data = data[: len(data) - 10]
    elif damage == "flip_data":
        data[8 + header_len + 5] ^= 0x01  # one bit of the first tensor's bytes
    elif damage == "flip_header":
        data[8 + header_len // 2] ^= 0x20
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError) as info:
        load_tensors(path)
    assert str(path) in str(info.value) and f"`snakemake --forcerun {path}`" in str(info.value)
    assert "delete" not in str(info.value)  # deleting the cache alone rebuilds nothing


def test_flipped_bit_is_caught_in_every_tensor(tmp_path):
    path = tmp_path / "stats.safetensors"
    clean = _write(path)
    header_len = int.from_bytes(clean[:8], "little")
    for offset in range(8 + header_len, len(clean), 7):
        data = bytearray(clean)
        data[offset] ^= 0x80
        path.write_bytes(bytes(data))
        with pytest.raises(CacheError, match="checksum mismatch"):
            load_tensors(path)


def test_cache_without_checksums_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    save_file({"a": torch.zeros(2)}, str(path), metadata={"model": "tiny"})
    with pytest.raises(CacheError, match="no effdepth checksums"):
        load_tensors(path)


def test_missing_file_and_tensor(tmp_path):
    with pytest.raises(CacheError, match="not found"):
        load_tensors(tmp_path / "nope.safetensors")
    path = tmp_path / "c.safetensors"
    _write(path)
    with pytest.raises(CacheError, match="no tensors"):
        load_tensors(path, ["zzz"])


def test_flipped_bit_anywhere_in_the_header_is_caught(tmp_path):
    path = tmp_path / "stats.safetensors"
    clean = _write(path)
    header_len = int.from_bytes(clean[:8], "little")
    for offset in range(8, 8 + header_len, 5):
        data = bytearray(clean)
        data[offset] ^= 0x20
        path.write_bytes(bytes(data))
        with pytest.raises(CacheError):
            load_tensors(path)
