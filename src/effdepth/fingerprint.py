"""Content fingerprints of model files, so a cache knows which weights made it and the workflow
reruns when the weights change.

Scheme (docs/methods.md#provenance): SHA-256 over, for every regular file in sorted relative
path order, the line ``<relative path> <size> <SHA-256 of the content>``.  Every byte of every file
is hashed — weights, config, tokenizer, chat template — so replacing a shard in place, editing the
config or swapping the tokenizer all change the fingerprint.  Names starting with ``.`` (the hub's
``.cache/`` download bookkeeping, editor files) are skipped at any depth.  For a single file (a
GGUF) the fingerprint covers its content only, not its name.

Cost: reading the files once — about a minute for 64 GB on a local NVMe disk (SHA-256 runs at
1–2 GB/s with CPU SHA extensions), longer on a network file system.  Later calls cost one
``stat`` per file: each file's digest is memoised with its (size, mtime_ns, ctime_ns, inode,
device).  Any write to a file changes its ctime, which tools such as ``touch``, ``cp -p`` or
``rsync -t`` cannot set back, so an unchanged stat identity means an unchanged file short of
tampering with the system clock or the raw disk.  Sampling a few chunks per file instead would be
faster the first time but blind to a change in an unsampled region (a partially rewritten shard).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .fileio import atomic_write

PREFIX = "sha256:"
_CHUNK = 1 << 22  # 4 MiB reads


class FingerprintError(RuntimeError):
    """The model files cannot be fingerprinted (missing path, empty directory, unreadable file)."""


def file_digest(path: Path | str) -> str:
    """Hex SHA-256 of a file's content (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def model_files(source: Path | str) -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of the files a fingerprint covers, sorted by the former.

    A file gives [("", file)].  A directory gives every regular file under it (symlinks followed,
    names starting with "." skipped at any depth).  Raises ``FingerprintError`` if ``source`` does
    not exist or holds no file.
    """
    source = Path(source)
    if source.is_file():
        return [("", source.resolve())]
    if not source.is_dir():
        raise FingerprintError(f"model files not found: {source}")
    out = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            full = Path(dirpath) / name
            if not name.startswith(".") and full.is_file():
                out.append((full.relative_to(source).as_posix(), full.resolve()))
    if not out:
        raise FingerprintError(f"no model files in {source}")
    return sorted(out)


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def file_table(source: Path | str, memo: Path | str | None = None) -> list[tuple[str, int, str]]:
    """(relative path, size in bytes, hex SHA-256) per file of ``model_files(source)``.

    memo: a JSON file remembering each file's digest with its stat identity; files whose identity is
    unchanged are not read again.  It is rewritten (atomically) only when it changed.
    """
    memo_path = Path(memo) if memo is not None else None
    known: dict[str, dict] = {}
    if memo_path is not None and memo_path.is_file():
        try:
            known = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            known = {}  # a damaged memo only costs a rehash
    fresh: dict[str, dict] = {}
    rows = []
    for rel, full in model_files(source):
        try:
            ident = _identity(full.stat())
            entry = known.get(str(full))
            if entry is None or entry.get("identity") != ident:
                entry = {"identity": ident, "sha256": file_digest(full)}
                if _identity(full.stat()) != ident:  # written to while hashing: do not trust this digest
                    raise FingerprintError(f"{full} changed while it was being fingerprinted; run again once it is complete")
        except OSError as exc:
            raise FingerprintError(f"cannot read model file {full}: {exc}") from exc
        fresh[str(full)] = entry
        rows.append((rel, ident[0], entry["sha256"]))
    if memo_path is not None and fresh != known:
        text = json.dumps(fresh, sort_keys=True, indent=0)
        atomic_write(memo_path, lambda tmp: tmp.write_text(text))
    return rows


def _digest(rows: list[tuple[str, int, str]]) -> str:
    h = hashlib.sha256()
    for rel, size, digest in rows:
        h.update(f"{rel} {size} {digest}\n".encode())
    return PREFIX + h.hexdigest()


def model_fingerprint(source: Path | str, memo: Path | str | None = None) -> str:
    """Content fingerprint ``"sha256:<64 hex>"`` of a model directory or a single model file (GGUF).

    source: a Hugging Face model directory (config, weights, tokenizer files) or one file.
    memo: optional JSON file that memoises per-file digests (see ``file_table``).
    Scheme and cost: the module docstring.  Raises ``FingerprintError``.
    """
    return _digest(file_table(source, memo))


def fingerprint_text(source: Path | str, memo: Path | str | None = None) -> str:
    """The text of a fingerprint file: the fingerprint on the first line, then one line
    ``<sha256>  <size>  <relative path>`` per file (so a diff of two versions shows what changed)."""
    rows = file_table(source, memo)
    lines = [_digest(rows), *(f"{digest}  {size}  {rel or '.'}" for rel, size, digest in rows)]
    return "\n".join(lines) + "\n"


def refresh_fingerprint(source: Path | str, output: Path | str) -> str:
    """Write ``output`` (e.g. ``results/fingerprints/<model>.fingerprint``) for ``source`` only if its
    content would change, and return the fingerprint.

    Its mtime thus changes exactly when the model files' content changes, which makes it a file
    input Snakemake can track where a directory's own mtime says nothing about the files inside.
    The per-file memo lives next to it as ``.<output name>.memo.json``.  Raises ``FingerprintError``.
    """
    output = Path(output)
    memo = output.with_name(f".{output.name}.memo.json")
    text = fingerprint_text(source, memo)
    if not output.is_file() or output.read_text() != text:
        atomic_write(output, lambda tmp: tmp.write_text(text))
    return text.split("\n", 1)[0]


def read_fingerprint(path: Path | str) -> str:
    """The fingerprint stored in a file written by ``refresh_fingerprint``."""
    first = Path(path).read_text().split("\n", 1)[0].strip()
    if not first.startswith(PREFIX):
        raise FingerprintError(f"{path} is not a fingerprint file (first line {first[:40]!r})")
    return first


# ----------------------------------------------------------------------------- file integrity
# The fingerprint reads every byte of every model file; the checks below read only the headers
# (a few kB), so a damaged file is named while the workflow is read instead of failing inside a job.


class ModelFileError(RuntimeError):
    """A model file is truncated, damaged or inconsistent with the others: the message names the
    file (and tensor or key) and what to do.  Not transient: retrying cannot help."""


def _size(n: int) -> str:
    return f"{n} bytes"


def safetensors_shapes(path: Path | str) -> dict[str, list[int]]:
    """Tensor name -> shape of a ``.safetensors`` file, from its header alone (no tensor is read).

    The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N,
    N bytes of JSON giving each tensor's dtype, shape and byte range in the data that follows.  The
    file must end exactly where its last tensor ends; ``safetensors.safe_open`` then validates the
    header itself (dtypes, overlapping or inconsistent ranges).

    Raises ModelFileError naming the file: shorter than its header says (an interrupted copy,
    with the size the header implies and the size found), longer, or a header that is not valid.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    size = path.stat().st_size
    again = "copy it again from its source"
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path} is truncated or damaged (file has {_size(size)}, not even a header); {again}")
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            raise ModelFileError(
                f"{path} is truncated or damaged (its header alone says {_size(8 + n)}, file has {_size(size)}); {again}"
            )
        try:
            header = json.loads(fh.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
            shapes = {k: [int(d) for d in v["shape"]] for k, v in header.items() if k != "__metadata__"}
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ModelFileError(f"{path} is damaged (its header is not a safetensors header: {exc}); {again}") from exc
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        state = "truncated or damaged" if size < expected else "damaged (longer than its tensors)"
        raise ModelFileError(f"{path} is {state} (header says {_size(expected)}, file has {_size(size)}); {again}")
    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is damaged ({type(exc).__name__}: {exc}); {again}") from exc
    return shapes


def checkpoint_shapes(directory: Path | str) -> dict[str, tuple[str, list[int]]]:
    """Tensor name -> (file name, shape) over every ``.safetensors`` file of a model directory,
    each header checked by :func:`safetensors_shapes`.  A shard index
    (``model.safetensors.index.json``) must name only files that exist and tensors they hold.

    Raises ModelFileError: a damaged file, a tensor in two files, a shard or tensor the index names
    that is not there."""
    directory = Path(directory)
    shapes: dict[str, tuple[str, list[int]]] = {}
    for file in sorted(directory.glob("*.safetensors")):
        for name, shape in safetensors_shapes(file).items():
            if name in shapes:
                raise ModelFileError(
                    f"{directory}: tensor {name} is in both {shapes[name][0]} and {file.name}; "
                    "remove the file that does not belong to this checkpoint"
                )
            shapes[name] = (file.name, shape)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{index} is damaged (no readable weight_map: {exc}); copy it again") from exc
        for shard in sorted(set(weight_map.values())):
            if not (directory / shard).is_file():
                raise ModelFileError(f"{index} names the shard {shard}, which is not in {directory}; copy the missing shard")
        for name, shard in weight_map.items():
            if shapes.get(name, (None,))[0] != shard:
                raise ModelFileError(
                    f"{index} places tensor {name} in {shard}, which does not hold it; the shards and the index "
                    "come from different checkpoints: copy the model again"
                )
    return shapes


_GGUF_READERS: dict[tuple, object] = {}


def read_gguf(path: Path | str):
    """A ``gguf.GGUFReader`` of a GGUF file (memoised per path and stat identity: the header of a
    large vocabulary takes seconds to parse), checked to be complete: every tensor's data lies within
    the file.

    Raises ModelFileError naming the file when it does not start with the GGUF magic, its header
    cannot be read or its tensor data is cut short (an interrupted copy or download)."""
    from gguf import GGUFReader

    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), *_identity(st))
    if key in _GGUF_READERS:
        return _GGUF_READERS[key]
    again = "copy or download it again"
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelFileError(f"{path} is not a GGUF file (its first bytes are not 'GGUF')")
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # numpy reshape / index errors where the file ends early
        raise ModelFileError(
            f"{path} is truncated or damaged (file has {_size(st.st_size)}; its header or tensor data cannot be read: "
            f"{type(exc).__name__}: {exc}); {again}"
        ) from exc
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > st.st_size:
        raise ModelFileError(
            f"{path} is truncated or damaged (its tensors need {_size(end)}, file has {_size(st.st_size)}); {again}"
        )
    _GGUF_READERS.clear()  # keep one: a reader maps its file
    _GGUF_READERS[key] = reader
    return reader


