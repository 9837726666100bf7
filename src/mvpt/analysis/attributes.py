"""Attribute-versus-genre matrices (figure 4 of the paper, appendix C.3, figures 13-15).

Pictures grouped by a visual attribute (a folder per class: ``guitar/``, ``piano/``; age groups;
scenes) are used as still-video queries: each picture goes through the run's frame encoder, its
feature is repeated over as many clips as a track-level window (a still video) and passed through
the video tower, exactly as the conditioning code of :mod:`mvpt.recommend` does
(:func:`mvpt.recommend.attribute_direction` of one picture, batched). The ``top`` music tracks of
a store split are retrieved for it (each track's centred window of at most K clips through the
audio tower, as track-level evaluation reads it), and their genres are counted. The matrix attribute
class x genre is normalised per class (each row sums to 1): the genres the model associates with
pictures of the class.

Options of the appendix:

* ``boxes``: Open Images bounding-box annotations (``ImageID, Source, LabelName, Confidence, XMin,
  XMax, YMin, YMax, ...``, coordinates as fractions of the picture). Every box of a picture found
  in the images folder (``<ImageID>.<ext>``, searched recursively) is cropped and the crop is the
  query; its class is the box's ``LabelName``, or its display name from a ``class_names`` CSV
  (``LabelName,DisplayName``, as Open Images ships it, with or without a header).
* ``balance``: N pictures drawn at random (``seed``) from every class, the appendix's balanced
  instrument set (50 per instrument); classes with fewer are left out and listed.
* ``min_share``: the appendix's rule for the 201 scene classes: "we only show the classes for
  which the sum of all the genres provides at least a sum of 20%". The matrix normalised per genre
  (each genre's retrievals shared out over the classes, ``shares_per_genre``) is summed over the
  genres for every class; classes below ``min_share`` are left out of the matrix and listed with
  their sums (per-class normalised rows always sum to 1, so the rule needs the per-genre view).
* ``scores``: a classifier's output, CSV ``path,class,score`` (path relative to the images folder
  or absolute): a picture is kept only when the score of its own class is at least ``min_score``
  (default 0.2): a frame or picture counts for a class only when the classifier gives that class
  at least this probability. Pictures without a row for their class are dropped.

Genres come from the store's annotation (``mvpt data genres``), a CSV or parquet ``id,genre``, or
a synthetic data folder (its ``factors.json``); tracks without a genre are not candidates.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvpt.errors import MediaError, StoreError, UsageError

DEFAULT_TOP = 10
DEFAULT_MIN_SCORE = 0.2
BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")


@dataclass(frozen=True)
class Query:
    """One picture query: an image file and its class; ``box`` (xmin, xmax, ymin, ymax, fractions
    of the picture) when the query is a crop of it."""

    path: Path
    label: str
    box: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict:
        out = {"image": str(self.path), "class": self.label}
        if self.box is not None:
            out["box"] = list(self.box)
        return out


# ---------------------------------------------------------------------------- genres
def load_genres(source) -> dict[str, str]:
    """id -> genre from a dict, a CSV / parquet file with columns id and genre, a feature store
    folder (its genre annotation) or a synthetic data folder or its ``manifest.csv`` (the genres
    of its ``factors.json``, written by :func:`mvpt.data.synth.generate`)."""
    from mvpt.analysis.same_genre import read_genre_labels

    path = None if isinstance(source, dict) else Path(source)
    if path is not None and path.is_dir() and (path / "factors.json").is_file():
        return _synthetic_genres(path / "factors.json")
    try:
        return read_genre_labels(source)
    except UsageError:
        factors = None if path is None else path.parent / "factors.json"
        if path is None or not path.is_file() or not factors.is_file():
            raise
        return _synthetic_genres(factors)  # a synthetic manifest (id,path,split): no genres


def _synthetic_genres(path: Path) -> dict[str, str]:
    try:
        videos = json.loads(path.read_text())["videos"]
        return {str(k): str(v["genre"]) for k, v in videos.items() if v.get("genre")}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a synthetic factors file ({type(exc).__name__})") from None


def store_split(split: str | None) -> str | None:
    """The store split to read: None (every split) for "all" or None."""
    return None if split in (None, "all", "") else split


# ---------------------------------------------------------------------------- embeddings
def split_embeddings(run, store_path, *, split: str | None, genres: dict[str, str],
                     modalities: Sequence[str] = ("audio",)) -> dict:
    """Track-level embeddings of the labelled items of a store split: ``{"ids", "genres",
    "n_clips" (window lengths), "n_unlabelled", modality: float32 [n, d]}``; each track is read
    through its centred window of at most the run's K clips. ``run``: a
    :class:`~mvpt.run.Run`; the store must hold features of the run's encoders."""
    from mvpt.eval import gather_windows, track_windows
    from mvpt.store import FeatureStore

    store = FeatureStore.open(store_path)
    run.check(store)
    rows = store.rows(split=store_split(split))
    if rows.empty:
        raise StoreError(f"{store_path}: no extracted items in split {split!r}")
    rows = rows[rows["n_clips"] > 0]
    all_ids = rows["id"].astype(str).tolist()
    labelled = [i for i in all_ids if i in genres]
    if not labelled:
        raise StoreError(f"{store_path}: none of the {len(all_ids)} items of split {split!r} has "
                         "a genre; tag them (mvpt data genres) or pass --genres")
    features = store.load(split=store_split(split), arrays=tuple(modalities), ids=labelled)
    windows = track_windows(features.n_clips, max_clips=run.max_clips)
    out = {"ids": list(features.ids), "genres": [genres[i] for i in features.ids],
           "n_clips": windows[2].astype(int).tolist(),
           "n_unlabelled": len(all_ids) - len(labelled)}
    for modality in modalities:
        out[modality] = run.embed(modality, gather_windows(features, modality, windows))
    return out


