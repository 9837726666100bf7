"""Training windows read straight from a feature store's memory-mapped shards, batch by batch.

:class:`ShardedFeatures` is one split of a store without its clip features: the rows (which shard,
which offset, how many clips) and, opened on demand, a read-only memory map of each shard's
``<array>.npy``. A batch's windows are copied out of the maps by one fancy index per shard, then
the pages just read are released from the process (``madvise(MADV_DONTNEED)``; the OS page cache
keeps them), so the resident memory of training stays at a few batches however large the store
is. The values are those :meth:`mvpt.store.FeatureStore.load` would copy into memory, bit for bit.

:func:`prefetch` runs a batch producer in a background thread, a few batches ahead of the
training step that consumes them.
"""

from __future__ import annotations

import mmap
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from mvpt.errors import StoreError
from mvpt.store import FeatureStore

MAX_OPEN_MAPS = 128  # each map holds a file descriptor; older ones are closed first
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def window_rows(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip indices inside each track of the windows [start, start + length): [B, L] with L the
    longest window (past a window's end, its last clip repeated), and mask [B, L] (True = clip)."""
    positions = np.arange(int(lengths.max()))
    mask = positions[None, :] < lengths[:, None]
    rows = starts[:, None] + np.minimum(positions[None, :], lengths[:, None] - 1)
    return rows, mask


class MappedArray:
    """One shard's ``<array>.npy`` mapped read-only; :meth:`take` copies rows out and releases
    the pages it touched from the process."""

    def __init__(self, path: Path):
        with open(path, "rb") as fh:
            shape, dtype = _read_npy_header(fh, path)
            self._data_offset = fh.tell()
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if shape[0] == 0:
            self.array = np.zeros(shape, dtype)
        else:
            self.array = np.ndarray(shape, dtype=dtype, buffer=self._map,
                                    offset=self._data_offset)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """``array[rows]`` (a copy) for an integer index array of any shape."""
        out = self.array[rows]
        if rows.size:
            self._release(int(rows.min()), int(rows.max()) + 1)
        return out

    def _release(self, lo: int, hi: int) -> None:
        """Drop the process's pages of rows [lo, hi); the next read refaults them from the page
        cache. Without madvise (not on every platform) they stay until the map is closed."""
        if not hasattr(self._map, "madvise"):
            return
        row_bytes = self.array.strides[0]
        start = self._data_offset + lo * row_bytes
        start -= start % mmap.PAGESIZE
        end = min(len(self._map), self._data_offset + hi * row_bytes)
        self._map.madvise(mmap.MADV_DONTNEED, start, end - start)


def _read_npy_header(fh, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        shape, fortran, dtype = _NPY_HEADERS[version](fh)
    except (ValueError, KeyError) as exc:
        raise StoreError(f"{path}: not a readable .npy array ({exc!r})") from None
    if fortran or len(shape) != 2:
        raise StoreError(f"{path}: expected a C-ordered 2-d array, got shape {shape}")
    return shape, dtype


class ShardedFeatures:
    """The done items of one split of ``store``, in store order (as :meth:`FeatureStore.load`
    orders them), with their clips left in the shards. Offers what training reads of
    :class:`mvpt.store.Features`: ``len``, ``ids``, ``n_clips``, :meth:`item`, plus
    :meth:`windows`."""

    def __init__(self, store: FeatureStore, *, split: str | None, arrays: Iterable[str]):
        self.store = store
        self.names = tuple(arrays)
        dims = store.array_dims
        unknown = [n for n in self.names if n not in dims]
        if unknown:
            raise StoreError(f"{store.path}: no array {unknown[0]!r}; arrays: {sorted(dims)}")
        self.rows: pd.DataFrame = store.rows(status="done", split=split)
        self.n_clips = self.rows["n_clips"].to_numpy(np.int64)
        self._offset = self.rows["offset"].to_numpy(np.int64)
        self._shards, self._shard_of = np.unique(self.rows["shard"].to_numpy(str),
                                                 return_inverse=True)
        self._maps: OrderedDict[tuple[int, str], MappedArray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> list[str]:
        return self.rows["id"].tolist()

    def item(self, i: int, name: str) -> np.ndarray:
        """Item ``i``'s whole sequence of array ``name``: float16 [n_clips, dim] (a copy)."""
        rows = self._offset[i] + np.arange(self.n_clips[i])
        return self._mapped(int(self._shard_of[i]), name).take(rows)

    def windows(self, name: str, tracks: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Clips ``rows`` [B, L] (indices inside each track, see :func:`window_rows`) of
        ``tracks`` [B]: float16 [B, L, dim], one read per shard involved."""
        out = np.empty((*rows.shape, self.store.array_dims[name]), np.float16)
        shard_of = self._shard_of[tracks]
        for shard in np.unique(shard_of):
            mine = shard_of == shard
            absolute = self._offset[tracks[mine]][:, None] + rows[mine]
            out[mine] = self._mapped(int(shard), name).take(absolute)
        return out

    def _mapped(self, shard: int, name: str) -> MappedArray:
        key = (shard, name)
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        path = self.store.path / "shards" / self._shards[shard] / f"{name}.npy"
        if not path.is_file():
            raise StoreError(f"{path}: missing (the store changed while training?)")
        self._maps[key] = MappedArray(path)
        while len(self._maps) > MAX_OPEN_MAPS:
            self._maps.popitem(last=False)
        return self._maps[key]


# ---------------------------------------------------------------------------- prefetching
class _End:
    def __init__(self, error: BaseException | None = None):
        self.error = error


def prefetch(items: Iterable, *, depth: int = 2) -> Iterator:
    """The items of ``items`` in order, produced ahead in a background thread (at most ``depth``
    waiting). An exception in the producer is raised here; leaving the loop early stops it."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(ready, item, stop):
                    return
            _put(ready, _End(), stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(ready, _End(exc), stop)

    thread = threading.Thread(target=produce, name="mvpt-prefetch", daemon=True)
    thread.start()
    try:
        while not isinstance(item := ready.get(), _End):
            yield item
        if item.error is not None:
            raise item.error
    finally:
        stop.set()
        thread.join()


def _put(ready: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` once there is room; False if the consumer stopped first."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
