"""Receive a multipart upload straight to disk, stopping as soon as it passes the size limit.

Starlette's own form parser reads the whole body before a route sees it; this one counts bytes as
they arrive, so an oversized upload is refused after ``max_bytes`` (or at once, from its
``Content-Length``) and never held in memory: file parts go to files, text fields are capped small.
A file part is stored as ``upload-N`` without the client's suffix: decoders find the format from
the content, never from a name the client chose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from mvpt.serve.errors import ApiError

MAX_FIELD_BYTES = 1024
MAX_PARTS = 64
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 1024


@dataclass
class UploadedFile:
    """One file part: the form field it came in, the client's file name, where it now lies."""

    field: str
    filename: str
    path: Path
    size_bytes: int = 0


@dataclass
class ReceivedForm:
    """Text fields (last value wins) and file parts, in the order they came."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)

    def files_of(self, name: str) -> list[UploadedFile]:
        return [f for f in self.files if f.field == name]


async def receive_form(request: Request, *, dest_dir: Path, max_bytes: int) -> ReceivedForm:
    """Parse ``request``'s multipart body, writing file parts under ``dest_dir``.

    Raises :class:`ApiError` 413 past ``max_bytes`` of body, 400 for a body that is not
    well-formed multipart/form-data. Files already written stay in ``dest_dir`` for the caller to
    remove.
    """
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(400, "expected a multipart/form-data upload with a 'video' file field")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, _too_large(max_bytes))
    sink = _PartSink(dest_dir)
    received = 0
    try:
        parser = MultipartParser(boundary, sink.callbacks(), max_header_count=MAX_PART_HEADERS,
                                 max_header_size=MAX_PART_HEADER_BYTES)
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise ApiError(413, _too_large(max_bytes))
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:  # a bad boundary, part header or body
        raise ApiError(400, f"malformed multipart upload ({exc})") from None
    except ClientDisconnect:
        raise ApiError(400, "the upload was interrupted") from None
    finally:
        sink.close()
    return sink.form


def _too_large(max_bytes: int) -> str:
    return f"upload too large: the limit is {max_bytes / 2**20:.0f} MB"


class _PartSink:
    """Callbacks for :class:`MultipartParser`: headers of each part, then its data to a file."""

    def __init__(self, dest_dir: Path):
        self.dest_dir = dest_dir
        self.form = ReceivedForm()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._text: bytearray | None = None
        self._file = None
        self._current: UploadedFile | None = None
        self._parts = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_val, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done, "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise ApiError(400, f"too many form parts (at most {MAX_PARTS})")
        self._disposition = b""
        self._header_name = self._header_value = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_val(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            self._current, self._text = UploadedFile(name, "", Path()), bytearray()
            return
        filename = options[b"filename"].decode("utf-8", "replace")
        path = self.dest_dir / f"upload-{len(self.form.files)}"
        self._current, self._text = UploadedFile(name, filename, path), None
        self._file = open(path, "wb")  # noqa: SIM115 (closed in _end or close)
        self.form.files.append(self._current)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise ApiError(400, f"form field '{self._current.field}' is too long")
        elif self._file is not None:
            self._file.write(data[start:end])
            self._current.size_bytes += end - start

    def _end(self) -> None:
        if self._text is not None:
            self.form.fields[self._current.field] = self._text.decode("utf-8", "replace")
        self.close()
        self._text = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

