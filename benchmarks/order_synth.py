"""Synthetic music videos where the order of unequal sections pairs a video with its music.

Issue 10 measured MVPt on a benchmark kept outside the repo, described there as: 600 videos of
exactly 30 s, 3 to 8 sections of unequal length, half the videos in groups of 2-3 that share
the same sections in another order, so order is the signal. This script rebuilds a set from
that description with the renderer of ``mvpt synth`` (real media, so real encoder features);
the training defaults were not chosen on it.

    python benchmarks/order_synth.py order600 --n 600 --seed 0
    mvpt extract order600/manifest.csv --out order600-store
    python benchmarks/synth_retrieval.py order600-store --out order600-runs --seeds 0 1 2

What a video plays: a genre (as ``mvpt synth``), 3 to 8 sections drawn from the genre's palette
of 8 themes of this data set (each theme once while the palette lasts, never the same twice in
a row), with unequal lengths: 2 s each plus a Dirichlet(1) share of the rest, on the frame
grid. Half the videos come in groups of 2 or 3 that play the very same sections (theme and
length) in other orders, each order different; a group shares one split (the manifest's
``group`` column). ``OUT/factors.json`` keeps every video's genre, group and sections.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from mvpt.data.synth import (
    GENRE_NAMES,
    genre_palette,
    place_themes,
    render_frames,
    render_music,
    write_mp4,
)
from mvpt.fileio import atomic_path, atomic_write_bytes
from mvpt.splits import stable_split

SECONDS = 30.0
FPS = 12.0
SIZE = (96, 64)
AUDIO_RATE_HZ = 16000
PALETTE = 8
SECTIONS = (3, 8)
MIN_SECTION_S = 2.0


def theme_sequence(n_sections: int, palette: int, rng: np.random.Generator) -> list[int]:
    """Theme ids: the palette in random order, again when it runs out, never one twice in a row."""
    out: list[int] = []
    while len(out) < n_sections:
        for k in rng.permutation(palette):
            if len(out) < n_sections and (not out or out[-1] != k):
                out.append(int(k))
    return out


def section_frames(n_sections: int, rng: np.random.Generator) -> np.ndarray:
    """Unequal section lengths in frames, each >= MIN_SECTION_S, summing to the video's."""
    total, least = round(SECONDS * FPS), round(MIN_SECTION_S * FPS)
    shares = rng.dirichlet(np.ones(n_sections))
    return least + rng.multinomial(total - least * n_sections, shares)


def reorder(sections: list[tuple[int, int]], taken: list[list[tuple[int, int]]],
            rng: np.random.Generator) -> list[tuple[int, int]]:
    """The same (theme, frames) sections in an order none of ``taken`` has (a random one of up to
    200 tries, which never all fail with 3 or more unequal sections)."""
    for _ in range(200):
        order = [sections[i] for i in rng.permutation(len(sections))]
        if order not in taken:
            return order
    raise RuntimeError(f"no new order of {sections}")


def plan(n: int, seed: int) -> list[dict]:
    """Each video's genre, group and (theme, frames) sections; half the videos in groups."""
    rng = np.random.default_rng([seed, 10])
    videos: list[dict] = []
    grouped = n // 2
    while len(videos) < n:
        size = min(int(rng.integers(2, 4)), n - len(videos)) if len(videos) < grouped else 1
        genre = GENRE_NAMES[int(rng.integers(len(GENRE_NAMES)))]
        n_sections = int(rng.integers(SECTIONS[0], SECTIONS[1] + 1))
        first = list(zip(theme_sequence(n_sections, PALETTE, rng),
                         section_frames(n_sections, rng).tolist()))
        orders = [first]
        while len(orders) < size:
            orders.append(reorder(first, orders, rng))
        group = f"g{seed}-{len(videos):05d}"
        for sections in orders:
            ident = f"o{seed}-{len(videos):05d}"
            videos.append({"id": ident, "index": len(videos), "genre": genre,
                           "group": group, "group_size": size, "sections": sections})
    return videos


def render(video: dict, out_dir: str, seed: int) -> dict:
    """Write one video's MP4; return its factors."""
    palette = genre_palette(video["genre"], seed=seed, size=PALETTE)
    bounds = np.concatenate([[0], np.cumsum([f for _, f in video["sections"]])]) / FPS
    sections = place_themes(video["genre"], [palette[k] for k, _ in video["sections"]],
                            bounds.tolist())
    audio_rng, video_rng = (np.random.default_rng([seed, video["index"], k]) for k in (1, 2))
    audio = render_music(sections, genre=video["genre"], duration_s=SECONDS,
                         sample_rate_hz=AUDIO_RATE_HZ, rng=audio_rng)
    frames = render_frames(sections, genre=video["genre"], duration_s=SECONDS, size=SIZE,
                           fps=FPS, rng=video_rng)
    path = Path(out_dir) / "videos" / f"{video['id']}.mp4"
    with atomic_path(path) as partial:
        write_mp4(partial, frames=frames, audio=audio, fps=FPS, sample_rate_hz=AUDIO_RATE_HZ)
    return {**{k: video[k] for k in ("id", "genre", "group", "group_size")},
            "sections": [s.to_dict() for s in sections]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if args.n < 2:
        sys.exit(f"--n must be at least 2, got {args.n}")
    videos = plan(args.n, args.seed)
    (args.out / "videos").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        factors = list(pool.map(render, videos, [str(args.out)] * len(videos),
                                [args.seed] * len(videos), chunksize=8))
    with atomic_path(args.out / "manifest.csv") as partial, partial.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path", "split", "group"])
        for v in videos:
            writer.writerow([v["id"], f"videos/{v['id']}.mp4", stable_split(v["id"], v["group"]),
                             v["group"]])
    params = {"n": args.n, "seed": args.seed, "seconds": SECONDS, "fps": FPS, "size": SIZE,
              "palette": PALETTE, "sections": SECTIONS, "min_section_s": MIN_SECTION_S}
    atomic_write_bytes(args.out / "factors.json", json.dumps(
        {"params": params, "videos": {f["id"]: f for f in factors}}, indent=1).encode())
    splits = [stable_split(v["id"], v["group"]) for v in videos]
    print(f"{len(videos)} videos in {len({v['group'] for v in videos})} groups under {args.out} "
          f"(train/val/test {splits.count('train')}/{splits.count('val')}/"
          f"{splits.count('test')})")


if __name__ == "__main__":
    main()
