"""Files served with HTTP Range support (what ``<audio>`` and ``<video>`` seek with).

This module reads the ``Range`` header itself: a header that is not a byte range gets a JSON 400,
a range the file cannot satisfy a JSON 416 (with ``Content-Range: bytes */SIZE``), one range a 206
of exactly those bytes, and several ranges the whole file (200; RFC 9110 lets a server ignore a
Range header, and players ask for one range). Only ASCII digits count, a number of more than 18
digits is simply larger than any file, and at most ``MAX_RANGES`` ranges are read.
Starlette's :class:`FileResponse` then sends the file, given the one range as checked here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from mvpt.serve.errors import error_response

MAX_RANGES = 16
_MAX_DIGITS = 18  # below 2**63: int() stays cheap and exact
_HUGE = 10**_MAX_DIGITS
_RANGE_SPEC = re.compile(r"[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*")


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


def _spans(range_header: str, size_bytes: int) -> list[tuple[int, int]] | tuple[int, str]:
    """The byte spans [first, end) a Range header asks for, or (status, reason) when it is not a
    byte range (400) or falls outside the file (416)."""
    unit, _, specs = range_header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return 400, f"unsupported Range header '{range_header[:40]}' (expected bytes=FIRST-LAST)"
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        return 400, f"too many byte ranges ({len(parts)}; at most {MAX_RANGES})"
    spans = []
    for spec in parts:
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None or match.groups() == ("", ""):
            return 400, f"malformed byte range '{spec.strip()[:40]}' in Range header"
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            if _number(last) == 0 or size_bytes == 0:
                return 416, f"requested range '-{last[:20]}' is empty"
            spans.append((max(0, size_bytes - _number(last)), size_bytes))
            continue
        start = _number(first)
        stop = size_bytes if last == "" else min(size_bytes, _number(last) + 1)
        if start >= size_bytes or stop <= start:
            return 416, f"requested range '{spec.strip()[:40]}' is outside the file ({size_bytes} bytes)"
        spans.append((start, stop))
    return spans


def range_problem(range_header: str, size_bytes: int) -> tuple[int, str] | None:
    """Why a Range header cannot be served from a file of ``size_bytes``: (400, reason) when it is
    not a byte range, (416, reason) when it falls outside the file; None when it can be served."""
    spans = _spans(range_header, size_bytes)
    return spans if isinstance(spans, tuple) else None


def ranged_file(request: Request, path: Path, *, media_type: str,
                on_done: Callable[[], None] | None = None) -> Response:
    """``path`` as a full (200) or partial (206) response, or a JSON 400/416 for a bad range.

    ``on_done`` runs once the response is over, sent or abandoned (a caller keeps the file from
    being deleted until then).
    """
    try:
        size_bytes = path.stat().st_size
    except FileNotFoundError:  # removed since it was made (an expired query)
        return _finished(error_response(404, "this file has expired; run the query again"), on_done)
    header = request.headers.get("range")
    spans = None if header is None else _spans(header, size_bytes)
    if isinstance(spans, tuple):
        status, message = spans
        headers = {"Content-Range": f"bytes */{size_bytes}"} if status == 416 else None
        return _finished(error_response(status, message, headers=headers), on_done)
    single = spans[0] if spans is not None and len(spans) == 1 else None
    return _GuardedFileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"},
                                on_done=on_done, span=single)


def _finished(response: Response, on_done: Callable[[], None] | None) -> Response:
    if on_done is not None:
        on_done()
    return response


class _GuardedFileResponse(FileResponse):
    """A FileResponse that sends ``span`` (first, end) or the whole file (the client's Range
    header replaced by the checked one), and calls ``on_done`` however the transfer ends."""

    def __init__(self, *args, on_done: Callable[[], None] | None = None,
                 span: tuple[int, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._on_done = on_done
        self._span = span

    async def __call__(self, scope, receive, send) -> None:
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"range"]
        if self._span is not None:
            headers.append((b"range", f"bytes={self._span[0]}-{self._span[1] - 1}".encode()))
        try:
            await super().__call__({**scope, "headers": headers}, receive, send)
        finally:
            if self._on_done is not None:
                self._on_done()
