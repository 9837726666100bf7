"""The feature store: a folder of per-clip features that anyone can open with numpy and pandas.

Layout::

    STORE/manifest.json                 encoders (name, version, dim), clip_s, max_clips, rates
    STORE/shards/shard-00000/rows.parquet   one row per item: id, source_path, start_s, end_s,
                                            duration_s, split, status, error, n_clips, offset,
                                            title, group (the film a region is from; empty
                                            when none), node (the machine that extracted it);
                                            stores written before them lack these columns
    STORE/shards/shard-00000/offsets.npy    int64 [rows + 1]: item i's clips are [offsets[i], offsets[i+1])
    STORE/shards/shard-00000/<array>.npy    float16 [clips in shard, dim], one file per array
                                            ("video", "audio", "audio_scores", ...)
    STORE/shards/shard-00000/DONE           written last: a shard without it is unfinished
    STORE/.lock                             held (flock) by the one process writing the store

A shard is the unit of work and is immutable once DONE exists. Every file is written to a
temporary name, flushed to disk and renamed (:mod:`mvpt.fileio`), so a kill or a power loss
leaves either the old state or the new one, and DONE never vouches for data not yet on disk. One
writer at a time: :meth:`FeatureStore.writing` holds the store's lock, and a second writer is
refused with the pid of the first. Reading checks every DONE shard's files and shapes first
(:meth:`FeatureStore.check`; ``mvpt store check STORE``). An item id that appears in several
shards is read from the newest (re-extraction supersedes).
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mvpt.errors import StoreError
from mvpt.fileio import (atomic_path, atomic_save_npy, atomic_write_json, exclusive_lock,
                         make_dir, stray_temporaries)

FORMAT_VERSION = 1
SHARD_PREFIX = "shard-"
DONE_NAME = "DONE"
ROW_COLUMNS = [
    "id", "source_path", "start_s", "end_s", "duration_s", "split", "status", "error",
    "n_clips", "offset", "title", "group", "node",
]
_ROW_SCHEMA = pa.schema([
    ("id", pa.string()), ("source_path", pa.string()), ("start_s", pa.float64()),
    ("end_s", pa.float64()), ("duration_s", pa.float64()), ("split", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("n_clips", pa.int64()),
    ("offset", pa.int64()), ("title", pa.string()), ("group", pa.string()),
    ("node", pa.string()),
])
# Manifest keys that must match for new features to join a store.
COMPAT_KEYS = ("clip_s", "frames_per_clip", "encoders")


@dataclass
class ItemResult:
    """The outcome of extracting one item, ready to be written into a shard."""

    id: str
    source_path: str
    split: str
    status: str  # "done" or "failed"
    start_s: float = 0.0
    end_s: float = float("nan")
    duration_s: float = 0.0
    error: str | None = None
    title: str | None = None
    group: str | None = None
    node: str | None = None  # the machine (engine node) that extracted it
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_clips(self) -> int:
        if self.status != "done" or not self.arrays:
            return 0
        return int(next(iter(self.arrays.values())).shape[0])


@dataclass
class Features:
    """Items loaded into memory: ``rows`` (done items, in store order), ``offsets`` int64 [n + 1],
    and per array name a float16 matrix [total clips, dim]; item i is rows ``offsets[i]:offsets[i+1]``."""

    rows: pd.DataFrame
    offsets: np.ndarray
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> list[str]:
        return self.rows["id"].tolist()

    @property
    def n_clips(self) -> np.ndarray:
        return np.diff(self.offsets)

    def item(self, i: int, name: str) -> np.ndarray:
        return self.arrays[name][self.offsets[i]:self.offsets[i + 1]]


def _write_parquet_into(folder: Path, name: str, table: pa.Table) -> None:
    """Atomically, into an existing ``folder`` (never recreated if another process removed it)."""
    with atomic_path(folder / name, make_parents=False) as tmp:
        pq.write_table(table, tmp)


def compat_problem(existing: dict, wanted: dict) -> str | None:
    """Why a store with manifest ``existing`` cannot take features described by ``wanted``
    (None if it can)."""
    for key in COMPAT_KEYS:
        a, b = existing.get(key), wanted.get(key)
        if key == "encoders":
            for modality in sorted(set(a or {}) | set(b or {})):
                ea, eb = (a or {}).get(modality), (b or {}).get(modality)
                sig = lambda e: None if e is None else (e.get("name"), e.get("version"), e.get("dim"))
                if sig(ea) != sig(eb):
                    return (f"it was made with {modality} encoder {sig(ea)} (name, version, dim), "
                            f"not {sig(eb)}")
        elif a != b:
            return f"it was made with {key}={a}, not {key}={b}"
    return None


class FeatureStore:
    """A feature store folder. Use :meth:`create` to make or reopen one for writing and
    :meth:`open` to read."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._rows_cache: pd.DataFrame | None = None

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, path) -> "FeatureStore":
        path = Path(path)
        mf = path / "manifest.json"
        if not mf.is_file():
            raise StoreError(f"{path}: not a feature store (no manifest.json)")
        try:
            manifest = json.loads(mf.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{mf}: unreadable manifest ({exc})") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{path}: store format {manifest.get('format_version')} is not "
                             f"supported (this mvpt reads format {FORMAT_VERSION})")
        return cls(path, manifest)

    @classmethod
    def create(cls, path, manifest: dict) -> "FeatureStore":
        """Create a store with ``manifest`` (needs ``encoders``, ``clip_s``, ...), or reopen an
        existing one after checking that it was made with the same encoders and clip length."""
        path = Path(path)
        if (path / "manifest.json").exists():
            store = cls.open(path)
            problem = compat_problem(store.manifest, manifest)
            if problem:
                raise StoreError(f"{path}: cannot add to this store: {problem}; "
                                 "use another --out folder")
            return store
        _refuse_foreign_folder(path)
        full = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **manifest}
        atomic_write_json(path / "manifest.json", full)  # first: a killed create leaves a store
        make_dir(path / "shards", exist_ok=True)
        return cls(path, full)

    @classmethod
    @contextmanager
    def writing(cls, path, manifest: dict) -> Iterator["FeatureStore"]:
        """:meth:`create` under the store's exclusive lock, held for the block: the one way to
        add shards while other processes may try too. A second writer gets a StoreError naming
        the first one's pid. Unfinished shards of a killed run are removed first."""
        path = Path(path)
        if not (path / "manifest.json").exists():
            _refuse_foreign_folder(path)  # before a lock file is left in someone's folder
        make_dir(path, exist_ok=True)
        with exclusive_lock(path, what="feature store", error=StoreError):
            store = cls.create(path, manifest)
            store.remove_unfinished()
            yield store

    # ---------------------------------------------------------------- shards
    @property
    def array_dims(self) -> dict[str, int]:
        """Array name -> dimension, e.g. {"video": 1280, "audio": 1024, "audio_scores": 521}."""
        dims = {}
        for modality, enc in sorted(self.manifest.get("encoders", {}).items()):
            dims[modality] = int(enc["dim"])
            for extra, dim in sorted(enc.get("extras", {}).items()):
                dims[f"{modality}_{extra}"] = int(dim)
        return dims

    def shard_dirs(self, *, done_only: bool = True) -> list[Path]:
        root = self.path / "shards"
        if not root.is_dir():
            return []
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(SHARD_PREFIX))
        return [d for d in dirs if (d / DONE_NAME).is_file()] if done_only else dirs

    def remove_unfinished(self) -> list[Path]:
        """Delete shard folders without a DONE marker (left by a killed run) and stray temporary
        files; returns what was removed. Finished shards are never touched."""
        removed = stray_temporaries(self.path)
        for p in removed:
            p.unlink()
        for d in self.shard_dirs(done_only=False):
            if not (d / DONE_NAME).is_file():
                shutil.rmtree(d)
                removed.append(d)
        return removed

    def check(self) -> list[tuple[Path, str]]:
        """(shard folder, what is wrong) for every DONE shard whose files are missing, unreadable
        or of the wrong shape; empty when the store is sound."""
        problems = []
        for d in self.shard_dirs():
            problem = shard_problem(d, self.array_dims)
            if problem:
                problems.append((d, problem))
        return problems

    def remove_broken(self) -> list[Path]:
        """Delete the DONE shards :meth:`check` finds broken (their items are extracted again by
        the next run); returns them. Call it under :meth:`writing`'s lock."""
        broken = [d for d, _ in self.check()]
        for d in broken:
            shutil.rmtree(d)
        self._rows_cache = None
        return broken

    def next_shard_dir(self) -> Path:
        dirs = self.shard_dirs(done_only=False)
        last = max((int(d.name[len(SHARD_PREFIX):]) for d in dirs), default=-1)
        return self.path / "shards" / f"{SHARD_PREFIX}{last + 1:05d}"

    def write_shard(self, results: list[ItemResult]) -> Path:
        """Write one shard of item results; the DONE marker is written last."""
        if not results:
            raise StoreError(f"{self.path}: refusing to write an empty shard")
        dims = self.array_dims
        for r in results:
            for name, dim in dims.items():
                shape = np.shape(r.arrays.get(name)) if r.n_clips else (0, dim)
                if shape != (r.n_clips, dim):
                    raise StoreError(f"{r.source_path}: array {name!r} has shape {shape}, "
                                     f"expected ({r.n_clips}, {dim})")
        shard = make_dir(self.next_shard_dir())  # a new folder, never one that exists
        try:
            _write_shard_files(shard, results, dims)
        except FileNotFoundError:
            raise StoreError(f"{shard}: the shard folder was removed while being written (by "
                             "another process?); nothing of it was recorded") from None
        self._rows_cache = None
        return shard

    # ---------------------------------------------------------------- reading
    def all_rows(self) -> pd.DataFrame:
        """Every current row (newest shard wins for a repeated id), with its ``shard`` folder name."""
        if self._rows_cache is None:
            frames = []
            for d in self.shard_dirs():
                problem = shard_problem(d, self.array_dims)
                if problem:
                    raise StoreError(f"{d}: broken shard ({problem}); `mvpt store check "
                                     f"{self.path} --remove-broken` removes it so that its "
                                     "items are extracted again")
                df = pq.read_table(d / "rows.parquet").to_pandas()
                for missing in set(ROW_COLUMNS) - set(df.columns):  # written by an older mvpt
                    df[missing] = None
                df["shard"] = d.name
                frames.append(df)
            if frames:
                rows = pd.concat(frames, ignore_index=True)
                rows = rows.drop_duplicates("id", keep="last").reset_index(drop=True)
            else:
                rows = pd.DataFrame({c: pd.Series(dtype=f.type.to_pandas_dtype())
                                     for c, f in zip(_ROW_SCHEMA.names, _ROW_SCHEMA)})
                rows["shard"] = pd.Series(dtype=str)
            self._rows_cache = rows
        return self._rows_cache

    def rows(self, *, status: str | None = "done", split: str | None = None) -> pd.DataFrame:
        """Rows filtered by status ("done", "failed", or None for all) and split."""
        rows = self.all_rows()
        if status is not None:
            rows = rows[rows["status"] == status]
        if split is not None:
            rows = rows[rows["split"] == split]
        return rows.reset_index(drop=True)

    def _array(self, shard: str, name: str) -> np.ndarray:
        if name not in self.array_dims:
            raise StoreError(f"{self.path}: no array {name!r}; arrays: {sorted(self.array_dims)}")
        return np.load(self.path / "shards" / shard / f"{name}.npy", mmap_mode="r")

    def read(self, item_id: str, arrays=None) -> dict[str, np.ndarray]:
        """One item's clip sequences: array name -> float16 [n_clips, dim]."""
        rows = self.all_rows()
        match = rows[rows["id"] == item_id]
        if match.empty:
            raise StoreError(f"{self.path}: no item {item_id!r}")
        row = match.iloc[0]
        if row["status"] != "done":
            raise StoreError(f"{self.path}: item {item_id!r} failed extraction: {row['error']}")
        lo, hi = int(row["offset"]), int(row["offset"] + row["n_clips"])
        names = list(arrays) if arrays is not None else list(self.array_dims)
        return {n: np.array(self._array(row["shard"], n)[lo:hi]) for n in names}

    def load(self, *, split: str | None = None, arrays=None, ids=None) -> Features:
        """Done items (optionally of one split or a list of ids) with their arrays in memory."""
        rows = self.rows(status="done", split=split)
        if ids is not None:
            order = {i: k for k, i in enumerate(ids)}
            rows = rows[rows["id"].isin(order)]
            rows = rows.iloc[np.argsort([order[i] for i in rows["id"]], kind="stable")]
            rows = rows.reset_index(drop=True)
        names = list(arrays) if arrays is not None else list(self.array_dims)
        counts = rows["n_clips"].to_numpy(np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        out = {}
        for name in names:
            dim = self.array_dims.get(name)
            if dim is None:
                raise StoreError(f"{self.path}: no array {name!r}; arrays: {sorted(self.array_dims)}")
            buf = np.empty((int(offsets[-1]), dim), dtype=np.float16)
            for shard, group in rows.groupby("shard", sort=False):
                src = self._array(shard, name)
                for i, off, n in zip(group.index, group["offset"], group["n_clips"]):
                    buf[offsets[i]:offsets[i] + n] = src[off:off + n]
            out[name] = buf
        return Features(rows=rows, offsets=offsets, arrays=out)

    def summary(self) -> dict:
        rows = self.all_rows()
        return {
            "path": str(self.path),
            "items": int(len(rows)),
            "done": int((rows["status"] == "done").sum()),
            "failed": int((rows["status"] == "failed").sum()),
            "clips": int(rows["n_clips"].sum()),
            "shards": len(self.shard_dirs()),
            "splits": {k: int(v) for k, v in rows[rows["status"] == "done"]["split"].value_counts().items()},
        }


def _write_shard_files(shard: Path, results: list[ItemResult], dims: dict[str, int]) -> None:
    """Arrays, offsets, rows, then DONE, each atomically into the existing folder ``shard``."""
    counts = np.array([r.n_clips for r in results], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    for name, dim in dims.items():
        parts = [np.asarray(r.arrays[name], dtype=np.float16) for r in results if r.n_clips]
        data = np.concatenate(parts) if parts else np.zeros((0, dim), np.float16)
        atomic_save_npy(shard / f"{name}.npy", data, make_parents=False)
    atomic_save_npy(shard / "offsets.npy", offsets, make_parents=False)
    table = pa.table({
        "id": [r.id for r in results],
        "source_path": [r.source_path for r in results],
        "start_s": [float(r.start_s) for r in results],
        "end_s": [float(r.end_s) for r in results],
        "duration_s": [float(r.duration_s) for r in results],
        "split": [r.split for r in results],
        "status": [r.status for r in results],
        "error": [r.error for r in results],
        "n_clips": counts,
        "offset": offsets[:-1],
        "title": [r.title for r in results],
        "group": [r.group for r in results],
        "node": [r.node for r in results],
    }, schema=_ROW_SCHEMA)
    _write_parquet_into(shard, "rows.parquet", table)
    atomic_write_json(shard / DONE_NAME, {
        "rows": len(results), "clips": int(offsets[-1]),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, make_parents=False)


def _refuse_foreign_folder(path: Path) -> None:
    """Refuse a folder holding anything but what a killed create leaves (its lock, temporaries)."""
    if path.exists() and any(not p.name.startswith(".") for p in path.iterdir()):
        raise StoreError(f"{path}: folder exists, is not empty and is not a feature store")


def shard_problem(shard: Path, array_dims: dict[str, int]) -> str | None:
    """What is wrong with a DONE shard's files (None when its DONE marker, rows, offsets and
    every array agree in row and clip counts, shapes and dtypes)."""
    try:
        done = json.loads((shard / DONE_NAME).read_text())
        n_rows, n_clips = int(done["rows"]), int(done["clips"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {DONE_NAME} marker ({type(exc).__name__}: {exc})"
    try:
        table_rows = pq.read_metadata(shard / "rows.parquet").num_rows
    except (OSError, pa.ArrowException) as exc:
        return f"rows.parquet missing or unreadable ({exc})"
    if table_rows != n_rows:
        return f"rows.parquet has {table_rows} rows, {DONE_NAME} says {n_rows}"
    wanted = {"offsets": ((n_rows + 1,), np.int64),
              **{name: ((n_clips, dim), np.float16) for name, dim in array_dims.items()}}
    for name, (shape, dtype) in wanted.items():
        try:
            array = np.load(shard / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            return f"{name}.npy missing or unreadable ({type(exc).__name__}: {exc})"
        if array.shape != shape or array.dtype != dtype:
            return (f"{name}.npy is {array.dtype} {array.shape}, expected "
                    f"{np.dtype(dtype)} {shape}")
        if name == "offsets" and (array[0] != 0 or array[-1] != n_clips
                                  or np.any(np.diff(array) < 0)):
            return f"offsets.npy does not run from 0 to {n_clips} clips in order"
    return None
