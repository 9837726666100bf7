"""Soak test of `mvpt serve` on loopback: a mixed load for minutes, watching what must stay bounded.

Starts ``mvpt serve`` (over INDEX, or over a tiny real run built first) with its own work folder,
then runs clients of five kinds at once for DURATION seconds: uploaders (upload, two range reads
of the top track, its preview), readers (random byte ranges of random tracks), aborters (an
upload cut off half way), slow uploaders (an upload trickled in over seconds) and a health
prober. Every 2 s it samples the server's memory (RSS of the server and its worker processes),
open files and temporary-folder size. Then it stops the server with SIGTERM and counts what is
left in the work folder (there should be nothing). Health latency is printed beside a reference
measured on the idle server at the start of the same run. Figures only; nothing is asserted
(tests/test_serve_soak.py runs a one-minute version and checks the bounds).

    python benchmarks/soak_serve.py [--index INDEX] [--duration 120] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_serve import (  # noqa: E402
    CLIENT_KEEPALIVE_S, HOST, build_query_video, build_tiny_index, free_port, start_server)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, help="index folder to serve (default: a tiny real run's)")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    ap.add_argument("--uploaders", type=int, default=2, help="clients that upload and preview (default 2)")
    ap.add_argument("--readers", type=int, default=4, help="clients reading byte ranges (default 4)")
    ap.add_argument("--max-queries", type=int, default=4, help="the server's --max-queries (default 4)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE")
    return ap.parse_args()


class Tally:
    def __init__(self, deadline: float):
        self.deadline = deadline
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.latencies_s: dict[str, list[float]] = collections.defaultdict(list)

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    async def timed(self, name: str, send):
        start = time.perf_counter()
        try:
            response = await send()
            self.statuses[name][response.status_code] += 1
        except (httpx.HTTPError, OSError) as exc:
            self.statuses[name][type(exc).__name__] += 1
            response = None
        self.latencies_s[name].append(time.perf_counter() - start)
        return response


def multipart(video: bytes) -> tuple[bytes, str]:
    boundary = "soakboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"q.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    return head + video + f"\r\n--{boundary}--\r\n".encode(), boundary


async def raw_upload(port: int, body: bytes, boundary: str, *, cut_at: int | None, pause_s: float) -> str:
    """Send an upload over a plain socket: cut off after ``cut_at`` bytes, or trickled in 16 KB
    pieces ``pause_s`` apart. Returns the status line, or 'aborted'."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write((f"POST /api/recommend HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: {len(body)}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode())
    sent = body if cut_at is None else body[:cut_at]
    for start in range(0, len(sent), 16384):
        writer.write(sent[start:start + 16384])
        await writer.drain()
        await asyncio.sleep(pause_s)
    if cut_at is not None:
        writer.close()
        return "aborted"
    line = await asyncio.wait_for(reader.readline(), timeout=300)
    writer.close()
    return line.decode(errors="replace").split(" ")[1] if line else "closed"


async def uploader(client, tally: Tally, video: bytes) -> None:
    while tally.running():
        files = {"video": ("q.mp4", video, "video/mp4")}
        answer = await tally.timed("upload", lambda: client.post("/api/recommend", files=files, data={"top": "3"}))
        if answer is None or answer.status_code != 200:
            await asyncio.sleep(1)
            continue
        top = answer.json()["results"][0]
        for span in ("bytes=0-4095", "bytes=-2048"):
            await tally.timed("range", lambda span=span: client.get(top["audio_url"], headers={"Range": span}))
        await tally.timed("preview", lambda: client.get(top["preview_url"]))


async def reader(client, tally: Tally, urls: list[str], seed: int) -> None:
    rng = random.Random(seed)
    while tally.running():
        first = rng.randrange(0, 20000)
        span = f"bytes={first}-{first + rng.randrange(0, 50000)}"
        await tally.timed("range", lambda: client.get(rng.choice(urls), headers={"Range": span}))
        await asyncio.sleep(0.05)


async def misbehaving(port: int, tally: Tally, video: bytes, *, slow: bool) -> None:
    body, boundary = multipart(video)
    name = "slow_upload" if slow else "aborted_upload"
    while tally.running():
        try:
            status = await raw_upload(port, body, boundary, cut_at=None if slow else len(body) // 2,
                                      pause_s=0.5 if slow else 0.01)
        except OSError as exc:
            status = type(exc).__name__
        tally.statuses[name][status] += 1
        await asyncio.sleep(0.5)


async def prober(client, tally: Tally) -> None:
    while tally.running():
        await tally.timed("health", lambda: client.get("/api/health"))
        await asyncio.sleep(0.2)


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return pids


