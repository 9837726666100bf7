"""The HTTP API and web page over :func:`mvpt.recommend.recommend` (FastAPI).

``create_app(index_dir)`` returns the app; ``mvpt serve INDEX`` runs it with uvicorn.

* ``POST /api/recommend``: multipart ``video`` (required), ``top``, ``condition`` (images, any
  number), ``strength`` (0..1). Returns recommend's dict plus ``query_id`` and, per result,
  ``audio_url`` and ``preview_url``.
* ``GET /api/tracks/{item_id}/audio``: the track's audio, with Range support.
* ``GET /api/previews/{query_id}/{rank}``: the query video with that result's track laid under it
  from its offset, as WebM (VP8/VP9 + Opus, which every Chromium build plays), with Range support.
* ``GET /api/health``; ``GET /`` the page, ``/static/*`` its script and style.

Every error is JSON ``{"error": "..."}`` with a 4xx status for bad input. Only item ids and query
ids from requests are looked up; no path from a request reaches the filesystem.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import anyio
import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from mvpt.errors import MediaError, MvptError, UsageError
from mvpt.serve.audio import (
    WEBM_AUDIO_TYPE,
    Playable,
    browser_playable,
    transcode_to_webm,
)
from mvpt.serve.engine import (
    Engine,
    Track,
    default_engine,
    response_payload,
    tracks_by_id,
)
from mvpt.serve.errors import ApiError, install_error_handlers
from mvpt.serve.queries import Once, Query, QueryStore
from mvpt.serve.ranges import ranged_file
from mvpt.serve.upload import receive_form
from mvpt.serve.validate import RecommendRequest, check_request, user_message

PREVIEW_FADE_S = 0.5
STATIC_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}

router = APIRouter()


@dataclass
class Server:
    """What the routes share: the index's tracks, the engine, the work folders and their limits."""

    index_dir: Path
    tracks: dict[str, Track]
    engine: Engine
    work_root: Path
    queries: QueryStore
    audio: Once
    max_upload_bytes: int
    recommend_limiter: anyio.CapacityLimiter

    @property
    def audio_dir(self) -> Path:
        return self.work_root / "audio"

    def close(self) -> None:
        self.queries.close()
        shutil.rmtree(self.work_root, ignore_errors=True)


def create_app(
    index_dir: str | Path, *, max_upload_mb: float = 200, work_dir: str | Path | None = None,
    max_queries: int = 8, workers: int = 2, engine: Engine | None = None,
) -> FastAPI:
    """The app serving ``index_dir``.

    Temporary files go to a new folder inside ``work_dir`` (the system's temp folder by default):
    the uploads of the last ``max_queries`` queries with their previews, and transcoded tracks.
    It is removed when the app shuts down (or, failing that, when the interpreter exits).
    ``workers`` bounds how many recommend calls, and separately how many previews or transcodes,
    run at once in worker threads. ``engine`` replaces the real pipeline (tests, benchmarks).
    """
    index_dir = Path(index_dir)
    engine = engine or default_engine()
    tracks = tracks_by_id(engine.load_items(index_dir), index_dir=index_dir)
    work_root = Path(tempfile.mkdtemp(prefix="mvpt-serve-", dir=work_dir))
    media_limiter = anyio.CapacityLimiter(workers)
    server = Server(
        index_dir=index_dir, tracks=tracks, engine=engine, work_root=work_root,
        queries=QueryStore(work_root / "queries", max_queries=max_queries, preview_limiter=media_limiter),
        audio=Once(media_limiter), max_upload_bytes=int(max_upload_mb * 2**20),
        recommend_limiter=anyio.CapacityLimiter(workers),
    )
    server.audio_dir.mkdir()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        server.close()

    app = FastAPI(title="mvpt", summary="music for a video", lifespan=lifespan, docs_url="/api/docs",
                  redoc_url=None, openapi_url="/api/openapi.json")
    app.state.server = server
    weakref.finalize(app, shutil.rmtree, work_root, ignore_errors=True)
    install_error_handlers(app)
    app.include_router(router)
    return app


def _server(request: Request) -> Server:
    return request.app.state.server


# ------------------------------------------------------------------------------------- the API
@router.get("/api/health")
async def health(request: Request) -> dict:
    server = _server(request)
    return {"status": "ok", "index": str(server.index_dir), "tracks": len(server.tracks),
            "max_upload_mb": round(server.max_upload_bytes / 2**20, 1)}


