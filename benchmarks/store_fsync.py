"""What durable shard writes cost: FeatureStore.write_shard as shipped (every file flushed to
disk before its rename, and its folder after) against the same writes with fsync made a no-op,
measured alternately in one run on the same disk.

    python benchmarks/store_fsync.py [FOLDER]     # FOLDER: where to write (default: the temp dir)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

from mvpt.store import FeatureStore, ItemResult

DIMS = {"video": 1280, "audio": 1024, "audio_scores": 521}  # the default encoders' arrays
MANIFEST = {"clip_s": 1.0, "max_clips": 30, "frames_per_clip": 1, "encoders": {
    "video": {"name": "v", "version": "1", "dim": 1280},
    "audio": {"name": "a", "version": "1", "dim": 1024, "extras": {"scores": 521}}}}


def shard_items(rng, n_items: int = 16, clips: int = 30) -> list[ItemResult]:
    return [ItemResult(id=f"i{k}", source_path=f"/m/{k}.mp4", split="train", status="done",
                       arrays={n: rng.standard_normal((clips, d)).astype(np.float16)
                               for n, d in DIMS.items()})
            for k in range(n_items)]


def main(folder: str | None, repeats: int = 8) -> None:
    batch = shard_items(np.random.default_rng(0))
    real_fsync = os.fsync
    times: dict[str, list[float]] = {"durable (fsync)": [], "reference (fsync a no-op)": []}
    with tempfile.TemporaryDirectory(dir=folder) as root:
        stores = {mode: FeatureStore.create(f"{root}/s{k}", MANIFEST)
                  for k, mode in enumerate(times)}
        try:
            for _ in range(repeats):
                for mode, store in stores.items():
                    os.fsync = real_fsync if mode.startswith("durable") else (lambda fd: None)
                    start = time.perf_counter()
                    store.write_shard(batch)
                    times[mode].append(time.perf_counter() - start)
        finally:
            os.fsync = real_fsync
    megabytes = sum(a.nbytes for r in batch for a in r.arrays.values()) / 1e6
    for mode, values in times.items():
        print(f"{mode:26s} median {1000 * np.median(values):7.1f} ms per shard "
              f"(16 items x 30 clips, {megabytes:.1f} MB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
