"""A corpus of broken, odd and hostile media (tests/fixtures/media_factory.py: make_bad_inputs and
make_hostile_inputs) through every stage that reads a stranger's file: probe, decoding (frames and
audio, as extraction reads them), recommend (which extracts the query's features), preview, and
the upload endpoint. Each stage runs in a worker process of the server's kind
(mvpt.serve.worker) with a 30 s time limit, an address-space bound and the upload decode limits;
a fresh process follows any failure. Only a clear error naming the file, or success for a file
that is merely odd, is acceptable: never a crash, a hang, a memory blow-up or an unexpected
exception type. The bound is 2 GB for probe and decoding; the stages that load torch get 3 GB,
since torch alone maps more than 2 GB of address space on import.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mvpt.media import UPLOAD_LIMITS, probe
from mvpt.serve import create_app
from mvpt.serve.engine import default_engine, load_index_items, make_preview
from mvpt.serve.worker import WorkerError, WorkerPool, WorkerSettings
from tests.fixtures import engines
from tests.fixtures.media_factory import make_bad_inputs, make_hostile_inputs

TIMEOUT_S = 30.0
LIGHT_MB, TORCH_MB = 2048, 3072
CLEAR_ERRORS = {"limit", "media", "usage", "pipeline"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("corpus")
    cases = make_bad_inputs(folder / "bad") + make_hostile_inputs(folder / "hostile")
    return {case.kind: case for case in cases}


CASE_KINDS = [
    "zero_bytes", "text_as_mp4", "missing", "truncated", "truncated_mkv", "truncated_header_lost",
    "no_audio", "no_video", "short", "audio_6ch", "audio_8k", "audio_48k", "large_frame",
    "non_ascii_name", "variable_fps", "rotated", "odd_size", "no_video_cover_art",
    "no_container_duration",
    "long_header", "huge_frame", "ten_thousand_fps", "hls_playlist", "concat_list", "hls_renamed_mp4",
    "cover_art_first", "zero_length_streams", "flip_few", "flip_many", "flip_header", "flip_tail",
    "cut_100_bytes", "cut_1k", "cut_90_percent", "mp4_magic_then_noise", "odd_codec_mpeg4",
    "odd_codec_mjpeg", "odd_codec_libvpx_vp9", "odd_codec_mpeg2video",
]
REFUSED = {"zero_bytes", "text_as_mp4", "missing", "long_header", "huge_frame", "ten_thousand_fps",
           "hls_playlist", "concat_list", "hls_renamed_mp4", "zero_length_streams",
           "mp4_magic_then_noise"}


def test_the_corpus_has_at_least_30_kinds(corpus):
    assert set(corpus) == set(CASE_KINDS) and len(CASE_KINDS) >= 30


def pool(memory_mb: int):
    workers = WorkerPool(WorkerSettings(timeout_s=TIMEOUT_S, memory_bytes=memory_mb * 2**20,
                                        limits=UPLOAD_LIMITS))
    yield workers
    workers.close()


@pytest.fixture(scope="module")
def light_pool():
    yield from pool(LIGHT_MB)


@pytest.fixture(scope="module")
def torch_pool():
    yield from pool(TORCH_MB)


@pytest.fixture
def warm_torch_pool(torch_pool, corpus, tiny_index):
    """The pool with a worker that has loaded torch, the run and the index (a cold start took
    20-60 s on a busy machine: not part of the 30 s a call may take)."""
    if not torch_pool.pids():
        bounded = torch_pool.settings
        torch_pool.settings = dataclasses.replace(bounded, timeout_s=600.0)
        try:
            torch_pool.call(engines.recommend_for, corpus["audio_48k"].path, tiny_index)
        finally:
            torch_pool.settings = bounded
    return torch_pool


def outcome(workers: WorkerPool, fn, path: Path, *args, **kwargs) -> str:
    """'ok', or the kind of a clear error; fails the test on anything else."""
    try:
        workers.call(fn, path, *args, **kwargs)
    except WorkerError as exc:
        assert exc.kind in CLEAR_ERRORS, f"{path.name}: {exc.kind}: {exc.message}"
        assert path.name in exc.message and "\n" not in exc.message, exc.message
        return exc.kind
    return "ok"


@pytest.mark.parametrize("kind", CASE_KINDS)
def test_probe(corpus, light_pool, kind):
    result = outcome(light_pool, probe, corpus[kind].path)
    assert result != "ok" if kind in REFUSED else True


@pytest.mark.parametrize("kind", CASE_KINDS)
def test_decoding(corpus, light_pool, kind):
    result = outcome(light_pool, engines.decode_everything, corpus[kind].path)
    assert result != "ok" if kind in REFUSED or corpus[kind].expect == "fail" else True


@pytest.mark.slow
@pytest.mark.parametrize("kind", CASE_KINDS)
def test_recommend(corpus, warm_torch_pool, tiny_index, kind):
    result = outcome(warm_torch_pool, engines.recommend_for, corpus[kind].path, tiny_index)
    assert result != "ok" if kind in REFUSED else True


@pytest.mark.slow
@pytest.mark.parametrize("kind", CASE_KINDS)
def test_preview(corpus, warm_torch_pool, tiny_index, tmp_path, kind):
    track = Path(load_index_items(tiny_index)["path"].iloc[0])
    result = outcome(warm_torch_pool, make_preview, corpus[kind].path, track, 0.0, tmp_path / "p.webm",
                     fade_s=0.5, container="webm")
    assert result != "ok" if kind in REFUSED else True


@pytest.fixture(scope="module")
def upload_client(tiny_index, tmp_path_factory):
    engine = dataclasses.replace(default_engine(), recommend=engines.quick_recommend)
    app = create_app(tiny_index, work_dir=tmp_path_factory.mktemp("work"), engine=engine,
                     timeout_s=TIMEOUT_S, worker_memory_mb=LIGHT_MB)
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("kind", [k for k in CASE_KINDS if k != "missing"])
def test_upload(corpus, upload_client, kind):
    path = corpus[kind].path
    answer = upload_client.post("/api/recommend", files={"video": (path.name, path.read_bytes(), "video/mp4")})
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text
    if kind in REFUSED:
        assert 400 <= answer.status_code < 500
    if answer.status_code != 200:
        assert path.name in answer.json()["error"] or kind == "zero_bytes" or "multipart" in answer.text
