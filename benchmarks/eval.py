"""Time and peak memory of `mvpt.eval.retrieval_metrics` on random L2-normalised embeddings.

Peak memory is the peak of memory traced by `tracemalloc` during the call (numpy reports its
array buffers to tracemalloc), inputs excluded. Reference: the same call with one block holding
every query (a full pool x pool similarity matrix), measured in the same run at the smallest size.

    PYTHONPATH=src python3 benchmarks/eval.py                  # pools of 10,000 and 100,000
    PYTHONPATH=src python3 benchmarks/eval.py --sizes 2000 --block-size 512
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from mvpt.eval import retrieval_metrics


def random_pairs(n: int, *, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired unit vectors (music = video + noise) and clip counts of 10 to 30 per item."""
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(n, dim)).astype(np.float32)
    music = video + 4.0 * rng.normal(size=(n, dim)).astype(np.float32)
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    music /= np.linalg.norm(music, axis=1, keepdims=True)
    return video, music, rng.integers(10, 31, size=n)


def measure(video, music, **kwargs) -> tuple[float, float, dict]:
    """(seconds, peak MiB traced by tracemalloc, metrics) of one retrieval_metrics call."""
    tracemalloc.start()
    start = time.perf_counter()
    metrics = retrieval_metrics(video, music, **kwargs)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, metrics


def report(label: str, n: int, seconds: float, peak_mib: float, metrics: dict) -> None:
    print(f"| {label} | {n:,} | {seconds:.2f} | {peak_mib:,.0f} | "
          f"{100 * metrics['video_to_music_R@1']:.2f} | {metrics['video_to_music_median_rank']:g} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                        help="pool sizes (items)")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension")
    parser.add_argument("--block-size", type=int, default=4096, help="queries per block")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"retrieval_metrics, {args.dim}-d, block_size {args.block_size}; peak = tracemalloc "
          "peak during the call (inputs excluded)\n")
    print("| case | pool | seconds | peak MiB | V->M R@1 % | V->M MedR |")
    print("|---|---:|---:|---:|---:|---:|")
    smallest = min(args.sizes)
    measure(*random_pairs(100, dim=args.dim, seed=args.seed)[:2])  # warm up BLAS threads
    for n in sorted(args.sizes):
        video, music, lengths = random_pairs(n, dim=args.dim, seed=args.seed)
        blocked = measure(video, music, block_size=args.block_size)
        report("blocked", n, *blocked)
        if n == smallest:
            same = measure(video, music, block_size=args.block_size, lengths=lengths,
                           same_length=True)
            report("blocked, same length", n, *same)
            full = measure(video, music, block_size=n)
            report("one block (full matrix)", n, *full)
            print(f"\nat {n:,}: blocked / full matrix: time x{blocked[0] / full[0]:.2f}, "
                  f"peak memory x{blocked[1] / full[1]:.2f}; same metrics: "
                  f"{'yes' if full[2] == blocked[2] else 'NO'}\n")


if __name__ == "__main__":
    main()
