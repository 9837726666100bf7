"""Time, throughput and peak memory of `mvpt.eval.retrieval_metrics` on random unit vectors, beside
a plain matrix product measured in the same run.

Both directions come from one product of the video and music embeddings (n x n x dim
multiply-adds, 2 n^2 dim FLOP), so the achieved FLOP/s is 2 n^2 dim / seconds. The reference is
the same BLAS call (`np.matmul`) on the same square blocks without any counting, over
`--reference-rows` query rows (the FLOP/s of what the evaluation cannot do without). Seconds
are wall clock and process CPU time (on a shared machine CPU time says more about the work).
Peak memory, inputs excluded, two ways: "traced", the peak of the numpy buffers the call
allocates (tracemalloc; comparable with figures of earlier versions), and "resident", the growth
of the process's peak resident set (VmHWM, reset before the call) over its size at the call,
which also sees BLAS and thread buffers but not memory reused from earlier calls. At the
smallest size, the same call with one block holding every query (the whole n x n matrix) checks
that blocking changes no metric. Up to `--numpy-max` items the same call also runs with numpy's
counting (`MVPT_EVAL_KERNEL=numpy`, the counting before the compiled kernel) beside it.

    python benchmarks/eval.py                       # pools of 10,000 and 100,000 (minutes)
    python benchmarks/eval.py --sizes 2000 --block-size 512
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np

from mvpt.eval import BLOCK_SIZE, retrieval_metrics

STATUS = Path("/proc/self/status")
FULL_MATRIX_MAX = 20_000  # items: the one-block check holds n x n float32 scores (1.5 GiB)


def random_pairs(n: int, *, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired unit vectors (music = video + noise) and clip counts of 10 to 30 per item."""
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(n, dim)).astype(np.float32)
    music = video + 4.0 * rng.normal(size=(n, dim)).astype(np.float32)
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    music /= np.linalg.norm(music, axis=1, keepdims=True)
    return video, music, rng.integers(10, 31, size=n)


def _memory_kib(field: str) -> int:
    if not STATUS.exists():  # not Linux: no resident figure
        return 0
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def timed(fn) -> tuple[float, float, str, object]:
    """(wall s, CPU s, "traced / resident" peak MiB, result) of ``fn()``."""
    if STATUS.exists():
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    start_rss = _memory_kib("VmRSS")
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return wall, cpu, f"{traced:,.0f} / {(_memory_kib('VmHWM') - start_rss) / 1024:,.0f}", result


def plain_matmul(video, music, *, rows: int, block_size: int) -> tuple[float, float, int]:
    """(wall s, CPU s, FLOP) of the blocked product of ``rows`` video rows with every music
    row into one reused block, nothing counted."""
    buffer = np.empty(block_size * block_size, np.float32)
    rows = min(rows, len(video))

    def run():
        for lo in range(0, rows, block_size):
            queries = video[lo:min(rows, lo + block_size)]
            for c in range(0, len(music), block_size):
                candidates = music[c:c + block_size]
                out = buffer[:len(queries) * len(candidates)].reshape(len(queries), -1)
                np.matmul(queries, candidates.T, out=out)

    wall, cpu, _, _ = timed(run)
    return wall, cpu, 2 * rows * len(music) * video.shape[1]


def row(label, n, wall, cpu, peak, gflops, metrics) -> None:
    print(f"| {label} | {n:,} | {wall:.2f} | {cpu:.2f} | {peak} | {gflops} | "
          f"{100 * metrics['video_to_music_R@1']:.2f} | "
          f"{metrics['video_to_music_median_rank']:g} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                        help="pool sizes (items)")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension")
    parser.add_argument("--block-size", type=int, default=BLOCK_SIZE,
                        help=f"queries and candidates per square block (default {BLOCK_SIZE})")
    parser.add_argument("--reference-rows", type=int, default=10_000,
                        help="query rows of the plain matmul reference (default 10,000)")
    parser.add_argument("--numpy-max", type=int, default=20_000,
                        help="largest pool also timed with numpy's counting (default 20,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"retrieval_metrics, {args.dim}-d, block {args.block_size} x {args.block_size}, "
          f"{os.cpu_count()} CPUs; FLOP/s: 2 n^2 dim over wall and over CPU seconds\n")
    print("| case | pool | wall s | CPU s | peak MiB traced / resident | GFLOP/s wall / CPU-s | "
          "V->M R@1 % | V->M MedR |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    smallest = min(args.sizes)
    retrieval_metrics(*random_pairs(100, dim=args.dim, seed=args.seed)[:2])  # warm up BLAS
    for n in sorted(args.sizes):
        video, music, lengths = random_pairs(n, dim=args.dim, seed=args.seed)
        flop = 2 * n * n * args.dim
        mm_wall, mm_cpu, mm_flop = plain_matmul(video, music, rows=args.reference_rows,
                                                block_size=args.block_size)
        print(f"| plain matmul ({min(n, args.reference_rows):,} rows) | {n:,} | {mm_wall:.2f} | "
              f"{mm_cpu:.2f} | | {_rates(mm_flop, mm_wall, mm_cpu)} | | |", flush=True)
        wall, cpu, peak, blocked = timed(
            lambda: retrieval_metrics(video, music, block_size=args.block_size))
        row("blocked", n, wall, cpu, peak, _rates(flop, wall, cpu), blocked)
        print(f"| ratio to the plain matmul | | | | | x{mm_wall * flop / (wall * mm_flop):.2f} / "
              f"x{mm_cpu * flop / (cpu * mm_flop):.2f} | | |", flush=True)
        if n <= args.numpy_max:
            os.environ["MVPT_EVAL_KERNEL"] = "numpy"
            try:
                numpy_run = timed(lambda: retrieval_metrics(video, music,
                                                            block_size=args.block_size))
            finally:
                del os.environ["MVPT_EVAL_KERNEL"]
            row("blocked, numpy counting (before)", n, *numpy_run[:3],
                _rates(flop, *numpy_run[:2]), numpy_run[3])
            if numpy_run[3] != blocked:
                print(f"\nat {n:,}: the two countings give OTHER metrics\n")
        if n == smallest:
            same = timed(lambda: retrieval_metrics(video, music, block_size=args.block_size,
                                                   lengths=lengths, same_length=True))
            row("blocked, same length", n, *same[:3], "", same[3])
            if n > FULL_MATRIX_MAX:  # n x n float32 would not fit: 100k is 37 GiB
                print(f"\n(no one-block check at {n:,}: the full matrix needs "
                      f"{4 * n * n / 2**30:,.1f} GiB; it runs at {FULL_MATRIX_MAX:,} items or "
                      "fewer)\n")
                continue
            full = timed(lambda: retrieval_metrics(video, music, block_size=n))
            row("one block (full matrix)", n, *full[:3], _rates(flop, *full[:2]), full[3])
            print(f"\nat {n:,}: same metrics blocked and as one block: "
                  f"{'yes' if full[3] == blocked else 'NO'}\n")


def _rates(flop: float, wall: float, cpu: float) -> str:
    return f"{flop / wall / 1e9:.1f} / {flop / cpu / 1e9:.1f}"


if __name__ == "__main__":
    main()
