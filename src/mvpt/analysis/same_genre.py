"""Same-genre baseline (appendix C.3): retrieval that knows every track's genre and nothing else.

Each music track has a genre label; a video takes the genre of its own soundtrack, so query ``i``
and its correct candidate ``i`` always share a genre. The baseline ranks the candidates of the
query's genre first, in random order, then all others in random order. With ``n_g`` candidates of
the query's genre (its correct one included), the correct one's rank is uniform on 1..n_g, so

    E[R@k] = mean over queries of min(1, k / n_g),   E[rank] = (n_g + 1) / 2,

which is :func:`mvpt.eval.chance_metrics` with ``n_g`` candidates per query
(:func:`expected_metrics`). :func:`simulate_metrics` draws the random orders instead (a check of
the closed form). :func:`evaluate_same_genre` does both on a store split at track level and at
segment level (segments take their track's genre), beside chance over all candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mvpt.errors import StoreError, UsageError
from mvpt.eval import (
    DIRECTIONS,
    LEVELS,
    chance_metrics,
    format_table,
    segment_windows,
    track_windows,
)
from mvpt.settings import SEGMENT_S

KS = (1, 5, 10)


# ---------------------------------------------------------------------------- labels
def read_genre_labels(source) -> dict[str, str]:
    """Genre per track id from a dict, a CSV or parquet file with columns ``id`` and ``genre``,
    or a feature store folder (``mvpt.data.genres.read_genres`` when available, else
    ``annotations/genre.parquet`` in it)."""
    if isinstance(source, dict):
        return {str(k): str(v) for k, v in source.items() if v is not None and not _is_nan(v)}
    path = Path(source)
    if path.is_dir():
        try:
            from mvpt.data.genres import read_genres
        except ImportError:
            path = path / "annotations" / "genre.parquet"
        else:
            labels = read_genres(path)
            return read_genre_labels(labels if isinstance(labels, dict)
                                     else dict(zip(labels["id"], labels["genre"])))
    if not path.is_file():
        raise UsageError(f"{path}: no genre labels there")
    import pandas as pd

    table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if not {"id", "genre"} <= set(table.columns):
        raise UsageError(f"{path}: genre table needs columns id and genre, has {list(table.columns)}")
    return read_genre_labels(dict(zip(table["id"].astype(str), table["genre"])))


def _is_nan(value) -> bool:
    return isinstance(value, float) and np.isnan(value)


def genre_group_sizes(labels: Sequence) -> np.ndarray:
    """int [n]: for each item, how many items share its label (itself included)."""
    _, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


# ---------------------------------------------------------------------------- metrics
def expected_metrics(labels: Sequence, *, ks: Sequence[int] = KS) -> dict:
    """Closed-form expected metrics of the baseline (keys of :func:`mvpt.eval.retrieval_metrics`)."""
    if len(labels) == 0:
        raise UsageError("the same-genre baseline needs at least one labelled item")
    return chance_metrics(genre_group_sizes(labels), ks=ks)


def simulate_metrics(labels: Sequence, *, ks: Sequence[int] = KS, n_trials: int = 100,
                     seed: int = 0) -> dict:
    """Metrics of the baseline averaged over ``n_trials`` random orders: each direction draws a
    random key per candidate, sorts same-genre candidates first by that key, and reads the rank of
    the correct one (equal to its place among its genre: other genres all come after)."""
    codes = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)
    if codes.size == 0 or n_trials < 1:
        raise UsageError("simulation needs labelled items and n_trials >= 1")
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    sums = {}
    for _ in range(n_trials):
        out = {}
        for direction in DIRECTIONS:
            ranks = _random_ranks(codes, order=order, rng=rng)
            out.update({f"{direction}_R@{k}": np.mean(ranks <= k) for k in ks})
            out[f"{direction}_median_rank"] = np.median(ranks)
            out[f"{direction}_mean_rank"] = np.mean(ranks)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value) / n_trials
    top = max(ks)
    sums[f"mean_R@{top}"] = float(np.mean([sums[f"{d}_R@{top}"] for d in DIRECTIONS]))
    sums.update(pool_size=int(codes.size), n_pools=1, n_queries=int(codes.size),
                mean_candidates=float(codes.size), n_trials=n_trials)
    return sums


def _random_ranks(codes: np.ndarray, *, order: np.ndarray, rng) -> np.ndarray:
    """Rank of each query's correct candidate in one random same-genre-first ordering."""
    keys = rng.random(codes.size)
    ranked = np.lexsort((keys, codes))  # by genre, then by the random key within a genre
    place = np.empty(codes.size, dtype=np.int64)
    place[ranked] = np.arange(codes.size)
    group_start = np.searchsorted(codes[order], codes)  # first place of each item's genre
    return place - group_start + 1