def refresh_task_fingerprint(task_file: Path | str, output: Path | str) -> str:
    """Write ``output`` (``results/fingerprints/tasks/<task>.fingerprint``) for a local task file
    (``tasks.<task>.path``) only if its content changed, and return the fingerprint.

    The same scheme as a GGUF file's (the content's SHA-256, not its name): a task file edited in
    place with its modification time kept (``cp -p``, ``rsync -a``, ``git checkout``, unpacking an
    archive) still rewrites the fingerprint file, a tracked input of the task's prompt preparation,
    so its prompts and everything made from them are rebuilt.  A fingerprint file written for the
    first time takes the task file's modification time, so prompts built before fingerprints existed
    are not rebuilt for that alone.  Raises ``FingerprintError`` for a missing or unreadable file.
    """
    task_file, output = Path(task_file), Path(output)
    if not task_file.is_file():
        raise FingerprintError(f"task file not found: {task_file}")
    first = not output.is_file()
    fingerprint = refresh_fingerprint(task_file, output)
    if first:
        mtime = task_file.stat().st_mtime_ns
        os.utime(output, ns=(mtime, mtime))
    return fingerprint


# ----------------------------------------------------------------------------- checks done once
# The file check of a local model (effdepth.models.check_model_files builds the model on the meta
# device: torch and transformers imported, seconds of CPU) runs while the workflow is read, on every
# `snakemake` call and every cluster job.  A passed check is recorded with everything its verdict
# depends on, and is not run again while that is unchanged.

