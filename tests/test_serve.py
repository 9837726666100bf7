"""The HTTP API (mvpt.serve) over a small real index (a linear run fitted on generated music
videos, offline encoders); see tests/fixtures/tiny_run.py. Most tests run the pipeline in the
test's own process (``isolate=False``); tests/test_serve_hostile.py covers the worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import threading
from pathlib import Path

import av
import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from mvpt.errors import MediaError, StoreError
from mvpt.serve import create_app
from mvpt.serve.engine import default_engine, load_index_items
from mvpt.serve.errors import ApiError
from mvpt.serve.ranges import range_problem
from mvpt.serve.upload import receive_form
from tests.fixtures.media_factory import write_video

BASE_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def index_dir(tiny_index) -> Path:
    return tiny_index


@pytest.fixture(scope="module")
def query_video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("query") / "clip.mp4", duration_s=3.0, size=(64, 48))


@pytest.fixture
def work_dir(tmp_path) -> Path:
    return tmp_path / "work"


def open_client(app) -> TestClient:
    return TestClient(app, base_url=BASE_URL)


@pytest.fixture
def make_client(index_dir, work_dir):
    """Opens TestClients (lifespan included) on apps over the tiny index; closes them after."""
    work_dir.mkdir(exist_ok=True)
    clients = []

    def make(**options) -> TestClient:
        options.setdefault("isolate", False)
        client = open_client(create_app(index_dir, work_dir=work_dir, **options))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def with_recommend(fn):
    return dataclasses.replace(default_engine(), recommend=fn)


def post_video(client, path: Path, *, name: str | None = None, data=None, extra_files=()):
    files = [("video", (name or path.name, path.read_bytes(), "video/mp4")), *extra_files]
    return client.post("/api/recommend", files=files, data=data or {})


def server_of(client):
    return client.app.state.server


def query_folders(client) -> list[Path]:
    root = server_of(client).queries.root
    return sorted(root.iterdir()) if root.exists() else []


def a_track(index_dir: Path) -> dict:
    return load_index_items(index_dir).iloc[0].to_dict()


def write_png(path: Path) -> Path:
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 32, 24, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 200, dtype=np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def audio_url(item_id: str) -> str:
    from urllib.parse import quote

    return f"/api/tracks/{quote(item_id, safe='')}/audio"


# ------------------------------------------------------------------------------------ basics
def test_health_reports_the_track_count_and_no_server_path(make_client, index_dir):
    answer = make_client().get("/api/health")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["status"], body["tracks"], body["max_upload_mb"]) == ("ok", 8, 200.0)
    assert body["missing_tracks"] == {"count": 0, "ids": []}
    assert body["limits"]["max_duration_s"] == 900.0
    assert str(index_dir.parent) not in answer.text and "/tmp" not in answer.text


def test_page_and_its_static_files_are_served(make_client):
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name, kind in [("app.js", "javascript"), ("style.css", "text/css")]:
        assert f"/static/{name}" in page.text
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # no external requests


# ---------------------------------------------------------------------------------- recommend
def test_upload_returns_the_ranked_list_with_urls(make_client, query_video):
    client = make_client()
    answer = post_video(client, query_video, data={"top": "3"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["direction"] == "video_to_music" and body["query"] == "clip.mp4"
    results = body["results"]
    assert [row["rank"] for row in results] == [1, 2, 3]
    scores = [row["score"] for row in results]
    assert scores == sorted(scores, reverse=True)
    for row in results:
        assert row["audio_url"] == audio_url(row["item_id"])
        assert row["preview_url"] == f"/api/previews/{body['query_id']}/{row['rank']}"
        assert 0 <= row["offset_s"] <= row["end_s"] <= 8.0
        assert "path" not in row and "source_path" not in row
    assert "/tmp" not in answer.text  # neither the library's paths nor the upload's
    folders = query_folders(client)
    assert [f.name for f in folders] == [body["query_id"]]
    assert [f.name for f in folders[0].iterdir()] == ["upload-0"]  # never the client's suffix


def test_options_reach_recommend_and_condition_images_are_deleted_after(make_client, query_video, tmp_path):
    calls = []

    def recording(index_dir, query_path, **options):
        images = options["condition_images"] or []
        calls.append({**options, "exist": [Path(p).is_file() for p in images]})
        return default_engine().recommend(index_dir, query_path, **options)

    client = make_client(engine=with_recommend(recording))
    image = write_png(tmp_path / "guitar.png")
    images = [("condition", (f"guitar{i}.png", image.read_bytes(), "image/png")) for i in range(2)]
    answer = post_video(client, query_video, data={"top": "2", "strength": "0.5"}, extra_files=images)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["results"]) == 2
    assert calls == [{"top": 2, "strength": 0.5, "condition_images": calls[0]["condition_images"],
                      "exist": [True, True]}]
    assert [f.name for f in query_folders(client)[0].iterdir()] == ["upload-0"]


def test_oversized_upload_is_refused_with_413_and_leaves_nothing(make_client, tmp_path):
    client = make_client(max_upload_mb=0.05)  # 52,428 bytes
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 100_000)
    answer = post_video(client, big)
    assert answer.status_code == 413
    assert "limit is" in answer.json()["error"]
    assert query_folders(client) == []


def test_size_limit_is_checked_while_the_body_streams_in(tmp_path):
    """Without a Content-Length the parser stops pulling the body at the limit."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
            f"filename=\"v.mp4\"\r\n\r\n").encode()
    chunks = [head] + [b"x" * 10_000] * 100
    pulled = []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": chunks[len(pulled) - 1], "more_body": True}

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]}
    with pytest.raises(ApiError) as caught:
        asyncio.run(receive_form(Request(scope, receive), dest_dir=tmp_path, max_bytes=55_000))
    assert caught.value.status == 413
    assert len(pulled) == 7  # 6 chunks fit in 55,000 bytes; the 7th passes the limit
    assert (tmp_path / "upload-0").stat().st_size < 55_000


