"""Probe media files and decode what the pipeline needs: frames at given times and mono audio.

Times are in seconds from the start of the media (the container's start time, 0 for almost every
file); rates are in Hz. Both readers decode sequentially from the start of the file and stop as
soon as they have what was asked: for frames one second apart, seeking to each time measured 1.8x
slower than decoding through, for identical frames. The frame reader never decodes the audio
stream and the audio reader never decodes the video stream; only the frames returned are
converted to RGB, already at their output size. In a stream that reorders frames (B-frames), the
non-reference frames that are not returned are not decoded at all: a first pass over the packets,
without decoding, finds the frames shown at the times asked (:data:`SKIP_UNSHOWN_NONREF`).

Every failure raises :class:`~mvpt.errors.MediaError` naming the file and a short reason; no PyAV
or FFmpeg exception escapes. Wrong arguments (a size of zero, an unknown resize mode) raise
:class:`~mvpt.errors.UsageError`.

Hostile files: every reader opens a file only with FFmpeg's ``file`` protocol and only with the
demuxers of :data:`ALLOWED_FORMATS` (MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, Ogg, common audio and
still images); a playlist (HLS, concat) or any demuxer that opens other files is refused before it
reads them. :class:`DecodeLimits` bound the length, pixels per frame, frame rate and decoded bytes
a file may ask for: checked from the headers when a file is opened, and again while decoding
(headers can lie), raising :class:`MediaLimitError`. Each function takes ``limits=``; without it
the process's limits apply (:func:`set_decode_limits`, generous :data:`DEFAULT_LIMITS` unless set).

Truncated and corrupt files: a reader returns data only for what really decodes. When the data
stops before the requested time (or, without ``end_s``, before the end) *and* before the length the
file's header promises, more than ``TRUNCATION_TOLERANCE_S`` short, it raises
``MediaError(path, "truncated or corrupt: ...")`` rather than repeat the last frame or pad with
silence; a decoding error raises ``"truncated or corrupt ... stream: decoding failed ..."``. What a
truncated file holds before the cut reads normally, and :func:`probe` (which reads only headers and
the first frame) reports the length the header promises. A stream that is simply shorter than the
file (a video whose soundtrack stops early) is not truncated: past its own end the frame reader
repeats the last frame and the audio reader pads with zeros, as a player would.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.stream import Discard, Disposition
from av.video.reformatter import VideoReformatter

from mvpt.errors import MediaError, UsageError

RESIZE_MODES = ("crop", "squash")
TRUNCATION_TOLERANCE_S = 0.25
"""Data may end this much before the length the header promises without counting as truncated."""

_FRAME_TIME_TOLERANCE_S = 1e-4  # a frame stamped 0.1 ms after t still counts as shown at t
_OUTSIDE_TOLERANCE_S = 1e-6
_RESAMPLER_LEAD_S = 0.05  # audio resampled before start_s / after end_s, so the filter settles
# ffmpeg's standard downmix (centre and fronts, surrounds at -3 dB, LFE dropped), its weights scaled
# to sum to 1 so that a full-scale input never leaves [-1, 1].
_DOWNMIX_OPTIONS = {"rematrix_maxval": "1.0"}

ALLOWED_FORMATS = frozenset({
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2",  # one demuxer, named by all its formats
    "matroska", "webm", "avi", "mpegts", "mpeg", "ogg",
    "mp3", "wav", "flac", "aac", "w64", "aiff",
    "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif",
})
"""FFmpeg demuxers a file may be opened with: none of them opens another file or a URL."""


@dataclass(frozen=True)
class DecodeLimits:
    """What one file may ask of the decoder; a file past any of them raises MediaLimitError.

    ``max_duration_s``: the media's length (header, then decoded timestamps); ``max_pixels``: one
    frame's width x height; ``max_fps``: the frame rate (header, then frames decoded per second
    of timeline); ``max_decoded_bytes``: the bytes one read holds (the frames it returns, the
    samples it decodes).
    """

    max_duration_s: float = 6 * 3600.0
    max_pixels: int = 8192 * 4320
    max_fps: float = 1000.0
    max_decoded_bytes: int = 8 * 2**30

    def check_header(self, path, *, duration_s: float | None = None, width: int = 0,
                     height: int = 0, fps: float = 0.0) -> None:
        """Raise MediaLimitError when what a header declares is over a limit."""
        if duration_s is not None and duration_s > self.max_duration_s:
            raise MediaLimitError(path, f"lasts {duration_s:.0f} s, over the limit of "
                                        f"{self.max_duration_s:.0f} s")
        if width * height > self.max_pixels:
            raise MediaLimitError(path, f"frames of {width}x{height} pixels, over the limit of "
                                        f"{self.max_pixels} pixels per frame")
        if fps > self.max_fps:
            raise MediaLimitError(path, f"{fps:.0f} frames per second, over the limit of "
                                        f"{self.max_fps:g}")


DEFAULT_LIMITS = DecodeLimits()
"""Generous bounds for a user's own files (a feature film fits); a server sets stricter ones."""
UPLOAD_LIMITS = DecodeLimits(max_duration_s=15 * 60.0, max_pixels=3840 * 2160, max_fps=240.0,
                             max_decoded_bytes=2**30)
