"""Index: a music (or video) library as FAISS vectors of overlapping windows, from a trained run.

Folder layout (everything a user needs to inspect it with numpy, pandas and faiss)::

    INDEX/index.json              manifest, written last: the run (path + SHA-256 of its checkpoint),
                                  modality, windows, search kind, and which files are current
    INDEX/store/                  feature store of the library (audio-only for music, video-only for
                                  videos): extraction resumes and skips finished files
    INDEX/windows-NNNNN.parquet   one row per window vector: vector_id, item_id, source_path, title,
                                  start_s, end_s, item_duration_s (times in the source file);
                                  source paths are absolute, and found again relative to the
                                  index's folder when the whole folder was moved (``root`` in
                                  index.json is where it was)
    INDEX/vectors-NNNNN.faiss     FAISS index of the window embeddings; FAISS ids = vector_id

Windows: each item is cut into windows of ``window_s`` seconds (default: the run's longest input,
K x t = 30 s) every ``stride_s`` seconds (default a third of the window), plus one window ending at
the item's end so that its tail is covered; an item shorter than a window is one window of its
whole length. A window is at most the run's K clips. Each window's clip features go through the
run's tower for the modality; vectors are L2-normalised and compared by inner product (cosine).

Search kinds: ``exact`` (IndexFlatIP behind an IndexIDMap2, the default), ``hnsw``
(IndexHNSWFlat, M=32, efSearch 128: adds are incremental; a removal rebuilds the graph from its
stored vectors) and ``ivf`` (IndexIVFFlat, about 4 sqrt(n) lists, nprobe 64, trained on the
vectors of the first build; later additions reuse those centroids, so after a library grows many
times over, :func:`rebuild_index` retrains it). Measured by ``benchmarks/recommend.py`` at
1,000,000 windows on 2 busy cores: exact ~90-220 ms a query; hnsw recall@10 0.995, p99 2 ms,
15 min to build; ivf recall@10 0.974, p99 3 ms, 2 min to build.

Updates are atomic: a change writes new numbered table and FAISS files (temporary name + rename),
then the manifest pointing at them, then deletes the old ones; every file is flushed to disk
before the manifest names it. One writer at a time: building, removing and rebuilding hold
INDEX/.lock, and a second writer is refused with the first one's pid. A kill leaves the previous
index intact; running :func:`build_index` again with the same media resumes (finished store
shards are kept; items of the request not yet in the index are encoded and added). Only the requested media
are added, so an item removed with :func:`remove_items` stays out until it is requested again.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mvpt.clips import sliding_windows
from mvpt.errors import MvptError, SearchIndexError, UsageError
from mvpt.fileio import (atomic_path, atomic_write_json, exclusive_lock, make_dir,
                         stray_temporaries)
from mvpt.paths import resolve_recorded
from mvpt.run import Run
from mvpt.store import FeatureStore

FORMAT_VERSION = 1
MANIFEST_NAME = "index.json"
STORE_NAME = "store"
KINDS = ("exact", "hnsw", "ivf")
SCORINGS = ("max", "mean")  # an item's score over its (query window, item window) pairs
STRIDE_FRACTION = 1 / 3  # default stride: a third of the window (the window defaults to K x t)
DEFAULT_PARAMS = {
    "exact": {},
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 128},
    "ivf": {"nlist": None, "nprobe": 64},  # nlist None: about 4 * sqrt(vectors)
}
ENCODE_CHUNK_ITEMS = 64
_MODALITY_OF = {"music": "audio", "audio": "audio", "video": "video"}
_TABLE_SCHEMA = pa.schema([
    ("vector_id", pa.int64()), ("item_id", pa.string()), ("source_path", pa.string()),
    ("title", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
    ("item_duration_s", pa.float64()),
])


def default_stride_s(window_s: float, clip_s: float) -> float:
    """A third of the window, in whole clips (at least one)."""
    return max(1, round(window_s * STRIDE_FRACTION / clip_s)) * clip_s


def store_modality(modality: str) -> str:
    """The feature-store modality ("audio" or "video") of an index modality ("music" or "video")."""
    try:
        return _MODALITY_OF[modality]
    except KeyError:
        raise UsageError(f"modality must be 'music' or 'video', got {modality!r}") from None


# ------------------------------------------------------------------------------ windows
@dataclass(frozen=True)
class WindowSpec:
    """Windows of ``window_clips`` clips of ``clip_s`` seconds every ``stride_clips`` clips."""

    clip_s: float
    window_clips: int
    stride_clips: int

    @classmethod
    def from_seconds(cls, *, clip_s: float, window_s: float, stride_s: float,
                     max_clips: int) -> WindowSpec:
        window, stride = round(window_s / clip_s), round(stride_s / clip_s)
        if window < 1 or stride < 1:
            raise UsageError(f"window ({window_s} s) and stride ({stride_s} s) must each be at "
                             f"least one clip of {clip_s} s")
        if window > max_clips:
            raise UsageError(f"window of {window_s} s is {window} clips, more than the run's "
                             f"K={max_clips} clips of {clip_s} s")
        return cls(float(clip_s), window, stride)

    @property
    def window_s(self) -> float:
        return self.window_clips * self.clip_s

    @property
    def stride_s(self) -> float:
        return self.stride_clips * self.clip_s

    def cut(self, n_clips: int) -> list[tuple[int, int]]:
        """(first clip, clips) of every window of a sequence of ``n_clips`` clips."""
        return sliding_windows(n_clips, self.window_clips, self.stride_clips)

    def to_dict(self) -> dict:
        return {**asdict(self), "window_s": self.window_s, "stride_s": self.stride_s}


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


# ------------------------------------------------------------------------------ FAISS
def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover
        raise MvptError("the index needs FAISS: pip install faiss-cpu") from None
    return faiss


def new_faiss_index(kind: str, dim: int, params: dict, train_vectors: np.ndarray):
    """An empty FAISS index of ``kind`` for inner product (IVF is trained on ``train_vectors``)."""
    faiss = _faiss()
    if kind == "exact":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = int(params["ef_construction"])
        return faiss.IndexIDMap2(inner)
    if kind == "ivf":
        n = len(train_vectors)
        nlist = params.get("nlist") or int(np.clip(4 * np.sqrt(n), 1, max(1, n // 39)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, int(nlist), faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # a small first library: fewer lists, no warning
        sample = train_vectors
        if n > 64 * nlist:  # k-means needs tens of points per centroid, not millions
            pick = np.random.default_rng(0).choice(n, 64 * nlist, replace=False)
            sample = train_vectors[np.sort(pick)]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        params["nlist"] = int(nlist)
        return index
    raise UsageError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")


def set_search_params(index, kind: str, params: dict, k: int) -> None:
    """Search-time knobs: HNSW's efSearch (at least k), IVF's nprobe."""
    faiss = _faiss()
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = max(int(params["ef_search"]), k)
    elif kind == "ivf":
        index.nprobe = int(params["nprobe"])


def all_vectors(index) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [n], vectors float32 [n, d]) stored in a FAISS index made here."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexIDMap2):
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        return ids, index.index.reconstruct_n(0, index.ntotal)
    from faiss.contrib.inspect_tools import get_invlist

    ivf = faiss.extract_index_ivf(index)
    ids, vecs = [], []
    for list_no in range(ivf.nlist):
        list_ids, codes = get_invlist(ivf.invlists, list_no)
        ids.append(list_ids)
        vecs.append(codes.view(np.float32).reshape(len(list_ids), ivf.d))
    return np.concatenate(ids).astype(np.int64), np.concatenate(vecs)


def remove_vectors(index, kind: str, params: dict, ids: np.ndarray):
    """``index`` without the vectors ``ids`` (HNSW cannot delete: its graph is rebuilt)."""
    faiss = _faiss()
    if kind != "hnsw":
        index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))
        return index
    keep_ids, vecs = all_vectors(index)
    keep = ~np.isin(keep_ids, ids)
    fresh = new_faiss_index(kind, index.d, params, vecs[keep])
    if keep.any():
        fresh.add_with_ids(np.ascontiguousarray(vecs[keep]), keep_ids[keep])
    return fresh


# ------------------------------------------------------------------------------ reading
@dataclass
class WindowHit:
    """The best window of one item for a query: where it is, how it scores, how to align it."""

    rank: int
    item_id: str
    title: str
    source_path: str
    score: float
    offset_s: float  # play the item from here alongside the query from 0 s: best windows align
    window_start_s: float
    window_end_s: float
    query_start_s: float
    query_end_s: float
    item_duration_s: float

    @property
    def aligned_start_s(self) -> float:
        """Where to start the item beside the query played from 0 s so that the best windows
        line up; negative: the item enters that many seconds late (``offset_s`` is this, but
        never below 0, for playing the item alone)."""
        return self.window_start_s - self.query_start_s

    def to_dict(self) -> dict:
        return {**asdict(self), "aligned_start_s": self.aligned_start_s}


class Index:
    """An index opened for searching: its manifest, window table and FAISS index. Use
    :func:`open_index` for a folder (cached), :meth:`from_vectors` for vectors in memory."""

    def __init__(self, manifest: dict, table: pd.DataFrame, faiss_index, *,
                 path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.manifest, self.faiss_index = manifest, faiss_index
        self.table = table.sort_values("vector_id").reset_index(drop=True)
        self._vector_ids = self.table["vector_id"].to_numpy(np.int64)
        codes, self._items = pd.factorize(self.table["item_id"])
        self._item_codes = codes.astype(np.int64)
        self._columns = {c: self.table[c].to_numpy() for c in _TABLE_SCHEMA.names}

    @classmethod
    def load(cls, path: str | Path) -> Index:
        path = Path(path)
        manifest = read_manifest(path)
        files = manifest["files"]
        try:
            table = pq.read_table(path / files["table"]).to_pandas()
            faiss_index = _faiss().read_index(str(path / files["faiss"]))
        except (OSError, RuntimeError, pa.ArrowException) as exc:
            raise SearchIndexError(f"{path}: unreadable index files ({exc})") from None
        table["source_path"] = _resolved_paths(table["source_path"], folder=path,
                                               recorded_folder=manifest.get("root"))
        return cls(manifest, table, faiss_index, path=path)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, table: pd.DataFrame, *, kind: str = "exact",
                     params: dict | None = None, windows: WindowSpec | None = None,
                     modality: str = "music") -> Index:
        """An in-memory index of window ``vectors`` [n, d] described by ``table`` (columns
        item_id, start_s, end_s; optional source_path, title, item_duration_s), for benchmarks
        and tests. Vectors are L2-normalised here."""
        vectors = _normalise(np.asarray(vectors, dtype=np.float32))
        table = table.reset_index(drop=True).copy()
        for column, default in (("source_path", ""), ("title", None), ("item_duration_s", 0.0)):
            if column not in table:
                table[column] = table["item_id"] if default is None else default
        merged = {**DEFAULT_PARAMS[kind], **(params or {})} if kind in DEFAULT_PARAMS else {}
        faiss_index = new_faiss_index(kind, vectors.shape[1], merged, vectors)
        ids = np.arange(len(vectors), dtype=np.int64)
        faiss_index.add_with_ids(vectors, ids)
        windows = windows or WindowSpec(1.0, 30, 10)
        manifest = {"format_version": FORMAT_VERSION, "modality": modality,
                    "windows": windows.to_dict(), "search": {"kind": kind, "params": merged},
                    "run": None, "generation": 0}
        return cls(manifest, table.assign(vector_id=ids), faiss_index)

    @property
    def modality(self) -> str:
        return self.manifest["modality"]

    @property
    def kind(self) -> str:
        return self.manifest["search"]["kind"]

    @property
    def windows(self) -> WindowSpec:
        w = self.manifest["windows"]
        return WindowSpec(w["clip_s"], w["window_clips"], w["stride_clips"])

    @property
    def n_vectors(self) -> int:
        return int(self.faiss_index.ntotal)

    @property
    def n_items(self) -> int:
        return len(self._items)

    @functools.cached_property
    def run(self) -> Run:
        """The run the index was built with (its checkpoint checksum is verified)."""
        built = self.manifest["run"]
        path = resolve_recorded(built["path"], folder=self.path,
                                recorded_folder=self.manifest.get("root"))
        return checked_run(self.manifest, path, self.path, which=built.get("which", "best"))

    def search(self, queries: np.ndarray, *, top: int = 10,
               query_windows_s: np.ndarray | None = None, scoring: str = "max"
               ) -> list[WindowHit]:
        """The ``top`` items best matching the query vectors [m, d], each with its best (query
        window, item window) pair. ``query_windows_s`` [m, 2]: (start, end) in seconds of each
        query vector's window in the query (for offsets). ``scoring``: an item's score is its
        best pair ("max", the default) or the mean over all its pairs ("mean"; every window is
        searched). The per-item ranking is exact for an exact index: FAISS is asked for more
        neighbours until no unseen window could enter the top ``top`` items."""
        if top < 1:
            raise UsageError(f"top must be >= 1, got {top}")
        if scoring not in SCORINGS:
            raise UsageError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
        q = _normalise(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        spans = (np.zeros((len(q), 2)) if query_windows_s is None
                 else np.asarray(query_windows_s, dtype=np.float64).reshape(len(q), 2))
        if self.n_vectors == 0:
            return []
        k = self.n_vectors if scoring == "mean" else min(self.n_vectors, max(4 * top, 32))
        while True:
            scores, ids = self._search(q, k)
            best = self._best_per_item(scores, ids)
            if k >= self.n_vectors or _exact_enough(best, scores, ids, top):
                break
            k = min(self.n_vectors, 4 * k)
        if scoring == "mean":
            best = self._rescored_by_mean(best, scores, ids)
        return [self._hit(rank, pair, spans[int(pair["query"])])
                for rank, pair in enumerate(best[:top], start=1)]

    def _rescored_by_mean(self, best: np.ndarray, scores: np.ndarray, ids: np.ndarray
                          ) -> np.ndarray:
        """``best`` (every item's best pair) with each score replaced by the item's mean over
        all (query window, item window) pairs, re-sorted (ties: table order)."""
        valid = ids.reshape(-1) >= 0
        rows = np.searchsorted(self._vector_ids, ids.reshape(-1)[valid])
        items = self._item_codes[rows]
        sums = np.bincount(items, weights=scores.reshape(-1)[valid], minlength=self.n_items)
        counts = np.bincount(items, minlength=self.n_items)
        out = best.copy()
        out["score"] = sums[out["item"]] / np.maximum(counts[out["item"]], 1)
        return out[np.lexsort((out["item"], -out["score"]))]

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        set_search_params(self.faiss_index, self.kind, self.manifest["search"]["params"], k)
        return self.faiss_index.search(q, k)

    def _best_per_item(self, scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Structured rows (score, query, row, item) of each item's best pair, best first (ties:
        the item first in the table)."""
        query_idx = np.repeat(np.arange(len(ids)), ids.shape[1])
        flat_ids, flat_scores = ids.reshape(-1), scores.reshape(-1)
        valid = flat_ids >= 0
        rows = np.searchsorted(self._vector_ids, flat_ids[valid])
        items = self._item_codes[rows]
        order = np.lexsort((items, -flat_scores[valid]))
        _, first = np.unique(items[order], return_index=True)
        keep = order[np.sort(first)]
        out = np.empty(len(keep), dtype=[("score", "f4"), ("query", "i8"), ("row", "i8"),
                                         ("item", "i8")])
        out["score"], out["query"] = flat_scores[valid][keep], query_idx[valid][keep]
        out["row"], out["item"] = rows[keep], items[keep]
        return out

    def _hit(self, rank: int, pair, query_span_s: np.ndarray) -> WindowHit:
        row = int(pair["row"])
        col = {name: values[row] for name, values in self._columns.items()}
        q_start, q_end = (float(t) for t in query_span_s)
        return WindowHit(
            rank=rank, item_id=str(col["item_id"]), title=str(col["title"]),
            source_path=str(col["source_path"]), score=float(pair["score"]),
            offset_s=max(0.0, float(col["start_s"]) - q_start),
            window_start_s=float(col["start_s"]), window_end_s=float(col["end_s"]),
            query_start_s=q_start, query_end_s=q_end,
            item_duration_s=float(col["item_duration_s"]))


def _resolved_paths(paths: pd.Series, *, folder: Path, recorded_folder) -> pd.Series:
    """``paths`` found again from here (see :mod:`mvpt.paths`), each distinct path once."""
    unique = pd.unique(paths)
    found = {p: str(resolve_recorded(p, folder=folder, recorded_folder=recorded_folder))
             for p in unique}
    return paths.map(found)


def _exact_enough(best: np.ndarray, scores: np.ndarray, ids: np.ndarray, top: int) -> bool:
    """True when no window beyond the k searched could change the top items: every truncated
    query's k-th score is at most the score of the top-th item."""
    if len(best) < top:
        return False
    threshold = float(best["score"][top - 1])
    truncated = ids[:, -1] >= 0
    return bool(np.all(scores[truncated, -1] <= threshold))


_OPEN: dict[str, tuple[tuple, Index]] = {}


def open_index(path: str | Path) -> Index:
    """The index at ``path``, cached until its manifest changes (for servers and repeated calls;
    one version per folder is kept)."""
    mf = Path(path) / MANIFEST_NAME
    try:
        stat = mf.stat()
    except OSError:
        raise SearchIndexError(f"{path}: not an index (no {MANIFEST_NAME}); build one with "
                               "`mvpt index RUN MEDIA... --out INDEX`") from None
    key = str(Path(path).resolve())
    version = (stat.st_mtime_ns, stat.st_size, read_manifest(Path(path))["generation"])
    cached = _OPEN.get(key)
    if cached is None or cached[0] != version:
        _OPEN.pop(key, None)  # free the old version before loading the new one
        _OPEN[key] = (version, Index.load(path))
    return _OPEN[key][1]


def read_manifest(path: Path) -> dict:
    mf = Path(path) / MANIFEST_NAME
    if not mf.is_file():
        raise SearchIndexError(f"{path}: not an index (no {MANIFEST_NAME}); build one with "
                               "`mvpt index RUN MEDIA... --out INDEX`")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SearchIndexError(f"{mf}: unreadable manifest ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SearchIndexError(f"{path}: index format {manifest.get('format_version')} is not "
                               f"supported (this mvpt reads format {FORMAT_VERSION})")
    return manifest


def checked_run(manifest: dict, run, index_path: Path, *, which: str = "best") -> Run:
    """``run`` (a Run or its folder), refused unless it is the run the index was built with."""
    run = Run.coerce(run, which=which)
    refuse_other_run(index_path, manifest, run)
    return run


def refuse_other_run(index_path: Path, manifest: dict, run: Run) -> None:
    """Raise SearchIndexError (one line) unless ``run``'s checkpoint is the index's."""
    built = manifest["run"]
    if run.sha256 != built["checkpoint_sha256"]:
        raise SearchIndexError(
            f"{index_path}: built with run {built['path']} (checkpoint sha256 "
            f"{built['checkpoint_sha256'][:12]}), not {run.folder} ({run.sha256[:12]}); "
            "use the same run or another --out folder")


# ------------------------------------------------------------------------------ building
@dataclass
class IndexSummary:
    index: str
    modality: str
    kind: str
    extract: dict = field(default_factory=dict)
    added_items: list[str] = field(default_factory=list)
    added_windows: int = 0
    already_indexed: int = 0
    items: int = 0
    windows: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _one_writer(fn):
    """Run ``fn`` holding the lock of its index folder (argument ``out`` or ``index_dir``; made
    if missing for a build): a second writer gets SearchIndexError naming the first's pid."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        folder = Path(bound["out"] if "out" in bound else bound["index_dir"])
        if "out" in bound:
            make_dir(folder, exist_ok=True)
        elif not folder.is_dir():
            return fn(*args, **kwargs)  # says it is not an index
        with exclusive_lock(folder, what="index", error=SearchIndexError):
            return fn(*args, **kwargs)

    return locked


@_one_writer
def build_index(
    run,
    media: Iterable[str | Path],
    out: str | Path,
    *,
    modality: str = "music",
    window_s: float | None = None,
    stride_s: float | None = None,
    kind: str | None = None,
    which: str = "best",
    progress: bool = True,
    shard_size: int = 16,
    decode_workers: int | None = None,
    engine=None,
    device: str = "auto",
) -> IndexSummary:
    """Extract ``media`` into ``out``/store and add the items not yet indexed to the index at
    ``out``, with ``run`` (a :class:`~mvpt.run.Run` or its folder, loaded at ``which``).
    ``window_s``/``stride_s``/``kind`` default to the existing index's, else the run's longest
    input (K x t), a third of that, and "exact"; changing them for an existing index is refused
    (use :func:`rebuild_index` for the kind). ``modality`` is "music" (audio of audio files and
    videos alike) or "video". Media paths are recorded absolute and resolved. ``engine`` runs
    the extraction (see :func:`mvpt.extract.extract`; e.g. a Ray cluster; ``decode_workers``
    None: the local engine's default). ``device`` (auto,
    cpu, cuda, cuda:N) is where the run's model and the encoders run (auto: a GPU when there is
    one); a run given as a :class:`~mvpt.run.Run` keeps its own device for the model."""
    from mvpt.encoders.base import torch_device
    from mvpt.extract import DEFAULT_DECODE_WORKERS, collect_items, extract

    out, media = Path(out), list(media)
    mod = store_modality(modality)
    run = Run.coerce(run, which=which, device=torch_device(device, encoder=f"index {out}"))
    manifest = _manifest_for(out, run, modality, window_s, stride_s, kind)
    extractor = run.extractor(mod, device=device)
    extract_summary = extract(media, out / STORE_NAME, extractor=extractor, shard_size=shard_size,
                              decode_workers=(DEFAULT_DECODE_WORKERS if decode_workers is None
                                              else decode_workers),
                              progress=progress, engine=engine)
    state = _State.load(out, manifest, run)
    requested = {it.id for it in collect_items(media)}
    rows = FeatureStore.open(out / STORE_NAME).rows(status="done")
    new_rows = rows[rows["id"].isin(requested) & ~rows["id"].isin(state.item_ids())]
    summary = IndexSummary(index=str(out), modality=modality, kind=manifest["search"]["kind"],
                           extract=extract_summary.to_dict(),
                           already_indexed=int(rows["id"].isin(requested).sum() - len(new_rows)))
    if not len(new_rows) and state.faiss_index is None:
        failures = extract_summary.failures
        reason = f": {failures[0]['error']}" if failures else ""
        raise SearchIndexError(f"{out}: nothing to index ({len(failures)} of {len(requested)} "
                               f"file(s) failed){reason}")
    if len(new_rows):
        summary.added_windows = state.add_rows(new_rows, progress=progress)
        summary.added_items = new_rows["id"].tolist()
        state.commit()
    summary.items, summary.windows = state.n_items, state.n_vectors
    return summary


def _manifest_for(out: Path, run: Run, modality: str, window_s, stride_s, kind) -> dict:
    """The existing manifest after checking the request against it, or a new one."""
    if (out / MANIFEST_NAME).is_file():
        manifest = read_manifest(out)
        refuse_other_run(out, manifest, run)
        _check_same(out, "modality", manifest["modality"], modality)
        _check_same(out, "window_s", manifest["windows"]["window_s"], window_s)
        _check_same(out, "stride_s", manifest["windows"]["stride_s"], stride_s)
        _check_same(out, "kind", manifest["search"]["kind"], kind)
        return manifest
    if out.exists() and not all(_is_own_file(p) for p in out.iterdir()):
        raise SearchIndexError(f"{out}: folder exists, is not empty and is not an index")
    kind = kind or "exact"
    if kind not in KINDS:
        raise UsageError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    window_s = window_s or run.window_s
    spec = WindowSpec.from_seconds(clip_s=run.clip_s, window_s=window_s,
                                   stride_s=stride_s or default_stride_s(window_s, run.clip_s),
                                   max_clips=run.max_clips)
    return {
        "format_version": FORMAT_VERSION, "modality": modality, "run": run.identity(),
        "root": str(out.resolve()),
        "windows": spec.to_dict(), "search": {"kind": kind, "params": dict(DEFAULT_PARAMS[kind])},
        "metric": "inner product of L2-normalised vectors", "generation": 0, "files": {},
        "next_vector_id": 0, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _is_own_file(path: Path) -> bool:
    """A file an index (or a killed build of one) leaves: its store, data files, temporaries."""
    return (path.name == STORE_NAME or path.name.startswith(".")
            or path.match("windows-*.parquet") or path.match("vectors-*.faiss"))


def _check_same(out: Path, name: str, existing, wanted) -> None:
    if wanted is not None and wanted != existing:
        raise UsageError(f"{out}: the index was built with {name}={existing}, not {wanted}; "
                         "use another --out folder")


class _State:
    """An index being changed in memory: manifest, table and FAISS index; :meth:`commit` saves."""

    def __init__(self, path: Path, manifest: dict, table: pd.DataFrame, faiss_index, run=None):
        self.path, self.manifest, self.table, self.faiss_index = path, manifest, table, faiss_index
        self.run = run

    @classmethod
    def load(cls, path: Path, manifest: dict, run: Run | None = None) -> _State:
        if manifest["files"]:
            idx = Index.load(path)
            return cls(path, manifest, idx.table, idx.faiss_index, run)
        empty = _TABLE_SCHEMA.empty_table().to_pandas()
        return cls(path, manifest, empty, None, run)

    @property
    def n_vectors(self) -> int:
        return 0 if self.faiss_index is None else int(self.faiss_index.ntotal)

    @property
    def n_items(self) -> int:
        return int(self.table["item_id"].nunique())

    def item_ids(self) -> set[str]:
        return set(self.table["item_id"])

    def add_rows(self, rows: pd.DataFrame, *, progress: bool) -> int:
        """Encode the windows of store ``rows`` and add them; returns the number of windows."""
        from tqdm.auto import tqdm

        store = FeatureStore.open(self.path / STORE_NAME)
        mod = store_modality(self.manifest["modality"])
        added = 0
        chunks = range(0, len(rows), ENCODE_CHUNK_ITEMS)
        for lo in tqdm(chunks, desc="encode", unit="chunk", disable=not progress or not len(rows)):
            feats = store.load(ids=rows["id"].iloc[lo:lo + ENCODE_CHUNK_ITEMS].tolist(),
                               arrays=[mod])
            table, sequences = window_table(feats, mod, self.windows)
            self.add_vectors(table, self.run.embed(mod, sequences))
            added += len(table)
        return added

    @property
    def windows(self) -> WindowSpec:
        w = self.manifest["windows"]
        return WindowSpec(w["clip_s"], w["window_clips"], w["stride_clips"])

    def add_vectors(self, table: pd.DataFrame, vectors: np.ndarray) -> None:
        """Add window rows (``vector_id`` is assigned here) with their embeddings."""
        search = self.manifest["search"]
        if self.faiss_index is None:
            self.faiss_index = new_faiss_index(search["kind"], vectors.shape[1],
                                               search["params"], vectors)
        first = int(self.manifest["next_vector_id"])
        ids = np.arange(first, first + len(table), dtype=np.int64)
        self.faiss_index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        table = table.assign(vector_id=ids)[_TABLE_SCHEMA.names]
        parts = [t for t in (self.table, table) if len(t)]
        self.table = pd.concat(parts, ignore_index=True) if parts else table
        self.manifest["next_vector_id"] = first + len(table)

    def remove(self, item_ids: list[str]) -> int:
        gone = self.table["item_id"].isin(item_ids)
        ids = self.table.loc[gone, "vector_id"].to_numpy(np.int64)
        search = self.manifest["search"]
        self.faiss_index = remove_vectors(self.faiss_index, search["kind"], search["params"], ids)
        self.table = self.table[~gone].reset_index(drop=True)
        return len(ids)

    def commit(self) -> None:
        """Write new numbered files, then the manifest pointing at them, then drop old files."""
        if self.faiss_index is None:
            raise SearchIndexError(f"{self.path}: nothing to index (no item was extracted)")
        gen = int(self.manifest["generation"]) + 1
        files = {"table": f"windows-{gen:05d}.parquet", "faiss": f"vectors-{gen:05d}.faiss"}
        table = pa.Table.from_pandas(self.table[_TABLE_SCHEMA.names], schema=_TABLE_SCHEMA,
                                     preserve_index=False)
        with atomic_path(self.path / files["table"]) as tmp:
            pq.write_table(table, tmp)
        with atomic_path(self.path / files["faiss"]) as tmp:
            _faiss().write_index(self.faiss_index, str(tmp))
        self.manifest.update(generation=gen, files=files, items=self.n_items,
                             root=str(self.path.resolve()),
                             vectors=self.n_vectors, dim=int(self.faiss_index.d),
                             updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_json(self.path / MANIFEST_NAME, self.manifest)
        for old in [*self.path.glob("windows-*.parquet"), *self.path.glob("vectors-*.faiss"),
                    *stray_temporaries(self.path)]:  # of a killed commit
            if old.name not in files.values():
                old.unlink(missing_ok=True)


def window_table(feats, array: str, spec: WindowSpec) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Rows (without vector_id) and clip sequences of every window of the loaded items."""
    records, sequences = [], []
    for i, row in feats.rows.iterrows():
        clips = feats.item(i, array)
        base_s = float(row["start_s"]) if np.isfinite(row["start_s"]) else 0.0
        title = row.get("title")
        title = title if isinstance(title, str) and title else Path(row["source_path"]).stem
        for first, n in spec.cut(len(clips)):
            records.append((row["id"], row["source_path"], title, base_s + first * spec.clip_s,
                            base_s + (first + n) * spec.clip_s, float(row["duration_s"])))
            sequences.append(np.asarray(clips[first:first + n], dtype=np.float32))
    table = pd.DataFrame.from_records(records, columns=[
        "item_id", "source_path", "title", "start_s", "end_s", "item_duration_s"])
    return table, sequences


