"""The HTTP API and web page over :func:`mvpt.recommend.recommend` (FastAPI).

``create_app(index_dir)`` returns the app; ``mvpt serve INDEX`` runs it with uvicorn.

* ``POST /api/recommend``: multipart ``video`` (required), ``top``, ``condition`` (images, any
  number), ``strength`` (0..1). Returns recommend's results plus ``query_id`` and, per result,
  ``audio_url`` and ``preview_url``.
* ``GET /api/tracks/{item_id}/audio``: the track's audio, with Range support.
* ``GET /api/previews/{query_id}/{rank}``: the query video with that result's track laid under it
  from its offset, as WebM, with Range support.
* ``GET /api/health``: track count, unreadable tracks (count and ids), limits; ``GET /`` the page.

Hostile input: uploads are checked against decode limits (:data:`mvpt.media.UPLOAD_LIMITS`) from
their headers (413 with the reason), and recommend and previews run in worker processes with a
time limit and a memory bound (:mod:`mvpt.serve.worker`; 413 or 422 with the reason). Requests
whose ``Host`` is not the server's own name are refused (421), as are POSTs from another
``Origin`` (403), so a web page elsewhere cannot drive a local server (DNS rebinding). Every error
is JSON ``{"error": "..."}``; no response carries a path of the server's.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
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

from mvpt.errors import MvptError
from mvpt.media import UPLOAD_LIMITS, DecodeLimits
from mvpt.serve.audio import WEBM_AUDIO_TYPE, Playable, browser_playable, transcode_to_webm
from mvpt.serve.engine import (
    Engine,
    Track,
    default_engine,
    response_payload,
    tracks_by_id,
    unreadable_tracks,
)
from mvpt.serve.errors import ApiError, install_error_handlers
from mvpt.serve.guard import HostGuard
from mvpt.serve.queries import Once, Query, QueryStore, new_work_root, sweep_stale_work_roots
from mvpt.serve.ranges import ranged_file
from mvpt.serve.upload import receive_form
from mvpt.serve.validate import RecommendRequest, check_request, user_message
from mvpt.serve.worker import InlineRunner, WorkerError, WorkerPool, WorkerSettings

PREVIEW_FADE_S = 0.5
STATIC_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_LISTED = 100  # unreadable track ids listed by /api/health (all are counted)
_STATUS_OF = {"limit": 413, "memory": 413, "timeout": 422, "media": 422, "usage": 422,
              "pipeline": 503, "bug": 500}

router = APIRouter()


@dataclass
class Server:
    """What the routes share: the index's tracks, the engine and its runner, the work folders."""

    index_dir: Path
    tracks: dict[str, Track]
    missing: list[str]
    engine: Engine
    runner: WorkerPool | InlineRunner
    work_root: Path
    queries: QueryStore
    audio: Once
    max_upload_bytes: int
    recommend_limiter: anyio.CapacityLimiter

    @property
    def audio_dir(self) -> Path:
        return self.work_root / "audio"

    def close(self) -> None:
        self.runner.close()
        self.queries.close()
        shutil.rmtree(self.work_root, ignore_errors=True)

    def private(self, message: str) -> str:
        """``message`` without the server's folders (its temp folder, the index's)."""
        for folder, name in ((self.work_root, "<upload>"), (self.index_dir, "<index>")):
            message = message.replace(str(folder), name)
        for track in self.tracks.values():
            message = message.replace(str(track.path), f"<track {track.item_id}>")
        return message


