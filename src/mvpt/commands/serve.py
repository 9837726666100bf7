"""`mvpt serve INDEX [--host 127.0.0.1] [--port 8000]`: the web page and HTTP API over an index."""

from __future__ import annotations

import ipaddress

from mvpt.commands.common import positive_float, positive_int

LOOPBACK_NAMES = {"localhost"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve the web page and HTTP API for an index",
        description="Serve a web page where a creator uploads a video, sees the ranked tracks of "
        "INDEX with the offset of each one's best-fitting part, plays them, and watches previews "
        "with the music under the video. The API is at /api (docs at /api/docs).")
    p.add_argument("index", metavar="INDEX", help="index folder (from `mvpt index`)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--max-upload-mb", type=positive_float, default=200.0,
                   help="largest upload accepted, in MB (default 200)")
    p.add_argument("--max-queries", type=positive_int, default=8,
                   help="queries whose uploads and previews are kept (default 8; older ones "
                   "are deleted)")
    p.add_argument("--work-dir", metavar="DIR", default=None,
                   help="where temporary files go (default: the system's temp folder); "
                   "removed at exit")
    p.add_argument("--workers", type=positive_int, default=2,
                   help="recommend calls (and, separately, previews) run at once (default 2)")
    p.add_argument("--max-video-s", type=positive_float, default=900.0,
                   help="longest upload accepted, in seconds (default 900)")
    p.add_argument("--max-pixels", type=positive_int, default=3840 * 2160,
                   help="largest frame accepted, width x height in pixels (default 4K)")
    p.add_argument("--timeout-s", type=positive_float, default=120.0,
                   help="time limit of one recommend or preview, in seconds (default 120)")
    p.add_argument("--worker-memory-mb", type=positive_int, default=4096,
                   help="memory bound of each worker process, in MB (default 4096)")
    p.set_defaults(func=run)


# Seconds an idle keep-alive connection stays open (uvicorn's default, said once here). A client
# that keeps idle connections as long may reuse one just as the server closes it and get no
# response (a race every HTTP/1.1 keep-alive has); browsers retry such a request, and the
# load and soak benchmarks keep theirs for half this time.
KEEP_ALIVE_S = 5


def run(args) -> int:
    import uvicorn

    from dataclasses import replace

    from mvpt.errors import UsageError
    from mvpt.media import UPLOAD_LIMITS
    from mvpt.serve import create_app
    from mvpt.serve.api import LOCAL_HOSTS, print_missing_tracks

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1..65535, got {args.port}")
    limits = replace(UPLOAD_LIMITS, max_duration_s=args.max_video_s, max_pixels=args.max_pixels)
    app = create_app(args.index, max_upload_mb=args.max_upload_mb, work_dir=args.work_dir,
                     max_queries=args.max_queries, workers=args.workers, limits=limits,
                     timeout_s=args.timeout_s, worker_memory_mb=args.worker_memory_mb,
                     hosts=(*LOCAL_HOSTS, args.host))
    print_missing_tracks(app)
    if not _is_loopback(args.host):
        print(f"serve: warning: listening on {args.host}: other machines can reach this server")
    print(f"serve: {len(app.state.server.tracks)} tracks from {args.index} at "
          f"http://{_url_host(args.host)}:{args.port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info",
                timeout_keep_alive=KEEP_ALIVE_S)
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK_NAMES


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
