"""Track audio a browser can play: the original file when Chromium plays it, else WebM/Opus.

Chromium plays MP3, AAC or Opus in MP4/M4A, Ogg (Vorbis, Opus, FLAC), WAV (PCM), FLAC and WebM;
a file in another format, or one that carries a picture stream (a music video), is transcoded once
to audio-only WebM/Opus (48 kHz stereo). :func:`add_opus_stream` and :func:`encode_audio` are the
building blocks, also used to lay music under a video.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from mvpt.errors import MediaError
from mvpt.fileio import atomic_path

OPUS_RATE_HZ = 48000
OPUS_FRAME_SAMPLES = 960  # 20 ms
OPUS_BIT_RATE = 96000
WEBM_AUDIO_TYPE = "audio/webm"

_PCM = frozenset({"pcm_u8", "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le"})
_MP4_CODECS = frozenset({"aac", "mp3", "opus", "flac"})
# suffix -> (media type, codecs Chromium decodes in that container)
PLAYABLE = {
    ".mp3": ("audio/mpeg", frozenset({"mp3"})),
    ".m4a": ("audio/mp4", _MP4_CODECS),
    ".mp4": ("audio/mp4", _MP4_CODECS),
    ".aac": ("audio/aac", frozenset({"aac"})),
    ".ogg": ("audio/ogg", frozenset({"vorbis", "opus", "flac"})),
    ".oga": ("audio/ogg", frozenset({"vorbis", "opus", "flac"})),
    ".opus": ("audio/ogg", frozenset({"opus"})),
    ".wav": ("audio/wav", _PCM),
    ".flac": ("audio/flac", frozenset({"flac"})),
    ".webm": ("audio/webm", frozenset({"opus", "vorbis"})),
}


@dataclass(frozen=True)
class Playable:
    """How to serve a track: the file to send and its media type."""

    path: Path
    media_type: str


def browser_playable(path: Path) -> Playable | None:
    """``path`` itself if Chromium plays it as audio (known container, codec, no picture stream)."""
    known = PLAYABLE.get(path.suffix.lower())
    if known is None:
        return None
    media_type, codecs = known
    try:
        with av.open(str(path)) as container:
            pictures = [s for s in container.streams.video
                        if not s.disposition & av.stream.Disposition.attached_pic]
            sound = container.streams.audio
            if pictures or not sound or sound[0].codec_context.name not in codecs:
                return None
    except (av.FFmpegError, OSError):
        return None
    return Playable(path, media_type)


def transcode_to_webm(src: Path, out: Path) -> Path:
    """Write ``src``'s first audio stream to ``out`` as WebM/Opus, atomically
    (:func:`mvpt.fileio.atomic_path`)."""
    try:
        with atomic_path(out) as partial, av.open(str(partial), "w", format="webm") as container:
            stream = add_opus_stream(container)
            for packet in encode_audio(stream, pcm_chunks(src)):
                container.mux(packet)
    except av.FFmpegError as exc:
        raise MediaError(src, f"cannot transcode to WebM/Opus ({exc})") from None
    return out


def add_opus_stream(container) -> av.AudioStream:
    stream = container.add_stream("libopus", rate=OPUS_RATE_HZ, layout="stereo")
    stream.bit_rate = OPUS_BIT_RATE
    return stream


def pcm_chunks(path: Path, *, start_s: float = 0.0, end_s: float | None = None) -> Iterator[np.ndarray]:
    """Float32 stereo blocks [2, n] at 48 kHz of ``path``'s first audio stream from ``start_s``
    (seconds) to ``end_s`` (or the end)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            if start_s > 0 and stream.time_base:
                container.seek(int(start_s / stream.time_base), stream=stream)
            yield from _trimmed(container, stream, start_s, end_s)
    except av.FFmpegError as exc:
        raise MediaError(path, f"cannot decode audio ({exc})") from None


def _trimmed(container, stream, start_s: float, end_s: float | None) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=OPUS_RATE_HZ)
    position_s = None
    for frame in container.decode(stream):
        if position_s is None:
            position_s = float(frame.time or 0.0)
        for out in resampler.resample(frame):
            block = out.to_ndarray()
            first = round(max(0.0, start_s - position_s) * OPUS_RATE_HZ)
            last = block.shape[1]
            if end_s is not None:
                last = min(last, round((end_s - position_s) * OPUS_RATE_HZ))
            position_s += block.shape[1] / OPUS_RATE_HZ
            if last > first:
                yield block[:, first:last]
            if end_s is not None and position_s >= end_s:
                return


def encode_audio(stream, chunks: Iterator[np.ndarray], *, fade_s: float = 0.0,
                 duration_s: float | None = None) -> Iterator[av.Packet]:
    """Encode float32 stereo ``chunks`` with ``stream``'s encoder in 20 ms frames, fading in over
    ``fade_s`` seconds and, when ``duration_s`` is known, fading out over the last ``fade_s``."""
    pending = np.zeros((2, 0), dtype=np.float32)
    written = 0
    for chunk in chunks:
        pending = np.concatenate([pending, chunk], axis=1)
        usable = pending.shape[1] - pending.shape[1] % OPUS_FRAME_SAMPLES
        for start in range(0, usable, OPUS_FRAME_SAMPLES):
            block = pending[:, start:start + OPUS_FRAME_SAMPLES]
            yield from _encode(stream, _faded(block, written, fade_s, duration_s), written)
            written += OPUS_FRAME_SAMPLES
        pending = pending[:, usable:]
    if pending.shape[1]:
        padded = np.zeros((2, OPUS_FRAME_SAMPLES), dtype=np.float32)
        padded[:, :pending.shape[1]] = pending
        yield from _encode(stream, _faded(padded, written, fade_s, duration_s), written)
    yield from stream.encode(None)


def _faded(block: np.ndarray, first_sample: int, fade_s: float, duration_s: float | None) -> np.ndarray:
    if fade_s <= 0:
        return block
    times_s = (first_sample + np.arange(block.shape[1])) / OPUS_RATE_HZ
    gain = np.clip(times_s / fade_s, 0.0, 1.0)
    if duration_s is not None:
        gain = np.minimum(gain, np.clip((duration_s - times_s) / fade_s, 0.0, 1.0))
    return (block * gain).astype(np.float32)


def _encode(stream, block: np.ndarray, pts: int) -> list[av.Packet]:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout="stereo")
    frame.sample_rate = OPUS_RATE_HZ
    frame.pts = pts
    return stream.encode(frame)
