"""One genre per music track (appendix A.1, figure 9), stored as a feature-store annotation.

Offline tagger ``yamnet``: the track's per-clip YAMNet class probabilities (the store's
``audio_scores``) are averaged over its clips, and the argmax over AudioSet's "Music genre" subtree
(YAMNet indices 211 "Pop music" .. 260 "Independent music", checked by name) is its genre; the
score is that class's mean probability. ``relative`` tagging takes instead the class whose mean
most exceeds the whole store's mean for it. The paper used musicnn's MSD tagger; ``musicnn`` is an
optional tagger here (imported only when asked; UNTESTED, needs the musicnn package).

Written to ``STORE/annotations/genre.parquet`` (columns id, genre, score, tagger), atomically.

Visual statistics (figures 10, 11): :func:`write_attribute_stats` labels each video by the most
common face label over one frame per second, with a pluggable :class:`FaceClassifier`, and tabulates
labels per genre. The offline face classifiers (gender, age; race from a user's FairFace-style
model), sampling, the figures and the CLI ``mvpt data faces`` are in :mod:`mvpt.data.faces`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Protocol

import numpy as np

from mvpt.errors import EncoderError, StoreError, UsageError
from mvpt.fileio import atomic_path, atomic_write_json

GENRE_FIRST, GENRE_LAST = 211, 260  # "Pop music" .. "Independent music"
SCORES_ARRAY = "audio_scores"
TAGGERS = ("yamnet", "musicnn")


def annotation_path(store_path: str | Path) -> Path:
    return Path(store_path) / "annotations" / "genre.parquet"


def genre_class_names() -> tuple[str, ...]:
    """The YAMNet genre classes, in index order (verified at both ends by name)."""
    from mvpt.encoders.yamnet import class_names

    names = class_names()
    if names[GENRE_FIRST] != "Pop music" or names[GENRE_LAST] != "Independent music":
        raise EncoderError("YAMNet class map does not have the expected Music genre layout")
    return names[GENRE_FIRST:GENRE_LAST + 1]


def genre_from_scores(clip_scores: np.ndarray, genre_names: tuple[str, ...], *,
                      prior: np.ndarray | None = None) -> tuple[str, float]:
    """(genre, mean probability) from per-clip class probabilities [n_clips, 521]. With
    ``prior`` (the collection's mean probability of each genre class), the genre is the class
    whose mean most exceeds its prior (largest ratio); the score stays its mean probability."""
    mean = np.asarray(clip_scores, dtype=np.float64).mean(axis=0)[GENRE_FIRST:GENRE_LAST + 1]
    ranking = mean if prior is None else mean / np.maximum(prior, 1e-9)
    best = int(ranking.argmax())
    return genre_names[best], float(mean[best])


def _yamnet_tags(store, *, relative: bool = False) -> list[dict]:
    if SCORES_ARRAY not in store.array_dims:
        raise StoreError(f"{store.path}: no {SCORES_ARRAY} array (extract with the yamnet audio "
                         "encoder)")
    names = genre_class_names()
    feats = store.load(arrays=[SCORES_ARRAY])
    track_means = [np.asarray(feats.item(i, SCORES_ARRAY), np.float64).mean(axis=0)
                   for i in range(len(feats.ids))]
    prior = (np.mean(track_means, axis=0)[GENRE_FIRST:GENRE_LAST + 1]
             if relative and track_means else None)
    rows = []
    for i, item_id in enumerate(feats.ids):
        genre, score = genre_from_scores(feats.item(i, SCORES_ARRAY), names, prior=prior)
        rows.append({"id": item_id, "genre": genre, "score": score,
                     "tagger": "yamnet-relative" if relative else "yamnet"})
    return rows


def _musicnn_tags(store) -> list[dict]:
    """musicnn MSD tagger on each track's source file (UNTESTED)."""
    try:
        from musicnn.extractor import extractor
    except ImportError:
        raise EncoderError("the musicnn tagger needs musicnn: pip install musicnn") from None
    rows = []
    for item_id, path in zip(*[store.rows()[c].tolist() for c in ("id", "source_path")]):
        taggram, labels = extractor(path, model="MSD_musicnn", extract_features=False)
        mean = np.asarray(taggram).mean(axis=0)
        best = int(mean.argmax())
        rows.append({"id": item_id, "genre": labels[best], "score": float(mean[best]),
                     "tagger": "musicnn"})
    return rows


def tag_genres(store_path: str | Path, *, tagger: str = "yamnet", relative: bool = False) -> Path:
    """Tag every done item of the store; returns the annotation file written. ``relative``
    (yamnet only): each track takes the genre class it has most relative to the whole store's
    mean, so that a class the tagger gives every track (YAMNet hears all synthesiser music as
    "Electronic music") does not label them all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mvpt.store import FeatureStore

    if tagger not in TAGGERS:
        raise UsageError(f"unknown genre tagger {tagger!r}; choose one of {', '.join(TAGGERS)}")
    store = FeatureStore.open(store_path)
    if relative and tagger != "yamnet":
        raise UsageError("relative genre tagging works with the yamnet tagger only")
    rows = _yamnet_tags(store, relative=relative) if tagger == "yamnet" else _musicnn_tags(store)
    table = pa.table({k: [r[k] for r in rows] for k in ("id", "genre", "score", "tagger")},
                     schema=pa.schema([("id", pa.string()), ("genre", pa.string()),
                                       ("score", pa.float32()), ("tagger", pa.string())]))
    out = annotation_path(store_path)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return out


def yamnet_genres(store_path: str | Path, *, relative: bool = True) -> dict[str, str]:
    """id -> genre from the store's YAMNet class scores, without writing anything."""
    from mvpt.store import FeatureStore

    rows = _yamnet_tags(FeatureStore.open(store_path), relative=relative)
    return {r["id"]: r["genre"] for r in rows}


def read_genres(store_path: str | Path) -> dict[str, str]:
    """id -> genre from the store's genre annotation."""
    import pyarrow.parquet as pq

    path = annotation_path(store_path)
    if not path.is_file():
        raise StoreError(f"{path}: no genre annotation; run `mvpt data genres {store_path}`")
    table = pq.read_table(path, columns=["id", "genre"]).to_pydict()
    return dict(zip(table["id"], table["genre"]))


def write_genre_stats(store_path: str | Path, out_dir: str | Path, *, top: int = 20) -> dict:
    """Genre counts (all, and the ``top`` most common) as ``genres.json`` and a bar chart
    ``genres.png`` (figure 9) in ``out_dir``; returns the JSON object."""
    counts = Counter(read_genres(store_path).values())
    ranked = counts.most_common(top)
    stats = {"tracks": sum(counts.values()), "genres": len(counts), "top": top,
             "counts": dict(counts.most_common()), "top_counts": dict(ranked)}
    out = Path(out_dir)
    atomic_write_json(out / "genres.json", stats)
    _bar_chart(out / "genres.png", ranked, total=stats["tracks"])
    return stats


def _bar_chart(path: Path, ranked: list[tuple[str, int]], *, total: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = max(total, 1)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.bar([g for g, _ in ranked], [100.0 * n / total for _, n in ranked], color="#4477aa")
    ax.set_ylabel("share of all tracks (%)")
    ax.set_title(f"Top {len(ranked)} genres")
    ax.tick_params(axis="x", labelrotation=60)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ------------------------------------------------- visual attributes per genre (figures 10, 11)
class FaceClassifier(Protocol):
    """Finds faces in an RGB frame (uint8 [h, w, 3]) and returns one label per face (e.g. a
    gender or race class). :func:`mvpt.data.faces.load_face_classifier` gives the offline
    gender/age one and loads a user's FairFace-style model (the paper's is not public)."""

    def classify(self, frame_rgb: np.ndarray) -> list[str]: ...


def video_attribute(path: str | Path, classifier: FaceClassifier, *, every_s: float = 1.0,
                    size: tuple[int, int] = (224, 224)) -> str | None:
    """The most common face label over frames sampled every ``every_s`` seconds (ties: the label
    seen first), or None when no face is found."""
    from mvpt.media import probe, read_frames

    info = probe(path)
    times_s = np.arange(every_s / 2, info.duration_s, every_s)
    frames = read_frames(path, times_s, size=size, resize_mode="squash", info=info)
    labels = [label for frame in frames for label in classifier.classify(frame)]
    return Counter(labels).most_common(1)[0][0] if labels else None


def attribute_by_genre(genres: dict[str, str],
                       attributes: dict[str, str | None]) -> dict[str, dict[str, float]]:
    """genre -> attribute -> share of that genre's videos (with a face) having it; each genre's
    shares sum to 1. Videos without a face or without a genre are left out."""
    table: dict[str, Counter] = {}
    for item_id, attribute in attributes.items():
        if attribute is not None and item_id in genres:
            table.setdefault(genres[item_id], Counter())[attribute] += 1
    return {genre: {a: n / sum(c.values()) for a, n in sorted(c.items())}
            for genre, c in sorted(table.items())}


def write_attribute_stats(store_path: str | Path, classifier: FaceClassifier, out_dir: str | Path,
                          *, name: str = "attribute", every_s: float = 1.0) -> dict:
    """Classify the faces of every done item's source video and write ``<name>_by_genre.json``
    (counts, per-genre shares) in ``out_dir``; returns that object."""
    from mvpt.store import FeatureStore

    rows = FeatureStore.open(store_path).rows()
    attributes = {item_id: video_attribute(path, classifier, every_s=every_s)
                  for item_id, path in zip(rows["id"], rows["source_path"])}
    stats = {"videos": len(attributes),
             "with_faces": sum(a is not None for a in attributes.values()),
             "attribute": attributes,
             "shares_by_genre": attribute_by_genre(read_genres(store_path), attributes)}
    atomic_write_json(Path(out_dir) / f"{name}_by_genre.json", stats)
    return stats