def create_app(
    index_dir: str | Path, *, max_upload_mb: float = 200, work_dir: str | Path | None = None,
    max_queries: int = 8, workers: int = 2, engine: Engine | None = None, isolate: bool = True,
    limits: DecodeLimits = UPLOAD_LIMITS, timeout_s: float = 120.0, worker_memory_mb: int = 4096,
    hosts: tuple[str, ...] = LOCAL_HOSTS,
) -> FastAPI:
    """The app serving ``index_dir``.

    Temporary files go to a new folder inside ``work_dir`` (the system's temp folder by default):
    the uploads of the last ``max_queries`` queries with their previews, and transcoded tracks.
    It is removed when the app shuts down; folders left there by killed servers are removed at
    start. ``workers`` bounds how many recommend calls, and separately how many previews or
    transcodes, run at once. With ``isolate`` they run in worker processes bounded by
    ``timeout_s`` (seconds per call) and ``worker_memory_mb``, decoding under ``limits``; without
    it (tests whose ``engine`` does not pickle) in threads. ``hosts``: the names clients may use
    to reach the server (its Host header).
    """
    index_dir = Path(index_dir)
    engine = engine or default_engine()
    tracks = tracks_by_id(engine.load_items(index_dir), index_dir=index_dir)
    sweep_stale_work_roots(work_dir)
    work_root = new_work_root(work_dir)
    media_limiter = anyio.CapacityLimiter(workers)
    settings = WorkerSettings(timeout_s=timeout_s, memory_bytes=worker_memory_mb * 2**20, limits=limits)
    server = Server(
        index_dir=index_dir, tracks=tracks, missing=unreadable_tracks(tracks), engine=engine,
        runner=WorkerPool(settings) if isolate else InlineRunner(settings), work_root=work_root,
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
    weakref.finalize(app, _close_quietly, server)
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(HostGuard, hosts=hosts)
    return app


def _close_quietly(server: Server) -> None:
    try:
        server.close()
    except Exception:  # noqa: BLE001 (at interpreter exit, best effort)
        shutil.rmtree(server.work_root, ignore_errors=True)


def missing_tracks_line(server: Server) -> str | None:
    """One line naming the tracks whose files cannot be read (None when all can)."""
    if not server.missing:
        return None
    shown = ", ".join(server.missing[:10]) + (" ..." if len(server.missing) > 10 else "")
    return (f"serve: warning: {len(server.missing)} of {len(server.tracks)} indexed tracks cannot "
            f"be read (files missing or unreadable): {shown}")


def _server(request: Request) -> Server:
    return request.app.state.server


def _refusal(server: Server, exc: WorkerError, what: str, form=None) -> ApiError:
    message = exc.message if form is None else user_message(exc, form)
    return ApiError(_STATUS_OF.get(exc.kind, 500), f"{what}: {server.private(message)}")


# ------------------------------------------------------------------------------------- the API
@router.get("/api/health")
async def health(request: Request) -> dict:
    server = _server(request)
    limits = server.runner.settings.limits
    return {"status": "ok", "tracks": len(server.tracks),
            "missing_tracks": {"count": len(server.missing), "ids": server.missing[:MAX_LISTED]},
            "max_upload_mb": round(server.max_upload_bytes / 2**20, 1),
            "limits": {"max_duration_s": limits.max_duration_s, "max_pixels": limits.max_pixels,
                       "max_fps": limits.max_fps, "timeout_s": server.runner.settings.timeout_s}}


@router.post("/api/recommend")
async def recommend(request: Request) -> dict:
    server = _server(request)
    query = server.queries.new()
    try:
        form = await receive_form(request, dest_dir=query.folder, max_bytes=server.max_upload_bytes)
        limits = server.runner.settings.limits
        checking = partial(check_request, form, limits=limits, run=server.runner.call)
        asked: RecommendRequest = await anyio.to_thread.run_sync(checking, limiter=server.recommend_limiter)
        call = partial(server.runner.call, server.engine.recommend, server.index_dir, asked.video.path,
                       top=asked.top, condition_images=asked.condition_paths or None,
                       strength=asked.strength)
        try:
            result = await anyio.to_thread.run_sync(call, limiter=server.recommend_limiter)
        except WorkerError as exc:
            raise _refusal(server, exc, "cannot recommend for this upload", form) from None
    except BaseException:
        server.queries.discard(query)
        raise
    for path in asked.condition_paths:
        path.unlink(missing_ok=True)  # only recommend needs them; the video stays for previews
    payload = response_payload(result, query_name=asked.video.filename)
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
        reason = getattr(exc, "reason", str(exc))
        raise ApiError(500, f"cannot serve track '{item_id}': {server.private(reason)}") from None
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
        path = await query.previews.get(rank, partial(_make_preview, server, query, track, result))
    except BaseException as exc:
        server.queries.unpin(query)
        if isinstance(exc, WorkerError):
            message = exc.message.replace(str(query.video_path), "the query video")
            raise _refusal(server, WorkerError(exc.kind, message),
                           f"cannot make the preview of rank {rank}") from None
        raise
    return ranged_file(request, path, media_type="video/webm", on_done=partial(server.queries.unpin, query))


def _make_preview(server: Server, query: Query, track: Track, result: dict) -> Path:
    out = query.folder / f"preview-{result['rank']}.webm"
    server.runner.call(server.engine.make_preview, query.video_path, track.path,
                       float(result.get("aligned_start_s", result["offset_s"])), out,
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


def print_missing_tracks(app: FastAPI) -> None:
    """Print the one-line warning about unreadable tracks on stderr (``mvpt serve`` at start)."""
    line = missing_tracks_line(app.state.server)
    if line:
        print(line, file=sys.stderr, flush=True)