# ---------------------------------------------------------------------------- store
def level_labels(store_path, *, genres: dict, split: str = "test", level: str = "track",
                 segment_s: float = SEGMENT_S) -> tuple[list[str], int]:
    """The genre of every evaluation item of ``level`` (segments take their track's) in the order
    :func:`mvpt.eval.evaluate_levels` uses, and how many tracks had no label (left out)."""
    if level not in LEVELS:
        raise UsageError(f"level must be one of {LEVELS}, got {level!r}")
    from mvpt.store import FeatureStore

    store = FeatureStore.open(store_path)
    rows = store.rows(status="done", split=split)
    if rows.empty:
        raise StoreError(f"{store_path}: no extracted items in split {split!r}")
    n_clips = rows["n_clips"].to_numpy(np.int64)
    if level == "track":
        items = track_windows(n_clips, max_clips=1)[0]
    else:
        clip_s = float(store.manifest.get("clip_s", 1.0))
        items = segment_windows(n_clips, segment_clips=max(1, round(segment_s / clip_s)))[0]
    ids = rows["id"].astype(str).to_numpy()
    labels = [genres.get(ids[i]) for i in items]
    missing = len({ids[i] for i, g in zip(items, labels) if g is None})
    return [g for g in labels if g is not None], missing


def evaluate_same_genre(store_path, *, genres, split: str = "test",
                        levels: Sequence[str] = LEVELS, segment_s: float = SEGMENT_S,
                        n_trials: int = 100, seed: int = 0, ks: Sequence[int] = KS) -> list[dict]:
    """Per level: ``expected`` (closed form), ``simulated`` and ``chance`` (all candidates)
    metrics of the same-genre baseline on ``split``; ``genres`` as for :func:`read_genre_labels`."""
    genres = read_genre_labels(genres)
    results = []
    for level in levels:
        labels, missing = level_labels(store_path, genres=genres, split=split, level=level,
                                       segment_s=segment_s)
        results.append({
            "store": str(store_path), "split": split, "level": level,
            "segment_s": segment_s if level == "segment" else None,
            "n_items": len(labels), "n_genres": len(set(labels)),
            "n_tracks_unlabelled": missing,
            "expected": expected_metrics(labels, ks=ks),
            "simulated": simulate_metrics(labels, ks=ks, n_trials=n_trials, seed=seed),
            "chance": chance_metrics(len(labels), ks=ks),
        })
    return results


def summary_markdown(results: list[dict]) -> str:
    """One markdown table per level (recalls in percent)."""
    parts = []
    for r in results:
        caption = (f"**{r['level']} level**, split {r['split']}: {r['n_items']} items, "
                   f"{r['n_genres']} genres, {r['n_tracks_unlabelled']} unlabelled tracks left out")
        rows = [("same-genre (expected)", r["expected"]),
                (f"same-genre (simulated, {r['simulated']['n_trials']} draws)", r["simulated"])]
        parts.append(caption + "\n\n" + format_table(rows, r["chance"]))
    return "\n\n".join(parts)


def write_same_genre_report(results: list[dict], out_dir) -> dict:
    """``same_genre.json``, ``same_genre.md`` and ``same_genre.png`` (R@k bars vs chance)."""
    from mvpt.analysis import new_figure, write_report

    fig, ax = new_figure(width=6)
    width = 0.8 / (2 * len(results))
    for j, r in enumerate(results):
        for m, (name, metrics) in enumerate((("same-genre", r["expected"]),
                                             ("chance", r["chance"]))):
            xs = np.arange(len(KS)) + (2 * j + m) * width
            ax.bar(xs, [100 * metrics[f"video_to_music_R@{k}"] for k in KS], width,
                   label=f"{name}, {r['level']}")
    ax.set_xticks(np.arange(len(KS)) + 0.4 - width / 2, [f"R@{k}" for k in KS])
    ax.set_ylabel("recall (%)")
    ax.legend(fontsize=8)
    return write_report(out_dir, name="same_genre", data={"results": results},
                        markdown=summary_markdown(results), figure=fig)
