"""The frame reader leaves unreturned non-reference frames undecoded and returns the same frames."""

from __future__ import annotations

import bisect
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mvpt import media
from tests.fixtures.media_factory import default_frame, frame_index_from_image

FPS = 10


def write_bframes_video(path: Path, *, n_frames: int = 40, size=(64, 48), bframes: int = 3) -> Path:
    """H.264 with ``bframes`` B-frames between references (b-pyramid: with 3, the middle one is a
    reference), the frame index drawn in each picture as the default content does."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={
            "x264-params": f"bframes={bframes}:b-adapt=0:b-pyramid=normal:keyint=20"})
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for k in range(n_frames):
            frame = av.VideoFrame.from_ndarray(default_frame(k, k / FPS, size), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = k, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def bframes(tmp_path_factory) -> Path:
    path = write_bframes_video(tmp_path_factory.mktemp("bframes") / "b.mp4")
    with av.open(str(path)) as container:
        kinds = {str(frame.pict_type) for frame in container.decode(video=0)}
    assert kinds >= {"1", "2", "3"}, kinds  # I, P and B frames
    return path


def _decoded_frames(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = media._DecodeBudget.add_frame

    def counting(self, frame, time_s):
        calls.append(1)
        return original(self, frame, time_s)

    monkeypatch.setattr(media._DecodeBudget, "add_frame", counting)
    return calls


@pytest.mark.parametrize("thread_type", ["NONE", "AUTO"])
def test_same_frames_for_fewer_decoded(bframes, monkeypatch, thread_type):
    monkeypatch.setenv("MVPT_DECODE_THREADS", thread_type)
    times = np.array([0.0, 3.85, 0.55, 1.5, 1.55, 2.25, 0.1 - 1e-5, 3.9, 1.0, 2.95])
    expected = [bisect.bisect_right(np.arange(40) / FPS, t + 1e-4) - 1 for t in times]
    calls = _decoded_frames(monkeypatch)
    frames = media.read_frames(bframes, times, size=(32, 24))
    skipping = len(calls)
    assert [frame_index_from_image(f) for f in frames] == expected
    monkeypatch.setattr(media, "SKIP_UNSHOWN_NONREF", False)
    calls.clear()
    np.testing.assert_array_equal(media.read_frames(bframes, times, size=(32, 24)), frames)
    assert skipping < len(calls) == 40  # all 40 without skipping


def test_every_frame_still_readable(bframes):
    """Asking for every frame decodes them all, each in its place."""
    times = np.arange(40) / FPS
    frames = media.read_frames(bframes, times, size=(16, 16))
    assert [frame_index_from_image(f) for f in frames] == list(range(40))


def test_a_stream_without_reordering_is_decoded_as_before(tmp_path, bframes):
    path = write_bframes_video(tmp_path / "ip.mp4", bframes=0)  # I and P frames only
    times = np.array([0.5, 1.0])
    assert media._shown_pts(path, times, media.decode_limits()) is None
    with av.open(str(bframes)) as container:
        time_base = container.streams.video[0].time_base
    needed = media._shown_pts(bframes, times, media.decode_limits())
    assert {p * time_base for p in needed} == {Fraction(1, 2), Fraction(1)}  # frames 5 and 10