@pytest.mark.parametrize("case, status, message", [
    ("text renamed .mp4", 415, "'notes.mp4' is not a media file"),
    ("zero bytes", 422, "'notes.mp4' is empty (0 bytes)"),
    ("audio only", 422, "has no picture"),
    ("no video field", 422, "exactly one video file"),
    ("top out of range", 422, "top must be a whole number from 1 to 100, got '0'"),
    ("strength out of range", 422, "strength must be a number from 0 to 1, got 'lots'"),
])
def test_bad_uploads_get_a_clear_4xx(make_client, query_video, tmp_path, case, status, message):
    client = make_client()
    files = {
        "text renamed .mp4": [("video", ("notes.mp4", b"just some text\n" * 50, "video/mp4"))],
        "zero bytes": [("video", ("notes.mp4", b"", "video/mp4"))],
        "audio only": [("video", ("song.m4a", write_video(tmp_path / "a.m4a", has_video=False).read_bytes(),
                                  "audio/mp4"))],
        "no video field": [("file", ("clip.mp4", query_video.read_bytes(), "video/mp4"))],
    }.get(case, [("video", ("clip.mp4", query_video.read_bytes(), "video/mp4"))])
    data = {"top out of range": {"top": "0"}, "strength out of range": {"strength": "lots"}}.get(case, {})
    answer = client.post("/api/recommend", files=files, data=data)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert message in error
    assert "mvpt-serve" not in error  # the server's temporary paths stay private
    assert query_folders(client) == []


def test_a_body_that_is_not_multipart_is_a_400(make_client):
    answer = make_client().post("/api/recommend", json={"video": "clip.mp4"})
    assert answer.status_code == 400
    assert "multipart/form-data" in answer.json()["error"]


def test_pipeline_errors_become_422_naming_the_upload_503_or_500(make_client, query_video):
    def refuse(index_dir, query_path, **_):
        raise MediaError(query_path, "video stream ends after 0.2 s")

    client = make_client(engine=with_recommend(refuse))
    answer = post_video(client, query_video, name="holiday.mp4")
    assert answer.status_code == 422
    assert answer.json() == {"error": "cannot recommend for this upload: holiday.mp4: video stream ends after 0.2 s"}

    def broken_index(*_, **__):
        raise StoreError("/srv/index: unreadable manifest")

    client = make_client(engine=with_recommend(broken_index))
    answer = post_video(client, query_video)
    assert answer.status_code == 503
    assert answer.json()["error"].endswith("/srv/index: unreadable manifest")

    def crash(*_, **__):
        raise RuntimeError("bug")

    client = make_client(engine=with_recommend(crash))
    client_500 = TestClient(client.app, raise_server_exceptions=False, base_url=BASE_URL)
    answer = post_video(client_500, query_video)
    assert answer.status_code == 500 and "internal server error" in answer.json()["error"]
    assert query_folders(client) == []


