"""The server against hostile requests (issue 12, findings 1, 3 and 6): uploads over the decode
limits, calls that run too long or take too much memory, playlists naming the server's files,
huge Range numbers and multipart boundaries, foreign Host and Origin headers, uploads in flight,
and folders left by a killed server."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from mvpt.serve import create_app
from mvpt.serve.engine import default_engine, load_index_items
from mvpt.serve.errors import ApiError
from mvpt.serve.queries import OWNER_FILE, QueryStore
from mvpt.serve.ranges import range_problem
from tests.fixtures import engines
from tests.fixtures.media_factory import make_hostile_inputs, write_video

BASE_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    return {case.kind: case for case in make_hostile_inputs(tmp_path_factory.mktemp("hostile"))}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", duration_s=2.0)


@pytest.fixture
def make_client(tiny_index, tmp_path):
    clients = []

    def make(**options) -> TestClient:
        options.setdefault("isolate", False)
        client = TestClient(create_app(tiny_index, work_dir=tmp_path, **options), base_url=BASE_URL)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def upload(client, path: Path, name: str | None = None, **kwargs):
    files = {"video": (name or path.name, path.read_bytes(), "application/octet-stream")}
    return client.post("/api/recommend", files=files, **kwargs)


def leftover_queries(client) -> list[Path]:
    root = client.app.state.server.queries.root
    return list(root.iterdir()) if root.exists() else []


def a_track_url(tiny_index) -> str:
    return f"/api/tracks/{load_index_items(tiny_index)['item_id'].iloc[0]}/audio"


# ------------------------------------------------------------------ finding 1: decode limits
@pytest.mark.parametrize("kind, reason", [("long_header", "lasts 1000000 s, over the limit of 900 s"),
                                          ("huge_frame", "8192x8192 pixels"),
                                          ("ten_thousand_fps", "10000 frames per second")])
def test_uploads_over_the_decode_limits_get_413_with_the_reason(make_client, hostile, kind, reason):
    client = make_client()
    answer = upload(client, hostile[kind].path, name="mine.mkv")
    assert answer.status_code == 413, answer.text
    assert reason in answer.json()["error"] and "'mine.mkv'" in answer.json()["error"]
    assert leftover_queries(client) == []


def test_the_limits_are_configurable(make_client, clip):
    from mvpt.media import UPLOAD_LIMITS

    client = make_client(limits=dataclasses.replace(UPLOAD_LIMITS, max_duration_s=1.0))
    answer = upload(client, clip)
    assert answer.status_code == 413 and "over the limit of 1 s" in answer.json()["error"]


def test_a_call_past_the_time_limit_is_stopped_with_a_422(make_client, clip):
    engine = dataclasses.replace(default_engine(), recommend=engines.sleepy_recommend)
    client = make_client(engine=engine, isolate=True, timeout_s=3.0)
    answer = upload(client, clip)
    assert answer.status_code == 422
    assert "took longer than the limit of 3 s" in answer.json()["error"]
    assert client.app.state.server.runner.pids() == []  # the stuck worker is gone


def test_a_call_past_the_memory_bound_gets_413_and_the_server_goes_on(make_client, clip):
    engine = dataclasses.replace(default_engine(), recommend=engines.greedy_recommend)
    client = make_client(engine=engine, isolate=True, worker_memory_mb=1024)
    answer = upload(client, clip)
    assert answer.status_code == 413 and "memory" in answer.json()["error"].lower()
    assert client.get("/api/health").status_code == 200


def test_a_worker_that_dies_is_replaced(make_client, clip):
    runner_engine = dataclasses.replace(default_engine(), recommend=engines.dying_recommend)
    client = make_client(engine=runner_engine, isolate=True)
    assert upload(client, clip).status_code == 413
    server = client.app.state.server
    assert server.runner.call(engines.quick_recommend, "i", "q") == {"hits": [], "query_duration_s": 1.0}


@pytest.mark.slow
def test_the_real_pipeline_runs_in_a_bounded_worker(make_client, clip):
    client = make_client(isolate=True, timeout_s=300)
    answer = upload(client, clip)
    assert answer.status_code == 200, answer.text
    assert client.get(answer.json()["results"][0]["preview_url"]).status_code == 200
    [pid] = client.app.state.server.runner.pids()  # one worker did both, and is bounded
    limit = Path(f"/proc/{pid}/limits").read_text()
    assert "Max address space" in limit and str(4096 * 2**20) in limit


# ------------------------------------------------------------ finding 3: playlists, suffixes
@pytest.mark.parametrize("kind", ["hls_playlist", "concat_list", "hls_renamed_mp4"])
def test_a_playlist_naming_a_server_file_is_refused(make_client, hostile, kind):
    client = make_client()
    answer = upload(client, hostile[kind].path, name="clip.m3u8")
    assert answer.status_code == 415, answer.text
    assert "not a media file" in answer.json()["error"]
    assert leftover_queries(client) == []


def test_the_upload_is_stored_without_the_clients_suffix(make_client, clip):
    engine = dataclasses.replace(default_engine(), recommend=engines.quick_recommend)
    client = make_client(engine=engine)
    answer = upload(client, clip, name="x.m3u8")
    assert answer.status_code == 200, answer.text
    [folder] = leftover_queries(client)
    assert [p.name for p in folder.iterdir()] == ["upload-0"]


# ------------------------------------------------------------------- finding 6: the low ones
def test_a_range_number_of_5000_digits_is_a_416_not_a_500(make_client, tiny_index):
    client = make_client()
    huge = "9" * 5000
    assert range_problem(f"bytes={huge}-", 100)[0] == 416
    answer = client.get(a_track_url(tiny_index), headers={"Range": f"bytes={huge}-"})
    assert answer.status_code == 416
    tail = client.get(a_track_url(tiny_index), headers={"Range": f"bytes=0-{huge}"})
    assert tail.status_code == 206 and tail.content == client.get(a_track_url(tiny_index)).content


def test_a_multipart_boundary_of_300_characters_is_a_400_not_a_500(make_client):
    client = make_client()
    boundary = "b" * 300
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"v.mp4\"\r\n\r\n"
            f"data\r\n--{boundary}--\r\n").encode()
    answer = client.post("/api/recommend", content=body,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 400 and "boundary" in answer.json()["error"].lower()
    assert leftover_queries(client) == []


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "192.168.1.7", "127.0.0.1.evil.example"])
def test_a_foreign_host_header_is_refused(make_client, host):
    answer = make_client().get("/api/health", headers={"Host": host})
    assert answer.status_code == 421 and "error" in answer.json()


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "[::1]:8000", "LOCALHOST:1"])
def test_the_servers_own_names_are_accepted_and_answers_are_nosniff(make_client, host):
    answer = make_client().get("/api/health", headers={"Host": host})
    assert answer.status_code == 200
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_post_from_another_origin_is_refused(make_client, clip):
    client = make_client()
    answer = upload(client, clip, headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403
    assert leftover_queries(client) == []
    refused = make_client().get("/api/health", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 200  # a read a foreign page cannot see anyway


def test_uploads_in_flight_count_against_max_queries(tmp_path):
    store = QueryStore(tmp_path / "q", max_queries=2, preview_limiter=anyio.CapacityLimiter(1))
    arriving = [store.new(), store.new()]
    with pytest.raises(ApiError) as caught:
        store.new()
    assert caught.value.status == 503
    store.discard(arriving[0])
    store.commit(store.new())
    assert store.arriving == 1 and len(list((tmp_path / "q").iterdir())) == 2


def test_a_killed_servers_folder_is_swept_at_start(tiny_index, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale, running = tmp_path / "mvpt-serve-stale", tmp_path / "mvpt-serve-running"
    for folder, pid in ((stale, dead), (running, str(os.getppid()))):
        (folder / "queries" / "abc").mkdir(parents=True)
        (folder / OWNER_FILE).write_text(pid)
    app = create_app(tiny_index, work_dir=tmp_path, isolate=False)
    assert not stale.exists() and running.exists()
    app.state.server.close()


def test_unreadable_tracks_are_reported_at_start_in_one_line_and_in_health(tiny_index, tmp_path, capsys):
    from mvpt.serve.api import missing_tracks_line, print_missing_tracks
    from mvpt.serve.engine import load_index_items as real_items

    def items_with_a_lost_file(index_dir):
        items = real_items(index_dir)
        items.loc[0, "path"] = str(tmp_path / "gone.mp4")
        return items

    engine = dataclasses.replace(default_engine(), load_items=items_with_a_lost_file)
    app = create_app(tiny_index, work_dir=tmp_path, isolate=False, engine=engine)
    lost = str(real_items(tiny_index)["item_id"].iloc[0])
    line = missing_tracks_line(app.state.server)
    assert line.count("\n") == 0 and "1 of 8 indexed tracks cannot be read" in line and lost in line
    assert str(tmp_path) not in line
    print_missing_tracks(app)  # what `mvpt serve` does at start
    assert capsys.readouterr().err == line + "\n"
    with TestClient(app, base_url=BASE_URL) as client:
        health = client.get("/api/health").json()
        assert health["missing_tracks"] == {"count": 1, "ids": [lost]}
        assert str(tmp_path) not in str(health)
