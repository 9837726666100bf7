"""Fuzzing the server's parsers (hypothesis): Range headers and multipart bodies never give a 500,
every 206 is exactly the file's slice, and a refused upload leaves no file behind."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvpt.serve import create_app
from mvpt.serve.engine import default_engine, load_index_items
from tests.fixtures import engines

BASE_URL = "http://127.0.0.1:8000"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client(tiny_index, tmp_path_factory):
    engine = dataclasses.replace(default_engine(), recommend=engines.quick_recommend)
    app = create_app(tiny_index, work_dir=tmp_path_factory.mktemp("work"), isolate=False, engine=engine)
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def track(client, tiny_index) -> tuple[str, bytes]:
    url = f"/api/tracks/{load_index_items(tiny_index)['item_id'].iloc[0]}/audio"
    return url, client.get(url).content


def expected_slice(header: str, data: bytes) -> bytes | None:
    """The bytes one well-formed range asks for (an independent reading of RFC 9110), or None
    when the header is not a single satisfiable range."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip(" \t").partition("-")
    first, last = first.strip(" \t"), last.strip(" \t")
    if not dash or not (first.isascii() and last.isascii()) or not (first + last).isdigit() and \
            not (first.isdigit() and last == "") and not (first == "" and last.isdigit()):
        return None
    if first == "":
        n = int(last) if len(last) < 30 else len(data)
        return data[-n:] if 0 < n else None
    start = int(first) if len(first) < 30 else len(data)
    stop = len(data) if last == "" else (int(last) + 1 if len(last) < 30 else len(data))
    return data[start:min(stop, len(data))] if start < len(data) and stop > start else None


numbers = st.one_of(st.integers(0, 10**6).map(str), st.text("0123456789", min_size=1, max_size=10_000),
                    st.just(""))
spec = st.builds(lambda a, b, sp: f"{sp}{a}{sp}-{sp}{b}{sp}", numbers, numbers, st.sampled_from(["", " ", "\t"]))
range_headers = st.one_of(
    st.builds(lambda unit, specs: f"{unit}={','.join(specs)}",
              st.sampled_from(["bytes", "BYTES", " bytes ", "pages", ""]), st.lists(spec, min_size=1, max_size=40)),
    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=200),  # latin-1 noise
    st.text(max_size=50).map(lambda t: "bytes=" + t),  # unicode digits and the rest
)


@FUZZ
@given(header=range_headers)
def test_range_headers_get_only_200_206_400_416_and_206_is_the_exact_slice(client, track, header):
    url, data = track
    answer = client.get(url, headers={"Range": header.encode("utf-8")})
    assert answer.status_code in (200, 206, 400, 416), (header[:80], answer.text[:200])
    if answer.status_code == 200:
        assert answer.content == data
    if answer.status_code == 206:
        assert answer.content == expected_slice(header.encode("utf-8").decode("latin-1"), data)


def multipart_body(boundary: str, parts: list[tuple[str, bytes]], cut: int | None) -> bytes:
    body = b"".join(f"--{boundary}\r\n{headers}\r\n\r\n".encode("utf-8", "replace") + content + b"\r\n"
                    for headers, content in parts) + f"--{boundary}--\r\n".encode("utf-8", "replace")
    return body if cut is None else body[:cut]


part_headers = st.one_of(
    st.just('Content-Disposition: form-data; name="video"; filename="v.mp4"'),
    st.just('Content-Disposition: form-data; name="top"'),
    st.builds(lambda n: f'Content-Disposition: form-data; name="{n}"; filename="{n}"',
              st.text(max_size=300)),
    st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=2000),
)
bodies = st.builds(
    multipart_body,
    boundary=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=1000),
    parts=st.lists(st.tuples(part_headers, st.binary(max_size=3000)), max_size=80),
    cut=st.one_of(st.none(), st.integers(0, 300_000)),
)


@FUZZ
@given(body=bodies, boundary_in_header=st.booleans())
def test_multipart_bodies_never_give_a_500_or_leave_files(client, body, boundary_in_header):
    boundary = body[2:body.find(b"\r\n")].decode("utf-8", "replace") if body.startswith(b"--") else "x"
    if not boundary_in_header:
        boundary = boundary[::-1] or "y"
    answer = client.post("/api/recommend", content=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}".encode("utf-8")})
    assert answer.status_code < 500, answer.text[:300]
    assert "error" in answer.json() or answer.status_code == 200
    server = client.app.state.server
    committed = {q for q in server.queries._queries}
    on_disk = {p.name for p in server.queries.root.iterdir()} if server.queries.root.exists() else set()
    assert on_disk == committed  # a refused upload leaves nothing
    assert server.queries.arriving == 0