@router.post("/api/recommend")
async def recommend(request: Request) -> dict:
    server = _server(request)
    query = server.queries.new()
    try:
        form = await receive_form(request, dest_dir=query.folder, max_bytes=server.max_upload_bytes)
        asked: RecommendRequest = await anyio.to_thread.run_sync(check_request, form)
        call = partial(server.engine.recommend, server.index_dir, asked.video.path, top=asked.top,
                       condition_images=asked.condition_paths or None, strength=asked.strength)
        try:
            result = await anyio.to_thread.run_sync(call, limiter=server.recommend_limiter)
        except (MediaError, UsageError) as exc:  # bad input the pipeline found
            raise ApiError(422, user_message(exc, form)) from None
        except MvptError as exc:  # the index, run or encoders failed: not the user's doing
            raise ApiError(503, f"the server cannot recommend right now: {user_message(exc, form)}") from None
    except BaseException:
        server.queries.discard(query)
        raise
    for path in asked.condition_paths:
        path.unlink(missing_ok=True)  # only recommend needs them; the video stays for previews
    payload = response_payload(result.to_dict(), query_name=asked.video.filename)
    query.video_path = asked.video.path
    query.results = list(payload.get("results", []))
    server.queries.commit(query)
    return _with_urls(payload, query)


def _with_urls(payload: dict, query: Query) -> dict:
    results = [{**row,
                "audio_url": f"/api/tracks/{quote(str(row['item_id']), safe='')}/audio",
                "preview_url": f"/api/previews/{query.query_id}/{row['rank']}"}
               for row in query.results]
    return {**payload, "query_id": query.query_id, "results": results}


@router.get("/api/tracks/{item_id:path}/audio")
async def track_audio(item_id: str, request: Request) -> Response:
    server = _server(request)
    track = server.tracks.get(item_id)
    if track is None:
        raise ApiError(404, f"unknown track '{item_id}'")
    try:
        playable = await server.audio.get(item_id, partial(_playable_audio, track, server.audio_dir))
    except MvptError as exc:  # a library file that does not decode: the server's problem
        raise ApiError(500, f"cannot serve track '{item_id}': {exc}") from None
    return ranged_file(request, playable.path, media_type=playable.media_type)


def _playable_audio(track: Track, cache_dir: Path) -> Playable:
    """The track's file if the browser plays it, else a WebM/Opus copy made once."""
    if not track.path.is_file():
        raise ApiError(404, f"the audio file of track '{track.item_id}' is missing from the library")
    original = browser_playable(track.path)
    if original is not None:
        return original
    out = cache_dir / f"{hashlib.sha1(track.item_id.encode()).hexdigest()[:20]}.webm"
    return Playable(transcode_to_webm(track.path, out), WEBM_AUDIO_TYPE)


@router.get("/api/previews/{query_id}/{rank}")
async def preview(query_id: str, rank: int, request: Request) -> Response:
    server = _server(request)
    query = server.queries.get(query_id)
    if query is None:
        raise ApiError(404, f"unknown or expired query '{query_id}': the server keeps the last "
                            f"{server.queries.max_queries} queries; upload the video again")
    result = next((row for row in query.results if row.get("rank") == rank), None)
    if result is None:
        raise ApiError(404, f"query '{query_id}' has no result ranked {rank}")
    track = server.tracks.get(str(result["item_id"]))
    if track is None:
        raise ApiError(404, f"track '{result['item_id']}' is not in the index")
    server.queries.pin(query)  # kept until the preview is made and sent
    try:
        path = await query.previews.get(rank, partial(_make_preview, server.engine, query, track, result))
    except BaseException as exc:
        server.queries.unpin(query)
        if isinstance(exc, MvptError):
            reason = str(exc).replace(str(query.video_path), "the query video")
            raise ApiError(500, f"cannot make the preview of rank {rank}: {reason}") from None
        raise
    return ranged_file(request, path, media_type="video/webm", on_done=partial(server.queries.unpin, query))


def _make_preview(engine: Engine, query: Query, track: Track, result: dict) -> Path:
    out = query.folder / f"preview-{result['rank']}.webm"
    engine.make_preview(query.video_path, track.path, float(result["offset_s"]), out,
                        fade_s=PREVIEW_FADE_S, container="webm")
    return out


# ------------------------------------------------------------------------------------ the page
@router.get("/", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    return HTMLResponse(_static_bytes("index.html"))


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC_TYPES:
        raise ApiError(404, f"no static file '{name}'")
    return Response(_static_bytes(name), media_type=STATIC_TYPES[name])


def _static_bytes(name: str) -> bytes:
    return resources.files("mvpt.serve").joinpath("static", name).read_bytes()
