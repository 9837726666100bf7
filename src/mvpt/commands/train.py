"""`mvpt train STORE --out RUN`: train MVPt or a baseline on a feature store."""

from __future__ import annotations

import logging
import sys

from mvpt.commands.common import (
    add_json_option,
    emit_json,
    positive_float,
    positive_int,
)
from mvpt.settings import BEST_BY, DEFAULT_GRAD_CLIP, DEFAULT_LR, WINDOW_POLICIES, RunConfig

DEFAULTS = RunConfig()


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model on a feature store",
        description="Train on the store's train split with symmetric InfoNCE over the batch, "
        "validating track- and segment-level retrieval on its val split each epoch. Writes "
        "RUN/best.pt, RUN/last.pt, RUN/config.json and RUN/metrics.jsonl (one line per epoch). Under "
        "torchrun (`torchrun --nproc_per_node N -m mvpt.cli train ...`) the global batch is "
        "split over the processes.")
    p.add_argument("store", metavar="STORE", help="feature store folder (from `mvpt extract`)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    p.add_argument("--model", default="mvpt",
                   help="architecture: mvpt, mlp, linear (see `mvpt models`) or a JSON config "
                   "path (default mvpt)")
    p.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs,
                   help="epochs (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="global batch in windows, all processes together (with two windows "
                   "per track, half as many tracks); each window is a negative for every other "
                   "(default: the paper's 2048, or an eighth of a smaller training set, at "
                   "least 16; clamped to the training set)")
    p.add_argument("--chunk-size", type=positive_int, default=None, metavar="N",
                   help="tracks per forward pass with gradients (cached embeddings, same loss "
                   "and gradient as one pass; default: the whole batch in one pass)")
    p.add_argument("--lr", type=positive_float, default=DEFAULTS.lr,
                   help=f"peak learning rate, cosine-annealed per step (default {DEFAULT_LR} for "
                   "a new run, the run's own with --resume; the paper's: 1e-3)")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay,
                   help="AdamW weight decay (default %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=DEFAULTS.warmup_steps,
                   help="linear warm-up steps before the cosine (default: --warmup-share of "
                   "the run's steps)")
    p.add_argument("--warmup-share", type=float, default=DEFAULTS.warmup_share, metavar="F",
                   help="warm-up as a share of the run's steps, when --warmup-steps is not "
                   "given (default %(default)s)")
    p.add_argument("--min-clips", type=positive_int, default=DEFAULTS.min_clips,
                   help="shortest training window in clips; the longest is the model's K "
                   "(default %(default)s)")
    p.add_argument("--window-policy", choices=WINDOW_POLICIES,
                   default=DEFAULTS.window_policy,
                   help="training window lengths: per-batch draws one length in [min-clips, K] "
                   "per batch, shared by all its tracks and capped by its shortest track (no "
                   "length cue); fixed: always K (capped the same way); per-track: one length "
                   "per track, the sampler before issue 10, for resuming runs started with it "
                   "(default %(default)s)")
    p.add_argument("--windows-per-track", type=int, choices=(1, 2),
                   default=None,
                   help="2: two windows of each track in a batch, at least a third of their "
                   "length apart, when its tracks leave room, each a negative of the other's "
                   "pair (timing inside the window tells them apart); 1: one window per track "
                   "(default: 2, or 1 with --window-policy per-track)")
    p.add_argument("--best-by", choices=BEST_BY, default=None,
                   help="which epoch RUN/best.pt keeps, judged on the val split: r1, the best "
                   "mean R@1 of both directions at track and segment (10 s) level, a tie going "
                   "to the later epoch; track-r10, the best track-level mean R@10 (ties: R@1, "
                   "then the earlier epoch; the rule before this option); last, the last epoch "
                   "(default: r1, or a resumed run's own)")
    p.add_argument("--reverse-share", type=float, default=DEFAULTS.reverse_share, metavar="F",
                   help="share of training windows whose clips play in reverse order, video "
                   "and music alike, drawn anew each epoch: the same sections in another order "
                   "(default %(default)s)")
    p.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip, metavar="NORM",
                   help="scale the gradients down to this L2 norm (all parameters together) "
                   "before each step when longer; 0: no clipping (default: "
                   f"{DEFAULT_GRAD_CLIP:g} for a new run, the run's own with --resume)")
    p.add_argument("--in-memory", action="store_true",
                   help="copy the train and val splits into memory first instead of reading "
                   "each batch from the store's memory-mapped shards (same results)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   default=DEFAULTS.precision,
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help="seed of init, windows, order (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN from its last.pt (same settings; --epochs may grow: the "
                   "learning-rate schedule keeps its course, then restarts its cosine from the "
                   "peak over the added epochs)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mvpt.train import train

    logging.basicConfig(level=logging.INFO, format="mvpt train: %(message)s", stream=sys.stderr)
    summary = train(
        args.store, args.out, model=args.model, resume=args.resume, device=args.device,
        progress=not args.no_progress, epochs=args.epochs, batch_size=args.batch_size,
        chunk_size=args.chunk_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, warmup_share=args.warmup_share,
        min_clips=args.min_clips,
        window_policy=args.window_policy, windows_per_track=args.windows_per_track,
        best_by=args.best_by, reverse_share=args.reverse_share, grad_clip=args.grad_clip,
        in_memory=args.in_memory, precision=args.precision,
        seed=args.seed)
    if summary["world_size"] > 1 and not _is_rank0():
        return 0
    if emit_json(args, summary):
        return 0
    final, best = summary["final"], summary["best"]
    r1 = final.get("val_r1_levels")
    print(f"{summary['run_dir']}: {summary['kind']} model {summary['model']!r}, "
          f"{summary['epochs']} epochs, {summary['steps']} steps, global batch "
          f"{summary['global_batch_size']} over {summary['world_size']} process(es); "
          f"last val mean R@1 (track and segment) {'-' if r1 is None else f'{r1:.3f}'}; "
          f"best.pt: epoch {best.get('epoch')} ({summary['best_by']})")
    return 0


def _is_rank0() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
