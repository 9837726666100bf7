"""Train a model of :mod:`mvpt.models` on a feature store: ``mvpt train STORE --out RUN``.

A track (a video with its soundtrack) is one example. Each epoch draws, with a generator seeded by
(seed, epoch), the track order and time-aligned windows for both modalities, at random positions
in the track (one or two per track and batch: ``windows_per_track`` below). Window lengths follow
``window_policy``:

* ``per-batch`` (default): one length per batch, uniform between ``min_clips`` (10) and K
  (``max_clips`` of the model, 30) clips, shared by every track of the batch;
* ``fixed``: always K clips;
* ``per-track``: a length per track (the sampler before issue 10, kept so that runs started with
  it resume exactly). Inside a batch a window's length then tells its pair apart from the others
  (up to ln(B / tracks per length) nats of loss), a cue that real queries do not carry.

In both shared policies the length is capped by the shortest track of the batch, so that all
windows of a batch have the same length and no padding is needed: length is no cue at all. The
price: a store with tracks shorter than K trains on shorter windows (``window_clips`` in
``metrics.jsonl`` is the epoch's mean); tracks of at least K clips never shorten a batch.

With a shared length, ``windows_per_track`` 2 (the default) fills a batch with two windows of
each of half as many tracks, at least a third of the window apart, whenever its tracks leave
room (a window of all K clips of a K-clip track does not): each window is then a negative of
its twin's pair. The twins share the track's content, so only where things happen inside the
window tells them apart, which is the timing the Transformer sees and a mean of clips does not.
An epoch keeps its n_train // B steps (tracks are drawn from further permutations).

An option, off by default: ``reverse_share`` of the windows, drawn anew each epoch, play
backwards, their clips in reverse order, video and music alike, so the pair stays aligned clip by
clip. A window played backwards holds the same sections in another order, as the order-only
siblings of a library do (an edit or a remix of one song): more orders to learn from than the
training tracks have, and the same mean, so a model that pools by the mean sees no change. 0.5
was measured on the feature suite and not taken.

Loss: symmetric InfoNCE over the whole global batch (2048: every other track of the batch is a
negative) with a learnable temperature; AdamW; cosine annealing from ``lr`` per step after a
linear warm-up (5e-4: the paper's 1e-3 left MVPt stalled for some seeds on small stores; see
:data:`mvpt.settings.DEFAULT_LR`). ``--resume`` with more epochs keeps the schedule planned so far
(no jump of the learning rate mid-run) and appends a warm restart: a second cosine, from the peak,
over the added steps (:class:`CosineCycles`). Validation each epoch: retrieval on the ``val``
split as ``mvpt eval`` ranks it, at track level (centred windows) and segment level (10 s
segments among all of the split's); ``best.pt`` keeps the best mean R@1 of the two levels (ties:
the later epoch; ``best_by`` sets another rule), ``last.pt`` everything needed to resume exactly
(model, optimizer, scheduler, scaler, epoch, RNG states). ``metrics.jsonl`` has one JSON object
per epoch.

Batches are read straight from the store's memory-mapped shards (:mod:`mvpt.streaming`; no copy
of a whole split, so memory does not grow with the store) by a background thread that prepares
the next batches while the current one trains; ``in_memory`` copies the splits into memory first.
Both give the same windows, bit for bit.

Big batches never use plain gradient accumulation, which would shrink the set of negatives:
``chunk_size`` turns on cached embeddings (GradCache): embeddings of the whole local batch are
computed without gradients in chunks, the loss over the global batch gives the gradient with
respect to each embedding, then each chunk is re-run with gradients (same RNG state, so the same
dropout) and back-propagates that cached gradient. Across processes the embeddings are all-gathered
with gradients, so every process sees the global batch; each process holds a contiguous slice of
it; only rank 0 validates and writes.

Commands (``-m mvpt.cli`` is the ``mvpt`` command under torchrun)::

    # one CPU (all cores; MVPT_THREADS=n to limit)
    mvpt train STORE --out RUN
    # one GPU
    mvpt train STORE --out RUN --device cuda
    # several GPUs on one machine (NCCL): the paper's global batch of 2048, 256 per GPU
    torchrun --standalone --nproc_per_node 8 -m mvpt.cli train STORE --out RUN --batch-size 2048
    # several processes on one CPU machine (gloo)
    torchrun --standalone --nproc_per_node 2 -m mvpt.cli train STORE --out RUN --device cpu
    # several machines (run on each; HOST:PORT is one of them)
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_id RUNID --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 -m mvpt.cli train STORE --out RUN
    # memory-bound: same loss and gradient with chunks of 256 tracks per forward pass
    mvpt train STORE --out RUN --chunk-size 256
    # continue a killed run exactly where its last checkpoint left it
    mvpt train STORE --out RUN --resume

Batch arithmetic under torchrun: ``--batch-size`` is always the global batch B, all processes
together (rounded down to a multiple of the W processes); each process holds B / W tracks, and
the loss is taken over all B (embeddings all-gathered), so the negatives do not depend on W. For
the paper's 2048: 8 GPUs hold 256 tracks each, 2 machines of 8 GPUs 128 each. A process that
cannot fit its B / W tracks in one pass adds ``--chunk-size C``: ceil(B / W / C) forward passes
with gradients per step (e.g. 8 GPUs, ``--chunk-size 64``: 4 chunks of 64), same loss and
gradient. Steps per epoch are n_train // B whatever W is.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mvpt.embed import encode_sequences
from mvpt.encoders.base import denormals_flushed
from mvpt.errors import ModelError, UsageError
from mvpt.models.checkpoint import (
    CHECKPOINT_NAMES,
    features_manifest,
    make_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mvpt.models.factory import build_model, load_config
from mvpt.models.loss import info_nce
from mvpt.models.mvpt import JointEmbedder
from mvpt.settings import (  # noqa: F401 (re-exported)
    DEFAULT_GRAD_CLIP, DEFAULT_LR, SEGMENT_S, WARMUP_SHARE, WINDOW_POLICIES, RunConfig)
from mvpt.store import Features, FeatureStore
from mvpt.streaming import ShardedFeatures, prefetch, window_rows

log = logging.getLogger("mvpt.train")
MODALITY_ARRAYS = ("video", "audio")


# ---------------------------------------------------------------------------- data
@dataclass
class Batch:
    """Time-aligned windows: video [B, L, Dv], audio [B, L, Da], mask [B, L] (True = clip)."""

    video: torch.Tensor
    audio: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.mask)

    def slice(self, lo: int, hi: int) -> Batch:
        return Batch(self.video[lo:hi], self.audio[lo:hi], self.mask[lo:hi])

    def to(self, device) -> Batch:
        tensors = (self.video, self.audio, self.mask)
        return Batch(*(t.to(device, non_blocking=True) for t in tensors))

    def pin_memory(self) -> Batch:
        return Batch(self.video.pin_memory(), self.audio.pin_memory(), self.mask.pin_memory())


def sample_windows(n_clips: np.ndarray, *, rng: np.random.Generator, min_clips: int,
                   max_clips: int) -> tuple[np.ndarray, np.ndarray]:
    """The "per-track" policy: (first clip, length) per track, length uniform in [min_clips,
    max_clips] clips (the whole track when shorter), position uniform over the valid ones."""
    drawn = rng.integers(min(min_clips, max_clips), max_clips + 1, size=len(n_clips))
    lengths = np.minimum(drawn, n_clips)
    return random_starts(n_clips, lengths, rng=rng), lengths


def shared_lengths(n_clips: np.ndarray, *, rng: np.random.Generator, policy: str,
                   min_clips: int, max_clips: int) -> np.ndarray:
    """One window length per batch for ``n_clips`` [steps, batch]: drawn uniform in [min_clips,
    max_clips] ("per-batch") or max_clips ("fixed"), capped by the batch's shortest track so that
    every window of a batch has the same length. Returns [steps]."""
    if policy == "fixed":
        drawn = np.full(len(n_clips), max_clips)
    else:
        drawn = rng.integers(min(min_clips, max_clips), max_clips + 1, size=len(n_clips))
    return np.minimum(drawn, n_clips.min(axis=1, initial=max_clips))


def random_starts(n_clips: np.ndarray, lengths: np.ndarray, *,
                  rng: np.random.Generator) -> np.ndarray:
    """First clip of each window, uniform over the valid positions."""
    return np.floor(rng.random(len(n_clips)) * (n_clips - lengths + 1)).astype(np.int64)


def gather_batch(features: Features | ShardedFeatures, tracks: np.ndarray, starts: np.ndarray,
                 lengths: np.ndarray, backwards: np.ndarray | None = None) -> Batch:
    """The windows [starts, starts + lengths) of ``tracks`` as a zero-padded float32 Batch, from
    features in memory or read from the store's shards (same values). Where ``backwards`` [B] is
    True the window's clips come in reverse order, video and audio alike."""
    rows, mask = window_rows(starts, lengths)
    if backwards is not None and backwards.any():  # clip start + i -> start + length - 1 - i
        flipped = 2 * starts[:, None] + lengths[:, None] - 1 - rows
        rows = np.where(backwards[:, None], flipped, rows)
    keep = torch.from_numpy(mask)
    padded = not mask.all()  # (windows of one length, as the shared policies give: no padding)
    out = []
    for name in MODALITY_ARRAYS:
        if isinstance(features, ShardedFeatures):
            clips = features.windows(name, tracks, rows)
        else:
            clips = features.arrays[name][features.offsets[tracks][:, None] + rows]
        x = torch.from_numpy(clips).float()
        out.append(x * keep[..., None] if padded else x)
    return Batch(out[0], out[1], keep)


