"""Clip and window arithmetic (property-tested)."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mvpt.clips import (
    ClipConfig, centred_window_s, clip_bounds, clip_window, frame_times, n_clips, segments,
    sliding_windows,
)
from mvpt.errors import UsageError

durations = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False)
clip_lengths = st.floats(min_value=0.05, max_value=10.0, allow_nan=False)


@given(durations, clip_lengths, st.floats(min_value=0, max_value=100))
def test_clips_never_leave_the_media(duration, clip_s, start):
    b = clip_bounds(duration, clip_s, start_s=start)
    assert b.shape == (n_clips(duration, clip_s), 2)
    if len(b):
        assert b[0, 0] == pytest.approx(start)
        assert b[-1, 1] <= start + duration + 1e-6
        np.testing.assert_allclose(b[:, 1] - b[:, 0], clip_s)
        np.testing.assert_allclose(b[1:, 0], b[:-1, 1])
    # whole clips only: one more clip would leave the media
    assert start + (len(b) + 1) * clip_s > start + duration - 1e-6


@given(durations, st.floats(min_value=0.1, max_value=600))
def test_centred_window_is_inside_and_exact(duration, window):
    a, b = centred_window_s(duration, window)
    assert 0 <= a <= b <= duration + 1e-9
    assert b - a == pytest.approx(min(window, duration))
    assert (a + b) / 2 == pytest.approx(duration / 2)


@given(st.integers(0, 5000), st.integers(1, 100), st.integers(0, 2**31 - 1))
@settings(max_examples=200)
def test_clip_windows_inside_track(total, length, seed):
    rng = np.random.default_rng(seed)
    for mode in ("center", "random"):
        first, n = clip_window(total, length, mode=mode, rng=rng)
        assert n == min(total, length)
        assert 0 <= first and first + n <= total
    first, n = clip_window(total, length, mode="center")
    # centring: the clips before and after differ by at most one
    assert abs(first - (total - first - n)) <= 1


def test_random_window_covers_all_positions():
    rng = np.random.default_rng(0)
    starts = {clip_window(12, 10, mode="random", rng=rng)[0] for _ in range(200)}
    assert starts == {0, 1, 2}


@given(st.integers(0, 500), st.integers(1, 40))
def test_segments_are_whole_and_disjoint(total, seg):
    s = segments(total, seg)
    assert len(s) == total // seg
    for k, (a, n) in enumerate(s):
        assert n == seg and a == k * seg and a + n <= total


@given(st.integers(1, 300), st.integers(1, 40), st.integers(1, 40))
def test_sliding_windows_cover_track(total, length, stride):
    assume(stride <= length)  # a stride longer than the window skips clips by design
    w = sliding_windows(total, length, stride)
    covered = np.zeros(total, bool)
    for a, n in w:
        assert 0 <= a and a + n <= total and n == min(length, total)
        covered[a:a + n] = True
    assert covered.all()


def test_frame_times_are_clip_middles_or_even_subdivisions():
    b = clip_bounds(3.0, 1.0)
    np.testing.assert_allclose(frame_times(b), [0.5, 1.5, 2.5])
    np.testing.assert_allclose(frame_times(b[:1], 4), [0.125, 0.375, 0.625, 0.875])


def test_short_media_has_no_clip():
    assert n_clips(0.5, 1.0) == 0 and clip_bounds(0.5, 1.0).shape == (0, 2)
    assert n_clips(1.0, 1.0) == 1  # exactly one clip is kept despite float error


def test_bad_parameters_raise():
    with pytest.raises(UsageError, match="clip_s must be > 0"):
        ClipConfig(clip_s=0)
    with pytest.raises(UsageError, match="mode must be"):
        clip_window(40, 10, mode="middle")
    with pytest.raises(UsageError, match="needs an rng"):
        clip_window(40, 10, mode="random")
    assert ClipConfig().window_s == 30.0