def sample(pid: int, work_dir: Path) -> dict:
    rss_kb = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kb += int(line.split()[1])
        except OSError:
            pass
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1
    size = sum(f.stat().st_size for f in work_dir.rglob("*") if f.is_file()) if work_dir.exists() else 0
    return {"rss_mb": rss_kb / 1024, "open_files": fds, "temp_mb": size / 2**20}


async def sampler(pid: int, work_dir: Path, tally: Tally, samples: list) -> None:
    while tally.running():
        try:
            samples.append(await asyncio.to_thread(sample, pid, work_dir))
        except OSError:
            pass
        await asyncio.sleep(2)


async def reference_health_s(client, n: int = 50) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        await client.get("/api/health")
        latencies.append(time.perf_counter() - start)
    return latencies


async def soak(args, *, port: int, pid: int, video: Path, work_dir: Path, track_urls: list[str]) -> dict:
    video_bytes = video.read_bytes()
    limits = httpx.Limits(keepalive_expiry=CLIENT_KEEPALIVE_S)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=300,
                                 limits=limits) as client:
        idle = await reference_health_s(client)
        warm = await client.post("/api/recommend", files={"video": ("q.mp4", video_bytes, "video/mp4")})
        tally = Tally(time.monotonic() + args.duration)
        samples = [sample(pid, work_dir)]
        tasks = [uploader(client, tally, video_bytes) for _ in range(args.uploaders)]
        tasks += [reader(client, tally, track_urls, seed) for seed in range(args.readers)]
        tasks += [misbehaving(port, tally, video_bytes, slow=slow) for slow in (False, True)]
        tasks += [prober(client, tally), sampler(pid, work_dir, tally, samples)]
        await asyncio.gather(*tasks)
    return {"tally": tally, "idle_health_s": idle, "warm_status": warm.status_code, "samples": samples}


def stop_with_sigterm(server) -> int:
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=60)
    except Exception:  # noqa: BLE001 (a server that ignores SIGTERM is a finding, then killed)
        server.kill()
        return server.wait()


def figures(args, run: dict, work_dir: Path, exit_code: int) -> dict:
    tally, samples = run["tally"], run["samples"]
    health = np.array(tally.latencies_s["health"]) * 1000
    left = [str(p.relative_to(work_dir)) for p in work_dir.rglob("*")]
    return {
        "duration_s": args.duration, "warm_up_status": run["warm_status"],
        "statuses": {k: {str(code): n for code, n in v.items()} for k, v in tally.statuses.items()},
        "health_p99_ms": float(np.percentile(health, 99)) if len(health) else None,
        "health_p99_idle_ms": float(np.percentile(np.array(run["idle_health_s"]) * 1000, 99)),
        "rss_mb": {"start": samples[0]["rss_mb"], "max": max(s["rss_mb"] for s in samples),
                   "end": samples[-1]["rss_mb"]},
        "open_files": {"start": samples[0]["open_files"], "max": max(s["open_files"] for s in samples),
                       "end": samples[-1]["open_files"]},
        "temp_mb": {"max": max(s["temp_mb"] for s in samples), "end": samples[-1]["temp_mb"]},
        "server_exit_code": exit_code, "left_after_sigterm": left,
    }


def print_figures(out: dict) -> None:
    print(f"soak of {out['duration_s']:.0f} s, {os.cpu_count()} CPU cores")
    for name, codes in out["statuses"].items():
        print(f"  {name:<15} {sum(codes.values()):>6}  " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
    print(f"health p99: {out['health_p99_ms']:.1f} ms under load, {out['health_p99_idle_ms']:.1f} ms idle")
    for key in ("rss_mb", "open_files"):
        v = out[key]
        print(f"{key}: start {v['start']:.0f}, max {v['max']:.0f}, end {v['end']:.0f}")
    print(f"temporary MB: max {out['temp_mb']['max']:.1f}, end of load {out['temp_mb']['end']:.1f}")
    print(f"after SIGTERM: exit code {out['server_exit_code']}, {len(out['left_after_sigterm'])} "
          "entries left in the work folder")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="mvpt-soak-") as scratch:
        scratch = Path(scratch)
        index = args.index or build_tiny_index(scratch / "tiny")
        video = build_query_video(scratch / "query")
        work_dir = scratch / "work"
        work_dir.mkdir()
        port = free_port()
        server = start_server(args, index=index, port=port, work_dir=work_dir,
                              extra=("--workers", "1", "--timeout-s", "120"))
        from mvpt.serve.engine import load_index_items

        urls = [f"/api/tracks/{item}/audio" for item in load_index_items(index)["item_id"]]
        try:
            run = asyncio.run(soak(args, port=port, pid=server.pid, video=video, work_dir=work_dir,
                                   track_urls=urls))
        finally:
            code = stop_with_sigterm(server)
        out = figures(args, run, work_dir, code)
    print_figures(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
