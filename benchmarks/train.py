"""Training throughput (tracks/s) and achieved FLOP/s of a model, beside a plain matmul.

One training step = forward and backward of both branches over a batch of time-aligned windows
(one length per batch, 10 to 30 clips, as training draws them) + the InfoNCE loss + an AdamW
step. FLOPs of one forward+backward are counted with torch.utils.flop_counter.FlopCounterMode
(matmuls and attention); achieved FLOP/s is that count over the measured step time, printed
beside the FLOP/s of a float32 1024x1024 matmul measured in the same run, and their ratio. With
--chunk-size the same batch also runs through cached embeddings (GradCache: one extra forward
pass), and the ratio of the two is printed. Memory and streaming: benchmarks/train_memory.py.

    PYTHONPATH=src python3 benchmarks/train.py                          # MVPt, 1280/1024-d inputs
    PYTHONPATH=src python3 benchmarks/train.py --model mlp --batch-size 512
    PYTHONPATH=src python3 benchmarks/train.py --chunk-size 32 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fixtures
import numpy as np
import torch
from common import matmul_flops
from torch.utils.flop_counter import FlopCounterMode

from mvpt.encoders.base import set_torch_threads
from mvpt.models import build_model, load_config
from mvpt.store import FeatureStore
from mvpt.train import (
    contrastive_backward,
    epoch_plan,
    gather_batch,
)

from tests.fixtures.stores import make_synthetic_store


def batches(features, *, batch_size: int, steps: int, max_clips: int, device):
    """``steps`` batches of the synthetic training split, windows of 10 to ``max_clips`` clips
    (one length per batch)."""
    tracks, starts, lengths = epoch_plan(len(features), seed=0, epoch=1, batch_size=batch_size,
                                         min_clips=10, max_clips=max_clips,
                                         n_clips=features.n_clips)
    for s in range(steps):
        part = slice(s * batch_size, (s + 1) * batch_size)
        yield gather_batch(features, tracks[part], starts[part], lengths[part]).to(device)


def time_steps(model, optimizer, data, *, chunk_size, device) -> float:
    """Mean seconds per training step (the first batch is a warm-up, not timed)."""
    times = []
    for i, batch in enumerate(data):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        contrastive_backward(model, batch, chunk_size=chunk_size)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return float(np.mean(times))


def count_flops(model, batch, *, chunk_size) -> int:
    with FlopCounterMode(display=False) as counter:
        contrastive_backward(model, batch, chunk_size=chunk_size)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mvpt", help="config name or JSON path (mvpt)")
    parser.add_argument("--tracks", type=int, default=512, help="synthetic training tracks")
    parser.add_argument("--batch-size", type=int, default=128, help="tracks per step (128)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after 1 warm-up)")
    parser.add_argument("--chunk-size", type=int, default=None, help="also time GradCache")
    parser.add_argument("--video-dim", type=int, default=1280)
    parser.add_argument("--audio-dim", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    threads = set_torch_threads()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_store(Path(tmp) / "store", n_train=args.tracks, n_val=0,
                             video_dim=args.video_dim, audio_dim=args.audio_dim,
                             clips_range=(30, 40))  # never shorter than a window
        features = FeatureStore.open(Path(tmp) / "store").load(split="train",
                                                               arrays=("video", "audio"))
    torch.manual_seed(0)
    config = load_config(args.model)
    model = build_model(config, video_dim=args.video_dim, audio_dim=args.audio_dim).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_steps = min(args.steps + 1, args.tracks // args.batch_size)
    make = lambda: batches(features, batch_size=args.batch_size, steps=n_steps,
                           max_clips=config.max_clips, device=device)
    reference = matmul_flops(1024)
    flops = count_flops(model, next(make()), chunk_size=None)
    seconds = time_steps(model, optimizer, make(), chunk_size=None, device=device)
    print(f"device {device} ({threads} threads), model {config.name} ({config.kind}), "
          f"inputs video {args.video_dim} / audio {args.audio_dim}, batch {args.batch_size}, "
          f"{n_steps - 1} timed steps, windows of 10-{config.max_clips} clips")
    print(f"step: {seconds:.3f} s, {args.batch_size / seconds:.1f} tracks/s")
    print(f"forward+backward: {flops / 1e9:.2f} GFLOP per step "
          f"({flops / args.batch_size / 1e6:.1f} MFLOP per track)")
    print(f"achieved: {flops / seconds / 1e9:.2f} GFLOP/s; plain float32 1024x1024 matmul: "
          f"{reference / 1e9:.2f} GFLOP/s; ratio {flops / seconds / reference:.3f}")
    if args.chunk_size:
        cached = time_steps(model, optimizer, make(), chunk_size=args.chunk_size, device=device)
        print(f"cached embeddings, chunks of {args.chunk_size}: {cached:.3f} s per step, "
              f"{args.batch_size / cached:.1f} tracks/s; {cached / seconds:.2f}x the time of one "
              "pass (one extra forward)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
