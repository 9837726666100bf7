"""Benchmark the recommend index: query latency (p50/p99), approximate recall@10 against exact
search, build time and memory. Prints figures; asserts nothing about time.

    python benchmarks/recommend.py                    # CI size: 100,000 windows approximate
    python benchmarks/recommend.py --windows 1000000  # the target size (~4 GB RAM, minutes)
    python benchmarks/recommend.py --windows-per-track 10 --tracks 1000 100000

Part 1 (exact latency): libraries of ``--tracks`` tracks of ``--windows-per-track`` windows
each, random unit vectors (latency does not depend on what the vectors hold for a flat index).
Part 2 (approximate): ``--windows`` vectors shaped like real ones: windows (10 clips every 5) of
synthetic tracks (a smooth AR(1) hidden sequence -> clip features, as in
``tests/fixtures/stores.py``) encoded by an MVPt audio tower (random init, or the run given
with ``--run``), each repeated ``--copies`` times with Gaussian noise whose norm equals the median
distance between neighbouring windows of a track, so near-duplicates do not make recall trivial;
queries are fresh noisy copies. recall@10 = |approximate top 10 windows & exact top 10| / 10.
Latency is one query window through ``Index.search`` (FAISS + grouping into items), top 10, after
5 warm-up queries, on ``--threads`` threads. Each approximate index is measured at several
search-time settings (HNSW efSearch, IVF nprobe) after one build.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import pandas as pd

WINDOW_CLIPS, STRIDE_CLIPS, CLIPS_PER_TRACK = 10, 5, 55
SEARCH_KNOBS = {"hnsw": ("ef_search", (64, 128, 256)), "ivf": ("nprobe", (16, 32, 64, 128))}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracks", type=int, nargs="+", default=[1000, 100000],
                   help="library sizes in tracks for the exact latency (default 1000 100000)")
    p.add_argument("--windows-per-track", type=int, default=1,
                   help="windows per track in part 1 (a 3-min track has ~35 at 10 s / 5 s)")
    p.add_argument("--windows", type=int, default=100_000,
                   help="vectors in the approximate benchmark (the target is 1000000)")
    p.add_argument("--copies", type=int, default=5,
                   help="noisy copies of each encoded window in part 2 (default 5)")
    p.add_argument("--kinds", nargs="+", default=["hnsw", "ivf"], choices=["hnsw", "ivf"])
    p.add_argument("--dim", type=int, default=256, help="embedding dimension (default 256)")
    p.add_argument("--queries", type=int, default=200, help="timed queries (default 200)")
    p.add_argument("--threads", type=int, default=2,
                   help="FAISS/torch threads for building and encoding (default 2)")
    p.add_argument("--search-threads", type=int, default=None,
                   help="FAISS threads while searching (default: --threads); 1 avoids OpenMP "
                   "waits on a busy machine, where concurrent queries use the other cores")
    p.add_argument("--run", default=None, help="use this run's audio tower in part 2")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def latency_ms(index, queries: np.ndarray) -> tuple[float, float]:
    for q in queries[:5]:
        index.search(q[None], top=10)
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(q[None], top=10)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


BUILD_THREADS = SEARCH_THREADS = 2


def timed_build(vectors: np.ndarray, table: pd.DataFrame, kind: str):
    """(index, build seconds, RSS growth MB, serialized size MB)."""
    import faiss

    from mvpt.index import Index

    before = rss_mb()
    faiss.omp_set_num_threads(BUILD_THREADS)
    start = time.perf_counter()
    index = Index.from_vectors(vectors, table, kind=kind)
    seconds = time.perf_counter() - start
    faiss.omp_set_num_threads(SEARCH_THREADS)
    grown = rss_mb() - before
    with tempfile.TemporaryDirectory() as tmp:
        faiss.write_index(index.faiss_index, os.path.join(tmp, "i.faiss"))
        size_mb = os.path.getsize(os.path.join(tmp, "i.faiss")) / 2**20
    return index, seconds, grown, size_mb


def window_table(n: int, per_item: int) -> pd.DataFrame:
    item = np.arange(n) // per_item
    start = (np.arange(n) % per_item) * 5.0
    return pd.DataFrame({"item_id": pd.Series(item).map("t{:07d}".format),
                         "start_s": start, "end_s": start + 10.0})


# ------------------------------------------------------------------------------ part 1
def exact_latency(args, rng) -> None:
    print(f"\n## exact search, random unit vectors ({args.windows_per_track} window(s) per track)")
    print(f"{'tracks':>9} {'windows':>10} {'build_s':>8} {'rss_MB':>8} {'file_MB':>8} "
          f"{'p50_ms':>8} {'p99_ms':>8}")
    for n_tracks in args.tracks:
        n = n_tracks * args.windows_per_track
        vectors = unit(rng.normal(size=(n, args.dim)).astype(np.float32))
        index, build_s, grown, size = timed_build(vectors, window_table(n, args.windows_per_track),
                                                  "exact")
        queries = unit(rng.normal(size=(args.queries, args.dim)).astype(np.float32))
        p50, p99 = latency_ms(index, queries)
        print(f"{n_tracks:>9} {n:>10} {build_s:>8.2f} {grown:>8.0f} {size:>8.0f} "
              f"{p50:>8.2f} {p99:>8.2f}", flush=True)
        del index, vectors


# ------------------------------------------------------------------------------ part 2
def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def tower(args):
    """(embed function for lists of [clips, dim] sequences, feature dim, description)."""
    import torch

    from mvpt.embed import encode_sequences

    torch.manual_seed(args.seed)
    if args.run:
        from mvpt.run import Run

        run = Run.load(args.run)
        dim = run.model.input_dims["audio"]
        return (lambda seqs: run.embed("audio", seqs, batch_size=512), dim,
                f"audio tower of run {args.run}")
    from mvpt.models.factory import build_model, load_config

    model = build_model(load_config("mvpt", d_joint=args.dim), video_dim=128,
                        audio_dim=128).eval()
    return (lambda seqs: encode_sequences(model, "audio", seqs, batch_size=512), 128,
            "MVPt audio tower, random init (no run given)")


def encoded_windows(args, rng, n_base: int):
    """(unit windows [tracks, windows, d], description): synthetic tracks through the tower."""
    embed, feature_dim, described = tower(args)
    n_tracks = max(1, n_base // ((CLIPS_PER_TRACK - WINDOW_CLIPS) // STRIDE_CLIPS + 1))
    factors = 16
    mixing = rng.normal(size=(factors, feature_dim)) / np.sqrt(factors)
    starts = range(0, CLIPS_PER_TRACK - WINDOW_CLIPS + 1, STRIDE_CLIPS)
    out = []
    for lo in range(0, n_tracks, 1000):
        count = min(1000, n_tracks - lo)
        z = np.empty((count, CLIPS_PER_TRACK, factors))
        z[:, 0] = rng.normal(size=(count, factors))
        for t in range(1, CLIPS_PER_TRACK):
            z[:, t] = 0.8 * z[:, t - 1] + 0.6 * rng.normal(size=(count, factors))
        clips = (z @ mixing + 0.5 * rng.normal(size=(count, CLIPS_PER_TRACK, feature_dim)))
        seqs = [clips[i, s:s + WINDOW_CLIPS].astype(np.float32) for i in range(count)
                for s in starts]
        out.append(unit(np.asarray(embed(seqs))).reshape(count, len(starts), -1))
    return np.concatenate(out), described


def structured_vectors(args, rng):
    n_base = max(1, args.windows // args.copies)
    windows, described = encoded_windows(args, rng, n_base)
    gap = float(np.median(np.linalg.norm(np.diff(windows, axis=1), axis=-1)))
    base = windows.reshape(-1, windows.shape[-1]).astype(np.float32)
    sigma = gap / np.sqrt(base.shape[1])
    copies = -(-args.windows // len(base))
    vectors = np.concatenate([base + sigma * rng.normal(size=base.shape).astype(np.float32)
                              for _ in range(copies)])[:args.windows]
    picks = rng.choice(len(base), args.queries, replace=False)
    queries = base[picks] + sigma * rng.normal(size=(args.queries, base.shape[1]))
    sample = unit(base[rng.choice(len(base), min(2000, len(base)), replace=False)])
    cos = sample @ sample.T
    stats = {"tower": described, "base windows": len(base), "copies": copies,
             "neighbour gap": gap, "noise norm": gap,
             "random pair cosine (mean)": float(cos[np.triu_indices(len(cos), 1)].mean())}
    return unit(vectors), unit(queries.astype(np.float32)), stats


def approximate(args, rng) -> None:
    start = time.perf_counter()
    vectors, queries, stats = structured_vectors(args, rng)
    print(f"\n## approximate vs exact, {len(vectors)} structured windows "
          f"(made in {time.perf_counter() - start:.0f} s)")
    for key, value in stats.items():
        print(f"#   {key}: {value:.3f}" if isinstance(value, float) else f"#   {key}: {value}")
    table = window_table(len(vectors), 1)  # every window its own item: window-level recall
    print(f"{'kind':>6} {'build_s':>8} {'rss_MB':>8} {'file_MB':>8} {'p50_ms':>8} "
          f"{'p99_ms':>8} {'recall@10':>10} {'speedup_p50':>12}  params")
    exact, build_s, grown, size = timed_build(vectors, table, "exact")
    truth = [{h.item_id for h in exact.search(q[None], top=10)} for q in queries]
    ref50, ref99 = latency_ms(exact, queries)
    print(f"{'exact':>6} {build_s:>8.1f} {grown:>8.0f} {size:>8.0f} {ref50:>8.2f} {ref99:>8.2f} "
          f"{1.0:>10.3f} {1.0:>12.1f}", flush=True)
    del exact
    for kind in args.kinds:
        index, build_s, grown, size = timed_build(vectors, table, kind)
        knob, values = SEARCH_KNOBS[kind]
        for value in values:
            index.manifest["search"]["params"][knob] = value
            p50, p99 = latency_ms(index, queries)
            recall = np.mean([len(t & {h.item_id for h in index.search(q[None], top=10)}) / 10
                              for q, t in zip(queries, truth)])
            print(f"{kind:>6} {build_s:>8.1f} {grown:>8.0f} {size:>8.0f} {p50:>8.2f} "
                  f"{p99:>8.2f} {recall:>10.3f} {ref50 / p50:>12.1f}  "
                  f"{index.manifest['search']['params']}", flush=True)
        del index


def main(argv=None) -> None:
    args = parse_args(argv)
    import faiss
    import torch

    global BUILD_THREADS, SEARCH_THREADS
    BUILD_THREADS = args.threads
    SEARCH_THREADS = args.search_threads or args.threads
    faiss.omp_set_num_threads(SEARCH_THREADS)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# recommend index benchmark: faiss {faiss.__version__}, {BUILD_THREADS} build / "
          f"{SEARCH_THREADS} search thread(s), {os.cpu_count()} cores "
          f"({platform.processor() or platform.machine()}, load average {load}), "
          f"d={args.dim}, {args.queries} queries, top 10")
    print("# reference (brief): exact inner product over 1,000,000 x 256 float32 ~200 ms/query "
          "on 2 cores; target p99 < 20 ms at 1,000,000 windows with recall@10 >= 0.95")
    exact_latency(args, rng)
    approximate(args, rng)


if __name__ == "__main__":
    main()