def test_recommend_runs_in_a_worker_thread_not_on_the_event_loop(index_dir, query_video, work_dir):
    work_dir.mkdir()
    started, release = threading.Event(), threading.Event()

    def slow(index_dir, query_path, **options):
        started.set()
        assert release.wait(timeout=30)
        return default_engine().recommend(index_dir, query_path, **options)

    app = create_app(index_dir, work_dir=work_dir, engine=with_recommend(slow), isolate=False)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            files = {"video": ("clip.mp4", query_video.read_bytes(), "video/mp4")}
            pending = asyncio.create_task(client.post("/api/recommend", files=files))
            while not started.is_set():
                await asyncio.sleep(0.01)
            health = await client.get("/api/health")  # answered while recommend is blocked
            finished_first = pending.done()
            release.set()
            return health.status_code, finished_first, (await pending).status_code

    assert asyncio.run(scenario()) == (200, False, 200)
    app.state.server.close()


def test_a_real_recommendation_is_served_with_playable_urls(make_client, index_dir, query_video):
    client = make_client()
    body = post_video(client, query_video, data={"top": "20"}).json()
    assert "mvpt-serve" not in str(body)
    rows = body["results"]
    assert len(rows) == 8 and len({row["item_id"] for row in rows}) == 8  # every track, once
    assert set(load_index_items(index_dir)["item_id"]) == {row["item_id"] for row in rows}
    assert body["query_duration_s"] == pytest.approx(3.0, abs=0.1)
    row = rows[0]
    assert row["end_s"] == pytest.approx(min(row["offset_s"] + 3.0, row["item_duration_s"]), abs=0.01)
    assert client.get(row["audio_url"]).status_code == 200
    assert client.get(row["preview_url"]).status_code == 200


def test_items_table_from_an_index_window_table():
    from mvpt.index import Index
    from mvpt.serve.engine import items_from_windows, tracks_by_id

    table = pd.DataFrame({"item_id": ["a", "a", "b"], "start_s": [0.0, 5.0, 0.0], "end_s": [10.0, 15.0, 10.0],
                          "source_path": ["/m/a.ogg", "/m/a.ogg", "b.wav"], "title": ["A", "A", "B"],
                          "item_duration_s": [15.0, 15.0, 10.0]})
    index = Index.from_vectors(np.eye(3, 4, dtype=np.float32), table)
    tracks = tracks_by_id(items_from_windows(index.table), index_dir=Path("/lib"))
    assert list(tracks) == ["a", "b"]
    assert (tracks["a"].path, tracks["a"].title, tracks["a"].duration_s) == (Path("/m/a.ogg"), "A", 15.0)
    assert tracks["b"].path == Path("/lib/b.wav")  # relative paths are taken from the index folder