CHECK_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "gguf")


def _package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in CHECK_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def _source_digest() -> str:
    """SHA-256 over this package's Python sources (the code of every check)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(path.relative_to(Path(__file__).parent).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def check_record(source: Path | str, options: dict) -> dict:
    """What a passed check of ``source`` depends on: each file's stat identity (size, modification
    and change time, inode, device: the per-file memo's identity, which any write changes), this
    package's sources, the versions of CHECK_PACKAGES, and ``options`` (JSON-serialisable: the
    model's configuration, the caller's code digest)."""
    files = [[rel, *_identity(full.stat())] for rel, full in model_files(source)]
    return {"files": files, "effdepth": _source_digest(), "versions": _package_versions(), "options": options}


def check_once(source: Path | str, record: Path | str | None, check, options: dict) -> bool:
    """Run ``check()`` (which raises on a bad model) unless ``record`` says it passed for exactly
    this ``check_record(source, options)``; after a pass, write the record (atomically; ``record``
    None: always run, record nothing).  Returns whether the check ran.  A damaged record only costs
    a new check.  Raises what ``check`` raises, and ``FingerprintError`` if ``source`` is missing or
    empty."""
    current = json.loads(json.dumps(check_record(source, options), sort_keys=True))  # as it reads back
    record = Path(record) if record is not None else None
    if record is not None and record.is_file():
        try:
            if json.loads(record.read_text()) == current:
                return False
        except (OSError, ValueError):
            pass
    check()
    if record is not None:
        text = json.dumps(current, sort_keys=True)
        atomic_write(record, lambda tmp: tmp.write_text(text))
    return True
