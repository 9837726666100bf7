"""Peak memory and throughput of one training epoch, streamed from the store or copied in memory.

Writes a synthetic feature store of ``--tracks`` training tracks (30 to 40 clips, ``--video-dim``
/ ``--audio-dim`` float16 features, shards of 500 tracks) and one ``--scale`` times larger, then
trains one epoch of a small MVPt on each, twice: reading every batch from the memory-mapped shards
(what ``mvpt train`` does) and with ``--in-memory`` (each split copied into memory first, the
reference). Every run is its own subprocess, so its peak resident memory (``ru_maxrss``) is its
own. Prints peak RSS and tracks/s per run, how much the peak grows from the small store to the
large one, and the streamed throughput over the in-memory one. The store is read from the OS page
cache (it was just written); a cold disk is slower for both.

    PYTHONPATH=src python3 benchmarks/train_memory.py                  # 500 and 4000 tracks
    PYTHONPATH=src python3 benchmarks/train_memory.py --tracks 2000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fixtures

MODES = ("streamed", "in-memory")


def child(store: str, mode: str, args) -> None:
    """Train one epoch and print a JSON line: peak RSS (MB) and tracks/s."""
    from mvpt.train import train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(store, Path(tmp) / "run", model="mvpt", device=args.device,
                       model_overrides={"d_hidden": args.d_hidden,
                                        "d_feedforward": 2 * args.d_hidden, "d_joint": 64},
                       epochs=1, batch_size=args.batch_size, in_memory=mode == "in-memory",
                       progress=False)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_mb": peak_kb / 1024,
                      "tracks_per_s": result["final"]["tracks_per_s"]}))


def measure(store: Path, mode: str, args) -> dict:
    command = [sys.executable, __file__, "--child", str(store), mode, *_shared_args(args)]
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
    parser.add_argument("--child", nargs=2, metavar=("STORE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args)
        return
    from tests.fixtures.stores import make_synthetic_store

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, args.scale):
            path = Path(tmp) / f"store{scale}"
            make_synthetic_store(path, n_train=args.tracks * scale, n_val=0,
                                 video_dim=args.video_dim, audio_dim=args.audio_dim,
                                 clips_range=(30, 40), shard_size=500)
            for mode in MODES:
                rows.append({"scale": scale, "mode": mode, "store_mb": store_mb(path),
                             **measure(path, mode, args)})
                print(f"{args.tracks * scale:6d} tracks ({rows[-1]['store_mb']:7.1f} MB store), "
                      f"{mode:9s}: peak RSS {rows[-1]['peak_rss_mb']:7.1f} MB, "
                      f"{rows[-1]['tracks_per_s']:7.1f} tracks/s", flush=True)
    report(rows, args)


def report(rows: list[dict], args) -> None:
    by = {(r["scale"], r["mode"]): r for r in rows}
    print(f"\nthreads: MVPT_THREADS={os.environ.get('MVPT_THREADS', 'all cores')}, device "
          f"{args.device}, batch {args.batch_size}, MVPt d_hidden {args.d_hidden}")
    for mode in MODES:
        small, large = by[(1, mode)], by[(args.scale, mode)]
        growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
        print(f"{mode:9s}: peak RSS {small['peak_rss_mb']:.0f} -> {large['peak_rss_mb']:.0f} MB "
              f"for a {args.scale}x store: {100 * growth:+.1f} %")
    for scale in (1, args.scale):
        ratio = by[(scale, "streamed")]["tracks_per_s"] / by[(scale, "in-memory")]["tracks_per_s"]
        print(f"{scale}x store: streamed / in-memory tracks/s = {ratio:.3f}")


if __name__ == "__main__":
    main()
