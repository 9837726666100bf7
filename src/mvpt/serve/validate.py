"""Check an uploaded query before the pipeline sees it: fields in range, files that really are media.

Failures raise :class:`ApiError` with a 4xx status and a message naming the file as the user
called it (never the server's temporary path): 415 for a file that is not media at all (text
renamed ``.mp4``, or a playlist naming other files), 413 for media over the decode limits (too
long, frames too large, too many per second), 422 for media that cannot serve as a query (empty,
no picture, too short) and for fields out of range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mvpt.errors import MediaError
from mvpt.media import DecodeLimits, MediaLimitError, probe
from mvpt.serve.errors import ApiError
from mvpt.serve.upload import ReceivedForm, UploadedFile

MAX_TOP = 100
MIN_VIDEO_S = 1.0


@dataclass(frozen=True)
class RecommendRequest:
    """A checked ``POST /api/recommend``: the video, ``top``, the condition images, ``strength``."""

    video: UploadedFile
    top: int
    condition: list[UploadedFile]
    strength: float

    @property
    def condition_paths(self) -> list[Path]:
        return [f.path for f in self.condition]


def check_request(form: ReceivedForm, *, limits: DecodeLimits | None = None) -> RecommendRequest:
    """Validate the fields, then probe every file under ``limits`` (blocking: call it from a
    worker thread)."""
    videos = form.files_of("video")
    if len(videos) != 1:
        raise ApiError(422, "send exactly one video file, in a form field named 'video' "
                            f"(got {len(videos)})")
    top = _whole_number(form.fields.get("top", "10"), name="top", low=1, high=MAX_TOP)
    strength = _fraction(form.fields.get("strength", "0"), name="strength")
    condition = form.files_of("condition")
    _check_media(videos[0], what="video", min_duration_s=MIN_VIDEO_S, limits=limits)
    for image in condition:
        _check_media(image, what="condition image", min_duration_s=0.0, limits=limits)
    return RecommendRequest(video=videos[0], top=top, condition=condition, strength=strength)


def _whole_number(text: str, *, name: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(422, f"{name} must be a whole number from {low} to {high}, got '{text}'")
    return value


def _fraction(text: str, *, name: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ApiError(422, f"{name} must be a number from 0 to 1, got '{text}'")
    return value


def _check_media(upload: UploadedFile, *, what: str, min_duration_s: float,
                 limits: DecodeLimits | None) -> None:
    name = upload.filename or what
    if upload.size_bytes == 0:
        raise ApiError(422, f"the {what} '{name}' is empty (0 bytes)")
    try:
        info = probe(upload.path, limits=limits)
    except MediaLimitError as exc:
        raise ApiError(413, f"the {what} '{name}' is too much for this server: {exc.reason}") from None
    except MediaError as exc:
        raise ApiError(415, f"the {what} '{name}' is not a media file the server can read "
                            f"({exc.reason})") from None
    if not info.has_video:
        raise ApiError(422, f"the {what} '{name}' has no picture (an audio file?); "
                            f"upload a {'video' if what == 'video' else 'picture'}")
    if info.duration_s < min_duration_s:
        raise ApiError(422, f"the {what} '{name}' lasts {info.duration_s:.2f} s; "
                            f"it must last at least {min_duration_s:g} s")


def user_message(exc: Exception, form: ReceivedForm) -> str:
    """``exc``'s message with the server's temporary paths replaced by the uploaded file names."""
    message = str(exc)
    for upload in form.files:
        message = message.replace(str(upload.path), upload.filename or upload.field)
    return message