"""Bounds for files from strangers: 15 minutes, 4K frames, 240 frames/s, 1 GiB decoded."""

_process_limits = DEFAULT_LIMITS

SKIP_UNSHOWN_NONREF = True
"""The frame reader leaves undecoded the non-reference frames (most B-frames) it does not return:
the frames returned are the same. On a usual x264 encode (a third of the frames non-reference) the
video decoder took 33 % less CPU, the frame reader as a whole 10 % (README "Extraction")."""

VIDEO_THREAD_TYPES = ("AUTO", "FRAME", "SLICE", "NONE")
DEFAULT_VIDEO_THREAD_TYPE = "AUTO"


def video_thread_type() -> str:
    """How the frame reader threads FFmpeg's video decoder: ``MVPT_DECODE_THREADS`` when set (one
    of :data:`VIDEO_THREAD_TYPES`; an environment variable, so that decode worker processes
    inherit it), else :data:`DEFAULT_VIDEO_THREAD_TYPE`. The frames are the same either way."""
    import os

    chosen = os.environ.get("MVPT_DECODE_THREADS", "").strip().upper() or DEFAULT_VIDEO_THREAD_TYPE
    if chosen not in VIDEO_THREAD_TYPES:
        raise UsageError(f"MVPT_DECODE_THREADS must be one of {VIDEO_THREAD_TYPES}, got {chosen!r}")
    return chosen


class MediaLimitError(MediaError):
    """A media file asks for more than the decode limits allow (too long, too large, too fast)."""


def set_decode_limits(limits: DecodeLimits) -> DecodeLimits:
    """Make ``limits`` the process's default for every reader; returns the previous default."""
    global _process_limits
    previous, _process_limits = _process_limits, limits
    return previous


def decode_limits() -> DecodeLimits:
    """The limits readers apply when not given ``limits=``."""
    return _process_limits


