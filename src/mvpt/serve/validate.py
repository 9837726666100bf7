"""Check an uploaded query before the pipeline sees it: fields in range, files that really are media.

Failures raise :class:`ApiError` with a 4xx status and a message naming the file as the user
called it (never the server's temporary path): 415 for a file that is not media at all (text
renamed ``.mp4``, or a playlist naming other files), 413 for media over the decode limits (too
long, frames too large, too many per second), 422 for media that cannot serve as a query (empty,
no picture, too short) and for fields out of range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mvpt.errors import MediaError
from mvpt.media import DecodeLimits, MediaLimitError, probe
from mvpt.serve.errors import ApiError
from mvpt.serve.upload import ReceivedForm, UploadedFile
from mvpt.serve.worker import WorkerError

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


def check_request(form: ReceivedForm, *, limits: DecodeLimits | None = None,
                  run: Callable[..., Any] | None = None) -> RecommendRequest:
    """Validate the fields, then probe every file under ``limits`` (blocking: call it from a
    worker thread). ``run(fn, *args, **kwargs)`` runs each probe (a worker pool's ``call``, so a
    hostile header costs a bounded process; in this thread by default)."""
    videos = form.files_of("video")
    if len(videos) != 1:
        raise ApiError(422, "send exactly one video file, in a form field named 'video' "
                            f"(got {len(videos)})")
    top = _whole_number(form.fields.get("top", "10"), name="top", low=1, high=MAX_TOP)
    strength = _fraction(form.fields.get("strength", "0"), name="strength")
    condition = form.files_of("condition")
    probing = partial(run or _here, probe, limits=limits)
    _check_media(videos[0], what="video", min_duration_s=MIN_VIDEO_S, probing=probing)
    for image in condition:
        _check_media(image, what="condition image", min_duration_s=0.0, probing=probing)
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


def _here(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except MediaLimitError as exc:
        raise WorkerError("limit", exc.reason) from None
    except MediaError as exc:
        raise WorkerError("media", exc.reason) from None


_REFUSALS = {"limit": (413, "is too much for this server: {}"),
             "memory": (413, "is too much for this server: {}"),
             "timeout": (422, "took too long to read: {}"),
             "media": (415, "is not a media file the server can read ({})")}


def _check_media(upload: UploadedFile, *, what: str, min_duration_s: float, probing) -> None:
    name = upload.filename or what
    if upload.size_bytes == 0:
        raise ApiError(422, f"the {what} '{name}' is empty (0 bytes)")
    try:
        info = probing(upload.path)
    except WorkerError as exc:
        status, text = _REFUSALS.get(exc.kind, (422, "cannot be read: {}"))
        reason = exc.message.replace(f"{upload.path}: ", "").replace(str(upload.path), name)
        raise ApiError(status, f"the {what} '{name}' {text.format(reason)}") from None
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
