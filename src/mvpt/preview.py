"""Previews: a video with a recommended piece of music laid under it, written with PyAV.

The picture is re-encoded (H.264 ``libx264`` ultrafast in MP4, VP9 ``libvpx-vp9`` realtime in
WebM) at a constant frame rate (the source's average rate, at most 60 Hz), upright, scaled to at
most 720 lines. The sound is the music alone (the video's own soundtrack is dropped) from
``offset_s`` for the picture's whole duration, mono at 48 kHz, AAC in MP4 and Opus in WebM, with a
fade-in and a fade-out of ``fade_s`` seconds; a track ending before the picture fades out at its
own end and leaves silence after. A negative ``offset_s`` plays the track from its start, entering
``-offset_s`` seconds into the preview after silence (when the best music window starts earlier in
its track than the best video window in the video). Audio and video last the same (to a frame).
The file is written to a temporary name and renamed (:func:`mvpt.fileio.atomic_path`), so a kill
never leaves a half preview at ``out_path``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mvpt import media
from mvpt.errors import MediaError, UsageError
from mvpt.fileio import atomic_path

AUDIO_RATE_HZ = 48000  # Opus only takes 48 kHz
AUDIO_CHUNK_SAMPLES = 960
MAX_HEIGHT = 720
MAX_FPS = 60.0
DEFAULT_FPS = 25.0
CONTAINERS = {
    "mp4": {"video": "libx264", "audio": "aac",
            "video_options": {"preset": "ultrafast", "crf": "23"},
            "muxer_options": {"movflags": "+faststart"}},
    "webm": {"video": "libvpx-vp9", "audio": "libopus",
             "video_options": {"deadline": "realtime", "cpu-used": "8", "row-mt": "1",
                               "crf": "36", "b": "0"},
             "muxer_options": {}},
}


@dataclass
class PreviewInfo:
    """What :func:`make_preview` wrote."""

    path: Path
    container: str
    duration_s: float
    fps: float
    frames: int
    width: int
    height: int
    music_offset_s: float  # negative: the music enters this many seconds late
    music_audible_s: float  # how much of the preview has music (less when the track ends early)
    audio_rate_hz: int = AUDIO_RATE_HZ

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def make_preview(
    video_path: str | Path,
    music_path: str | Path,
    offset_s: float,
    out_path: str | Path,
    *,
    fade_s: float = 0.5,
    container: str | None = None,
    video_start_s: float = 0.0,
) -> PreviewInfo:
    """Write ``out_path``: the video from ``video_start_s`` to its end with the music of
    ``music_path`` from ``offset_s`` under it (negative: the music from its start, entering
    ``-offset_s`` seconds late). ``container`` ("mp4" or "webm") defaults to the output's
    suffix."""
    out_path = Path(out_path)
    fmt = container or out_path.suffix.lower().lstrip(".")
    if fmt not in CONTAINERS:
        raise UsageError(f"{out_path}: preview container must be mp4 or webm, got {fmt!r}")
    if fade_s < 0 or video_start_s < 0 or not math.isfinite(offset_s):
        raise UsageError(f"fade_s and video_start_s must be >= 0 seconds and offset_s finite, "
                         f"got {fade_s}, {video_start_s}, {offset_s}")
    info = media.probe(video_path)
    if not info.has_video:
        raise MediaError(video_path, "no video stream to preview")
    fps = float(Fraction(_output_fps(info.fps)).limit_denominator(1001))
    n_frames = math.floor((info.duration_s - video_start_s) * fps + 1e-6)
    if n_frames < 1:
        raise UsageError(f"{video_path}: nothing to preview after {video_start_s:.2f} s "
                         f"(the video lasts {info.duration_s:.2f} s)")
    duration_s = n_frames / fps
    wave, audible_s = music_under(music_path, offset_s=offset_s, duration_s=duration_s,
                                  fade_s=fade_s)
    width, height = _output_size(info.width, info.height)
    frames = _frames_at_rate(video_path, info, start_s=video_start_s, fps=fps,
                             n_frames=n_frames, size=(width, height))
    with atomic_path(out_path) as tmp:
        _write(str(tmp), fmt, frames, wave, fps=fps, size=(width, height))
    return PreviewInfo(path=out_path, container=fmt, duration_s=duration_s, fps=fps,
                       frames=n_frames, width=width, height=height, music_offset_s=offset_s,
                       music_audible_s=audible_s)


def music_under(music_path, *, offset_s: float, duration_s: float,
                fade_s: float) -> tuple[np.ndarray, float]:
    """(mono float32 [round(duration_s * 48 kHz)], seconds of music in it): the music from
    ``offset_s`` (negative: from its start, after ``-offset_s`` seconds of silence), faded in and
    out, padded with silence when the track ends first."""
    info = media.probe(music_path)
    if not info.has_audio:
        raise MediaError(music_path, "no audio stream to lay under the video")
    if offset_s >= info.duration_s:
        raise UsageError(f"{music_path}: offset {offset_s:.2f} s is past the end of the music "
                         f"({info.duration_s:.2f} s)")
    total = round(duration_s * AUDIO_RATE_HZ)
    entry = round(max(0.0, -offset_s) * AUDIO_RATE_HZ)
    if entry >= total:
        raise UsageError(f"{music_path}: the music would enter {-offset_s:.2f} s in, after the "
                         f"preview's end ({duration_s:.2f} s)")
    start_s = max(0.0, offset_s)
    end_s = min(info.duration_s, start_s + duration_s)
    music = media.read_audio(music_path, sample_rate_hz=AUDIO_RATE_HZ, start_s=start_s,
                             end_s=end_s, info=info)
    music = music[:total - entry].astype(np.float32)
    ramp = min(round(fade_s * AUDIO_RATE_HZ), len(music) // 2)
    if ramp > 0:
        shape = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, ramp, dtype=np.float32))
        music[:ramp] *= shape
        music[len(music) - ramp:] *= shape[::-1]
    wave = np.zeros(total, np.float32)
    wave[entry:entry + len(music)] = music
    return wave, len(music) / AUDIO_RATE_HZ


def _output_fps(fps: float) -> float:
    if not fps or not math.isfinite(fps) or fps <= 0:
        return DEFAULT_FPS
    return min(fps, MAX_FPS)


def _output_size(width: int, height: int) -> tuple[int, int]:
    """Displayed size scaled to at most ``MAX_HEIGHT`` lines, both sides even (4:2:0 needs it)."""
    scale = min(1.0, MAX_HEIGHT / max(height, 1))
    even = lambda x: max(2, round(x * scale / 2) * 2)
    return even(width), even(height)


def _frames_at_rate(path, info, *, start_s: float, fps: float, n_frames: int,
                    size: tuple[int, int]) -> Iterator[np.ndarray]:
    """uint8 RGB [height, width, 3] upright frames shown at ``start_s + i / fps`` for each i."""
    import av

    width, height = size
    turns = (info.rotation_deg // 90) % 4  # clockwise quarter turns a player applies
    stored = (height, width) if turns % 2 else (width, height)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin_s = container.start_time / av.time_base if container.start_time else 0.0
        if start_s > 1.0:
            container.seek(int((start_s + origin_s) * av.time_base), backward=True)
        shown, shown_rgb, emitted = None, None, 0
        try:
            for frame in container.decode(stream):
                time_s = (frame.time or 0.0) - origin_s
                while emitted < n_frames and start_s + emitted / fps < time_s - 1e-4:
                    if shown_rgb is None:  # before the first frame: show the first
                        shown_rgb = _rgb(frame if shown is None else shown, stored, turns)
                    yield shown_rgb
                    emitted += 1
                if emitted >= n_frames:
                    return
                shown, shown_rgb = frame, None
        except av.FFmpegError as exc:
            raise MediaError(path, f"video decoding failed ({exc})") from None
        if shown is None:
            raise MediaError(path, "no video frame to preview")
        shown_rgb = shown_rgb if shown_rgb is not None else _rgb(shown, stored, turns)
        for _ in range(n_frames - emitted):
            yield shown_rgb


def _rgb(frame, stored_size: tuple[int, int], clockwise_turns: int) -> np.ndarray:
    rgb = frame.reformat(width=stored_size[0], height=stored_size[1], format="rgb24").to_ndarray()
    return np.ascontiguousarray(np.rot90(rgb, k=-clockwise_turns)) if clockwise_turns else rgb


def _write(path: str, fmt: str, frames: Iterator[np.ndarray], wave: np.ndarray, *, fps: float,
           size: tuple[int, int]) -> None:
    """Mux the frames and the mono wave, interleaving audio up to each frame's end."""
    import av

    spec = CONTAINERS[fmt]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, mode="w", format=fmt, options=spec["muxer_options"]) as out:
        video = out.add_stream(spec["video"], rate=rate, options=spec["video_options"])
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        audio = out.add_stream(spec["audio"], rate=AUDIO_RATE_HZ, layout="mono")
        sent = 0
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            out.mux(video.encode(frame))
            until = min(len(wave), round((index + 1) / fps * AUDIO_RATE_HZ))
            sent = _send_audio(out, audio, wave, sent, until)
        _send_audio(out, audio, wave, sent, len(wave))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


def _send_audio(out, stream, wave: np.ndarray, first: int, until: int) -> int:
    import av

    for start in range(first, until, AUDIO_CHUNK_SAMPLES):
        chunk = wave[start:min(start + AUDIO_CHUNK_SAMPLES, until)]
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE_HZ
        frame.pts, frame.time_base = start, Fraction(1, AUDIO_RATE_HZ)
        out.mux(stream.encode(frame))
    return max(first, until)
