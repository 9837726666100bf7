"""Files served with HTTP Range support (what ``<audio>`` and ``<video>`` seek with).

Starlette's :class:`FileResponse` sends 206 partial content, ``Accept-Ranges`` and
``Content-Range``; this module checks the ``Range`` header first so that a range the file cannot
satisfy gets a JSON 416 (with ``Content-Range: bytes */SIZE``), and a header that is not a byte
range a JSON 400, like every other error here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from mvpt.serve.errors import error_response

_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def range_problem(range_header: str, size_bytes: int) -> tuple[int, str] | None:
    """Why a Range header cannot be served from a file of ``size_bytes``: (400, reason) when it is
    not a byte range, (416, reason) when it falls outside the file; None when it can be served."""
    unit, _, specs = range_header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return 400, f"unsupported Range header '{range_header}' (expected bytes=FIRST-LAST)"
    for spec in specs.split(","):
        match = _RANGE_SPEC.match(spec)
        if match is None or match.groups() == ("", ""):
            return 400, f"malformed byte range '{spec.strip()}' in Range header"
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            if int(last) == 0 or size_bytes == 0:
                return 416, f"requested range '{spec.strip()}' is empty"
        elif int(first) >= size_bytes or (last != "" and int(last) < int(first)):
            return 416, f"requested range '{spec.strip()}' is outside the file ({size_bytes} bytes)"
    return None


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
    problem = None if header is None else range_problem(header, size_bytes)
    if problem is not None:
        status, message = problem
        headers = {"Content-Range": f"bytes */{size_bytes}"} if status == 416 else None
        return _finished(error_response(status, message, headers=headers), on_done)
    return _GuardedFileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"},
                                on_done=on_done)


def _finished(response: Response, on_done: Callable[[], None] | None) -> Response:
    if on_done is not None:
        on_done()
    return response


class _GuardedFileResponse(FileResponse):
    """A FileResponse that calls ``on_done`` however the transfer ends (done, failed, cancelled)."""

    def __init__(self, *args, on_done: Callable[[], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._on_done = on_done

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._on_done is not None:
                self._on_done()
