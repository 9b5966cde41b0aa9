"""Writing outputs: atomically, and readable by everyone the umask allows (0644 under umask 022).

Some writers create files owner-only: safetensors writes ``0600`` (it creates a private temporary
file and renames it), so caches and converted weights could not be read by group members of a
shared project directory.  Every output therefore goes through ``atomic_write`` (or
``share_tree`` for a directory written by a library), which gives it the mode a plain ``open()``
would have.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def current_umask() -> int:
    """The process umask, read from /proc on Linux (no race); elsewhere set-and-restore."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_mode(path: Path | str) -> None:
    """chmod ``path`` to what ``open()`` / ``mkdir()`` would give it: 0666 (files) or 0777
    (directories) minus the umask.  Symlinks are left alone."""
    path = Path(path)
    if path.is_symlink():
        return
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def share_tree(root: Path | str) -> None:
    """``share_mode`` on ``root`` and everything under it (e.g. a ``save_pretrained`` folder)."""
    root = Path(root)
    share_mode(root)
    if root.is_dir() and not root.is_symlink():
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                share_mode(Path(dirpath) / name)


def atomic_write(path: Path | str, writer: Callable[[Path], object]) -> Path:
    """Write ``path`` via ``writer(tmp)`` on a sibling ``<name>.partial``, then rename it into place.

    A killed job never leaves a complete-looking ``path``; a failing ``writer`` leaves neither file.
    The result gets the umask's ordinary mode (``share_mode``) whatever mode ``writer`` used.
    Parent directories are created.  Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        writer(tmp)
        share_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists() and not tmp.is_dir():
            tmp.unlink()
        raise
    return path


def writable_directory(path: Path | str) -> bool:
    """Whether files can be created in the directory ``path`` (created first if missing): tried by
    creating and removing a temporary file, since permission bits say nothing on a read-only mount
    and nothing for root."""
    import tempfile

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path, prefix=".writable-")
        os.close(fd)
        os.unlink(name)
    except OSError:
        return False
    return True
