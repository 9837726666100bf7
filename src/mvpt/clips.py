"""Clip and window arithmetic, in seconds.

A track is cut into consecutive clips of ``clip_s`` seconds from its start; a partial clip at the
end is dropped. A model sees at most ``max_clips`` clips: a track longer than that is read through a
window of ``max_clips * clip_s`` seconds, random during training and centred at test time
(appendix B of the paper). Our defaults (the paper's are not public): ``clip_s = 1.0``,
``max_clips = 30``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mvpt.errors import UsageError

_EPS = 1e-9


@dataclass(frozen=True)
class ClipConfig:
    """How media become clips: clip length ``clip_s`` seconds, at most ``max_clips`` per window."""

    clip_s: float = 1.0
    max_clips: int = 30
    frames_per_clip: int = 1

    def __post_init__(self):
        if not self.clip_s > 0:
            raise UsageError(f"clip_s must be > 0 seconds, got {self.clip_s}")
        if self.max_clips < 1:
            raise UsageError(f"max_clips must be >= 1, got {self.max_clips}")
        if self.frames_per_clip < 1:
            raise UsageError(f"frames_per_clip must be >= 1, got {self.frames_per_clip}")

    @property
    def window_s(self) -> float:
        return self.clip_s * self.max_clips

    def to_dict(self) -> dict:
        return asdict(self)


def n_clips(duration_s: float, clip_s: float) -> int:
    """Number of whole clips of ``clip_s`` seconds in ``duration_s`` seconds."""
    if clip_s <= 0:
        raise UsageError(f"clip_s must be > 0 seconds, got {clip_s}")
    if duration_s <= 0:
        return 0
    return int(np.floor(duration_s / clip_s + _EPS))


def clip_bounds(duration_s: float, clip_s: float, *, start_s: float = 0.0) -> np.ndarray:
    """float64 [n, 2] (start, end) in seconds of each whole clip in [start_s, start_s + duration_s)."""
    n = n_clips(duration_s, clip_s)
    starts = start_s + clip_s * np.arange(n, dtype=np.float64)
    return np.stack([starts, starts + clip_s], axis=1) if n else np.zeros((0, 2))


def frame_times(bounds_s: np.ndarray, frames_per_clip: int = 1) -> np.ndarray:
    """float64 [n * frames_per_clip] sample times: ``frames_per_clip`` evenly spaced instants inside
    each clip, at the centres of equal sub-intervals (one frame = the clip's middle)."""
    if frames_per_clip < 1:
        raise UsageError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
    bounds_s = np.asarray(bounds_s, dtype=np.float64).reshape(-1, 2)
    frac = (np.arange(frames_per_clip) + 0.5) / frames_per_clip
    length = bounds_s[:, 1:2] - bounds_s[:, 0:1]
    return (bounds_s[:, 0:1] + length * frac[None, :]).reshape(-1)


def centred_window_s(duration_s: float, window_s: float) -> tuple[float, float]:
    """(start, end) in seconds of the window of ``window_s`` centred in the track; the whole track
    when it is shorter than the window."""
    if window_s <= 0:
        raise UsageError(f"window_s must be > 0 seconds, got {window_s}")
    if duration_s <= window_s:
        return 0.0, float(duration_s)
    start = (duration_s - window_s) / 2.0
    return start, start + window_s


def clip_window(
    total_clips: int,
    length: int,
    *,
    mode: str = "center",
    rng: np.random.Generator | None = None,
) -> tuple[int, int]:
    """(first clip, number of clips) of a window of at most ``length`` clips inside a track of
    ``total_clips`` clips. ``mode="center"``: centred (exact to half a clip when the difference is
    odd; the extra clip goes after the window); ``mode="random"``: uniform over valid positions."""
    if length < 1:
        raise UsageError(f"window length must be >= 1 clip, got {length}")
    if total_clips <= length:
        return 0, max(total_clips, 0)
    slack = total_clips - length
    if mode == "center":
        return slack // 2, length
    if mode == "random":
        if rng is None:
            raise UsageError("mode='random' needs an rng")
        return int(rng.integers(0, slack + 1)), length
    raise UsageError(f"mode must be 'center' or 'random', got {mode!r}")


def segments(total_clips: int, segment_clips: int) -> list[tuple[int, int]]:
    """Consecutive non-overlapping segments of ``segment_clips`` clips, (first clip, n); the last
    partial segment is dropped (segment-level evaluation)."""
    if segment_clips < 1:
        raise UsageError(f"segment length must be >= 1 clip, got {segment_clips}")
    return [(i * segment_clips, segment_clips) for i in range(total_clips // segment_clips)]


def sliding_windows(total_clips: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Windows of ``length`` clips every ``stride`` clips, (first clip, n); with stride <= length
    they cover the track. A track shorter than ``length`` gives one window of its whole length; a
    last window ending at the track's end covers the tail."""
    if length < 1 or stride < 1:
        raise UsageError(f"window length and stride must be >= 1 clip, got {length}, {stride}")
    if total_clips <= 0:
        return []
    if total_clips <= length:
        return [(0, total_clips)]
    starts = list(range(0, total_clips - length + 1, stride))
    if starts[-1] + length < total_clips:
        starts.append(total_clips - length)
    return [(s, length) for s in starts]