def epoch_plan(n_tracks: int, *, seed: int, epoch: int, batch_size: int, min_clips: int,
               max_clips: int, n_clips: np.ndarray, policy: str = "per-batch",
               windows_per_track: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The epoch's track order and windows, identical in every process: (tracks, starts,
    lengths), each [steps * batch_size], steps = n_tracks // batch_size (the incomplete last
    batch is dropped). With ``windows_per_track`` 2 see :func:`paired_plan`."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_tracks)
    used = (n_tracks // batch_size) * batch_size
    if policy == "per-track":
        starts, lengths = sample_windows(n_clips[order], rng=rng, min_clips=min_clips,
                                         max_clips=max_clips)
        return order[:used], starts[:used], lengths[:used]
    if windows_per_track == 2:
        return paired_plan(order, rng=rng, steps=n_tracks // batch_size, batch_size=batch_size,
                           min_clips=min_clips, max_clips=max_clips, n_clips=n_clips,
                           policy=policy)
    order = order[:used]
    lengths = np.repeat(shared_lengths(n_clips[order].reshape(-1, batch_size), rng=rng,
                                       policy=policy, min_clips=min_clips,
                                       max_clips=max_clips), batch_size)
    return order, random_starts(n_clips[order], lengths, rng=rng), lengths


def backward_windows(n_windows: int, *, seed: int, epoch: int, share: float) -> np.ndarray:
    """Which windows of the epoch's plan play backwards (``reverse_share``): bool [n_windows],
    each True with probability ``share``, from a generator of their own seeded by (seed, epoch),
    so that the plan's tracks and windows stay those of a run without reversal."""
    if share <= 0:
        return np.zeros(n_windows, dtype=bool)
    return np.random.default_rng([seed, epoch, _REVERSE_STREAM]).random(n_windows) < share


_REVERSE_STREAM = 1  # tells the reversal's generator from epoch_plan's ([seed, epoch])


def paired_plan(order: np.ndarray, *, rng: np.random.Generator, steps: int, batch_size: int,
                min_clips: int, max_clips: int, n_clips: np.ndarray,
                policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batches of two windows per track: for each batch a length L is drawn as in
    :func:`shared_lengths`; when the next batch_size // 2 tracks of ``order`` all leave room for
    two windows of L clips whose starts differ by at least max(1, L // 3), each of them gives
    two such windows, side by side (plus one lone window when batch_size is odd); otherwise the
    batch is batch_size tracks of one window each, as with one window per track. Tracks are
    taken from ``order``, then from further permutations, so an epoch keeps its steps."""
    n_tracks = len(order)
    queue = np.concatenate([order] + [rng.permutation(n_tracks) for _ in range(2)])
    drawn = shared_lengths(np.full((steps, 1), max_clips), rng=rng, policy=policy,
                           min_clips=min_clips, max_clips=max_clips)
    tracks, lengths, pairs = [], [], []
    at, half = 0, batch_size // 2
    for step, length in enumerate(drawn):
        gap = max(1, int(length) // 3)
        candidates = queue[at:at + half]
        if half and n_clips[candidates].min() - length >= gap:
            at += half
            batch = np.repeat(candidates, 2)
            if batch_size % 2:
                batch, at = np.append(batch, queue[at]), at + 1
            pairs.append(np.arange(step * batch_size, step * batch_size + 2 * half, 2))
        else:
            batch, at = queue[at:at + batch_size], at + batch_size
        tracks.append(batch)
        lengths.append(np.full(batch_size, min(int(length), int(n_clips[batch].min()))))
    tracks, lengths = np.concatenate(tracks), np.concatenate(lengths)
    starts = random_starts(n_clips[tracks], lengths, rng=rng)
    if pairs:
        first = np.concatenate(pairs)
        a, b = separated_starts(n_clips[tracks[first]] - lengths[first],
                                np.maximum(1, lengths[first] // 3), rng=rng)
        starts[first], starts[first + 1] = a, b
    return tracks, starts, lengths


def separated_starts(room: np.ndarray, gap: np.ndarray, *,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two starts in [0, room] per window pair, at least ``gap`` apart (needs room >= gap): the
    first uniform (moved to 0 when no second fits beside it), the second uniform over the
    positions at least ``gap`` from it on either side."""
    a = np.floor(rng.random(len(room)) * (room + 1)).astype(np.int64)
    left, right = np.maximum(0, a - gap + 1), np.maximum(0, room - a - gap + 1)
    stuck = left + right == 0
    a[stuck], left[stuck], right[stuck] = 0, 0, room[stuck] - gap[stuck] + 1
    k = np.floor(rng.random(len(room)) * (left + right)).astype(np.int64)
    b = np.where(k < left, k, a + gap + (k - left))
    return a, b


# ---------------------------------------------------------------------------- distribution
@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    ctx = DistContext(device=dev, local_rank=local_rank)
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            ctx.initialised_here = True
        ctx.rank, ctx.world_size = dist.get_rank(), dist.get_world_size()
    return ctx


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every process's [n, d] tensor; the backward pass sums the incoming gradients
    over processes and returns this process's slice (works on gloo and NCCL)."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), len(x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """All-reduce mean of every gradient (one flat buffer). With the gather above, whose backward
    sums over processes, this yields exactly the gradient of the global-batch loss."""
    if world_size == 1:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world_size
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p.grad))


# ---------------------------------------------------------------------------- the step
def contrastive_backward(model: JointEmbedder, batch: Batch, *, chunk_size: int | None = None,
                         autocast=nullcontext, scale=lambda loss: loss) -> float:
    """Accumulate into ``.grad`` the gradient of the InfoNCE loss over the global batch (this
    process's ``batch`` plus the other processes' slices); returns the loss. ``chunk_size``:
    tracks per forward pass with gradients (GradCache); None: one pass for the whole batch."""
    if chunk_size is None or chunk_size >= len(batch):
        with autocast():
            video, audio = model(batch.video, batch.mask, batch.audio, batch.mask)
        loss = info_nce(gather_with_grad(video), gather_with_grad(audio), model.logit_scale())
        scale(loss).backward()
        return float(loss.detach())
    bounds = [(lo, min(lo + chunk_size, len(batch))) for lo in range(0, len(batch), chunk_size)]
    states, cached = [], []
    with torch.no_grad():
        for lo, hi in bounds:
            states.append(rng_state())
            part = batch.slice(lo, hi)
            with autocast():
                cached.append(model(part.video, part.mask, part.audio, part.mask))
    video = torch.cat([v for v, _ in cached]).float().requires_grad_()
    audio = torch.cat([a for _, a in cached]).float().requires_grad_()
    loss = info_nce(gather_with_grad(video), gather_with_grad(audio), model.logit_scale())
    scale(loss).backward()
    after = rng_state()
    for (lo, hi), state in zip(bounds, states):
        set_rng_state(state)
        part = batch.slice(lo, hi)
        with autocast():
            v, a = model(part.video, part.mask, part.audio, part.mask)
        torch.autograd.backward([v, a], [video.grad[lo:hi].to(v.dtype),
                                         audio.grad[lo:hi].to(a.dtype)])
    set_rng_state(after)
    return float(loss.detach())


# ---------------------------------------------------------------------------- validation
def validation_metrics(model: JointEmbedder, features: Features | None, *, device,
                       segment_clips: int | None = None, batch_size: int = 256) -> dict:
    """Retrieval on ``features`` as ``mvpt eval`` ranks it: track level (centred windows of K
    clips) as flat ``val_*`` keys, plus ``val_score`` (mean R@10 of both directions) and
    ``val_r1`` (mean R@1); given ``segment_clips``, segment level too (every whole segment of
    that many clips ranked among all segments of the split), as ``val_segment_*`` and
    ``val_segment_r1``. ``val_r1_levels``: the mean R@1 of the levels ranked."""
    from mvpt.clips import segments
    from mvpt.eval import DIRECTIONS, retrieval_metrics

    if features is None or len(features) < 2:
        return {}
    cuts = {"": lambda seq: [seq]}
    if segment_clips is not None:
        cuts["segment_"] = lambda seq: [seq[first:first + n]
                                        for first, n in segments(len(seq), segment_clips)]
    was_training = model.training
    model.eval()
    out, r1 = {}, []
    for prefix, cut in cuts.items():
        emb = {m: encode_sequences(model, m, [part for i in range(len(features))
                                              for part in cut(features.item(i, m))],
                                   batch_size=batch_size, device=device)
               for m in MODALITY_ARRAYS}
        if len(emb["video"]) < 2:
            continue  # tracks shorter than one segment
        metrics = retrieval_metrics(emb["video"], emb["audio"])
        out.update({f"val_{prefix}{k}": (float(v) if isinstance(v, (int, float, np.number))
                                         else v) for k, v in metrics.items()})
        out[f"val_{prefix}r1"] = float(np.mean([metrics[f"{d}_R@1"] for d in DIRECTIONS]))
        r1.append(out[f"val_{prefix}r1"])
        if not prefix:
            out["val_score"] = float(np.mean([metrics[f"{d}_R@10"] for d in DIRECTIONS]))
    model.train(was_training)
    out["val_r1_levels"] = float(np.mean(r1))
    return out


def _is_better(metrics: dict, best: dict, *, rule: str) -> bool:
    """Whether this epoch's validation ``metrics`` replace ``best`` under ``rule`` (see
    :attr:`RunConfig.best_by`)."""
    if not metrics or not best or rule == "last":
        return True  # (no validation split: the latest model is the best we know)
    if rule == "track-r10":
        return ((metrics["val_score"], metrics["val_r1"])
                > (best.get("val_score", -1.0), best.get("val_r1", -1.0)))
    return metrics["val_r1_levels"] >= best.get("val_r1_levels", -1.0)


# ---------------------------------------------------------------------------- the run
@dataclass
class _Run:
    """Everything one training process holds."""

    ctx: DistContext
    config: RunConfig
    model: JointEmbedder
    features_info: dict
    train: Features
    val: Features | None
    out_dir: Path
    val_segment_clips: int | None = None  # segment-level validation (None: track level only)
    global_batch: int = 0
    steps_per_epoch: int = 0
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    autocast: object = nullcontext
    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    batch_clamped: bool = False
    resumed_from: int | None = None


def train(store_path, out_dir, *, model: str = "mvpt", resume: bool = False,
          device: str = "auto", progress: bool = True, model_overrides: dict | None = None,
          in_memory: bool = False, **settings) -> dict:
    """Train ``model`` (a config name, JSON path) on the train split of the feature store at
    ``store_path``, validating on its val split; write the run to ``out_dir``. ``settings``: the
    fields of :class:`RunConfig` (epochs, batch_size, lr, weight_decay, warmup_steps, warmup_share,
    min_clips, window_policy, windows_per_track, best_by, reverse_share, grad_clip, chunk_size,
    precision, seed).
    ``model_overrides`` replace model config fields.
    ``resume`` continues from ``out_dir/last.pt`` (same settings; ``epochs`` may change: more
    epochs add a warm restart of the schedule). Batches are read from the store's memory-mapped
    shards; ``in_memory`` copies each split into memory first instead (same results). Returns a
    summary: run_dir, best, final metrics, batch sizes, world size."""
    unknown = sorted(set(settings) - {f.name for f in fields(RunConfig)})
    if unknown:
        raise UsageError(f"unknown training setting(s) {unknown}")
    config = RunConfig(model=str(model), **settings)
    config.validate()
    _set_threads()
    ctx = setup_distributed(device)
    try:
        run = _prepare(store_path, out_dir, config=config, ctx=ctx, resume=resume,
                       model_overrides=model_overrides or {}, in_memory=in_memory)
        with denormals_flushed():
            if run.model.config.kind == "linear":
                _fit_linear(run)
            else:
                _train_epochs(run, progress=progress)
        return _summary(run)
    finally:
        if ctx.initialised_here:
            dist.destroy_process_group()


def _set_threads() -> None:
    from mvpt.encoders.base import set_torch_threads

    set_torch_threads()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world > 1 and not os.environ.get("MVPT_THREADS"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))


def _load_split(store: FeatureStore, split: str, *,
                in_memory: bool) -> Features | ShardedFeatures | None:
    """The split's items, read from the memory-mapped shards batch by batch, or (``in_memory``)
    copied into memory first."""
    if in_memory:
        features = store.load(split=split, arrays=MODALITY_ARRAYS)
    else:
        features = ShardedFeatures(store, split=split, arrays=MODALITY_ARRAYS)
    return features if len(features) else None


def _prepare(store_path, out_dir, *, config: RunConfig, ctx: DistContext, resume: bool,
             model_overrides: dict, in_memory: bool) -> _Run:
    store = FeatureStore.open(store_path)
    dims = store.array_dims
    missing = [m for m in MODALITY_ARRAYS if m not in dims]
    if missing:
        raise ModelError(f"{store_path}: store has no {missing} features (arrays: {sorted(dims)})")
    # The store's K (`mvpt extract --max-clips`) is only the default of a new model's; from here
    # on the model's config owns K (see mvpt.run).
    store_k = ({"max_clips": int(store.manifest["max_clips"])}
               if "max_clips" in store.manifest else {})
    model_config = load_config(config.model, **{**store_k, **model_overrides})
    torch.manual_seed(config.seed)
    model = build_model(model_config, video_dim=dims["video"], audio_dim=dims["audio"])
    train_features = _load_split(store, "train", in_memory=in_memory)
    if train_features is None:
        raise ModelError(f"{store_path}: no extracted items in split 'train'")
    val = _load_split(store, "val", in_memory=in_memory)
    if val is None:
        log.warning("%s: no 'val' split: no validation; best.pt is the last epoch", store_path)
    run = _Run(ctx=ctx, config=config, model=model.to(ctx.device),
               features_info=features_manifest(store.manifest), train=train_features, val=val,
               out_dir=Path(out_dir),
               val_segment_clips=_segment_clips(store, max_clips=model_config.max_clips))
    _check_run_dir(run, resume=resume)
    last = run.out_dir / CHECKPOINT_NAMES["last"]
    ckpt = read_checkpoint(last) if resume and last.is_file() else None
    if config.lr is None:  # the default: a new run's, or the resumed run's own
        config.lr = ckpt["run_config"]["lr"] if ckpt else DEFAULT_LR
    if config.grad_clip is None:  # the same (0.0, no clipping, in runs made before the setting)
        config.grad_clip = (ckpt["run_config"].get("grad_clip", 0.0) if ckpt
                            else DEFAULT_GRAD_CLIP)
    if model_config.kind != "linear":
        _setup_optimisation(run)
    if ckpt is not None:
        _restore(run, ckpt, store_path)
    elif ctx.world_size > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)
    _check_same_start(run)
    if ctx.is_main:
        _write_run_files(run, store_path)
    return run


def _segment_clips(store: FeatureStore, *, max_clips: int) -> int | None:
    """Clips of a validation segment (SEGMENT_S seconds), None where one would not fit the
    model's window."""
    clips = int(round(SEGMENT_S / float(store.manifest.get("clip_s", 1.0))))
    return clips if 1 <= clips <= max_clips else None


def _check_same_start(run: _Run) -> None:
    """Every process must start from the same epoch (a resume reads last.pt in each process)."""
    if run.ctx.world_size == 1:
        return
    epochs = [None] * run.ctx.world_size
    dist.all_gather_object(epochs, run.epoch)
    if len(set(epochs)) > 1:
        raise ModelError(f"{run.out_dir}: processes would start after different epochs {epochs}; "
                         "--resume needs the run folder on a filesystem every process sees")


def _check_run_dir(run: _Run, *, resume: bool) -> None:
    last = run.out_dir / CHECKPOINT_NAMES["last"]
    if last.is_file() and not resume:
        raise UsageError(f"{run.out_dir}: holds a run already; pass --resume to continue it "
                         "or choose another --out")
    if resume and not last.is_file():
        log.warning("%s: nothing to resume (no last.pt): starting a new run", run.out_dir)


PAPER_BATCH_SIZE = 2048
AUTO_STEPS_PER_EPOCH = 8


def auto_batch_size(n_train: int) -> int:
    """The paper's batch of 2048 tracks, or an eighth of a smaller training set (at least 16):
    with a batch as large as the whole set, an epoch is one optimiser step and small stores
    barely train."""
    return min(PAPER_BATCH_SIZE, max(16, n_train // AUTO_STEPS_PER_EPOCH))


def _setup_optimisation(run: _Run) -> None:
    c, ctx = run.config, run.ctx
    n = len(run.train)
    batch = c.batch_size if c.batch_size is not None else auto_batch_size(n)
    if c.batch_size is None:
        log.info("batch size %d (automatic for %d training tracks)", batch, n)
    if batch > n:
        log.warning("batch size %d is larger than the %d training tracks: clamped to %d",
                    batch, n, n)
        batch, run.batch_clamped = n, True
    batch -= batch % ctx.world_size
    if batch < 2 * ctx.world_size:
        raise UsageError(f"need at least {2 * ctx.world_size} training tracks for a contrastive "
                         f"batch over {ctx.world_size} process(es), got {n}")
    run.global_batch, run.steps_per_epoch = batch, n // batch
    decay, no_decay = [], []
    for name, p in run.model.named_parameters():
        plain = p.ndim < 2 or any(k in name for k in ("pos_embedding", "cls_token", "log_scale"))
        (no_decay if plain else decay).append(p)
    run.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": c.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=c.lr)
    # A callable object, so LambdaLR's state_dict saves (and resume restores) its cycles.
    total = c.epochs * run.steps_per_epoch
    schedule = CosineCycles(cycles=[[0, total]], warmup_steps=c.warmup_for(total))
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, schedule)
    precision = c.precision
    if precision == "auto":
        precision = "bf16" if ctx.device.type == "cuda" else "fp32"
    if precision != "fp32":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        run.autocast = lambda: torch.autocast(ctx.device.type, dtype=dtype)
    run.scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")


def lr_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class CosineCycles:
    """The learning-rate multiplier per step: cosine cycles ``[start, end)`` of steps, each with
    the linear warm-up of :func:`lr_factor`. A run has one cycle over all its steps; ``--resume``
    with more epochs keeps the cycles already planned (the learning rate never jumps mid-run)
    and appends one over the added steps: a warm restart at the peak learning rate when the
    original schedule ends."""

    cycles: list[list[int]]
    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        start, end = next((c for c in reversed(self.cycles) if step >= c[0]), self.cycles[0])
        return lr_factor(step - start, warmup_steps=self.warmup_steps, total_steps=end - start)

    def extend_to(self, total_steps: int) -> None:
        """Append a cycle that ends at ``total_steps``, if the planned ones end before it."""
        end = self.cycles[-1][1]
        if total_steps > end:
            self.cycles.append([end, total_steps])


def _restore(run: _Run, ckpt: dict, store_path) -> None:
    from mvpt.models.checkpoint import check_compatible

    check_compatible(ckpt, run.features_info, store_path=store_path)
    if ckpt["model_config"] != run.model.config.to_dict():
        raise UsageError(f"{run.out_dir}: --resume with another model config than the run's "
                         f"({ckpt['model_config'].get('name')})")
    stored = dict(ckpt["run_config"])
    stored.setdefault("window_policy", "per-track")  # runs started before the setting existed
    stored.setdefault("windows_per_track", 1)  # (the same: issue 10's later setting)
    if run.config.warmup_steps is None:  # the default: the run's own (0 in runs made before it)
        run.config.warmup_steps = stored.get("warmup_steps", 0)
    stored.setdefault("warmup_share", WARMUP_SHARE)  # runs started before the setting
    stored.setdefault("best_by", "track-r10")  # (the same: best.pt's rule before the setting)
    stored.setdefault("reverse_share", 0.0)  # (the same: no window played backwards before it)
    stored.setdefault("grad_clip", 0.0)  # (the same: no clipping before it)
    if run.config.best_by is None:
        run.config.best_by = stored["best_by"]
    differ = [k for k, v in asdict(run.config).items() if k != "epochs" and stored.get(k) != v]
    if differ:
        raise UsageError(f"{run.out_dir}: --resume with other settings than the run: " + ", ".join(
            f"{k}={getattr(run.config, k)!r} (run: {stored.get(k)!r})" for k in differ))
    run.model.load_state_dict(ckpt["model_state"])
    state = ckpt.get("training")
    if state is not None and run.optimizer is not None:
        run.optimizer.load_state_dict(state["optimizer"])
        _restore_schedule(run, state["scheduler"], planned_epochs=stored["epochs"])
        run.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
    run.epoch, run.step = int(ckpt["epoch"]), int(ckpt["step"])
    run.history, run.best = list(ckpt["history"]), dict(ckpt["best"])
    run.resumed_from = run.epoch
    if run.ctx.is_main:
        log.info("resuming %s after epoch %d (step %d)", run.out_dir, run.epoch, run.step)


def _restore_schedule(run: _Run, state: dict, *, planned_epochs: int) -> None:
    """Load the scheduler, extend its cycles to this run's epochs, and set the learning rate of
    the next step (the restart's, when the previous schedule has just ended)."""
    run.scheduler.load_state_dict(state)
    schedule = run.scheduler.lr_lambdas[0]
    if state["lr_lambdas"][0] is None:  # saved before the schedule was a CosineCycles
        schedule.cycles = [[0, planned_epochs * run.steps_per_epoch]]
        schedule.warmup_steps = run.config.warmup_for(planned_epochs * run.steps_per_epoch)
    schedule.extend_to(run.config.epochs * run.steps_per_epoch)
    step = run.scheduler.last_epoch
    for group, base in zip(run.optimizer.param_groups, run.scheduler.base_lrs):
        group["lr"] = base * schedule(step)


def _write_run_files(run: _Run, store_path) -> None:
    run.out_dir.mkdir(parents=True, exist_ok=True)
    info = {"model_config": run.model.config.to_dict(), "run_config": asdict(run.config),
            "features": run.features_info, "store": str(store_path),
            "input_dims": dict(run.model.input_dims), "world_size": run.ctx.world_size,
            "global_batch_size": run.global_batch, "batch_size_clamped": run.batch_clamped}
    (run.out_dir / "config.json").write_text(json.dumps(info, indent=2) + "\n")
    with open(run.out_dir / "metrics.jsonl", "w") as fh:  # the history as of the checkpoint
        fh.writelines(json.dumps(h) + "\n" for h in run.history)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _train_epochs(run: _Run, *, progress: bool) -> None:
    from tqdm.auto import tqdm

    c, ctx = run.config, run.ctx
    bar = tqdm(total=c.epochs * run.steps_per_epoch, initial=run.step, unit="step",
               desc="train", disable=not (progress and ctx.is_main), dynamic_ncols=True)
    for epoch in range(run.epoch + 1, c.epochs + 1):
        started = time.perf_counter()
        run.model.train()
        torch.manual_seed(_epoch_seed(c.seed, epoch, ctx.rank))  # dropout, same on resume
        plan = epoch_plan(len(run.train), seed=c.seed, epoch=epoch, batch_size=run.global_batch,
                          min_clips=c.min_clips, max_clips=run.model.config.max_clips,
                          n_clips=run.train.n_clips, policy=c.window_policy,
                          windows_per_track=c.windows_per_track)
        backwards = backward_windows(len(plan[0]), seed=c.seed, epoch=epoch,
                                     share=c.reverse_share)
        losses = []
        batches = prefetch(_local_batches(run, *plan, backwards))
        with closing(batches):  # stops it on errors
            for batch in batches:
                losses.append(_optimizer_step(run, batch.to(ctx.device)))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", val_R1=_last_score(run))
        _end_epoch(run, epoch=epoch, loss=float(np.mean(losses)),
                   seconds=time.perf_counter() - started, window_clips=float(plan[2].mean()))
        bar.set_postfix(loss=f"{run.history[-1]['loss']:.3f}", val_R1=_last_score(run))
    bar.close()


def _local_batches(run: _Run, tracks: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                   backwards: np.ndarray):
    """This process's slice of each global batch of the epoch's plan, as CPU tensors (pinned
    for a CUDA device)."""
    local, rank = run.global_batch // run.ctx.world_size, run.ctx.rank
    pin = run.ctx.device.type == "cuda"
    for s in range(run.steps_per_epoch):
        mine = slice(s * run.global_batch + rank * local, s * run.global_batch + (rank + 1) * local)
        batch = gather_batch(run.train, tracks[mine], starts[mine], lengths[mine],
                             backwards[mine])
        yield batch.pin_memory() if pin else batch


def _last_score(run: _Run) -> str:
    score = run.history[-1].get("val_r1_levels") if run.history else None
    return "-" if score is None else f"{score:.3f}"


def _optimizer_step(run: _Run, batch: Batch) -> float:
    run.optimizer.zero_grad(set_to_none=True)
    loss = contrastive_backward(run.model, batch, chunk_size=run.config.chunk_size,
                                autocast=run.autocast, scale=run.scaler.scale)
    average_gradients(run.model, run.ctx.world_size)
    if run.config.grad_clip:
        run.scaler.unscale_(run.optimizer)  # the true gradients (a no-op unless fp16 scales)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.step += 1
    return loss


def _end_epoch(run: _Run, *, epoch: int, loss: float | None, seconds: float,
               window_clips: float | None = None) -> None:
    """Validate (rank 0), record the epoch, write best.pt / last.pt / metrics.jsonl."""
    run.epoch = epoch
    if not run.ctx.is_main:
        run.history.append({"epoch": epoch, "step": run.step, "loss": loss})
        return
    val = validation_metrics(run.model, run.val, device=run.ctx.device,
                             segment_clips=run.val_segment_clips)
    scale = run.model.logit_scale
    record = {
        "epoch": epoch, "step": run.step, "loss": loss,
        "lr": run.scheduler.get_last_lr()[0] if run.scheduler else None,
        "temperature": scale.temperature if scale is not None else None,
        "window_clips": window_clips,
        **val,
        "epoch_time_s": seconds,
        "tracks_per_s": (run.steps_per_epoch * run.global_batch / seconds
                         if run.steps_per_epoch else None),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    run.history.append(record)
    common = {"model": run.model, "features": run.features_info, "run_config": asdict(run.config),
                  "epoch": epoch, "step": run.step, "history": run.history}
    if _is_better(val, run.best, rule=run.config.best_rule):
        run.best = {"epoch": epoch, **{k: val[k] for k in ("val_score", "val_r1", "val_r1_levels")
                                       if k in val}}
        save_checkpoint(run.out_dir / CHECKPOINT_NAMES["best"],
                        make_checkpoint(**common, best=run.best))
    training = None
    if run.optimizer is not None:
        training = {"optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(),
                    "scaler": run.scaler.state_dict(), "rng": rng_state()}
    save_checkpoint(run.out_dir / CHECKPOINT_NAMES["last"],
                    make_checkpoint(**common, best=run.best, training=training))
    with open(run.out_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _fit_linear(run: _Run) -> None:
    """The closed-form baseline: CCA on the mean features of the train tracks' centred windows."""
    if run.epoch >= 1:
        return  # already fitted (resumed)
    started = time.perf_counter()
    k = run.model.config.max_clips
    means = {}
    for m in MODALITY_ARRAYS:
        windows = [_centred_mean(run.train.item(i, m), k) for i in range(len(run.train))]
        means[m] = np.stack(windows)
    run.model.fit(means["video"], means["audio"])
    _end_epoch(run, epoch=1, loss=None, seconds=time.perf_counter() - started)


def _centred_mean(sequence: np.ndarray, max_clips: int) -> np.ndarray:
    from mvpt.embed import centred

    return centred(sequence, max_clips).astype(np.float64).mean(0)


def _summary(run: _Run) -> dict:
    return {
        "run_dir": str(run.out_dir), "model": run.model.config.name,
        "kind": run.model.config.kind, "epochs": run.epoch, "steps": run.step,
        "global_batch_size": run.global_batch, "batch_size_clamped": run.batch_clamped,
        "world_size": run.ctx.world_size, "resumed_from_epoch": run.resumed_from,
        "n_train": len(run.train), "n_val": len(run.val) if run.val is not None else 0,
        "best": run.best, "best_by": run.config.best_rule,
        "final": run.history[-1] if run.history else {},
    }