class _DecodeBudget:
    """Counts what one read decodes against the limits: length, frame size and rate, and the
    bytes it holds (frames are dropped once converted; samples are kept)."""

    def __init__(self, path, limits: DecodeLimits):
        self.path, self.limits = path, limits
        self.decoded_bytes = 0
        self.frames = 0

    def add_bytes(self, n_bytes: int) -> None:
        self.decoded_bytes += n_bytes
        if self.decoded_bytes > self.limits.max_decoded_bytes:
            raise MediaLimitError(self.path, f"decoding passed the limit of "
                                             f"{self.limits.max_decoded_bytes / 2**20:.0f} MB")

    def add_time(self, time_s: float) -> None:
        if time_s > self.limits.max_duration_s:
            raise MediaLimitError(self.path, f"decoded data passes {time_s:.0f} s, over the limit "
                                             f"of {self.limits.max_duration_s:.0f} s")

    def add_frame(self, frame, time_s: float) -> None:
        self.limits.check_header(self.path, width=frame.width, height=frame.height)
        self.add_time(time_s)
        self.frames += 1
        if self.frames > self.limits.max_fps * (max(time_s, 0.0) + 1.0):
            raise MediaLimitError(self.path, f"{self.frames} frames in the first {time_s:.1f} s, "
                                             f"over the limit of {self.limits.max_fps:g} per second")


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` finds in a media file.

    ``width``/``height`` are the displayed size, after rotation (0 without video); ``fps`` is the
    average frame rate in Hz (0 without video); ``rotation_deg`` (0, 90, 180 or 270) is the
    clockwise turn a player applies to show the stored picture upright, as in the MP4 ``rotate``
    tag; ``audio_rate_hz`` and ``audio_channels`` are 0 without audio; ``title`` comes from the
    container's tags.
    """

    path: str
    duration_s: float
    has_video: bool
    has_audio: bool
    width: int
    height: int
    fps: float
    rotation_deg: int
    audio_rate_hz: int
    audio_channels: int
    title: str | None


def probe(path: str | Path, *, limits: DecodeLimits | None = None) -> MediaInfo:
    """Read a file's streams, length, displayed size, rotation and title.

    Reads the headers and decodes the first video frame (the rotation is stored beside it). A file
    whose header has no duration is measured from its packets. Raises MediaLimitError when the
    length, frame size or frame rate is over ``limits``.
    """
    limits = limits or decode_limits()
    with _open_media(path, limits) as container:
        video, audio = _video_stream(container), _audio_stream(container)
        rotation_deg = _first_frame_rotation_deg(path, container, video) if video else 0
        width, height, fps = 0, 0, 0.0
        if video is not None:
            width, height = video.codec_context.width, video.codec_context.height
            if rotation_deg in (90, 270):
                width, height = height, width
            fps = float(video.average_rate or video.guessed_rate or 0)
        duration_s = _duration_s(path, container)
        limits.check_header(path, duration_s=duration_s)
        return MediaInfo(
            path=str(path),
            duration_s=duration_s,
            has_video=video is not None,
            has_audio=audio is not None,
            width=width,
            height=height,
            fps=fps,
            rotation_deg=rotation_deg,
            audio_rate_hz=audio.codec_context.sample_rate if audio else 0,
            audio_channels=audio.codec_context.channels if audio else 0,
            title=_title(container),
        )


def read_frames(
    path: str | Path,
    times_s: Sequence[float] | np.ndarray,
    *,
    size: tuple[int, int] = (224, 224),
    resize_mode: str = "crop",
    info: MediaInfo | None = None,
    limits: DecodeLimits | None = None,
) -> np.ndarray:
    """The frames displayed at ``times_s``, upright: uint8 RGB ``[len(times_s), height, width, 3]``.

    For each time (in any order; the result follows the request order) the frame shown then: the
    last frame whose timestamp is at or before it, or the first frame for a time before it, so
    variable frame rates work (a frame stamped up to 0.1 ms after a time counts as shown at it, so
    that ``k / fps`` finds frame ``k`` despite rounding). ``size`` is the output (width, height):
    ``resize_mode="crop"`` scales the picture until it covers the size and cuts the centre,
    ``"squash"`` stretches it.
    ``info`` from :func:`probe` saves measuring a file whose header lacks its duration.
    ``limits`` (the process's by default) bound the file and what decoding it may cost.
    """
    times = _checked_times(times_s)
    width, height = _checked_size(size)
    if resize_mode not in RESIZE_MODES:
        raise UsageError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    limits = limits or decode_limits()
    budget = _DecodeBudget(path, limits)
    budget.add_bytes(len(times) * height * width * 3)  # the array returned
    images = np.empty((len(times), height, width, 3), dtype=np.uint8)
    with _open_media(path, limits) as container:
        video = _video_stream(container)
        if video is None:
            raise MediaError(path, "no video stream (an audio-only file?)")
        duration_s = info.duration_s if info is not None else _duration_s(path, container)
        limits.check_header(path, duration_s=duration_s)
        _check_inside(path, times, duration_s)
        if len(times) == 0:
            return images
        _decode_only(container, video)
        video.thread_type = video_thread_type()
        order = np.argsort(times, kind="stable")
        needed = _shown_pts(path, times[order], limits) if SKIP_UNSHOWN_NONREF else None
        reformatter = VideoReformatter()
        converted_frame, converted = None, None
        for request, frame in zip(
            order, _shown_frames(path, container, video, times[order], budget, needed), strict=True
        ):
            if frame is not converted_frame:  # several times may show the same frame
                converted_frame = frame
                converted = _display_rgb(frame, width, height, resize_mode, reformatter)
            images[request] = converted
    return images


def read_audio(
    path: str | Path,
    *,
    sample_rate_hz: int,
    start_s: float = 0.0,
    end_s: float | None = None,
    info: MediaInfo | None = None,
    limits: DecodeLimits | None = None,
) -> np.ndarray:
    """Mono float32 audio at ``sample_rate_hz`` for the times ``[start_s, end_s)``.

    Sample ``i`` of the file's timeline sits at ``i / sample_rate_hz`` s; the result holds samples
    ``round(start_s * rate)`` up to, not including, ``round(end_s * rate)``, exactly. ``end_s=None``
    reads to the end of the audio stream (as long as its header says, when it says). Channels (1 to
    8) are mixed down with ffmpeg's standard matrix normalised to unit gain; any input rate is
    resampled. Zeros fill only where the audio stream itself ends before ``end_s``. ``limits``
    (the process's by default) bound the file and what decoding it may cost.
    """
    rate_hz = _checked_rate(sample_rate_hz)
    if not (math.isfinite(start_s) and start_s >= 0) or (
        end_s is not None and not end_s >= start_s
    ):
        raise UsageError(f"need 0 <= start_s <= end_s, got start_s={start_s}, end_s={end_s}")
    limits = limits or decode_limits()
    with _open_media(path, limits) as container:
        audio = _audio_stream(container)
        if audio is None:
            raise MediaError(path, "no audio stream (a silent video?)")
        duration_s = info.duration_s if info is not None else _duration_s(path, container)
        limits.check_header(path, duration_s=duration_s)
        _check_inside(
            path, np.array([start_s] + ([end_s] if end_s is not None else [])), duration_s
        )
        _decode_only(container, audio)
        first_index, samples, data_end_s = _decode_mono(
            path, container, audio, rate_hz, start_s, end_s, _DecodeBudget(path, limits)
        )
        promised_end_s = _promised_end_s(container, audio)
        wanted_end_s = end_s if end_s is not None else (promised_end_s or data_end_s)
        _check_complete(path, "audio", data_end_s, wanted_end_s, promised_end_s)
    start_index = round(start_s * rate_hz)
    if end_s is not None:
        stop_index = round(end_s * rate_hz)
    else:  # to the end of the stream, less the encoder padding a header may exclude
        stop_index = first_index + len(samples)
        if promised_end_s is not None:
            stop_index = min(stop_index, round(promised_end_s * rate_hz))
        stop_index = max(start_index, stop_index)
    return _sample_range(samples, first_index, start_index, stop_index)


# --- opening and describing -------------------------------------------------------------------


@contextmanager
def _open_media(
    path: str | Path, limits: DecodeLimits | None = None
) -> Iterator[av.container.InputContainer]:
    """Open ``path`` to read, with only the ``file`` protocol and the allowed demuxers, and check
    its header against ``limits``; an FFmpeg error, here or in the caller's block, becomes
    MediaError."""
    file = Path(path)
    if not file.exists():
        raise MediaError(path, "file not found")
    if not file.is_file():
        raise MediaError(path, "not a file")
    if file.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(file), metadata_errors="replace", container_options=_OPEN_OPTIONS)
    except av.ArgumentError:  # what FFmpeg answers to a demuxer off the allow-list
        raise MediaError(path, f"not a media file of an allowed kind ({_ALLOWED_KINDS})") from None
    except av.FFmpegError as error:
        raise MediaError(
            path, f"not a media file, or damaged beyond reading ({_ffmpeg_reason(error)})"
        ) from None
    try:
        if _video_stream(container) is None and _audio_stream(container) is None:
            raise MediaError(path, "not a media file: no audio or video stream")
        _check_opened(path, container, limits or decode_limits())
        yield container
    except av.FFmpegError as error:
        raise MediaError(path, f"cannot decode ({_ffmpeg_reason(error)})") from None
    finally:
        container.close()


_ALLOWED_KINDS = ("MP4/MOV, WebM/Matroska, AVI, MPEG-TS/PS, Ogg, MP3, WAV, FLAC, AAC, PNG, JPEG, "
                  "WebP, BMP, GIF; playlists and lists of other files are refused")
_OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ",".join(sorted(ALLOWED_FORMATS))}


def _check_opened(path, container, limits: DecodeLimits) -> None:
    """Refuse a container whose header declares more than ``limits`` allow."""
    header_s = container.duration / av.time_base if container.duration else None
    video = _video_stream(container)
    if video is None:
        limits.check_header(path, duration_s=header_s)
        return
    fps = float(video.average_rate or 0) if video.average_rate else 0.0
    limits.check_header(path, duration_s=header_s, width=video.codec_context.width,
                        height=video.codec_context.height, fps=fps)


def _ffmpeg_reason(error: av.FFmpegError) -> str:
    reason = error.strerror or str(error)
    log = getattr(error, "log", None)  # (level, component, message) when FFmpeg logged one
    if log and len(log) >= 3 and log[2]:
        reason = f"{reason}: {log[2]}"
    return " ".join(str(reason).split())  # one line


def _video_stream(container) -> av.VideoStream | None:
    """The first video stream that is a moving picture (not the cover art of a music file)."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic and stream.codec_context is not None:
            return stream
    return None


def _audio_stream(container) -> av.AudioStream | None:
    for stream in container.streams.audio:
        if stream.codec_context is not None:
            return stream
    return None


def _decode_only(container, keep) -> None:
    """Let the demuxer drop every packet that is not ``keep``'s."""
    for stream in container.streams:
        if stream is not keep:
            stream.discard = Discard.all


def _origin_s(container) -> float:
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _title(container) -> str | None:
    for key, value in container.metadata.items():
        if key.lower() == "title" and value.strip():
            return value.strip()
    return None


def _first_frame_rotation_deg(path, container, video) -> int:
    """Clockwise display rotation (0/90/180/270) from the display matrix beside the first frame."""
    try:
        frame = next(container.decode(video), None)
    except av.FFmpegError as error:
        raise MediaError(
            path, f"corrupt video stream: first frame fails to decode ({_ffmpeg_reason(error)})"
        ) from None
    if frame is None:
        raise MediaError(path, "video stream has no decodable frames")
    return (-_ccw_quarter_turns(frame) * 90) % 360


def _ccw_quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that show ``frame`` upright (PyAV's rotation is CCW)."""
    return round(frame.rotation / 90) % 4


# --- durations and truncation -----------------------------------------------------------------


def _duration_s(path, container) -> float:
    """The media's length: from the header, else from the streams' own lengths, else measured."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    ends = [
        _stream_end_s(container, stream)
        for stream in (_video_stream(container), _audio_stream(container))
        if stream
    ]
    ends = [end for end in ends if end is not None]
    return max(ends) if ends else _measured_duration_s(path)


def _stream_end_s(container, stream) -> float | None:
    """Where a stream's header says it ends, on the media timeline; None when it does not say."""
    if stream.duration and stream.time_base:
        start = stream.start_time if stream.start_time is not None else 0
        return float((start + stream.duration) * stream.time_base) - _origin_s(container)
    for key, value in stream.metadata.items():  # Matroska keeps per-stream lengths as tags
        match = (
            re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", value.strip())
            if key.upper() == "DURATION"
            else None
        )
        if match:
            hours, minutes, seconds = match.groups()
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _promised_end_s(container, stream) -> float | None:
    """How far the header says ``stream`` goes: its own length, else the container's."""
    end = _stream_end_s(container, stream)
    if end is None and container.duration is not None and container.duration > 0:
        end = container.duration / av.time_base
    return end


def _measured_duration_s(path) -> float:
    """Length from the packets' timestamps (no decoding), for headers without a duration."""
    end_s = None
    with _open_media(path) as container:
        origin_s = _origin_s(container)
        for packet in container.demux():
            if packet.pts is not None and packet.time_base is not None:
                packet_end_s = (
                    float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin_s
                )
                end_s = packet_end_s if end_s is None else max(end_s, packet_end_s)
    if end_s is None:
        raise MediaError(path, "no timestamped packets: cannot tell the length")
    return end_s


def _check_complete(
    path, kind: str, data_end_s: float, wanted_end_s: float, promised_end_s: float | None
) -> None:
    """Raise when the data stops short of the request and of what the header promised."""
    if promised_end_s is None:
        return
    if data_end_s + TRUNCATION_TOLERANCE_S < min(wanted_end_s, promised_end_s):
        raise MediaError(
            path,
            f"truncated or corrupt: {kind} data ends at {data_end_s:.2f} s, "
            f"the header says {promised_end_s:.2f} s",
        )


def _check_inside(path, times: np.ndarray, duration_s: float) -> None:
    outside = times[(times < 0) | (times > duration_s + _OUTSIDE_TOLERANCE_S)]
    if len(outside):
        raise MediaError(
            path, f"time {outside[0]:.3f} s is outside the media (0 to {duration_s:.3f} s)"
        )


# --- video ------------------------------------------------------------------------------------


def _shown_pts(path, sorted_times_s: np.ndarray, limits: DecodeLimits) -> set[int] | None:
    """The pts of the frames shown at ``sorted_times_s`` (ascending), from one pass over the video
    packets without decoding, when the stream reorders frames (B-frames, of which those no other
    frame refers to need not be decoded); None when it does not reorder or a packet lacks a pts
    (then every frame is decoded). A frame within a microsecond of a boundary counts on both
    sides of it."""
    with _open_media(path, limits) as container:
        video = _video_stream(container)
        _decode_only(container, video)
        origin_s, last_s = _origin_s(container), float(sorted_times_s[-1])
        stamps, reordered = [], False
        for packet in container.demux(video):
            if packet.size == 0:
                continue  # the demuxer's flush packet
            if packet.pts is None:
                return None
            reordered = reordered or (bool(stamps) and packet.pts < stamps[-1])
            stamps.append(packet.pts)
            dts_s = None if packet.dts is None else float(packet.dts * video.time_base) - origin_s
            if dts_s is not None and dts_s > last_s + 1:
                break  # pts >= dts, and dts only grows: no later packet is shown by then
        if not reordered:
            return None
        pts = np.unique(np.array(stamps, dtype=np.int64))
        starts_s = np.array([float(p * video.time_base) for p in pts]) - origin_s
    # As in _shown_frames: frame k comes after time t when t < after_s[k].
    after_s = starts_s - _FRAME_TIME_TOLERANCE_S
    needed: set[int] = set()
    for margin_s in (-1e-6, 0.0, 1e-6):
        shown = np.searchsorted(after_s, sorted_times_s + margin_s, side="right") - 1
        needed.update(int(p) for p in pts[np.maximum(shown, 0)])
    return needed


def _video_frames(container, video, needed: set[int] | None) -> Iterator[av.VideoFrame]:
    """The video stream's frames; with ``needed``, the non-reference frames whose pts is not in
    it are not decoded (FFmpeg's ``skip_frame``, set packet by packet)."""
    if needed is None:
        yield from container.decode(video)
        return
    context = video.codec_context
    for packet in container.demux(video):
        skip = packet.pts is not None and packet.pts not in needed
        context.skip_frame = "NONREF" if skip else "DEFAULT"
        yield from packet.decode()


def _shown_frames(
    path, container, video, sorted_times_s: np.ndarray, budget: _DecodeBudget,
    needed: set[int] | None = None,
) -> Iterator[av.VideoFrame]:
    """For each time (ascending) the frame displayed then; one pass, stopping after the last.
    ``needed``: see :func:`_video_frames`."""
    origin_s = _origin_s(container)
    frames = _video_frames(container, video, needed)
    shown, shown_end_s, index = None, 0.0, 0
    fallback_period_s = 1 / float(video.average_rate or video.guessed_rate or 25)
    while index < len(sorted_times_s):
        try:
            frame = next(frames, None)
        except av.FFmpegError as error:
            raise MediaError(
                path,
                f"truncated or corrupt video stream: decoding failed after {shown_end_s:.2f} s "
                f"({_ffmpeg_reason(error)})",
            ) from None
        if frame is None:
            break
        time_s = frame.time - origin_s if frame.time is not None else shown_end_s
        budget.add_frame(frame, time_s)
        while (
            index < len(sorted_times_s) and sorted_times_s[index] < time_s - _FRAME_TIME_TOLERANCE_S
        ):
            yield shown if shown is not None else frame
            index += 1
        period_s = (
            float(frame.duration * frame.time_base)
            if frame.duration and frame.time_base
            else fallback_period_s
        )
        shown, shown_end_s = frame, time_s + period_s
    if index == len(sorted_times_s):
        return
    if shown is None:
        raise MediaError(path, "video stream has no decodable frames")
    _check_complete(
        path, "video", shown_end_s, float(sorted_times_s[-1]), _promised_end_s(container, video)
    )
    for _ in range(index, len(sorted_times_s)):
        yield shown  # after the last frame a player keeps showing it


def _display_rgb(
    frame, width: int, height: int, resize_mode: str, reformatter: VideoReformatter
) -> np.ndarray:
    """``frame`` upright at (width, height): FFmpeg scales and converts, numpy turns and crops."""
    turns = _ccw_quarter_turns(frame)
    shown_w, shown_h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    if resize_mode == "squash":
        scaled_w, scaled_h = width, height
    else:  # crop: cover the output, then cut the centre
        scale = max(width / shown_w, height / shown_h)
        scaled_w, scaled_h = max(width, round(shown_w * scale)), max(height, round(shown_h * scale))
    coded_w, coded_h = (scaled_h, scaled_w) if turns % 2 else (scaled_w, scaled_h)
    rgb = reformatter.reformat(frame, width=coded_w, height=coded_h, format="rgb24").to_ndarray()
    if turns:
        rgb = np.rot90(rgb, k=turns)
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return rgb[top : top + height, left : left + width]


# --- audio ------------------------------------------------------------------------------------


def _decode_mono(
    path, container, audio, rate_hz: int, start_s: float, end_s: float | None,
    budget: _DecodeBudget,
):
    """Decode and resample from just before ``start_s`` to just after ``end_s``.

    Returns (timeline index of the first sample, mono float32 samples, end of the data in s).
    """
    origin_s = _origin_s(container)
    resampler = av.AudioResampler(
        format="flt", layout="mono", rate=rate_hz, options=_DOWNMIX_OPTIONS
    )
    chunks: list[np.ndarray] = []
    first_index, data_end_s = None, 0.0
    try:
        for frame in container.decode(audio):
            frame_start_s = frame.time - origin_s if frame.time is not None else data_end_s
            data_end_s = frame_start_s + frame.samples / frame.sample_rate
            budget.add_time(data_end_s)
            if data_end_s < start_s - _RESAMPLER_LEAD_S:
                continue  # wholly before the request: not resampled
            if first_index is None:
                first_index = round(frame_start_s * rate_hz)
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            budget.add_bytes(4 * round((data_end_s - frame_start_s) * rate_hz))
            if end_s is not None and frame_start_s > end_s + _RESAMPLER_LEAD_S:
                break
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    except av.FFmpegError as error:
        raise MediaError(
            path,
            f"truncated or corrupt audio stream: decoding failed after {data_end_s:.2f} s "
            f"({_ffmpeg_reason(error)})",
        ) from None
    if first_index is None and data_end_s == 0.0:
        raise MediaError(path, "audio stream has no decodable frames")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    first_index = first_index if first_index is not None else round(data_end_s * rate_hz)
    return first_index, samples.astype(np.float32, copy=False), data_end_s


def _sample_range(
    samples: np.ndarray, first_index: int, start_index: int, stop_index: int
) -> np.ndarray:
    """Samples ``[start_index, stop_index)`` of the timeline; ``samples`` starts at ``first_index``.

    Zeros where ``samples`` does not reach.
    """
    out = np.zeros(stop_index - start_index, dtype=np.float32)
    lo, hi = max(start_index, first_index), min(stop_index, first_index + len(samples))
    if hi > lo:
        out[lo - start_index : hi - start_index] = samples[lo - first_index : hi - first_index]
    return out


# --- arguments --------------------------------------------------------------------------------


def _checked_times(times_s) -> np.ndarray:
    times = np.asarray(times_s, dtype=np.float64)
    if times.ndim != 1:
        raise UsageError(f"times_s must be a 1-D sequence of seconds, got shape {times.shape}")
    if not np.all(np.isfinite(times)):
        raise UsageError("times_s must be finite seconds")
    return times


def _checked_size(size) -> tuple[int, int]:
    try:
        width, height = (int(value) for value in size)
    except (TypeError, ValueError):
        raise UsageError(f"size must be (width, height) in pixels, got {size!r}") from None
    if width <= 0 or height <= 0:
        raise UsageError(f"size must be positive (width, height) in pixels, got {size!r}")
    return width, height


def _checked_rate(sample_rate_hz) -> int:
    try:
        whole = int(sample_rate_hz) == sample_rate_hz and not isinstance(sample_rate_hz, bool)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or sample_rate_hz <= 0:
        raise UsageError(
            f"sample_rate_hz must be a positive whole number of Hz, got {sample_rate_hz!r}"
        )
    return int(sample_rate_hz)
