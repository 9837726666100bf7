"""Durable file writes and folder locks, used by everything that writes a file others rely on.

Atomic writes: the data goes to a temporary name in the destination's folder, is flushed to disk
(fsync), renamed over the destination, and the folder is flushed so the rename itself survives a
power loss. A kill or a crash leaves the old file or the new one, never half of one, and a marker
written after other files (a shard's DONE, an index manifest) never vouches for data that a
power loss could still take back.

- :func:`atomic_path` for a file produced by another writer (pyarrow, torch, faiss, ffmpeg,
  matplotlib): it yields the temporary path to write to;
- :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json` and
  :func:`atomic_save_npy` for data in memory.

:func:`exclusive_lock` keeps a folder to one writer at a time (``fcntl.flock`` on a lock file:
released by the kernel when its holder dies, so a killed run never leaves a stale lock).
"""

from __future__ import annotations

import errno
import hashlib
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from mvpt.errors import MvptError

LOCK_NAME = ".lock"
TEMP_MARK = ".tmp"


def stray_temporaries(folder: str | Path) -> list[Path]:
    """Temporary files :func:`atomic_path` left in ``folder`` when its process was killed."""
    return [p for p in Path(folder).glob(f".*{TEMP_MARK}*") if p.is_file()]


def fsync_path(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path: str | Path, *, exist_ok: bool = False) -> Path:
    """``mkdir`` (parents included) whose new entries are flushed to disk with their folders."""
    path = Path(path)
    new = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=exist_ok)
    for made in new:
        fsync_path(made.parent)
    return path


@contextmanager
def atomic_path(path: str | Path, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer to fill; when the block succeeds, the
    file there is flushed to disk, renamed over ``path`` and the folder flushed; on error it is
    removed. The temporary name is hidden and ends with ``path``'s suffix (``.x.mp4.k3j.tmp.mp4``)
    for writers that choose a format by it. ``make_parents=False`` refuses to recreate a missing
    folder (a folder another process removed must stay removed)."""
    path = Path(path)
    if make_parents and not path.parent.is_dir():
        make_dir(path.parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, make_parents: bool = True) -> None:
    with atomic_path(path, make_parents=make_parents) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str, *, make_parents: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), make_parents=make_parents)


def atomic_write_json(path: str | Path, obj, *, make_parents: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n",
                      make_parents=make_parents)


def atomic_save_npy(path: str | Path, array: np.ndarray, *, make_parents: bool = True) -> None:
    """``np.save`` (no pickles) atomically."""
    with atomic_path(path, make_parents=make_parents) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)


@contextmanager
def exclusive_lock(folder: str | Path, *, what: str,
                   error: type[MvptError] = MvptError) -> Iterator[Path]:
    """Hold ``folder``/.lock exclusively for the block, or raise ``error`` at once, naming the
    process that holds it. The folder must exist. ``what`` names the folder in the message
    ("feature store", "index")."""
    lock = Path(folder) / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise error(f"{folder}: {what} in use by pid {_holder(fd)} (another mvpt process "
                        "is writing it); wait for it to finish or use another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)


def _holder(fd: int) -> str:
    """The pid written in a held lock file (``unknown`` while its holder has not written it)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def sha256_of_file(path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
