"""A suite of synthetic feature stores for choosing training defaults on more than one data set.

Each configuration writes a real mvpt FeatureStore of per-clip video and audio features (1 s
clips, tracks of exactly ``track_clips`` clips, splits train/val/test) made from hidden factors,
without any media:

- ``n_genres`` genres, each with a palette of ``themes_per_genre`` themes; a theme is a random
  latent vector in R^``n_factors``, and every genre adds its own offset (``genre_weight``), so the
  mean of a track's clips tells its genre.
- a track plays ``sections`` (min, max) sections, themes of its genre's palette (each once while
  the palette lasts, never the same twice in a row); each section instance adds its own small
  random variation (``instance``). Section lengths are unequal: 2 clips each plus a Dirichlet
  (concentration ``duration_alpha``; small = very unequal) share of the remaining clips.
- ``order_share`` of the tracks come in groups of 2 or 3 that play the very same section
  instances with the same lengths, in another order: their clip means are equal up to clip noise,
  so only the order tells them apart. A group stays within one split.
- clip latent -> features: per modality a random two-layer map (tanh), scaled to unit variance
  per dimension, plus independent Gaussian clip noise of std ``noise``.

Run ``python benchmarks/feature_suite.py OUT [--configs NAME...]`` to write the stores.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mvpt.store import FeatureStore, ItemResult


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    n_genres: int
    themes_per_genre: int
    sections: tuple[int, int]
    duration_alpha: float
    order_share: float
    noise: float
    genre_weight: float = 1.0
    instance: float = 0.35
    n_factors: int = 16
    video_dim: int = 128
    audio_dim: int = 96
    n_tracks: int = 300
    track_clips: int = 30
    split_shares: tuple[float, float] = (0.7, 0.15)  # train, val; test is the rest
    seed: int = 0


# Each configuration differs from the others in several knobs: sections (count and how unequal
# their lengths are), genres and themes, the share of order-only groups and the clip noise.
SUITE: dict[str, SuiteConfig] = {c.name: c for c in (
    SuiteConfig("base", n_genres=8, themes_per_genre=5, sections=(3, 8), duration_alpha=1.0,
                order_share=0.5, noise=0.5),
    SuiteConfig("order-heavy", n_genres=4, themes_per_genre=3, sections=(4, 8),
                duration_alpha=3.0, order_share=0.9, noise=0.3),
    SuiteConfig("mix-heavy", n_genres=20, themes_per_genre=8, sections=(2, 5),
                duration_alpha=0.5, order_share=0.2, noise=1.0),
    SuiteConfig("long-noisy", n_genres=6, themes_per_genre=4, sections=(2, 4),
                duration_alpha=1.0, order_share=0.5, noise=1.5),
)}


def section_lengths(n_sections: int, total: int, *, alpha: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Unequal section lengths in clips, each >= 2, summing to ``total``."""
    spare = total - 2 * n_sections
    shares = rng.dirichlet(np.full(n_sections, alpha))
    return 2 + rng.multinomial(spare, shares)


def section_themes(n_sections: int, palette: int, rng: np.random.Generator) -> np.ndarray:
    """Theme ids for ``n_sections`` sections: the palette in random order, again when it runs
    out, never the same theme twice in a row."""
    out: list[int] = []
    while len(out) < n_sections:
        for theme in rng.permutation(palette):
            if len(out) < n_sections and (not out or out[-1] != theme):
                out.append(int(theme))
    return np.asarray(out)