def still_embeddings(run, queries: Sequence[Query], *, clips: int,
                     batch_size: int = 64) -> np.ndarray:
    """float32 [n, d]: each query picture (or its box crop) as a still video of ``clips`` clips
    through the run's frame encoder and video tower. This is the conditioning code of
    :func:`mvpt.recommend.attribute_direction` (its image loading, :func:`mvpt.recommend.
    load_image`, included) for one picture at a time, batched: the frame encoder runs several
    times faster on a batch than on single pictures."""
    from mvpt.recommend import load_image
    from mvpt.recommend import still_embeddings as still_batch

    if clips < 1:
        raise UsageError(f"clips must be >= 1, got {clips}")
    if not queries:
        raise UsageError("no picture to embed")
    encoder = run.extractor("video").video
    size = tuple(encoder.image_size)
    out = []
    with tempfile.TemporaryDirectory(prefix="mvpt-crops-") as tmp:
        for lo in range(0, len(queries), batch_size):
            frames = []
            for k, query in enumerate(queries[lo:lo + batch_size], start=lo):
                path = query.path
                if query.box is not None:  # the crop goes through the same loading as a file
                    path = write_png(Path(tmp) / f"crop-{k}.png",
                                     crop_box(read_rgb(query.path), query.box, source=query.path))
                frames.append(load_image(path, size=size, resize_mode=encoder.resize_mode))
            out.append(still_batch(run, np.stack(frames), clips=clips))
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------- pictures
def collect_images(images_dir) -> list[Query]:
    """Pictures of ``images_dir/<class>/`` (searched recursively), classes in name order."""
    from mvpt.recommend import IMAGE_EXTENSIONS

    root = Path(images_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: no such images folder")
    queries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        queries += [Query(f, folder.name) for f in sorted(folder.rglob("*"))
                    if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    if not queries:
        raise UsageError(f"{root}: no pictures in class folders ({root}/CLASS/*.png, ...)")
    return queries


def read_rgb(path) -> np.ndarray:
    """uint8 RGB [height, width, 3] of an image file at its own size."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, StopIteration, OSError, IndexError) as exc:
        raise MediaError(path, f"not a readable image ({type(exc).__name__})") from None


def write_png(path, rgb: np.ndarray) -> Path:
    """Write uint8 RGB [height, width, 3] as a PNG file."""
    import av

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.height, stream.width = rgb.shape[:2]
        stream.pix_fmt = "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    return Path(path)


def box_pixels(box, *, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) pixel bounds of a box (xmin, xmax, ymin, ymax) given as
    fractions of a ``width`` x ``height`` picture: the pixels the box touches, at least one."""
    xmin, xmax, ymin, ymax = (float(v) for v in box)
    if not (0.0 <= xmin <= xmax <= 1.0 and 0.0 <= ymin <= ymax <= 1.0):
        raise UsageError(f"box {tuple(box)} is not (xmin <= xmax, ymin <= ymax) within [0, 1]")
    left = min(int(np.floor(xmin * width)), width - 1)
    top = min(int(np.floor(ymin * height)), height - 1)
    right = max(int(np.ceil(xmax * width)), left + 1)
    bottom = max(int(np.ceil(ymax * height)), top + 1)
    return left, right, top, bottom


def crop_box(rgb: np.ndarray, box, *, source=None) -> np.ndarray:
    """The part of ``rgb`` [height, width, 3] inside ``box`` (xmin, xmax, ymin, ymax, fractions)."""
    height, width = rgb.shape[:2]
    try:
        left, right, top, bottom = box_pixels(box, width=width, height=height)
    except UsageError as exc:
        if source is None:
            raise
        raise MediaError(source, str(exc)) from None
    return rgb[top:bottom, left:right]


def read_class_names(path) -> dict[str, str]:
    """LabelName -> DisplayName from Open Images' class description CSV (header optional)."""
    path = Path(path)
    rows = _read_csv_rows(path)
    if rows and [c.strip() for c in rows[0][:2]] == ["LabelName", "DisplayName"]:
        rows = rows[1:]
    names = {}
    for k, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise UsageError(f"{path}: line {k} is not LabelName,DisplayName")
        names[row[0].strip()] = row[1].strip()
    return names


def read_boxes(path, images_dir, *, class_names: dict[str, str] | None = None,
               classes: Sequence[str] | None = None) -> tuple[list[Query], dict]:
    """One crop query per box of an Open Images box CSV whose picture is in ``images_dir``
    (``<ImageID>.<ext>``, searched recursively); ``classes`` keeps only those class names
    (case-insensitive). Returns the queries and counts of what was left out."""
    from mvpt.recommend import IMAGE_EXTENSIONS

    path, root = Path(path), Path(images_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: no such images folder")
    files = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            files.setdefault(f.stem, f)
    rows = _read_csv_rows(path)
    if not rows:
        raise UsageError(f"{path}: empty box file")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in BOX_COLUMNS if c not in header]
    if missing:
        raise UsageError(f"{path}: box CSV needs columns {', '.join(BOX_COLUMNS)} (Open Images "
                         f"format); missing {', '.join(missing)}")
    col = {c: header.index(c) for c in header}
    wanted = {c.lower() for c in classes} if classes else None
    queries, skipped = [], Counter()
    for k, row in enumerate(rows[1:], start=2):
        label = row[col["LabelName"]].strip()
        label = (class_names or {}).get(label, label)
        if wanted is not None and label.lower() not in wanted:
            skipped["other_class"] += 1
            continue
        if "Confidence" in col and _number(row[col["Confidence"]], path, k) <= 0:
            skipped["confidence_0"] += 1
            continue
        image = files.get(row[col["ImageID"]].strip())
        if image is None:
            skipped["image_missing"] += 1
            continue
        box = tuple(_number(row[col[c]], path, k) for c in ("XMin", "XMax", "YMin", "YMax"))
        if not (0.0 <= box[0] <= box[1] <= 1.0 and 0.0 <= box[2] <= box[3] <= 1.0):
            raise UsageError(f"{path}: line {k}: box {box} is not within [0, 1] with "
                             "XMin <= XMax, YMin <= YMax")
        queries.append(Query(image, label, box))
    if not queries:
        raise UsageError(f"{path}: no box of a picture in {root} "
                         f"(left out: {dict(skipped) or 'none'})")
    return queries, dict(skipped)


def _number(text: str, path: Path, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{path}: line {line}: {text!r} is not a number") from None


def _read_csv_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise UsageError(f"{path}: no such CSV file")
    with open(path, newline="", encoding="utf-8") as fh:
        return [row for row in csv.reader(fh) if row and any(c.strip() for c in row)]


def read_scores(path, images_dir) -> dict[tuple[str, str], float]:
    """(resolved image path, class) -> score from a CSV with columns path, class, score (paths
    relative to ``images_dir`` or absolute)."""
    path, root = Path(path), Path(images_dir)
    rows = _read_csv_rows(path)
    header = [c.strip() for c in rows[0]] if rows else []
    if not {"path", "class", "score"} <= set(header):
        raise UsageError(f"{path}: scores CSV needs columns path,class,score, has {header}")
    col = {c: header.index(c) for c in header}
    scores = {}
    for k, row in enumerate(rows[1:], start=2):
        image = Path(row[col["path"]].strip())
        image = image if image.is_absolute() else root / image
        scores[(str(image.resolve()), row[col["class"]].strip())] = _number(
            row[col["score"]], path, k)
    return scores


def filter_by_score(queries: Sequence[Query], scores: dict, *,
                    min_score: float) -> tuple[list[Query], int]:
    """The queries whose own class scores at least ``min_score`` (those without a score for
    their class are dropped), and how many were dropped."""
    kept = [q for q in queries
            if scores.get((str(q.path.resolve()), q.label), -np.inf) >= min_score]
    return kept, len(queries) - len(kept)


def balance_classes(queries: Sequence[Query], n: int, *,
                    seed: int = 0) -> tuple[list[Query], dict[str, int]]:
    """Exactly ``n`` queries per class drawn at random with ``seed`` (kept in their order);
    classes with fewer are left out: returns the queries and {left-out class: its count}."""
    if n < 1:
        raise UsageError(f"balance must be >= 1 picture per class, got {n}")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for k, q in enumerate(queries):
        by_class.setdefault(q.label, []).append(k)
    keep, short = [], {}
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < n:
            short[label] = len(members)
            continue
        keep += rng.choice(members, size=n, replace=False).tolist()
    return [queries[k] for k in sorted(keep)], short


# ---------------------------------------------------------------------------- the matrix
def top_k(queries: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """int [n, k]: the ``k`` best candidates of each query by inner product, best first (equal
    scores in candidate order)."""
    scores = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def genre_matrix(labels: Sequence[str], retrieved_genres: Sequence[Sequence[str]], *,
                 classes: Sequence[str], genres: Sequence[str]) -> np.ndarray:
    """int [classes, genres]: how often each class's queries retrieved each genre."""
    row = {c: i for i, c in enumerate(classes)}
    col = {g: j for j, g in enumerate(genres)}
    counts = np.zeros((len(classes), len(genres)), np.int64)
    for label, got in zip(labels, retrieved_genres):
        for genre in got:
            counts[row[label], col[genre]] += 1
    return counts


def normalise_rows(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows of zeros stay zero)."""
    counts = np.asarray(counts, np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)


def attribute_genre_matrix(run_dir, store_path, images_dir, *, genres=None,
                           split: str | None = "test", top: int = DEFAULT_TOP,
                           boxes=None, class_names=None, classes: Sequence[str] | None = None,
                           scores=None, min_score: float = DEFAULT_MIN_SCORE,
                           min_share: float | None = None, balance: int | None = None,
                           seed: int = 0, which: str = "best", clips: int | None = None
                           ) -> dict:
    """The attribute x genre matrix of a run (see the module docstring). ``genres``: as for
    :func:`load_genres` (default: the store's annotation). ``clips``: clips of a still query
    (default: the median track-level window of the candidates, at most the run's K).
    ``run_dir``: a :class:`~mvpt.run.Run` or its folder (loaded at ``which``)."""
    from mvpt.run import Run

    if top < 1:
        raise UsageError(f"top must be >= 1, got {top}")
    if min_share is not None and not 0.0 <= min_share:
        raise UsageError(f"min_share must be >= 0, got {min_share}")
    if clips is not None and clips < 1:
        raise UsageError(f"clips must be >= 1, got {clips}")
    if boxes is not None:
        names = read_class_names(class_names) if class_names else None
        queries, boxes_skipped = read_boxes(boxes, images_dir, class_names=names, classes=classes)
    else:
        queries, boxes_skipped = collect_images(images_dir), None
        if classes:
            wanted = {c.lower() for c in classes}
            queries = [q for q in queries if q.label.lower() in wanted]
    n_found = len(queries)
    dropped_by_score = 0
    if scores is not None:
        queries, dropped_by_score = filter_by_score(queries, read_scores(scores, images_dir),
                                                    min_score=min_score)
    short = {}
    if balance is not None:
        queries, short = balance_classes(queries, balance, seed=seed)
    if not queries:
        raise UsageError(f"{images_dir}: no picture left after the filters "
                         f"({n_found} found, {dropped_by_score} below the score, "
                         f"classes with fewer than {balance}: {short})")

    run = Run.coerce(run_dir, which=which)
    labels = load_genres(genres if genres is not None else store_path)
    music = split_embeddings(run, store_path, split=split, genres=labels, modalities=("audio",))
    n_candidates = len(music["ids"])
    k = min(top, n_candidates)
    clips = int(clips or max(1, min(run.max_clips, int(np.median(music["n_clips"])))))
    stills = still_embeddings(run, queries, clips=clips)
    best = top_k(stills, music["audio"], k)
    retrieved = [[music["genres"][j] for j in row] for row in best]

    class_list = sorted({q.label for q in queries})
    genre_list = sorted(set(music["genres"]))
    counts = genre_matrix([q.label for q in queries], retrieved, classes=class_list,
                          genres=genre_list)
    per_genre = normalise_rows(counts.T).T  # each genre's retrievals shared over the classes
    class_sums = per_genre.sum(axis=1)
    shown = np.ones(len(class_list), bool) if min_share is None else class_sums >= min_share
    hidden = {c: float(s) for c, s, keep in zip(class_list, class_sums, shown) if not keep}
    n_per_class = Counter(q.label for q in queries)
    visible = {c for c, keep in zip(class_list, shown) if keep}
    pool_counts = Counter(music["genres"])
    result = {
        "run": None if run_dir is None else str(run_dir), "store": str(store_path),
        "split": split, "images": str(images_dir), "top": k, "top_requested": top,
        "clips": clips, "n_candidates": n_candidates,
        "n_candidates_unlabelled": music["n_unlabelled"],
        "n_images_found": n_found, "n_images_dropped_by_score": dropped_by_score,
        "min_score": min_score if scores is not None else None,
        "scores": None if scores is None else str(scores),
        "boxes": None if boxes is None else str(boxes), "boxes_left_out": boxes_skipped,
        "balance": balance, "classes_short_of_balance": short, "seed": seed,
        "min_share": min_share, "classes_hidden_by_min_share": hidden,
        "classes": [c for c, keep in zip(class_list, shown) if keep],
        "genres": genre_list,
        "n_images": int(sum(n_per_class[c] for c, keep in zip(class_list, shown) if keep)),
        "images_per_class": {c: int(n_per_class[c]) for c, keep in zip(class_list, shown)
                             if keep},
        "counts": counts[shown].tolist(),
        "shares": normalise_rows(counts[shown]).tolist(),
        "shares_per_genre": per_genre[shown].tolist(),
        "class_share_sums": {c: float(s) for c, s, keep in zip(class_list, class_sums, shown)
                             if keep},
        "pool_shares": [pool_counts[g] / n_candidates for g in genre_list],
        "queries": [dict(q.to_dict(), retrieved=[music["ids"][j] for j in row])
                    for q, row in zip(queries, best) if q.label in visible],
    }
    return result


# ---------------------------------------------------------------------------- report
def summary_markdown(result: dict, *, name: str = "attributes") -> str:
    """The matrix as a markdown table (percent of each class's retrievals), then the candidate
    pool's genre shares (what retrieval at random would give)."""
    genres = result["genres"]
    lines = [f"**{name}**: genres of the top {result['top']} tracks retrieved for "
             f"{result['n_images']} pictures (still videos of {result['clips']} clips), "
             f"{result['n_candidates']} candidate tracks of split {result['split']}; "
             "percent per class (rows sum to 100)", "",
             "| class | pictures | " + " | ".join(genres) + " |",
             "|---|---:|" + "---:|" * len(genres)]
    for label, shares in zip(result["classes"], result["shares"]):
        lines.append(f"| {label} | {result['images_per_class'][label]} | "
                     + " | ".join(f"{100 * s:.1f}" for s in shares) + " |")
    lines.append("| all music (chance) | | "
                 + " | ".join(f"{100 * s:.1f}" for s in result["pool_shares"]) + " |")
    notes = []
    if result["n_candidates_unlabelled"]:
        notes.append(f"{result['n_candidates_unlabelled']} tracks without a genre left out")
    if result["top"] < result["top_requested"]:
        notes.append(f"top {result['top_requested']} clamped to the {result['top']} candidates")
    if result["scores"]:
        notes.append(f"{result['n_images_dropped_by_score']} pictures dropped: their class "
                     f"scored below {result['min_score']:g} in {result['scores']}")
    if result["classes_short_of_balance"]:
        notes.append(f"classes with fewer than {result['balance']} pictures left out: "
                     + ", ".join(f"{c} ({n})" for c, n in
                                 result["classes_short_of_balance"].items()))
    if result["classes_hidden_by_min_share"]:
        notes.append(f"classes whose per-genre shares sum below {result['min_share']:g} left "
                     "out: " + ", ".join(f"{c} ({s:.2f})" for c, s in
                                         result["classes_hidden_by_min_share"].items()))
    if result["boxes_left_out"]:
        notes.append(f"boxes left out: {result['boxes_left_out']}")
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else []))


def write_attributes_report(result: dict, out_dir, *, name: str = "attributes") -> dict:
    """``NAME.json``, ``NAME.md`` and ``NAME.png`` (heatmap, rows: classes then the pool)."""
    from mvpt.analysis import new_figure, write_report

    rows = result["classes"] + ["all music (chance)"]
    genres = result["genres"]
    matrix = np.asarray(result["shares"] + [result["pool_shares"]], np.float64).reshape(
        len(rows), len(genres))
    fig, ax = new_figure(width=2.5 + 0.55 * max(len(genres), 1),
                         height=1.5 + 0.4 * len(rows))
    image = ax.imshow(100 * matrix, cmap="viridis", vmin=0, aspect="auto")
    ax.set_xticks(np.arange(len(genres)), genres, rotation=60, ha="right")
    ax.set_yticks(np.arange(len(rows)), rows)
    ax.axhline(len(rows) - 1.5, color="white", linewidth=2)
    if matrix.size <= 400:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 0.6 * max(matrix.max(), 1e-9) else "black")
    ax.set_xlabel("genre of the retrieved music")
    ax.set_title(f"{name}: top-{result['top']} genres per class (%)", fontsize=9)
    fig.colorbar(image, ax=ax, label="% of the class's retrievals")
    return write_report(out_dir, name=name, data=result,
                        markdown=summary_markdown(result, name=name), figure=fig)
