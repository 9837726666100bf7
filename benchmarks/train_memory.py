"""Peak memory and throughput of one training epoch, streamed from the store or copied in memory.

Writes a synthetic feature store of ``--tracks`` training tracks (30 to 40 clips, ``--video-dim``
/ ``--audio-dim`` float16 features, shards of 500 tracks) and one ``--scale`` times larger, then
trains one epoch of a small MVPt on each, twice: reading every batch from the memory-mapped shards
(what ``mvpt train`` does) and with ``--in-memory`` (each split copied into memory first, the
reference). Every run is its own subprocess, so its peak resident memory (``ru_maxrss``) is its
own. A control run streams the small store for ``--scale`` epochs: as many steps as one epoch of
the large store, so what grows with the number of steps (the allocator's heap) shows apart from
what grows with the store. Each run is repeated ``--repeats`` times, interleaved; the table keeps
the highest peak and the best throughput. Prints peak RSS and tracks/s per run, how much the
peak grows from the small store to the large one, and the streamed throughput over the in-memory
one: each repeat runs both modes back to back, so its ratio compares runs that met the same state
of the machine, and the headline is the median of those paired ratios (each mode's runs spread by
up to a tenth from one to the next). The store is read from the OS page cache (it was just
written); a cold disk is slower for both.

    PYTHONPATH=src python3 benchmarks/train_memory.py                  # 500 and 4000 tracks
    PYTHONPATH=src python3 benchmarks/train_memory.py --tracks 2000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fixtures

MODES = ("streamed", "in-memory")


def child(store: str, mode: str, epochs: str, args) -> None:
    """Train and print a JSON line: peak RSS (MB) and tracks/s of the last epoch."""
    from mvpt.train import train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(store, Path(tmp) / "run", model="mvpt", device=args.device,
                       model_overrides={"d_hidden": args.d_hidden,
                                        "d_feedforward": 2 * args.d_hidden, "d_joint": 64},
                       epochs=int(epochs), batch_size=args.batch_size,
                       in_memory=mode == "in-memory", progress=False)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_mb": peak_kb / 1024,
                      "tracks_per_s": result["final"]["tracks_per_s"]}))


def measure(store: Path, mode: str, epochs: int, args) -> dict:
    command = [sys.executable, __file__, "--child", str(store), mode, str(epochs),
               *_shared_args(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run on {store} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shared_args(args) -> list[str]:
    return ["--batch-size", str(args.batch_size), "--d-hidden", str(args.d_hidden),
            "--device", args.device]


def store_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*.npy")) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=500, help="tracks of the small store")
    parser.add_argument("--scale", type=int, default=8, help="size of the large store (8x)")
    parser.add_argument("--video-dim", type=int, default=1280)
    parser.add_argument("--audio-dim", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--d-hidden", type=int, default=64, help="MVPt width (small: the "
                        "data path weighs more in the step time)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind (3)")
    parser.add_argument("--child", nargs=3, metavar=("STORE", "MODE", "EPOCHS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args)
        return
    from tests.fixtures.stores import make_synthetic_store

    runs = {}  # (label, mode) -> best of the repeats
    rounds: dict[str, list[float]] = {}  # label -> streamed / in-memory tracks/s, per repeat
    latest: dict[tuple[str, str], float] = {}  # (label, mode) -> tracks/s of this repeat
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for scale in (1, args.scale):
            stores[scale] = Path(tmp) / f"store{scale}"
            make_synthetic_store(stores[scale], n_train=args.tracks * scale, n_val=0,
                                 video_dim=args.video_dim, audio_dim=args.audio_dim,
                                 clips_range=(30, 40), shard_size=500)
        kinds = [(f"{scale}x", scale, mode, 1) for scale in (1, args.scale) for mode in MODES]
        kinds.append((f"1x, {args.scale} epochs", 1, "streamed", args.scale))
        for repeat in range(args.repeats):
            for label, scale, mode, epochs in kinds:
                got = measure(stores[scale], mode, epochs, args)
                print(f"run {repeat + 1}: {label:13s} {mode:9s} ({store_mb(stores[scale]):6.1f} "
                      f"MB store): peak RSS {got['peak_rss_mb']:7.1f} MB, "
                      f"{got['tracks_per_s']:7.1f} tracks/s", flush=True)
                latest[(label, mode)] = got["tracks_per_s"]
                if mode == MODES[-1]:  # both modes of this label ran in this repeat
                    rounds.setdefault(label, []).append(
                        latest[(label, "streamed")] / latest[(label, "in-memory")])
                best = runs.setdefault((label, mode), dict(got))
                best["peak_rss_mb"] = max(best["peak_rss_mb"], got["peak_rss_mb"])
                best["tracks_per_s"] = max(best["tracks_per_s"], got["tracks_per_s"])
    report(runs, rounds, args)


def report(runs: dict, rounds: dict, args) -> None:
    print(f"\nthreads: MVPT_THREADS={os.environ.get('MVPT_THREADS', 'all cores')}, device "
          f"{args.device}, batch {args.batch_size}, MVPt d_hidden {args.d_hidden}, "
          f"{args.tracks} and {args.tracks * args.scale} tracks; best of {args.repeats}")
    print("| store | mode | peak RSS MB | tracks/s |\n|---|---|---:|---:|")
    for (label, mode), got in runs.items():
        print(f"| {label} | {mode} | {got['peak_rss_mb']:.0f} | {got['tracks_per_s']:.1f} |")
    large = f"{args.scale}x"
    for mode in MODES:
        growth = runs[(large, mode)]["peak_rss_mb"] / runs[("1x", mode)]["peak_rss_mb"] - 1
        print(f"{mode}: peak RSS {large} store / 1x store: {100 * growth:+.1f} %")
    control = runs[(f"1x, {args.scale} epochs", "streamed")]["peak_rss_mb"]
    print(f"streamed, 1x store for {args.scale} epochs / 1 epoch (same steps as the {large} "
          f"epoch): {100 * (control / runs[('1x', 'streamed')]['peak_rss_mb'] - 1):+.1f} %")
    for label in ("1x", large):
        paired = rounds[label]
        print(f"{label} store: streamed / in-memory tracks/s = {statistics.median(paired):.3f} "
              f"(median of {len(paired)} paired rounds: "
              f"{', '.join(f'{r:.3f}' for r in paired)})")


if __name__ == "__main__":
    main()