# ------------------------------------------------------------------------------ changing
@_one_writer
def remove_items(index_dir: str | Path, ids: Iterable[str]) -> int:
    """Remove items (all their windows) from the index; returns the number of windows removed.
    Unknown ids are refused before anything changes. The store keeps their features, so asking
    :func:`build_index` for the same file again re-adds it without re-extracting."""
    path = Path(index_dir)
    state = _State.load(path, read_manifest(path))
    ids = list(dict.fromkeys(ids))
    unknown = sorted(set(ids) - state.item_ids())
    if unknown:
        raise UsageError(f"{path}: no item(s) {', '.join(unknown[:5])} in the index")
    removed = state.remove(ids)
    state.commit()
    return removed


@_one_writer
def rebuild_index(index_dir: str | Path, *, kind: str | None = None,
                  params: dict | None = None) -> dict:
    """Rebuild the FAISS index from its own vectors, optionally as another ``kind`` (e.g. exact ->
    hnsw for a library that grew, or ivf to retrain its centroids). Returns the new manifest."""
    path = Path(index_dir)
    state = _State.load(path, read_manifest(path))
    kind = kind or state.manifest["search"]["kind"]
    if kind not in KINDS:
        raise UsageError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    ids, vecs = all_vectors(state.faiss_index)
    merged = {**DEFAULT_PARAMS[kind], **(params or {})}
    state.faiss_index = new_faiss_index(kind, vecs.shape[1], merged, vecs)
    state.faiss_index.add_with_ids(vecs, ids)
    state.manifest["search"] = {"kind": kind, "params": merged}
    state.commit()
    return state.manifest
