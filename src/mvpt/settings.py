"""Training settings (:class:`RunConfig`), the one owner of their defaults: ``mvpt train``'s
options show them without importing torch, and every checkpoint stores them. Also the segment
level's length, which validation and ``mvpt eval`` share."""

from __future__ import annotations

from dataclasses import dataclass

from mvpt.errors import UsageError

WINDOW_POLICIES = ("per-batch", "fixed", "per-track")
# Segment level (the paper's second protocol): tracks cut into segments of this many seconds.
SEGMENT_S = 10.0
WARMUP_SHARE = 0.1  # of a run's steps, when warmup_steps is None (RunConfig.warmup_share)
# Peak learning rate of a new run (RunConfig.lr). The paper's is 1e-3 (at batch 2048), our
# default until defaults-v7: on the demo's store (batch 16) it left MVPt's val R@1 flat near 0.3
# for seeds 0 and 3 while 5e-4 made all four take off; on the 3-seed feature suite 5e-4 is level
# with 1e-3 (benchmarks/results/recipe/defaults-v7).
DEFAULT_LR = 5e-4
# Gradient clipping of a new run (RunConfig.grad_clip): the L2 norm of all gradients together;
# 0, none. A norm of 1 was measured on the feature suite and not taken (README, "The training
# recipe").
DEFAULT_GRAD_CLIP = 0.0
# Which epoch best.pt keeps, judged on the val split (see RunConfig.best_by).
BEST_BY = ("r1", "track-r10", "last")


@dataclass
class RunConfig:
    """Training settings, stored in every checkpoint. ``model``: a config name or JSON path."""

    model: str = "mvpt"
    epochs: int = 60
    # Global batch in windows, all processes together (two windows per track: half as many
    # tracks). None: the paper's 2048, or an eighth of the training set (at least 16) when that
    # is smaller, so a small store still gets ~8 steps an epoch.
    batch_size: int | None = None
    # Peak learning rate. None: DEFAULT_LR for a new run, the run's own on --resume (so a run
    # started under an older default resumes as it began).
    lr: float | None = None
    weight_decay: float = 0.01
    # Linear warm-up steps before the cosine. None: ``warmup_share`` of the run's steps.
    # Without it the Transformer often stayed on the genre-level plateau on small stores (the
    # demo's: MVPt R@1 0.39 / 0.35 over 4 seeds at 0 steps, 0.73 / 0.73 at 50 of 480).
    warmup_steps: int | None = None
    warmup_share: float = WARMUP_SHARE
    min_clips: int = 10  # shortest training window; the longest is the model's max_clips
    # How long the windows of a batch are (see the module docstring): "per-batch" draws one length
    # per batch in [min_clips, max_clips], shared by all its tracks; "fixed" is always max_clips;
    # "per-track" (before issue 10; for runs started then) draws one per track: a length cue.
    window_policy: str = "per-batch"
    # Windows of each track in a batch: 2 puts two windows of a track, at least a third of their
    # length apart, into the batch when its tracks leave room (see ``train.paired_plan``); each
    # is then a negative of the other's pair, a contrast only the timing inside the window can
    # resolve. 1: one window per track (runs started before the setting). None: 2 with a shared
    # window length, 1 with "per-track" (whose lengths differ inside a batch).
    windows_per_track: int | None = None
    # Which epoch best.pt keeps, judged on the val split: "r1", the best mean R@1 of both
    # directions at track and segment level (segments of SEGMENT_S seconds), a tie going to the
    # later epoch; "track-r10", the best track-level mean R@10, ties by R@1 then the earlier
    # epoch (runs started before the setting); "last", the last epoch. None: "r1" (a resumed run
    # keeps its own). A track-level R@10 saturates on a small val split, so that rule kept the
    # first epoch to reach it, in the middle of the schedule.
    best_by: str | None = None
    # Share of training windows whose clips are played in reverse order, video and music alike
    # (the pair stays aligned clip by clip): the same sections in another order, as the order-only
    # siblings of a library are, drawn anew every epoch. Each clip's own features are kept; a
    # model that pools by the mean (the MLP) sees the same mean. 0 (none) by default: 0.5 was
    # measured on the feature suite and not taken (README, "The training recipe").
    reverse_share: float = 0.0
    # Gradient clipping: before each step the gradients of all parameters, as one vector, are
    # scaled down to this L2 norm when longer. 0: no clipping (runs started before the setting).
    # None: DEFAULT_GRAD_CLIP for a new run, the run's own on --resume.
    grad_clip: float | None = None
    chunk_size: int | None = None  # tracks per forward pass with gradients (GradCache); None: all
    precision: str = "auto"  # fp32, bf16, fp16; auto: bf16 on CUDA, fp32 on CPU
    seed: int = 0

    def __post_init__(self):
        if self.windows_per_track is None:
            self.windows_per_track = 1 if self.window_policy == "per-track" else 2

    def warmup_for(self, total_steps: int) -> int:
        """Warm-up steps of a run of ``total_steps``: the setting, or ``warmup_share`` of them."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round(self.warmup_share * total_steps)

    @property
    def best_rule(self) -> str:
        """The rule best.pt follows: the setting, or "r1"."""
        return self.best_by or BEST_BY[0]

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "min_clips"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if (self.lr is not None and not self.lr > 0) or self.weight_decay < 0 or (self.warmup_steps or 0) < 0:
            raise UsageError(f"need lr > 0, weight_decay >= 0, warmup_steps >= 0; got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup_steps}")
        if not 0 <= self.warmup_share < 1:
            raise UsageError(f"warmup_share must be in [0, 1), got {self.warmup_share}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise UsageError(f"chunk_size must be >= 1 track, got {self.chunk_size}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UsageError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.best_by is not None and self.best_by not in BEST_BY:
            raise UsageError(f"best_by must be one of {', '.join(BEST_BY)}, got {self.best_by!r}")
        if self.grad_clip is not None and not self.grad_clip >= 0:
            raise UsageError(f"grad_clip must be >= 0 (0: no clipping), got {self.grad_clip}")
        if not 0 <= self.reverse_share <= 1:
            raise UsageError(f"reverse_share must be in [0, 1], got {self.reverse_share}")
        if self.window_policy not in WINDOW_POLICIES:
            raise UsageError(f"window_policy must be one of {', '.join(WINDOW_POLICIES)}, got "
                             f"{self.window_policy!r}")
        if self.windows_per_track not in (1, 2):
            raise UsageError(f"windows_per_track must be 1 or 2, got {self.windows_per_track}")
        if self.windows_per_track > 1 and self.window_policy == "per-track":
            raise UsageError("windows_per_track 2 needs a shared window length "
                             "(window_policy per-batch or fixed)")
