"""Retrieval evaluation: Recall@k and median rank, video-to-music and music-to-video.

Query ``i`` of one modality has exactly one correct candidate, item ``i`` of the other. Its rank is
``1 + better + tied / 2`` (``better``: candidates scored strictly higher, ``tied``: other candidates
scored equal), the mean rank under a random order of the ties; Recall@k is the probability that
the correct item lands in the top ``k`` under that same random order, ``clip((k - better) /
(tied + 1), 0, 1)``, averaged over queries. Without ties this is the plain fraction of queries with
rank <= k; with ties nothing scores better than chance by luck (constant embeddings give exactly
R@k = k/n and median rank (n + 1) / 2).

Similarities are dot products (cosine for the L2-normalised embeddings the models output),
computed for ``block_size`` queries at a time: memory is O(block_size x pool), never pool x pool.
``same_length=True`` keeps only candidates with as many clips as the query (the length-shortcut
control of appendix C.6). ``pool=N`` averages the metrics over disjoint random pools of N items.

:func:`evaluate` embeds a store split with a trained run at track level (one centred window of at
most ``max_clips`` clips per track) or segment level (consecutive segments of ``segment_s``
seconds, the query's own time-aligned segment being the only correct one), and reports the metrics
beside chance computed from the same pools.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mvpt.clips import clip_window, segments
from mvpt.errors import StoreError, UsageError

DIRECTIONS = ("video_to_music", "music_to_video")
LEVELS = ("track", "segment")
# Scores closer than this (relative to the product of the vectors' norms) count as tied, so that
# mathematically equal similarities stay tied whatever rounding the matrix product does.
TIE_RTOL = 1e-6

EmbedFn = Callable[[str, list], np.ndarray]


# ---------------------------------------------------------------------------- metrics
def retrieval_metrics(
    video_emb,
    music_emb,
    *,
    lengths=None,
    same_length: bool = False,
    ks: Sequence[int] = (1, 5, 10),
    block_size: int = 4096,
    pool: int | None = None,
    seed: int = 0,
) -> dict:
    """Retrieval metrics of paired embeddings (row i of ``video_emb`` goes with row i of
    ``music_emb``), both directions, as an ordered dict: ``{direction}_R@{k}`` (fractions),
    ``{direction}_median_rank``, ``{direction}_mean_rank``, ``mean_R@{max k}``, ``pool_size``,
    ``n_pools``, ``n_queries``, ``mean_candidates``.

    ``lengths``: int [n] clips per item, needed by ``same_length``. ``pool``: average over
    ``n // pool`` disjoint random pools of ``pool`` items drawn with ``seed`` (the whole set when
    ``pool`` is None or >= n)."""
    video, music = _validate(video_emb, music_emb, ks=ks, block_size=block_size)
    lengths = _validate_lengths(lengths, n=len(video), same_length=same_length)
    per_pool = []
    for idx in pool_indices(len(video), pool=pool, seed=seed):
        groups = _length_groups(lengths[idx] if same_length else None, len(idx))
        directions = {}
        for name, queries, candidates in (("video_to_music", video, music),
                                          ("music_to_video", music, video)):
            if len(idx) < len(video):
                queries, candidates = queries[idx], candidates[idx]
            better, tied = _grouped_rank_counts(queries, candidates, groups=groups,
                                                block_size=block_size)
            directions[name] = _rank_summary(better, tied, ks=ks)
        per_pool.append(_assemble(directions, n_candidates=_group_sizes(groups, len(idx)), ks=ks))
    return _average(per_pool)


def chance_metrics(pool_sizes, *, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """What random scores achieve, with the keys of :func:`retrieval_metrics`. ``pool_sizes``: the
    number of candidates (an int, the same for every query), or an int array of it per query (as
    with ``same_length``), or a list of such arrays, one per pool (averaged like pooled metrics).
    Per query with n candidates: R@k = min(1, k / n), rank (n + 1) / 2."""
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
                                  ks=ks))
    return _average(per_pool)


def candidate_counts(
    n_items: int, *, lengths=None, same_length: bool = False, pool: int | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Per pool, the number of candidates each query is ranked among, for the same pools and
    length groups that :func:`retrieval_metrics` uses with these arguments (feed to
    :func:`chance_metrics`)."""
    lengths = _validate_lengths(lengths, n=n_items, same_length=same_length)
    out = []
    for idx in pool_indices(n_items, pool=pool, seed=seed):
        groups = _length_groups(lengths[idx] if same_length else None, len(idx))
        out.append(_group_sizes(groups, len(idx)))
    return out