def other_order(n: int, taken: list[tuple], rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) not in ``taken`` (best effort for tiny n)."""
    for _ in range(100):
        perm = rng.permutation(n)
        if tuple(perm) not in taken:
            return perm
    return perm


class _Maps:
    """Per modality a random two-layer tanh map from the latent to features of unit variance."""

    def __init__(self, config: SuiteConfig, rng: np.random.Generator):
        f, hidden = config.n_factors, 64
        self.weights = {}
        for modality, dim in (("video", config.video_dim), ("audio", config.audio_dim)):
            w1 = rng.normal(size=(f, hidden)) * (1.5 / math.sqrt(f))
            b1 = rng.normal(size=hidden) * 0.5
            w2 = rng.normal(size=(hidden, dim)) / math.sqrt(hidden)
            self.weights[modality] = (w1, b1, w2)
        self.scale = {}
        probe = rng.normal(size=(4096, f)) * math.sqrt(1.0 + config.genre_weight ** 2)
        for modality in self.weights:
            self.scale[modality] = 1.0
            self.scale[modality] = self(modality, probe).std(0) + 1e-6

    def __call__(self, modality: str, z: np.ndarray) -> np.ndarray:
        w1, b1, w2 = self.weights[modality]
        return np.tanh(z @ w1 + b1) @ w2 / self.scale[modality]


def _groups(config: SuiteConfig, rng: np.random.Generator) -> list[list[dict]]:
    """Tracks in groups (one track, or 2-3 order-only variants of the same sections); each track:
    genre, theme ids, instance variations and lengths in playing order, group id (-1: alone)."""
    groups: list[list[dict]] = []
    n_grouped, n_made = int(round(config.order_share * config.n_tracks)), 0
    while n_made < config.n_tracks:
        size = int(rng.integers(2, 4)) if n_made < n_grouped else 1
        size = min(size, config.n_tracks - n_made)
        n = int(rng.integers(config.sections[0], config.sections[1] + 1))
        genre = int(rng.integers(config.n_genres))
        themes = section_themes(n, config.themes_per_genre, rng)
        variation = rng.normal(size=(n, config.n_factors)) * config.instance
        lengths = section_lengths(n, config.track_clips, alpha=config.duration_alpha, rng=rng)
        taken: list[tuple] = []
        for _ in range(size):
            perm = other_order(n, taken, rng) if taken else np.arange(n)
            taken.append(tuple(perm))
        groups.append([{"genre": genre, "themes": themes[list(p)], "variation": variation[list(p)],
                        "lengths": lengths[list(p)], "group": len(groups) if size > 1 else -1}
                       for p in taken])
        n_made += size
    return groups


def _tracks(config: SuiteConfig, rng: np.random.Generator) -> list[tuple[dict, str]]:
    """(track, split) pairs; a group stays in one split, so the order-only variants of a test
    track are among its candidates."""
    groups = _groups(config, rng)
    out: list[tuple[dict, str]] = []
    bounds = np.cumsum(config.split_shares) * config.n_tracks
    for g in rng.permutation(len(groups)):
        split = "train" if len(out) < bounds[0] else "val" if len(out) < bounds[1] else "test"
        out += [(track, split) for track in groups[g]]
    return out


def clip_latents(track: dict, *, genres: np.ndarray, themes: np.ndarray,
                 genre_weight: float) -> np.ndarray:
    """[track_clips, n_factors]: genre offset + theme + section variation, per clip."""
    per_section = (genre_weight * genres[track["genre"]]
                   + themes[track["genre"], track["themes"]] + track["variation"])
    return np.repeat(per_section, track["lengths"], axis=0)


def _world(config: SuiteConfig):
    """The hidden factors of ``config`` (genres, themes, maps, (track, split) pairs) and the random
    generator, positioned where the clip noise is drawn from."""
    rng = np.random.default_rng([config.seed, 7919])
    genres = rng.normal(size=(config.n_genres, config.n_factors))
    themes = rng.normal(size=(config.n_genres, config.themes_per_genre, config.n_factors))
    maps = _Maps(config, rng)
    return genres, themes, maps, _tracks(config, rng), rng


def write_store(config: SuiteConfig, path) -> FeatureStore:
    """Write the feature store of ``config`` at ``path`` (a new folder)."""
    genres, themes, maps, tracks, rng = _world(config)
    manifest = {"clip_s": 1.0, "max_clips": config.track_clips, "frames_per_clip": 1,
                "synthetic": True, "suite_config": asdict(config),
                "encoders": {m: {"name": f"suite-{m}", "version": "1", "dim": d,
                                 "modality": m, "extras": {}}
                             for m, d in (("video", config.video_dim),
                                          ("audio", config.audio_dim))}}
    store = FeatureStore.create(path, manifest)
    results = []
    for i, (track, split) in enumerate(tracks):
        z = clip_latents(track, genres=genres, themes=themes, genre_weight=config.genre_weight)
        arrays = {m: maps(m, z) + config.noise * rng.normal(size=(len(z), d))
                  for m, d in (("video", config.video_dim), ("audio", config.audio_dim))}
        n = float(len(z))
        results.append(ItemResult(id=f"{config.name}-{i:05d}", source_path=f"suite://{i}",
                                  split=split, status="done", duration_s=n, end_s=n,
                                  title=f"group {track['group']}", arrays=arrays))
    store.write_shard(results)
    return store


def ensure_store(config: SuiteConfig, root) -> Path:
    """The store of ``config`` under ``root`` (written once, reused after)."""
    path = Path(root) / config.name
    if not (path / "manifest.json").is_file():
        write_store(config, path)
    return path


def ceilings(config: SuiteConfig, *, segment_clips: int | None = None,
             split: str = "test") -> dict[str, float]:
    """The most R@1 any model can reach on ``config``'s ``split`` without clip noise, at track level
    (``segment_clips`` None: each whole track) or at segment level (segments of that many clips,
    cut as ``mvpt eval`` cuts them, each ranked among every segment of the split):

    - "order-aware": a query finds its own item unless another item has the very same clips in the
      same order (then they tie, and a fair tie counts 1 / their number);
    - "order-free": the same when only the clips' multiset is seen (the mean-pooling MLP and any
      model that ignores the order): items with the same clips in another order tie too.

    Clip noise lowers both; the gap between them is all the order of the clips can add."""
    from collections import Counter

    from mvpt.clips import segments

    genres, themes, _, tracks, _ = _world(config)
    keys: dict[str, list[bytes]] = {"order-aware": [], "order-free": []}
    for track, where in tracks:
        if where != split:
            continue
        z = np.round(clip_latents(track, genres=genres, themes=themes,
                                  genre_weight=config.genre_weight), 9)
        spans = [(0, len(z))] if segment_clips is None else segments(len(z), segment_clips)
        for start, length in spans:
            clips = z[start:start + length]
            keys["order-aware"].append(clips.tobytes())
            keys["order-free"].append(clips[np.lexsort(clips.T[::-1])].tobytes())
    out = {}
    for name, items in keys.items():
        count = Counter(items)
        out[name] = float(np.mean([1.0 / count[k] for k in items]))
    return out


def handmade_reference(path, *, chunks: int = 1, split: str = "test",
                       segment_clips: int | None = None) -> float:
    """Test R@1 (mean of both directions) of closed-form CCA on hand-made features: the means of
    ``chunks`` consecutive equal parts of each window, concatenated (1: the plain mean, which
    ignores order; more: keeps the order of the sections). Fitted on the train split.

    ``segment_clips`` None: track level (one window per track, the whole track). Otherwise segment
    level as ``mvpt eval`` cuts it (consecutive segments of that many clips, each ranked among every
    segment of the split, its own track's included), fitted on the train tracks' windows of that
    length at every clip."""
    import torch

    from mvpt.clips import segments, sliding_windows
    from mvpt.eval import retrieval_metrics
    from mvpt.models.baselines import LinearBaseline, LinearConfig

    store = FeatureStore.open(path)

    def features(part: str) -> dict[str, np.ndarray]:
        loaded = store.load(split=part, arrays=("video", "audio"))
        out: dict[str, list] = {"video": [], "audio": []}
        for i in range(len(loaded)):
            n = len(loaded.item(i, "video"))
            windows = ([(0, n)] if segment_clips is None
                       else sliding_windows(n, segment_clips, 1) if part == "train"
                       else segments(n, segment_clips))
            for m in out:
                x = np.asarray(loaded.item(i, m), np.float64)
                out[m] += [np.concatenate([c.mean(0) for c in np.array_split(x[a:a + k], chunks)])
                           for a, k in windows]
        return {m: np.stack(v) for m, v in out.items()}

    train, test = features("train"), features(split)
    model = LinearBaseline(LinearConfig(d_joint=64), video_dim=train["video"].shape[1],
                           audio_dim=train["audio"].shape[1]).fit(train["video"], train["audio"])
    emb = {m: model.encode(m, torch.from_numpy(test[m])[:, None].float(),
                           torch.ones(len(test[m]), 1, dtype=torch.bool)).numpy()
           for m in ("video", "audio")}
    metrics = retrieval_metrics(emb["video"], emb["audio"])
    return float(np.mean([metrics["video_to_music_R@1"], metrics["music_to_video_R@1"]]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for the stores (one subfolder per configuration)")
    parser.add_argument("--configs", nargs="*", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--ceilings", action="store_true",
                        help="print each configuration's noise-free R@1 ceilings (see ceilings()) "
                        "instead of writing stores")
    args = parser.parse_args(argv)
    if args.ceilings:
        print("| config | track order-aware | track order-free | segment order-aware | "
              "segment order-free |\n|---|---:|---:|---:|---:|")
        for name in args.configs:
            track, segment = (ceilings(SUITE[name], segment_clips=k) for k in (None, 10))
            print(f"| {name} | {track['order-aware']:.3f} | {track['order-free']:.3f} | "
                  f"{segment['order-aware']:.3f} | {segment['order-free']:.3f} |")
        return
    for name in args.configs:
        print(name, ensure_store(SUITE[name], args.out))


if __name__ == "__main__":
    main()
