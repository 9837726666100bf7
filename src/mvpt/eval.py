"""Retrieval evaluation: Recall@k and median rank, video-to-music and music-to-video.

Query ``i`` of one modality has exactly one correct candidate, item ``i`` of the other. Its rank is
``1 + better + tied / 2`` (``better``: candidates scored strictly higher, ``tied``: other candidates
scored equal), the mean rank under a random order of the ties; Recall@k is the probability that
the correct item lands in the top ``k`` under that same random order, ``clip((k - better) /
(tied + 1), 0, 1)``, averaged over queries. Without ties this is the plain fraction of queries with
rank <= k; with ties nothing scores better than chance by luck (constant embeddings give exactly
R@k = k/n and median rank (n + 1) / 2).

Similarities are dot products (cosine for the L2-normalised embeddings the models output). They
are computed as square blocks of ``block_size`` x ``block_size`` scores by one matrix product
(BLAS), each block serving both directions (video rows, music columns), and counted in place
against each query's correct score (from the diagonal block of the same product): memory is
O(block_size^2), never pool x pool; the counting is one compiled pass over each block (numba;
``MVPT_EVAL_KERNEL=numpy`` or a missing numba counts with numpy, a few times slower, same
counts). Another scoring plugs in through :func:`count_ranks` (see :class:`DotScores`).
``same_length=True`` keeps only candidates with as many clips as the query (the length-shortcut
control of appendix C.6). ``pool=N`` averages the metrics over disjoint random
pools of N items. ``tracks`` leaves out the other items of a query's own track; extra candidates
compete without being queries.

:func:`evaluate` embeds a store split with a trained run at track level (one centred window of at
most ``max_clips`` clips per track) or segment level (consecutive segments of ``segment_s``
seconds, the query's own time-aligned segment being the only correct one), and reports the metrics
beside chance computed from the same pools and candidates. Segment negatives: "all" (the other
segments of the query's own track compete too; the setting of the paper's segment-level row, which
ranks among "the full set of target candidates") or "other-tracks". Candidates: "split" (the
paper's tables) or "all" (every done track of the store, as in a real library).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from mvpt.clips import clip_window, segments
from mvpt.errors import StoreError, UsageError
from mvpt.settings import SEGMENT_S

DIRECTIONS = ("video_to_music", "music_to_video")
LEVELS = ("track", "segment")  # the paper's levels
# What `mvpt recommend` ranks: a track's score is its best (or mean) pair of sliding windows, the
# query's against the candidate's, with the index's windows and Index.search itself.
TRACK_WINDOWS = "track-windows"
ALL_LEVELS = (*LEVELS, TRACK_WINDOWS)
# Segment level: "all" ranks a segment among every other segment, its own track's included (the
# paper-comparable setting); "other-tracks" leaves out the other segments of its own track.
SEGMENT_NEGATIVES = ("all", "other-tracks")
# "split": the split's items are the candidates; "all": every done track of the store is.
CANDIDATES = ("split", "all")
# Queries and candidates per block of scores: a block of float32 scores is BLOCK_SIZE^2 x 4 bytes.
BLOCK_SIZE = 4096
# Scores compared at a time (128K float32: 512 KiB, within a core's cache).
TILE_SCORES = 1 << 17
# Rows per tile at most: a column's count within a tile must fit a byte.
MAX_TILE_ROWS = 255
# Scores closer than this (relative to the product of the vectors' norms) count as tied, so that
# mathematically equal similarities stay tied whatever rounding the matrix product does.
TIE_RTOL = 1e-6

EmbedFn = Callable[[str, list], np.ndarray]


def retrieval_metrics(
    video_emb,
    music_emb,
    *,
    lengths=None,
    same_length: bool = False,
    ks: Sequence[int] = (1, 5, 10),
    block_size: int = BLOCK_SIZE,
    pool: int | None = None,
    seed: int = 0,
    tracks=None,
    extra_video=None,
    extra_music=None,
    extra_lengths=None,
) -> dict:
    """Retrieval metrics of paired embeddings (row i of ``video_emb`` goes with row i of
    ``music_emb``), both directions, as an ordered dict: ``{direction}_R@{k}`` (fractions),
    ``{direction}_median_rank``, ``{direction}_mean_rank``, ``mean_R@{max k}``, ``pool_size``
    (candidates before exclusions), ``n_pools``, ``n_queries``, ``mean_candidates``.

    ``lengths``: int [n] clips per item, needed by ``same_length``. ``pool``: average over
    ``n // pool`` disjoint random pools of ``pool`` items drawn with ``seed`` (the whole set when
    ``pool`` is None or >= n). ``tracks``: int [n] track of each item; a query's candidates then
    leave out the other items of its own track (segment level, other-tracks negatives).
    ``extra_video`` / ``extra_music``: [e, d] items that are candidates only, never queries (the
    rest of a library), with ``extra_lengths`` for ``same_length``."""
    video, music = _validate(video_emb, music_emb, ks=ks, block_size=block_size)
    extra = _validate_extra(extra_video, extra_music, dim=video.shape[1])
    lengths, extra_lengths = _validate_lengths(lengths, extra_lengths, n=len(video),
                                               n_extra=len(extra[0]), same_length=same_length)
    tracks = None if tracks is None else _validate_tracks(tracks, n=len(video))
    per_pool = []
    for idx in pool_indices(len(video), pool=pool, seed=seed):
        better = {d: np.empty(len(idx), np.int64) for d in DIRECTIONS}
        tied = {d: np.empty(len(idx), np.int64) for d in DIRECTIONS}
        for pos, extra_idx in _pool_groups(idx, lengths, extra_lengths):
            rows = idx[pos]
            counts = pair_rank_counts(
                _subset(video, rows), _subset(music, rows),
                extra_video=_subset(extra[0], extra_idx), extra_music=_subset(extra[1], extra_idx),
                block_size=block_size, tracks=None if tracks is None else tracks[rows])
            for d in DIRECTIONS:
                better[d][pos], tied[d][pos] = counts[d]
        per_pool.append(metrics_from_counts(
            {d: (better[d], tied[d]) for d in DIRECTIONS}, ks=ks,
            pool_size=len(idx) + len(extra[0]),
            n_candidates=_pool_candidates(idx, lengths, extra_lengths, tracks)))
    return _average(per_pool)


def metrics_from_counts(counts: dict, *, n_candidates, pool_size: int,
                        ks: Sequence[int] = (1, 5, 10)) -> dict:
    """The metrics dict of :func:`retrieval_metrics` (one pool) from the ``(better, tied)`` per
    direction that :func:`count_ranks` gives; ``n_candidates``: int [n] candidates per query,
    ``pool_size``: the pool before exclusions. The way in for another scoring."""
    directions = {d: _rank_summary(*counts[d], ks=ks) for d in DIRECTIONS}
    return _assemble(directions, ks=ks, pool_size=pool_size,
                     n_candidates=np.asarray(n_candidates, dtype=np.int64))


def chance_metrics(pool_sizes, *, ks: Sequence[int] = (1, 5, 10),
                   pool_size: int | None = None) -> dict:
    """What random scores achieve, with the keys of :func:`retrieval_metrics`. ``pool_sizes``: the
    number of candidates (an int, the same for every query), or an int array of it per query (as
    with ``same_length``), or a list of such arrays, one per pool (averaged like pooled metrics).
    Per query with n candidates: R@k = min(1, k / n), rank (n + 1) / 2. ``pool_size``: the
    reported pool (default: the number of queries)."""
    if isinstance(pool_sizes, (list, tuple)):
        pools = [np.asarray(p, dtype=np.int64).reshape(-1) for p in pool_sizes]
    elif np.ndim(pool_sizes) == 0:
        pools = [np.full(max(int(pool_sizes), 0), int(pool_sizes), dtype=np.int64)]
    else:
        pools = [np.asarray(pool_sizes, dtype=np.int64).reshape(-1)]
    if not pools or any(p.size == 0 or p.min() < 1 for p in pools):
        raise UsageError(f"chance needs at least one query with >= 1 candidate, got {pool_sizes!r}")
    per_pool = []
    for n_candidates in pools:
        ranks = (n_candidates + 1) / 2.0
        summary = {f"R@{k}": float(np.mean(np.minimum(1.0, k / n_candidates))) for k in ks}
        summary["median_rank"] = float(np.median(ranks))
        summary["mean_rank"] = float(np.mean(ranks))
        per_pool.append(_assemble({d: summary for d in DIRECTIONS}, n_candidates=n_candidates,
                                  pool_size=pool_size or len(n_candidates), ks=ks))
    return _average(per_pool)


def candidate_counts(
    n_items: int, *, lengths=None, same_length: bool = False, pool: int | None = None,
    seed: int = 0, tracks=None, extra_lengths=None, n_extra: int = 0,
) -> list[np.ndarray]:
    """Per pool, the number of candidates each query is ranked among, for the same pools, length
    groups, own-track exclusions and extra candidates that :func:`retrieval_metrics` uses with
    these arguments (feed to :func:`chance_metrics`)."""
    if extra_lengths is not None:
        n_extra = len(extra_lengths)
    lengths, extra_lengths = _validate_lengths(lengths, extra_lengths, n=n_items, n_extra=n_extra,
                                               same_length=same_length)
    tracks = None if tracks is None else _validate_tracks(tracks, n=n_items)
    return [_pool_candidates(idx, lengths, extra_lengths, tracks)
            for idx in pool_indices(n_items, pool=pool, seed=seed)]


def pool_indices(n_items: int, *, pool: int | None, seed: int = 0) -> list[np.ndarray]:
    """Item indices of each evaluation pool: all items when ``pool`` is None or >= ``n_items``,
    else ``n_items // pool`` disjoint random pools of ``pool`` items (the remainder unused)."""
    if pool is not None and pool < 1:
        raise UsageError(f"pool must be >= 1 item, got {pool}")
    if pool is None or pool >= n_items:
        return [np.arange(n_items)]
    order = np.random.default_rng(seed).permutation(n_items)
    return [np.sort(order[i * pool:(i + 1) * pool]) for i in range(n_items // pool)]


def _pool_groups(idx, lengths, extra_lengths) -> list[tuple[np.ndarray, np.ndarray]]:
    """(positions in ``idx``, extra candidate indices) of each length group of a pool; one group
    of everything when lengths are None (no same-length control)."""
    if lengths is None:
        return [(np.arange(len(idx)), np.arange(len(extra_lengths)))]
    pool_lengths = lengths[idx]
    return [(np.flatnonzero(pool_lengths == value), np.flatnonzero(extra_lengths == value))
            for value in np.unique(pool_lengths)]


def _subset(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]`` for sorted, distinct indices; the array itself (no copy) when they are
    all of it."""
    return array if len(index) == len(array) else array[index]


def _pool_candidates(idx, lengths, extra_lengths, tracks) -> np.ndarray:
    """Candidates of each query of pool ``idx``: its length group with the group's extras, less
    the other items of its own track when ``tracks`` is given."""
    sizes = np.empty(len(idx), dtype=np.int64)
    for pos, extra_idx in _pool_groups(idx, lengths, extra_lengths):
        sizes[pos] = len(pos) + len(extra_idx)
        if tracks is not None:
            _, inverse, same = np.unique(tracks[idx[pos]], return_inverse=True, return_counts=True)
            sizes[pos] -= same[inverse] - 1
    return sizes


# ---------------------------------------------------------------------------- rank counting
class DotScores:
    """Dot-product scores, the scoring behind :func:`pair_rank_counts`: ``pairs`` gives the
    similarities of video items (rows) with music items (columns), the true pairs on the
    diagonal; ``extras`` gives one direction's queries against its extra candidates. Another
    scoring (several windows per item, say) plugs in with the same three methods."""

    def __init__(self, video, music, extra_video=None, extra_music=None):
        self.side = {"video_to_music": (video, _matrix(extra_music, video.shape[1])),
                     "music_to_video": (music, _matrix(extra_video, video.shape[1]))}
        self.n = len(video)

    def n_extra(self, direction: str) -> int:
        return len(self.side[direction][1])

    def pairs(self, rows: slice, cols: slice, out: np.ndarray) -> np.ndarray:
        video, music = self.side["video_to_music"][0], self.side["music_to_video"][0]
        return np.matmul(video[rows], music[cols].T, out=out)

    def extras(self, direction: str, rows: slice, cols: slice, out: np.ndarray) -> np.ndarray:
        queries, extra = self.side[direction]
        return np.matmul(queries[rows], extra[cols].T, out=out)

    def tolerances(self) -> dict:
        """Per direction, how close to a query's correct score another score counts as tied:
        ``TIE_RTOL`` x the query's norm x the largest candidate norm."""
        norms = {d: np.sqrt(np.einsum("ij,ij->i", q, q)) for d, (q, _) in self.side.items()}
        out = {}
        for direction, other in zip(DIRECTIONS, DIRECTIONS[::-1]):
            extra = self.side[direction][1]
            largest = max(norms[other].max(initial=0.0),
                          np.sqrt(np.einsum("ij,ij->i", extra, extra)).max(initial=0.0))
            out[direction] = (TIE_RTOL * largest * norms[direction]).astype(np.float32)
        return out


def pair_rank_counts(video, music, *, extra_video=None, extra_music=None, tracks=None,
                     block_size: int = BLOCK_SIZE) -> dict:
    """Per direction, ``(better, tied)`` of each query i (correct candidate: item i of the other
    modality): the candidates scored strictly higher, and the other candidates scored equal
    (within ``TIE_RTOL``). Candidates: every paired item plus the extras of the other modality;
    with ``tracks``, not the other items of the query's own track. See :func:`count_ranks`."""
    video = np.ascontiguousarray(video, dtype=np.float32)
    music = np.ascontiguousarray(music, dtype=np.float32)
    if tracks is None:
        return count_ranks(DotScores(video, music, extra_video, extra_music),
                           block_size=block_size)
    order = np.argsort(tracks, kind="stable")  # own-track candidates next to each other
    counts = count_ranks(DotScores(video[order], music[order], extra_video, extra_music),
                         block_size=block_size, runs=_runs(np.asarray(tracks)[order]))
    out = {}
    for direction, (better, tied) in counts.items():
        out[direction] = (np.empty_like(better), np.empty_like(tied))
        out[direction][0][order], out[direction][1][order] = better, tied
    return out


def count_ranks(scores, *, block_size: int = BLOCK_SIZE, runs=None,
                threads: int | None = None) -> dict:
    """``(better, tied)`` per direction from a scoring like :class:`DotScores`, computed in
    square blocks of ``block_size`` x ``block_size`` scores (memory O(block_size^2)); each block
    of pair scores counts for both directions (video rows, music columns), by ``threads``
    threads (default: the usable CPUs, at most 8). ``runs``: (first, end) of the items excluded
    with each query (its own track; items must be grouped by track)."""
    n = scores.n
    tolerance = scores.tolerances()
    threads = threads or min(8, _usable_cpus())
    spans = [slice(lo, min(n, lo + block_size)) for lo in range(0, n, block_size)]
    with ThreadPoolExecutor(threads) as pool:
        counts = _RankCounter(n, block_size=block_size, threads=threads, pool=pool)
        for span in spans:  # diagonal blocks first: the correct scores, from the same product
            block = scores.pairs(span, span, out=counts.block(span, span))
            counts.set_thresholds(span, np.diagonal(block).copy(), tolerance)
            counts.count_pairs(block, span, span, runs)
        for rows in spans:
            for cols in spans:
                if rows != cols:
                    counts.count_pairs(scores.pairs(rows, cols, out=counts.block(rows, cols)),
                                       rows, cols, runs)
            for direction in DIRECTIONS:
                for lo in range(0, scores.n_extra(direction), block_size):
                    cols = slice(lo, min(scores.n_extra(direction), lo + block_size))
                    block = scores.extras(direction, rows, cols, out=counts.block(rows, cols))
                    counts.count(block, rows, row_direction=direction)
    return counts.result()


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _RankCounter:
    """Counts, for each query, the candidates above its upper threshold (correct score +
    tolerance) and at or above its lower one (correct - tolerance), in place: blocks of scores
    in one reused buffer, shared out among lanes (one per thread, each with its own totals).
    The compiled kernel counts a lane's band of rows in one pass; without it, numpy compares a
    cache-sized tile at a time (each lane with its own mask).

    With numpy, a tile has at most 255 rows, so a column's count within a tile fits a byte (summed without
    widening); the column queries' thresholds are laid out as a tile-shaped array once per
    block, because numpy compares a tile with a broadcast row of thresholds much slower
    than with an array of its own shape (5-10x, measured with numpy 2.4)."""

    def __init__(self, n: int, *, block_size: int, threads: int, pool):
        self.score_buffer = np.empty(block_size * block_size, np.float32)
        self.upper = {d: np.empty(n, np.float32) for d in DIRECTIONS}
        self.lower = {d: np.empty(n, np.float32) for d in DIRECTIONS}
        tile_size = max(TILE_SCORES, block_size)
        self.column_limits = {"upper": np.empty(tile_size, np.float32),
                              "lower": np.empty(tile_size, np.float32)}
        self.lanes = [_Lane(n, mask_size=tile_size) for _ in range(threads)]
        self.pool = pool
        # the compiled kernel's column arguments when it counts rows only
        self._no_columns = (np.empty(0, np.float32),) * 2 + (np.empty(0, np.int64),) * 2

    def block(self, rows: slice, cols: slice) -> np.ndarray:
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        return self.score_buffer[:shape[0] * shape[1]].reshape(shape)

    def set_thresholds(self, span: slice, correct: np.ndarray, tolerance: dict) -> None:
        for direction in DIRECTIONS:
            self.upper[direction][span] = correct + tolerance[direction][span]
            self.lower[direction][span] = correct - tolerance[direction][span]

    def count_pairs(self, block, rows, cols, runs) -> None:
        if runs is not None:
            _exclude_own_track(block, rows, cols, runs)
        self.count(block, rows, cols)

    def count(self, block, rows: slice, cols: slice | None = None,
              row_direction: str = "video_to_music") -> None:
        """Add the block's candidates of the queries of its rows (``row_direction``) and, given
        ``cols``, of the queries of its columns (music to video)."""
        kernel = _count_kernels()
        if kernel is not None:
            self._count_compiled(kernel, block, rows, cols, row_direction)
            return
        step = max(1, min(MAX_TILE_ROWS, TILE_SCORES // block.shape[1]))
        tiles = np.array_split(np.arange(0, len(block), step), len(self.lanes))
        if cols is not None:
            for name, threshold in (("upper", self.upper), ("lower", self.lower)):
                limits = self.column_limits[name][:step * block.shape[1]]
                limits.reshape(step, -1)[:] = threshold["music_to_video"][cols]

        def run(lane, starts):
            for lo in starts:
                tile = block[lo:lo + step]
                lane.add(self, row_direction, tile, slice(rows.start + lo, rows.start + lo +
                                                          len(tile)), axis=1)
                if cols is not None:
                    lane.add(self, "music_to_video", tile, cols, axis=0)

        jobs = [self.pool.submit(run, lane, starts)
                for lane, starts in zip(self.lanes, tiles) if len(starts)]
        for job in jobs:
            job.result()

    def _count_compiled(self, kernel, block, rows: slice, cols: slice | None,
                        row_direction: str) -> None:
        """The same counts in one compiled pass: each lane a band of the block's rows."""
        edges = np.linspace(0, len(block), len(self.lanes) + 1).astype(int)
        d = "music_to_video"  # the columns' queries, when counted

        def run(lane, lo, hi):
            queries = slice(rows.start + lo, rows.start + hi)
            columns = (() if cols is None else (self.upper[d][cols], self.lower[d][cols],
                                                lane.better[d][cols], lane.at_least[d][cols]))
            kernel(block[lo:hi], self.upper[row_direction][queries],
                   self.lower[row_direction][queries], lane.better[row_direction][queries],
                   lane.at_least[row_direction][queries], cols is not None,
                   *(columns or self._no_columns))

        jobs = [self.pool.submit(run, lane, lo, hi)
                for lane, lo, hi in zip(self.lanes, edges[:-1], edges[1:]) if hi > lo]
        for job in jobs:
            job.result()

    def result(self) -> dict:
        better = {d: sum(lane.better[d] for lane in self.lanes) for d in DIRECTIONS}
        at_least = {d: sum(lane.at_least[d] for lane in self.lanes) for d in DIRECTIONS}
        # at_least also counted the correct candidate itself
        return {d: (better[d], at_least[d] - better[d] - 1) for d in DIRECTIONS}


class _Lane:
    """One thread's mask buffer and running totals."""

    def __init__(self, n: int, *, mask_size: int):
        self.mask = np.empty(mask_size, np.bool_)
        self.better = {d: np.zeros(n, np.int64) for d in DIRECTIONS}
        self.at_least = {d: np.zeros(n, np.int64) for d in DIRECTIONS}

    def add(self, counter, direction, tile, queries: slice, axis: int) -> None:
        """Count the tile's scores above each query's thresholds (queries along ``axis``: 1,
        the rows'; 0, the columns', whose thresholds are ``counter.column_limits``)."""
        mask = self.mask[:tile.size].reshape(tile.shape)
        for name, total, compare in (("upper", self.better, np.greater),
                                     ("lower", self.at_least, np.greater_equal)):
            if axis == 1:
                limit = getattr(counter, name)[direction][queries][:, None]
                compare(tile, limit, out=mask)
                total[direction][queries] += mask.view(np.uint8).sum(axis=1, dtype=np.int32)
            else:
                limit = counter.column_limits[name][:tile.size].reshape(tile.shape)
                compare(tile, limit, out=mask)
                total[direction][queries] += mask.view(np.uint8).sum(axis=0, dtype=np.uint8)


_KERNELS: list = []  # [the counting kernel, or None], compiled on first use


def _count_kernels():
    """The compiled counting kernel, or None: numba missing, or ``MVPT_EVAL_KERNEL=numpy``.
    They release the GIL, so the lanes' threads count in parallel; numba caches the machine
    code on disk (``NUMBA_CACHE_DIR``), so only the first process compiles (a few seconds)."""
    if os.environ.get("MVPT_EVAL_KERNEL", "").lower() == "numpy":
        return None
    if not _KERNELS:
        try:
            import numba
        except ImportError:
            _KERNELS.append(None)
        else:
            _KERNELS.append(_compile_kernels(numba))
    return _KERNELS[0]


def _compile_kernels(numba):
    @numba.njit(nogil=True, cache=True)
    def count_tile(tile, upper, lower, better, at_least, columns, col_upper, col_lower,
                   col_better, col_at_least):
        """Row i's scores above upper[i] (better) and at or above lower[i] (at_least); with
        ``columns``, the same for each column j against col_upper[j] and col_lower[j]."""
        for i in range(tile.shape[0]):
            high, low = upper[i], lower[i]
            above = at_or_above = 0
            for j in range(tile.shape[1]):
                score = tile[i, j]
                above += score > high
                at_or_above += score >= low
                if columns:
                    col_better[j] += score > col_upper[j]
                    col_at_least[j] += score >= col_lower[j]
            better[i] += above
            at_least[i] += at_or_above

    return count_tile


def _runs(tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, end) index of each item's run of equal, consecutive ``tracks``."""
    starts_run = np.r_[True, tracks[1:] != tracks[:-1]]
    first = np.flatnonzero(starts_run)
    end = np.r_[first[1:], len(tracks)]
    which = np.cumsum(starts_run) - 1
    return first[which], end[which]


def _exclude_own_track(block, rows: slice, cols: slice, runs) -> None:
    """Scores of other items of the row's own track become -inf (never better, never tied)."""
    first, end = runs[0][rows], runs[1][rows]
    hit = np.flatnonzero((first < cols.stop) & (end > cols.start) & (end - first > 1))
    if len(hit) == 0:
        return
    r0, r1 = hit[0], hit[-1] + 1  # runs are sorted, so the hit rows are consecutive
    c0, c1 = max(cols.start, first[r0:r1].min()), min(cols.stop, end[r0:r1].max())
    col = np.arange(c0, c1)
    row = np.arange(rows.start + r0, rows.start + r1)[:, None]
    own = (col >= first[r0:r1, None]) & (col < end[r0:r1, None]) & (col != row)
    block[r0:r1, c0 - cols.start:c1 - cols.start][own] = -np.inf


def _rank_summary(better: np.ndarray, tied: np.ndarray, *, ks) -> dict:
    ranks = 1.0 + better + tied / 2.0
    summary = {f"R@{k}": float(np.mean(np.clip((k - better) / (tied + 1.0), 0.0, 1.0)))
               for k in ks}
    summary["median_rank"] = float(np.median(ranks))
    summary["mean_rank"] = float(np.mean(ranks))
    return summary


def _assemble(directions: dict, *, n_candidates: np.ndarray, pool_size: int, ks) -> dict:
    out = {}
    for direction in DIRECTIONS:
        for key, value in directions[direction].items():
            out[f"{direction}_{key}"] = value
    top = max(ks)
    out[f"mean_R@{top}"] = float(np.mean([out[f"{d}_R@{top}"] for d in DIRECTIONS]))
    out["pool_size"] = int(pool_size)
    out["n_pools"] = 1
    out["n_queries"] = int(len(n_candidates))
    out["mean_candidates"] = float(np.mean(n_candidates))
    return out


def _average(per_pool: list[dict]) -> dict:
    """Mean of each metric over pools; pool_size kept, n_pools and n_queries totalled."""
    out = {key: float(np.mean([p[key] for p in per_pool])) for key in per_pool[0]}
    out["pool_size"] = per_pool[0]["pool_size"]
    out["n_pools"] = len(per_pool)
    out["n_queries"] = int(sum(p["n_queries"] for p in per_pool))
    return out


def _validate(video_emb, music_emb, *, ks, block_size) -> tuple[np.ndarray, np.ndarray]:
    video = np.asarray(video_emb, dtype=np.float32)
    music = np.asarray(music_emb, dtype=np.float32)
    if video.ndim != 2 or music.ndim != 2 or video.shape != music.shape:
        raise UsageError(f"video and music embeddings must be matrices of one shape [n, d], got "
                         f"{video.shape} and {music.shape}")
    if len(video) == 0:
        raise UsageError("no embeddings to evaluate (n = 0)")
    if not (np.isfinite(video).all() and np.isfinite(music).all()):
        raise UsageError("embeddings contain NaN or infinite values")
    if not ks or min(ks) < 1:
        raise UsageError(f"ks must be positive ranks, got {tuple(ks)}")
    if block_size < 1:
        raise UsageError(f"block_size must be >= 1 query, got {block_size}")
    return video, music


def _validate_extra(extra_video, extra_music, *, dim: int) -> tuple[np.ndarray, np.ndarray]:
    if (extra_video is None) != (extra_music is None):
        raise UsageError("extra candidates need both extra_video and extra_music")
    video, music = _matrix(extra_video, dim), _matrix(extra_music, dim)
    if video.shape != music.shape or video.shape[1] != dim:
        raise UsageError(f"extra video and music embeddings must be matrices [e, {dim}], got "
                         f"{video.shape} and {music.shape}")
    if not (np.isfinite(video).all() and np.isfinite(music).all()):
        raise UsageError("extra embeddings contain NaN or infinite values")
    return video, music


def _matrix(values, dim: int) -> np.ndarray:
    """float32 C-contiguous [n, dim]; None gives an empty one."""
    if values is None:
        return np.empty((0, dim), dtype=np.float32)
    return np.ascontiguousarray(values, dtype=np.float32)


def _validate_lengths(lengths, extra_lengths, *, n: int, n_extra: int, same_length: bool):
    """(lengths, extra lengths) as arrays when ``same_length``, else (None, a placeholder with
    one entry per extra candidate)."""
    if not same_length:
        return None, np.zeros(n_extra, dtype=np.int64)
    if lengths is None or (n_extra and extra_lengths is None):
        raise UsageError("same_length=True needs lengths (clips per item) and, with extra "
                         "candidates, extra_lengths")
    lengths = np.asarray(lengths).reshape(-1)
    extra_lengths = np.asarray([] if extra_lengths is None else extra_lengths).reshape(-1)
    if len(lengths) != n or len(extra_lengths) != n_extra:
        raise UsageError(f"lengths has {len(lengths)} entries for {n} items, extra_lengths "
                         f"{len(extra_lengths)} for {n_extra} extra candidates")
    return lengths, extra_lengths


def _validate_tracks(tracks, *, n: int) -> np.ndarray:
    tracks = np.asarray(tracks).reshape(-1)
    if len(tracks) != n:
        raise UsageError(f"tracks has {len(tracks)} entries for {n} items")
    return tracks


# ---------------------------------------------------------------------------- evaluation
def evaluate(
    run_dir,
    store_path,
    *,
    split: str = "test",
    level: str = "track",
    segment_s: float = SEGMENT_S,
    pool: int | None = None,
    same_length: bool = False,
    seed: int = 0,
    which: str = "best",
    embed_fn: EmbedFn | None = None,
    max_clips: int | None = None,
    segment_negatives: str = "all",
    candidates: str = "split",
    window_s: float | None = None,
    stride_s: float | None = None,
    scoring: str = "max",
) -> dict:
    """Evaluate ``run_dir`` (a :class:`~mvpt.run.Run`, or a run folder loaded at ``which``) on ``split`` of the feature store at one
    ``level`` ("track" or "segment"); see :func:`evaluate_levels`."""
    return evaluate_levels(run_dir, store_path, levels=(level,), split=split, segment_s=segment_s,
                           pool=pool, same_length=same_length, seed=seed, which=which,
                           embed_fn=embed_fn, max_clips=max_clips,
                           segment_negatives=segment_negatives, candidates=candidates,
                           window_s=window_s, stride_s=stride_s, scoring=scoring)[0]


def evaluate_levels(
    run_dir,
    store_path,
    *,
    levels: Sequence[str] = LEVELS,
    split: str = "test",
    segment_s: float = SEGMENT_S,
    pool: int | None = None,
    same_length: bool = False,
    seed: int = 0,
    which: str = "best",
    embed_fn: EmbedFn | None = None,
    max_clips: int | None = None,
    segment_negatives: str = "all",
    candidates: str = "split",
    window_s: float | None = None,
    stride_s: float | None = None,
    scoring: str = "max",
) -> list[dict]:
    """One result dict per level, loading the model and the split once.

    ``embed_fn(modality, sequences) -> float32 [n, d]`` ("video" or "audio", a list of float32
    [n_clips, dim] arrays) replaces the run's model when given (tests, baselines). Track level
    reads each track through its centred window of at most K clips (the run's; with
    ``embed_fn``, ``max_clips`` or the store's); segment level cuts every track into segments of
    ``round(segment_s / clip_s)`` clips, dropping the partial last one (tracks shorter than a
    segment are dropped and counted); level "track-windows" ranks whole tracks as
    :func:`mvpt.recommend.recommend` does (windows of ``window_s`` every ``stride_s`` seconds,
    by default the index's defaults for K; ``scoring`` "max" or "mean" over window pairs).
    ``segment_negatives``: "all" (every other segment is a negative, its own track's too: the
    paper-comparable setting) or "other-tracks" (a segment query's candidates leave out the other
    segments of its own track). ``candidates``: "split" (the split's items compete) or
    "all" (the split's queries against every done track of the store, as in a real library; no
    pools). Each result: run, store, split, level, window sizes, counts, ``metrics`` and
    ``chance`` (same keys, from the same pools and candidates)."""
    _check_options(levels, segment_s=segment_s, segment_negatives=segment_negatives,
                   candidates=candidates, pool=pool, same_length=same_length)
    from mvpt.run import embedder_for
    from mvpt.store import FeatureStore

    store = FeatureStore.open(store_path)
    embed_fn, max_clips = embedder_for(run_dir, store, which=which, embed_fn=embed_fn,
                                       max_clips=max_clips)
    features = store.load(split=split, arrays=("video", "audio"))
    if len(features) == 0:
        raise StoreError(f"{store_path}: no extracted items in split {split!r}")
    others = _other_tracks(store, features) if candidates == "all" else None
    clip_s = float(store.manifest.get("clip_s", 1.0))
    header = {"run": None if run_dir is None else str(getattr(run_dir, "folder", run_dir)),
              "store": str(store_path), "split": split, "which": which, "clip_s": clip_s,
              "candidates": candidates}
    segment_clips = (_segment_clips(segment_s, clip_s=clip_s, max_clips=max_clips)
                     if "segment" in levels else None)
    options = dict(pool=pool, same_length=same_length, seed=seed)
    results = []
    for level in levels:
        if level == TRACK_WINDOWS:
            spec = _window_spec(window_s, stride_s, clip_s=clip_s, max_clips=max_clips)
            results.append(_evaluate_track_windows(features, embed_fn, others=others,
                                                   header=header, spec=spec, scoring=scoring))
        else:
            results.append(_evaluate_level(features, embed_fn, others=others, level=level,
                                           header=header, max_clips=max_clips,
                                           segment_clips=segment_clips,
                                           segment_negatives=segment_negatives, options=options))
    return results


def _check_options(levels, *, segment_s, segment_negatives, candidates, pool,
                   same_length) -> None:
    for level in levels:
        if level not in ALL_LEVELS:
            raise UsageError(f"level must be one of {ALL_LEVELS}, got {level!r}")
    if TRACK_WINDOWS in levels and (pool is not None or same_length):
        raise UsageError(f"level {TRACK_WINDOWS} ranks among every candidate track: no pool "
                         "and no same-length control")
    if not segment_s > 0:
        raise UsageError(f"segment_s must be > 0 seconds, got {segment_s}")
    if segment_negatives not in SEGMENT_NEGATIVES:
        raise UsageError(f"segment_negatives must be one of {SEGMENT_NEGATIVES}, got "
                         f"{segment_negatives!r}")
    if candidates not in CANDIDATES:
        raise UsageError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")
    if candidates == "all" and pool is not None:
        raise UsageError("random pools are subsets of the split; with every track of the store "
                         "as candidates there is no pool to draw (drop pool or use candidates "
                         "'split')")


def _other_tracks(store, features):
    """The store's done tracks outside ``features`` (extra candidates), or None if none."""
    inside = set(features.ids)
    ids = [i for i in store.rows(status="done")["id"] if i not in inside]
    return store.load(arrays=("video", "audio"), ids=ids) if ids else None


def _evaluate_level(features, embed_fn, *, others, level, header, max_clips, segment_clips,
                    segment_negatives, options) -> dict:
    """One level's result: windows of the split's tracks (and of ``others``, candidates only),
    embedded, ranked and set beside chance for the same candidates."""
    windows = _level_windows(level, features.n_clips, max_clips=max_clips,
                             segment_clips=segment_clips)
    items, _, lengths = windows
    if len(items) == 0:
        need = f"one segment of {segment_clips} clips" if level == "segment" else "one clip"
        raise StoreError(f"{header['store']}: no track of split {header['split']!r} lasts {need}; "
                         "nothing to evaluate")
    video, music = (embed_fn(m, gather_windows(features, m, windows)) for m in ("video", "audio"))
    extra = _extra_candidates(others, embed_fn, level=level, max_clips=max_clips,
                              segment_clips=segment_clips)
    negatives = segment_negatives if level == "segment" else None
    selection = dict(options, tracks=items if negatives == "other-tracks" else None,
                     lengths=lengths, extra_lengths=extra["lengths"])
    metrics = retrieval_metrics(video, music, extra_video=extra["video"],
                                extra_music=extra["music"], **selection)
    chance = chance_metrics(candidate_counts(len(items), n_extra=extra["n_items"], **selection),
                            pool_size=metrics["pool_size"])
    result = dict(header, level=level, max_clips=max_clips, segment_negatives=negatives)
    result.update(segment_clips=segment_clips if level == "segment" else None,
                  segment_s=segment_clips * header["clip_s"] if level == "segment" else None,
                  **options, n_tracks=int(len(features)),
                  n_tracks_used=int(len(np.unique(items))),
                  n_tracks_dropped=int(len(features) - len(np.unique(items))),
                  n_items=int(len(items)), n_extra_tracks=extra["n_tracks"],
                  n_extra_items=extra["n_items"], pool_size=metrics["pool_size"],
                  metrics=metrics, chance=chance)
    return result


# ---------------------------------------------------------------------------- track-windows
def _window_spec(window_s, stride_s, *, clip_s: float, max_clips: int):
    from mvpt.index import WindowSpec, default_stride_s

    window_s = window_s or max_clips * clip_s
    return WindowSpec.from_seconds(clip_s=clip_s, window_s=window_s,
                                   stride_s=stride_s or default_stride_s(window_s, clip_s),
                                   max_clips=max_clips)


def _evaluate_track_windows(features, embed_fn, *, others, header, spec, scoring) -> dict:
    """Level "track-windows": each query track of the split against every candidate track
    (the split's, and ``others``), scored by :meth:`mvpt.index.Index.search` over the windows
    that ``mvpt index`` and ``mvpt recommend`` cut; fair ties as at the other levels."""
    candidates = [features] if others is None else [features, others]
    n_candidates = sum(len(f) for f in candidates)
    counts = {}
    for direction, (query_mod, item_mod) in zip(DIRECTIONS, (("video", "audio"),
                                                             ("audio", "video"))):
        index = _window_index(candidates, embed_fn, item_mod, spec)
        counts[direction] = _window_rank_counts(features, embed_fn, index, query_mod,
                                                scoring=scoring)
    n = np.full(len(features), n_candidates, dtype=np.int64)
    metrics = metrics_from_counts(counts, n_candidates=n, pool_size=n_candidates)
    result = dict(header, level=TRACK_WINDOWS, windows=spec.to_dict(), scoring=scoring)
    result.update(n_tracks=int(len(features)), n_tracks_used=int(len(features)),
                  n_items=int(len(features)), n_extra_items=n_candidates - len(features),
                  n_extra_tracks=n_candidates - len(features), pool=None, same_length=False,
                  pool_size=n_candidates, metrics=metrics,
                  chance=chance_metrics(n, pool_size=n_candidates))
    return result


def _window_index(parts, embed_fn, modality: str, spec):
    """An in-memory exact Index of every window of the tracks of ``parts`` (item id: the
    track's id), as `mvpt index` windows and embeds a library."""
    from mvpt.index import Index

    rows, sequences = [], []
    for feats in parts:
        for i, item_id in enumerate(feats.ids):
            clips = feats.item(i, modality)
            for first, n in spec.cut(len(clips)):
                rows.append((str(item_id), first * spec.clip_s, (first + n) * spec.clip_s))
                sequences.append(np.asarray(clips[first:first + n], dtype=np.float32))
    table = pd.DataFrame.from_records(rows, columns=["item_id", "start_s", "end_s"])
    return Index.from_vectors(embed_fn(modality, sequences), table, windows=spec,
                              modality="music" if modality == "audio" else "video")


def _window_rank_counts(features, embed_fn, index, modality: str, *, scoring: str):
    """(better, tied) per query track: candidate tracks scored above / equal to its own, each
    query cut into windows as :func:`mvpt.recommend.query_windows` cuts a query file."""
    from mvpt.recommend import query_windows

    spans = [query_windows(int(n), index) for n in features.n_clips]
    sequences = [np.asarray(features.item(i, modality)[f:f + n], dtype=np.float32)
                 for i, windows in enumerate(spans) for f, n in windows]
    vectors = embed_fn(modality, sequences)
    bounds = np.cumsum([0] + [len(w) for w in spans])
    better = np.zeros(len(features), np.int64)
    tied = np.zeros(len(features), np.int64)
    for i, item_id in enumerate(features.ids):
        hits = index.search(vectors[bounds[i]:bounds[i + 1]], top=index.n_items,
                            scoring=scoring)
        scores = {h.item_id: h.score for h in hits}
        own = scores[str(item_id)]
        others = np.array([s for k, s in scores.items() if k != str(item_id)])
        better[i] = int(np.sum(others > own))
        tied[i] = int(np.sum(others == own))
    return better, tied


def _level_windows(level: str, n_clips, *, max_clips: int, segment_clips: int | None):
    """(item, first clip, clips) of the items a level ranks."""
    if level == "track":
        return track_windows(n_clips, max_clips=max_clips)
    return segment_windows(n_clips, segment_clips=segment_clips)


def _extra_candidates(others, embed_fn, *, level, max_clips, segment_clips) -> dict:
    """Embedded windows of tracks that are candidates only (video, music, lengths: None when
    there are none) and how many tracks and items they are."""
    windows = (None if others is None else
               _level_windows(level, others.n_clips, max_clips=max_clips,
                              segment_clips=segment_clips))
    if windows is None or len(windows[0]) == 0:
        return {"video": None, "music": None, "lengths": None, "n_tracks": 0, "n_items": 0}
    return {"video": embed_fn("video", gather_windows(others, "video", windows)),
            "music": embed_fn("audio", gather_windows(others, "audio", windows)),
            "lengths": windows[2], "n_tracks": int(len(np.unique(windows[0]))),
            "n_items": int(len(windows[0]))}


def track_windows(n_clips, *, max_clips: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item index, first clip, clips) of each track's centred window of at most ``max_clips``
    clips; tracks without clips are left out."""
    spans = [(i, *clip_window(int(n), max_clips, mode="center"))
             for i, n in enumerate(n_clips) if n > 0]
    return _as_windows(spans)


def segment_windows(n_clips, *, segment_clips: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item index, first clip, clips) of every whole segment of ``segment_clips`` clips of every
    track, in track order then time order."""
    spans = [(i, first, count) for i, n in enumerate(n_clips)
             for first, count in segments(int(n), segment_clips)]
    return _as_windows(spans)


def _as_windows(spans) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
    return table[:, 0], table[:, 1], table[:, 2]


def gather_windows(features, name: str, windows) -> list[np.ndarray]:
    """float32 [clips, dim] sequences of array ``name`` for each (item, first, clips) window."""
    items, firsts, counts = windows
    data = features.arrays[name]
    starts = features.offsets[items] + firsts
    return [np.asarray(data[s:s + c], dtype=np.float32) for s, c in zip(starts, counts)]


def _segment_clips(segment_s: float, *, clip_s: float, max_clips: int) -> int:
    clips = int(round(segment_s / clip_s))
    if clips < 1:
        raise UsageError(f"segment of {segment_s} s is shorter than one clip of {clip_s} s")
    if clips > max_clips:
        raise UsageError(f"segment of {segment_s} s is {clips} clips, more than the model's "
                         f"window of {max_clips} clips; use --segment-seconds <= "
                         f"{max_clips * clip_s:g}")
    return clips


# ---------------------------------------------------------------------------- tables
def format_table(results: Sequence[tuple[str, dict]], chance: dict | None = None, *,
                 ks: Sequence[int] = (1, 5, 10)) -> str:
    """A markdown table like the paper's: one row per (name, metrics), then "chance"; median
    ranks, recalls in percent, average of the largest R@k over both directions, and the pool."""
    rows = list(results) + ([("chance", chance)] if chance is not None else [])
    top = max(ks)
    header = (["model", "V->M MedR", "M->V MedR"]
              + [f"V->M R@{k}" for k in ks] + [f"M->V R@{k}" for k in ks]
              + [f"avg R@{top}", "pool"])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, m in rows:
        cells = [name, _rank_text(m["video_to_music_median_rank"]),
                 _rank_text(m["music_to_video_median_rank"])]
        cells += [f"{100 * m[f'{d}_R@{k}']:.2f}" for d in DIRECTIONS for k in ks]
        cells += [f"{100 * m[f'mean_R@{top}']:.2f}", _pool_text(m)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rank_text(rank: float) -> str:
    return f"{rank:.2f}".rstrip("0").rstrip(".")


def _pool_text(metrics: dict) -> str:
    text = str(metrics["pool_size"])
    if metrics.get("n_pools", 1) > 1:
        text += f" x{metrics['n_pools']}"
    if metrics.get("mean_candidates", metrics["pool_size"]) < metrics["pool_size"]:
        text += f" ({metrics['mean_candidates']:.1f} cand.)"
    return text