def pool_indices(n_items: int, *, pool: int | None, seed: int = 0) -> list[np.ndarray]:
    """Item indices of each evaluation pool: all items when ``pool`` is None or >= ``n_items``,
    else ``n_items // pool`` disjoint random pools of ``pool`` items (the remainder unused)."""
    if pool is not None and pool < 1:
        raise UsageError(f"pool must be >= 1 item, got {pool}")
    if pool is None or pool >= n_items:
        return [np.arange(n_items)]
    order = np.random.default_rng(seed).permutation(n_items)
    return [np.sort(order[i * pool:(i + 1) * pool]) for i in range(n_items // pool)]


def rank_counts(queries, candidates, *, block_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For query i (correct candidate i): ``better[i]``, the number of candidates scored strictly
    higher, and ``tied[i]``, the number of other candidates scored equal (within ``TIE_RTOL``).
    Scores are dot products computed ``block_size`` queries at a time."""
    queries = np.asarray(queries, dtype=np.float32)
    candidates = np.asarray(candidates, dtype=np.float32)
    n = len(queries)
    better = np.empty(n, dtype=np.int64)
    tied = np.empty(n, dtype=np.int64)
    if n == 0:
        return better, tied
    max_norm = np.sqrt(np.einsum("ij,ij->i", candidates, candidates).max())
    tolerance = TIE_RTOL * max_norm * np.sqrt(np.einsum("ij,ij->i", queries, queries))
    for lo in range(0, n, block_size):
        hi = min(n, lo + block_size)
        scores = queries[lo:hi] @ candidates.T  # [block, n]
        rows = np.arange(hi - lo)
        scores -= scores[rows, lo + rows].copy()[:, None]  # now relative to the correct score
        tol = tolerance[lo:hi, None]
        better[lo:hi] = np.count_nonzero(scores > tol, axis=1)
        tied[lo:hi] = np.count_nonzero(scores >= -tol, axis=1) - better[lo:hi] - 1
        del scores  # free the block before the next one is allocated
    return better, tied


def _grouped_rank_counts(queries, candidates, *, groups, block_size):
    if len(groups) == 1 and len(groups[0]) == len(queries):  # one group: no copies
        return rank_counts(queries, candidates, block_size=block_size)
    better = np.empty(len(queries), dtype=np.int64)
    tied = np.empty(len(queries), dtype=np.int64)
    for idx in groups:
        better[idx], tied[idx] = rank_counts(queries[idx], candidates[idx], block_size=block_size)
    return better, tied


def _rank_summary(better: np.ndarray, tied: np.ndarray, *, ks) -> dict:
    ranks = 1.0 + better + tied / 2.0
    summary = {f"R@{k}": float(np.mean(np.clip((k - better) / (tied + 1.0), 0.0, 1.0)))
               for k in ks}
    summary["median_rank"] = float(np.median(ranks))
    summary["mean_rank"] = float(np.mean(ranks))
    return summary


def _assemble(directions: dict, *, n_candidates: np.ndarray, ks) -> dict:
    out = {}
    for direction in DIRECTIONS:
        for key, value in directions[direction].items():
            out[f"{direction}_{key}"] = value
    top = max(ks)
    out[f"mean_R@{top}"] = float(np.mean([out[f"{d}_R@{top}"] for d in DIRECTIONS]))
    out["pool_size"] = int(len(n_candidates))
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


def _length_groups(lengths: np.ndarray | None, n: int) -> list[np.ndarray]:
    if lengths is None:
        return [np.arange(n)]
    return [np.flatnonzero(lengths == value) for value in np.unique(lengths)]


def _group_sizes(groups: list[np.ndarray], n: int) -> np.ndarray:
    sizes = np.empty(n, dtype=np.int64)
    for idx in groups:
        sizes[idx] = len(idx)
    return sizes


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


def _validate_lengths(lengths, *, n: int, same_length: bool) -> np.ndarray | None:
    if not same_length:
        return None
    if lengths is None:
        raise UsageError("same_length=True needs lengths (clips per item)")
    lengths = np.asarray(lengths).reshape(-1)
    if len(lengths) != n:
        raise UsageError(f"lengths has {len(lengths)} entries for {n} items")
    return lengths


# ---------------------------------------------------------------------------- evaluation
def evaluate(
    run_dir,
    store_path,
    *,
    split: str = "test",
    level: str = "track",
    segment_s: float = 10.0,
    pool: int | None = None,
    same_length: bool = False,
    seed: int = 0,
    which: str = "best",
    embed_fn: EmbedFn | None = None,
    max_clips: int | None = None,
) -> dict:
    """Evaluate ``run_dir`` (a :class:`~mvpt.run.Run`, or a run folder loaded at ``which``) on ``split`` of the feature store at one
    ``level`` ("track" or "segment"); see :func:`evaluate_levels`."""
    return evaluate_levels(run_dir, store_path, levels=(level,), split=split, segment_s=segment_s,
                           pool=pool, same_length=same_length, seed=seed, which=which,
                           embed_fn=embed_fn, max_clips=max_clips)[0]


def evaluate_levels(
    run_dir,
    store_path,
    *,
    levels: Sequence[str] = LEVELS,
    split: str = "test",
    segment_s: float = 10.0,
    pool: int | None = None,
    same_length: bool = False,
    seed: int = 0,
    which: str = "best",
    embed_fn: EmbedFn | None = None,
    max_clips: int | None = None,
) -> list[dict]:
    """One result dict per level, loading the model and the split once.

    ``embed_fn(modality, sequences) -> float32 [n, d]`` ("video" or "audio", a list of float32
    [n_clips, dim] arrays) replaces the run's model when given (tests, baselines). Track level
    reads each track through its centred window of at most K clips (the run's; with
    ``embed_fn``, ``max_clips`` or the store's); segment level cuts every track into segments of
    ``round(segment_s / clip_s)`` clips, dropping the partial last one (tracks shorter than a
    segment are dropped and counted). Each result: run, store, split, level, window sizes, counts, ``metrics`` and
    ``chance`` (same keys, from the same pools)."""
    for level in levels:
        if level not in LEVELS:
            raise UsageError(f"level must be one of {LEVELS}, got {level!r}")
    if not segment_s > 0:
        raise UsageError(f"segment_s must be > 0 seconds, got {segment_s}")
    from mvpt.run import embedder_for
    from mvpt.store import FeatureStore

    store = FeatureStore.open(store_path)
    embed_fn, max_clips = embedder_for(run_dir, store, which=which, embed_fn=embed_fn,
                                       max_clips=max_clips)
    features = store.load(split=split, arrays=("video", "audio"))
    if len(features) == 0:
        raise StoreError(f"{store_path}: no extracted items in split {split!r}")
    clip_s = float(store.manifest.get("clip_s", 1.0))
    header = {"run": None if run_dir is None else str(getattr(run_dir, "folder", run_dir)), "store": str(store_path),
              "split": split, "which": which, "clip_s": clip_s}
    segment_clips = (_segment_clips(segment_s, clip_s=clip_s, max_clips=max_clips)
                     if "segment" in levels else None)
    return [_evaluate_level(features, embed_fn, level=level, header=header, max_clips=max_clips,
                            segment_clips=segment_clips, pool=pool, same_length=same_length,
                            seed=seed)
            for level in levels]


def _evaluate_level(features, embed_fn, *, level, header, max_clips, segment_clips, pool,
                    same_length, seed) -> dict:
    n_clips = features.n_clips
    if level == "track":
        windows = track_windows(n_clips, max_clips=max_clips)
    else:
        windows = segment_windows(n_clips, segment_clips=segment_clips)
    items, _, lengths = windows
    if len(items) == 0:
        need = f"one segment of {segment_clips} clips" if level == "segment" else "one clip"
        raise StoreError(f"{header['store']}: no track of split {header['split']!r} lasts {need}; "
                         "nothing to evaluate")
    video = embed_fn("video", gather_windows(features, "video", windows))
    music = embed_fn("audio", gather_windows(features, "audio", windows))
    metrics = retrieval_metrics(video, music, lengths=lengths, same_length=same_length,
                                pool=pool, seed=seed)
    chance = chance_metrics(candidate_counts(len(items), lengths=lengths, same_length=same_length,
                                             pool=pool, seed=seed))
    result = dict(header, level=level)
    result.update(max_clips=max_clips, segment_clips=segment_clips if level == "segment" else None,
                  segment_s=segment_clips * header["clip_s"] if level == "segment" else None,
                  same_length=same_length, pool=pool, seed=seed, n_tracks=int(len(features)),
                  n_tracks_used=int(len(np.unique(items))),
                  n_tracks_dropped=int(len(features) - len(np.unique(items))),
                  n_items=int(len(items)), pool_size=metrics["pool_size"],
                  metrics=metrics, chance=chance)
    return result


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
