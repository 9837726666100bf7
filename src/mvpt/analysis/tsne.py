"""t-SNE of track-level embeddings coloured by genre (appendix C.5, figure 16).

Every labelled track of a store split goes through the run's towers at track level (its centred
window of at most K clips, as track-level evaluation reads it): the audio tower for ``music``, the
video tower for ``video``. Each modality gets its own 2-D t-SNE (scikit-learn, PCA initialisation,
``seed``) and its own panel, points coloured by genre.

How well genres cluster is measured on the embeddings themselves, not on the plot: the k-NN genre
agreement is the share of each track's ``k`` nearest other tracks (cosine similarity; equal
similarities in store order) that have its genre, averaged over tracks. Its chance rate, for
neighbours drawn at random among the other tracks, follows from the genre frequencies alone:
``sum_g n_g (n_g - 1) / (n (n - 1))``.

The perplexity must stay below the number of points; scikit-learn looks at ``3 * perplexity``
neighbours of each point, so it is clamped to ``(n - 1) / 3`` and the output says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from mvpt.errors import UsageError

MODALITIES = {"music": "audio", "video": "video"}  # name -> store array / tower
DEFAULT_PERPLEXITY = 30.0
DEFAULT_KNN = 10
MAX_LEGEND_GENRES = 20
EXACT_MAX_POINTS = 1000


# ---------------------------------------------------------------------------- clustering score
def knn_genre_agreement(embeddings, genres: Sequence[str], *, k: int = DEFAULT_KNN,
                        block_size: int = 2048) -> dict:
    """``{"k", "agreement", "chance", "n"}``: the mean share of each item's ``k`` nearest other
    items (cosine similarity, ties in item order) with its genre, and the same for random
    neighbours (from the genre frequencies). ``k`` is clamped to ``n - 1``."""
    x = np.asarray(embeddings, np.float64)
    labels = np.asarray(genres)
    n = len(x)
    if x.ndim != 2 or n != len(labels):
        raise UsageError(f"embeddings [n, d] and genres [n] do not match: {x.shape}, {len(labels)}")
    if n < 2:
        raise UsageError(f"k-NN agreement needs at least 2 items, got {n}")
    if k < 1:
        raise UsageError(f"k must be >= 1, got {k}")
    k = min(k, n - 1)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    codes = np.unique(labels, return_inverse=True)[1].reshape(-1)
    same = 0
    for lo in range(0, n, block_size):
        hi = min(n, lo + block_size)
        sims = x[lo:hi] @ x.T
        sims[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf  # never its own neighbour
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        same += int(np.count_nonzero(codes[nearest] == codes[lo:hi, None]))
    sizes = np.bincount(codes).astype(np.float64)
    chance = float((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    return {"k": int(k), "agreement": same / (n * k), "chance": chance, "n": int(n)}


def clamp_perplexity(perplexity: float, n_points: int) -> float:
    """``perplexity`` limited to ``(n_points - 1) / 3`` (and at least 1)."""
    if not perplexity > 0:
        raise UsageError(f"perplexity must be > 0, got {perplexity}")
    return float(max(1.0, min(perplexity, (n_points - 1) / 3.0)))


def tsne_2d(embeddings, *, perplexity: float, seed: int = 0) -> np.ndarray:
    """float64 [n, 2] t-SNE coordinates (scikit-learn, PCA initialisation, automatic learning
    rate; the exact gradient up to ``EXACT_MAX_POINTS`` points, faster there than Barnes-Hut);
    ``perplexity`` must already be below ``n``."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise UsageError("the t-SNE analysis needs scikit-learn: "
                         "pip install scikit-learn") from None
    x = np.asarray(embeddings, np.float32)
    method = "exact" if len(x) <= EXACT_MAX_POINTS else "barnes_hut"
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                method=method, random_state=seed).fit_transform(x).astype(np.float64)


