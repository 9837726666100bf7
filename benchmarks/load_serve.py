"""Load test of `mvpt serve` on loopback: latency, status codes, leftover files, memory over time.

Starts the server as a subprocess on a free 127.0.0.1 port with its own work folder, then runs
CLIENTS concurrent clients for at most DURATION seconds and MAX_REQUESTS requests. Each client
loops: upload the query video (POST /api/recommend), fetch two byte ranges of the top track's
audio, fetch the top result's preview. Prints request counts, latency p50/p99 per endpoint, status
code counts, the server's RSS at start, middle and end, and the temporary files left after the
server stops (there should be none). Figures only; nothing is asserted.

    python benchmarks/load_serve.py --index INDEX [--video FILE] [--clients 16] [--duration 30]
    python benchmarks/load_serve.py        # over a tiny real run built first (tests/fixtures/tiny_run.py)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np

from mvpt.commands.serve import KEEP_ALIVE_S

HOST = "127.0.0.1"
# The clients drop an idle connection well before the server would, so none is reused just as
# the server closes it (that race shows as a RemoteProtocolError, not a server fault).
CLIENT_KEEPALIVE_S = KEEP_ALIVE_S / 2
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="mvpt-load-") as scratch:
        scratch = Path(scratch)
        index = args.index or build_tiny_index(scratch / "tiny")
        video = args.video or build_query_video(scratch / "query")
        work_dir = scratch / "work"
        work_dir.mkdir()
        port = free_port()
        server = start_server(args, index=index, port=port, work_dir=work_dir)
        try:
            report = asyncio.run(run_load(args, base=f"http://{HOST}:{port}", video=video, pid=server.pid,
                                          work_dir=work_dir))
        finally:
            stop_server(server)
        report["files_left_after_stop"] = count_files(work_dir)
        print_report(args, report, index=index, video=video)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, help="index folder to serve (default: a tiny real run's)")
    ap.add_argument("--video", type=Path, help="query video to upload (default: a generated 10 s one)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    ap.add_argument("--grace", type=float, default=60.0,
                    help="seconds to wait for answers after --duration before giving up (default 60)")
    ap.add_argument("--max-requests", type=int, default=5000, help="stop after this many (default 5000)")
    ap.add_argument("--max-queries", type=int, help="the server's --max-queries (default: twice the "
                    "clients, so a client's query outlives the others' until it fetches its preview)")
    args = ap.parse_args()
    args.max_queries = args.max_queries or 2 * args.clients
    return args


# ------------------------------------------------------------------------------ the server
def start_server(args, *, index: Path, port: int, work_dir: Path, extra: tuple[str, ...] = ()
                 ) -> subprocess.Popen:
    """``mvpt serve`` on ``port``; returns once /api/health answers."""
    command = [sys.executable, "-m", "mvpt.cli", "serve", str(index), "--host", HOST, "--port",
               str(port), "--work-dir", str(work_dir), "--max-queries", str(args.max_queries), *extra]
    server = subprocess.Popen(command)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"load_serve: the server exited with code {server.returncode}")
        try:
            if httpx.get(f"http://{HOST}:{port}/api/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    stop_server(server)
    sys.exit("load_serve: the server did not answer /api/health within 120 s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully: lifespan cleanup runs
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count_files(folder: Path) -> int:
    """Files under ``folder``; os.walk skips folders the server removes while it looks."""
    return sum(len(files) for _, _, files in os.walk(folder))


# -------------------------------------------------------------------------------- the load
class Tally:
    """Latencies and status codes per endpoint, shared by the clients."""

    def __init__(self, *, max_requests: int, deadline: float):
        self.max_requests = max_requests
        self.deadline = deadline
        self.latencies_s: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.requests = 0

    def more(self) -> bool:
        return self.requests < self.max_requests and time.monotonic() < self.deadline

    async def timed(self, name: str, send) -> httpx.Response | None:
        if not self.more():
            return None
        self.requests += 1
        start = time.perf_counter()
        try:
            response = await send()
            self.statuses[name][response.status_code] += 1
        except httpx.HTTPError as exc:
            self.statuses[name][type(exc).__name__] += 1
            response = None
        self.latencies_s[name].append(time.perf_counter() - start)
        return response


async def client_loop(client: httpx.AsyncClient, tally: Tally, video_bytes: bytes) -> None:
    while tally.more():
        files = {"video": ("query.mp4", video_bytes, "video/mp4")}
        answer = await tally.timed("recommend", partial(client.post, "/api/recommend", files=files, data={"top": "5"}))
        if answer is None or answer.status_code != 200:
            continue
        top = answer.json()["results"][0]
        for span in ("bytes=0-65535", "bytes=65536-131071"):
            await tally.timed("audio", partial(client.get, top["audio_url"], headers={"Range": span}))
        await tally.timed("preview", partial(client.get, top["preview_url"]))


async def sample_memory(pid: int, tally: Tally, work_dir: Path, duration_s: float, samples: dict) -> None:
    samples["rss_start_mb"] = rss_mb(pid)
    await asyncio.sleep(duration_s / 2)
    samples["rss_middle_mb"] = rss_mb(pid)
    samples["files_middle"] = count_files(work_dir)


async def run_load(args, *, base: str, video: Path, pid: int, work_dir: Path) -> dict:
    tally = Tally(max_requests=args.max_requests, deadline=time.monotonic() + args.duration)
    samples: dict = {}
    limits = httpx.Limits(max_connections=args.clients, keepalive_expiry=CLIENT_KEEPALIVE_S)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        started = time.perf_counter()
        memory = asyncio.create_task(sample_memory(pid, tally, work_dir, args.duration, samples))
        clients = [asyncio.create_task(client_loop(client, tally, video.read_bytes())) for _ in range(args.clients)]
        _, late = await asyncio.wait(clients, timeout=args.duration + args.grace)
        for task in late:  # requests still unanswered past the grace period: give up on them
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        wall_s = time.perf_counter() - started
        await memory
    samples["rss_end_mb"] = rss_mb(pid)
    samples["files_end_of_load"] = count_files(work_dir)
    return {"tally": tally, "wall_s": wall_s, "abandoned": len(late), **samples}


# ------------------------------------------------------------------------------ reporting
def print_report(args, report: dict, *, index: Path, video: Path) -> None:
    tally: Tally = report["tally"]
    print(f"index: {index}{'' if args.index else ' (tiny real run)'}; video: {video.name} "
          f"({video.stat().st_size / 1e6:.2f} MB); {args.clients} clients, {os.cpu_count()} CPU cores")
    print(f"requests: {tally.requests} in {report['wall_s']:.1f} s "
          f"({tally.requests / report['wall_s']:.1f} per s)")
    print(f"{'endpoint':<10} {'count':>6} {'p50 ms':>9} {'p99 ms':>9}  status codes")
    for name, latencies in tally.latencies_s.items():
        p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(tally.statuses[name].items(), key=str))
        print(f"{name:<10} {len(latencies):>6} {p50:>9.1f} {p99:>9.1f}  {codes}")
    server_errors = sum(n for counts in tally.statuses.values() for code, n in counts.items()
                        if not isinstance(code, int) or code >= 500)
    print(f"5xx or transport errors: {server_errors}; clients cut off after the grace period: "
          f"{report['abandoned']}")
    print(f"server RSS MB: start {report['rss_start_mb']:.0f}, middle {report['rss_middle_mb']:.0f}, "
          f"end {report['rss_end_mb']:.0f}")
    print(f"temporary files: {report['files_middle']} mid-run, {report['files_end_of_load']} at the end "
          f"of the load (bounded by --max-queries {args.max_queries}), "
          f"{report['files_left_after_stop']} after the server stopped")


# -------------------------------------------------------------------------- generated media
def build_tiny_index(folder: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.fixtures.tiny_run import build_tiny_index as build

    print("building a tiny real run and its index (8 soundtracks of 8 s)...", flush=True)
    return build(folder)


def build_query_video(folder: Path) -> Path:
    from mvpt.data.synth import generate_video

    factors = generate_video(folder, index=0, seed=11, duration_s=10.0, size=(320, 180))
    return folder / "videos" / f"{factors['id']}.mp4"


if __name__ == "__main__":
    main()