# ---------------------------------------------------------------------------------- audio
def test_audio_range_request_returns_206_with_the_exact_bytes(make_client, index_dir):
    track = a_track(index_dir)
    client = make_client()
    data = client.get(audio_url(track["item_id"])).content
    answer = client.get(audio_url(track["item_id"]), headers={"Range": "bytes=100-199"})
    assert answer.status_code == 206
    assert answer.content == data[100:200]
    assert answer.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert answer.headers["accept-ranges"] == "bytes"
    assert answer.headers["content-type"] == "audio/webm"
    tail = client.get(audio_url(track["item_id"]), headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    whole = client.get(audio_url(track["item_id"]))
    assert whole.status_code == 200 and whole.content == data


@pytest.mark.parametrize("header, status", [("bytes=999999999-", 416), ("bytes=50-10", 416),
                                            ("bytes=-0", 416), ("pages=1-2", 400), ("bytes=a-b", 400)])
def test_bad_ranges_are_refused(make_client, index_dir, header, status):
    track = a_track(index_dir)
    client = make_client()
    size = len(client.get(audio_url(track["item_id"])).content)
    answer = client.get(audio_url(track["item_id"]), headers={"Range": header})
    assert answer.status_code == status
    assert "error" in answer.json()
    if status == 416:
        assert answer.headers["content-range"] == f"bytes */{size}"


def test_range_problem_against_http_rules():
    assert range_problem("bytes=0-0", 10) is None
    assert range_problem("bytes=9-", 10) is None
    assert range_problem("bytes=-20", 10) is None  # more than the file: the whole file
    assert range_problem("bytes=0-1, 4-5", 10) is None
    assert range_problem("bytes=10-", 10)[0] == 416
    assert range_problem("bytes=0-1, 12-13", 10)[0] == 416
    assert range_problem("bytes=", 10)[0] == 400


def test_a_music_video_track_is_transcoded_once_to_audio_only_webm(make_client, index_dir):
    track = a_track(index_dir)
    client = make_client()
    first = client.get(audio_url(track["item_id"]))
    assert first.status_code == 200 and first.headers["content-type"] == "audio/webm"
    cached = list(server_of(client).audio_dir.iterdir())
    assert len(cached) == 1
    with av.open(str(cached[0])) as container:
        assert [s.type for s in container.streams] == ["audio"]
        assert container.streams.audio[0].codec_context.name == "opus"
        assert container.duration / 1e6 == pytest.approx(track["duration_s"], abs=0.1)
    second = client.get(audio_url(track["item_id"]), headers={"Range": "bytes=0-"})
    assert second.status_code == 206 and second.content == first.content
    assert list(server_of(client).audio_dir.iterdir()) == cached


@pytest.mark.parametrize("url", [
    "/api/tracks/no-such-track/audio",
    "/api/tracks/..%2F..%2Fetc%2Fpasswd/audio",
    "/api/tracks/%2Fetc%2Fpasswd/audio",
    "/api/previews/0123456789abcdef/1",
    "/static/..%2Fapi.py",
    "/static/index.html%2F..%2F..%2Fapi.py",
])
def test_unknown_ids_and_path_traversal_get_404(make_client, url):
    answer = make_client().get(url)
    assert answer.status_code == 404
    assert answer.json()["error"]
    assert "root:" not in answer.text


# -------------------------------------------------------------------------------- previews
def test_preview_is_a_webm_made_once_and_served_with_ranges(make_client, query_video):
    made = []

    def counting(*args, **options):
        made.append(options)
        return default_engine().make_preview(*args, **options)

    client = make_client(engine=dataclasses.replace(default_engine(), make_preview=counting))
    body = post_video(client, query_video, data={"top": "2"}).json()
    url = body["results"][1]["preview_url"]
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/webm"
    part = client.get(url, headers={"Range": "bytes=0-63"})
    assert part.status_code == 206 and part.content == whole.content[:64]
    assert made == [{"fade_s": 0.5, "container": "webm"}]
    preview_file = query_folders(client)[0] / "preview-2.webm"
    with av.open(str(preview_file)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        assert kinds == {"video": "vp9", "audio": "opus"}
        assert container.duration / 1e6 == pytest.approx(3.0, abs=0.1)
    assert client.get(f"/api/previews/{body['query_id']}/3").status_code == 404
    assert client.get(f"/api/previews/{body['query_id']}/x").status_code == 422


# --------------------------------------------------------------------------- temporary files
def test_only_the_last_queries_are_kept(make_client, query_video):
    client = make_client(max_queries=2)
    ids = [post_video(client, query_video).json()["query_id"] for _ in range(3)]
    assert [f.name for f in query_folders(client)] == sorted(ids[1:])
    expired = client.get(f"/api/previews/{ids[0]}/1")
    assert expired.status_code == 404 and "expired" in expired.json()["error"]
    assert client.get(f"/api/previews/{ids[2]}/1").status_code == 200
    ids.append(post_video(client, query_video).json()["query_id"])  # ids[1] is now the oldest
    assert [f.name for f in query_folders(client)] == sorted([ids[2], ids[3]])


def test_a_query_being_previewed_is_kept_past_the_bound_until_sent(make_client, query_video):
    client = make_client(max_queries=1)
    store = server_of(client).queries
    first = post_video(client, query_video).json()
    query = store.get(first["query_id"])
    store.pin(query)  # as the preview route does while it makes and sends a preview
    second = post_video(client, query_video).json()
    assert {f.name for f in query_folders(client)} == {first["query_id"], second["query_id"]}
    store.unpin(query)
    assert [f.name for f in query_folders(client)] == [second["query_id"]]
    assert client.get(second["results"][0]["preview_url"]).status_code == 200
    assert client.get(second["results"][0]["preview_url"], headers={"Range": "bytes=999999999-"}).status_code == 416
    assert store.get(second["query_id"]).pins == 0  # every response, sent or refused, unpins


def test_shutdown_removes_every_temporary_file(index_dir, query_video, work_dir):
    work_dir.mkdir()
    with open_client(create_app(index_dir, work_dir=work_dir, isolate=False)) as client:
        body = post_video(client, query_video).json()
        assert client.get(body["results"][0]["preview_url"]).status_code == 200
        assert client.get(body["results"][0]["audio_url"]).status_code == 200
        assert len(list(work_dir.rglob("*"))) > 3
    assert list(work_dir.iterdir()) == []


# ---------------------------------------------------------------------------------- the CLI
def test_serve_command_defaults_to_loopback():
    from mvpt.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "INDEX"])
    assert (args.index, args.host, args.port, args.max_upload_mb) == ("INDEX", "127.0.0.1", 8000, 200.0)
    assert args.func is serve.run
    assert serve._is_loopback("127.0.0.1") and serve._is_loopback("::1") and serve._is_loopback("localhost")
    assert not serve._is_loopback("0.0.0.0")