# ---------------------------------------------------------------------------- analysis
def tsne_analysis(run_dir, store_path, *, genres=None, split: str | None = "test",
                  modality: str = "both", perplexity: float = DEFAULT_PERPLEXITY,
                  max_points: int | None = None, knn: int = DEFAULT_KNN, seed: int = 0,
                  which: str = "best") -> dict:
    """t-SNE points and the k-NN genre agreement of each asked modality (see the module
    docstring). ``genres``: as for :func:`mvpt.analysis.attributes.load_genres` (default: the
    store's annotation); ``max_points``: a random sample (``seed``) of that many tracks, the same
    tracks for every modality; ``run_dir``: a :class:`~mvpt.run.Run` or its folder (loaded at
    ``which``)."""
    from mvpt.analysis.attributes import load_genres, split_embeddings
    from mvpt.run import Run

    names = list(MODALITIES) if modality == "both" else [modality]
    if any(m not in MODALITIES for m in names):
        raise UsageError(f"modality must be music, video or both, got {modality!r}")
    if max_points is not None and max_points < 3:
        raise UsageError(f"max_points must be >= 3, got {max_points}")
    run = Run.coerce(run_dir, which=which)
    labels = load_genres(genres if genres is not None else store_path)
    data = split_embeddings(run, store_path, split=split, genres=labels,
                            modalities=[MODALITIES[m] for m in names])
    n_items = len(data["ids"])
    pick = np.arange(n_items)
    if max_points is not None and n_items > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(n_items, size=max_points,
                                                          replace=False))
    if len(pick) < 3:
        raise UsageError(f"{store_path}: t-SNE needs at least 3 labelled tracks in split "
                         f"{split!r}, found {len(pick)}")
    ids = [data["ids"][i] for i in pick]
    point_genres = [data["genres"][i] for i in pick]
    used = clamp_perplexity(perplexity, len(pick))
    panels = []
    for name in names:
        emb = data[MODALITIES[name]][pick]
        xy = tsne_2d(emb, perplexity=used, seed=seed)
        panels.append({
            "modality": name, "n_points": int(len(pick)),
            "knn": knn_genre_agreement(emb, point_genres, k=knn),
            "points": [{"id": i, "genre": g, "x": float(x), "y": float(y)}
                       for i, g, (x, y) in zip(ids, point_genres, xy)],
        })
    return {
        "run": str(run.folder), "store": str(store_path),
        "split": split, "which": which, "seed": seed, "n_items": n_items,
        "n_unlabelled": data["n_unlabelled"], "max_points": max_points,
        "n_points": int(len(pick)), "perplexity": used, "perplexity_requested": float(perplexity),
        "perplexity_clamped": used != float(perplexity),
        "genre_counts": dict(Counter(point_genres).most_common()),
        "panels": panels,
    }


# ---------------------------------------------------------------------------- report
def summary_markdown(result: dict) -> str:
    """Points, perplexity and the k-NN genre agreement beside chance, one row per modality."""
    lines = [f"t-SNE of track-level embeddings, split {result['split']}: {result['n_points']} "
             f"tracks of {len(result['genre_counts'])} genres"
             + (f" (a sample of {result['n_items']})" if result["n_points"] < result["n_items"]
                else ""),
             f"perplexity {result['perplexity']:g}"
             + (f" (clamped from {result['perplexity_requested']:g}: it must stay below "
                f"(points - 1) / 3)" if result["perplexity_clamped"] else ""), "",
             "| modality | points | k | k-NN genre agreement (%) | chance (%) |",
             "|---|---:|---:|---:|---:|"]
    for panel in result["panels"]:
        knn = panel["knn"]
        lines.append(f"| {panel['modality']} | {panel['n_points']} | {knn['k']} | "
                     f"{100 * knn['agreement']:.1f} | {100 * knn['chance']:.1f} |")
    if result["n_unlabelled"]:
        lines += ["", f"- {result['n_unlabelled']} tracks without a genre left out"]
    return "\n".join(lines)


def write_tsne_report(result: dict, out_dir) -> dict:
    """``tsne.json``, ``tsne.md`` and ``tsne.png`` (one panel per modality, a genre legend)."""
    import matplotlib.pyplot as plt

    from mvpt.analysis import new_figure, write_report

    panels = result["panels"]
    fig, _ = new_figure(width=4.5 * len(panels) + 2.0, height=4.5)
    fig.clear()
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    ranked = list(result["genre_counts"])
    shown = ranked if len(ranked) <= MAX_LEGEND_GENRES else ranked[:MAX_LEGEND_GENRES - 1]
    cmap = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20")
    colours = {g: cmap(i % cmap.N) for i, g in enumerate(shown)}
    for ax, panel in zip(axes, panels):
        groups: dict[str, list[tuple[float, float]]] = {}
        for p in panel["points"]:
            key = p["genre"] if p["genre"] in colours else "other"
            groups.setdefault(key, []).append((p["x"], p["y"]))
        for genre in shown + (["other"] if "other" in groups else []):
            if genre in groups:
                xy = np.asarray(groups[genre])
                ax.scatter(xy[:, 0], xy[:, 1], s=12, color=colours.get(genre, "lightgray"),
                           label=genre)
        knn = panel["knn"]
        ax.set_title(f"{panel['modality']}: {knn['k']}-NN genre agreement "
                     f"{100 * knn['agreement']:.0f}% (chance {100 * knn['chance']:.0f}%)",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="genre")
    fig.tight_layout()
    return write_report(out_dir, name="tsne", data=result, markdown=summary_markdown(result),
                        figure=fig)
