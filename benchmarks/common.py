"""Shared helpers for the benchmark scripts: realistic media and a plain matmul reference."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

CACHE = Path.home() / ".cache" / "mvpt-bench"
DEBIAN_VIDEO = ("openboard-common", "usr/share/openboard/library/videos/wannaworktogether.mp4")


def _unpack_debian(package: str, tmp: str) -> Path:
    """Fetch Debian's ``package`` with apt-get download into ``tmp``; the unpacked root."""
    subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
    deb = next(Path(tmp).glob(f"{package}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
    return Path(tmp) / "x"


def debian_video() -> Path:
    """A 180 s Creative Commons animation with music from Debian's openboard-common package,
    fetched with apt-get download and unpacked into the cache (never committed)."""
    package, member = DEBIAN_VIDEO
    target = CACHE / Path(member).name
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(_unpack_debian(package, tmp) / member, target)
    return target


def _debian_wallpapers(package: str) -> Path:
    """The folder of wallpapers of Debian's ``package``, unpacked into the cache once."""
    target = CACHE / package
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            partial = target.with_suffix(".part")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(_unpack_debian(package, tmp) / "usr/share/backgrounds", partial)
            partial.rename(target)
    return target


def debian_pictures(per_picture: int = 16, *, size: int = 224, seed: int = 0):
    """uint8 RGB frames [n, size, size, 3]: ``per_picture`` square crops (a quarter to all of the
    shorter side, seeded) of each wallpaper of Debian's ukui-wallpapers and lomiri-wallpapers
    (photographs and artwork, fetched into the cache, never committed), resized to ``size``: real
    pictures of another kind than the benchmark video, for checking a build of the frame encoder."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = []
    for package in ("ukui-wallpapers", "lomiri-wallpapers"):
        folder = _debian_wallpapers(package)
        for path in sorted(folder.iterdir()):
            if path.suffix not in (".jpg", ".png") or path.stat().st_size < 1000:
                continue  # a placeholder of a few bytes
            with av.open(str(path)) as container:
                picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
            h, w, _ = picture.shape
            for _ in range(per_picture):
                side = int(rng.uniform(0.25, 1.0) * min(h, w))
                y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
                crop = np.ascontiguousarray(picture[y:y + side, x:x + side])
                frames.append(av.VideoFrame.from_ndarray(crop, format="rgb24").reformat(
                    width=size, height=size).to_ndarray(format="rgb24"))
    return np.stack(frames)


def realistic_video(*, minutes: float = 12.0, size=(640, 360), fps: int = 30,
                    bframes: bool = True) -> Path:
    """The Debian animation (about 30 fps) looped to ``minutes`` and re-encoded at ``size`` and
    ``fps`` (H.264 + AAC, x264's veryfast preset), cached. Each source frame becomes one output
    frame. ``bframes``: x264 chooses each frame's type, B-frames included, as it does for any
    upload; False keeps the type each frame had when decoded (P), so the stream has no B-frame
    (the benchmark video before 2026-12-01, cached under its old name)."""
    import av

    w, h = size
    kind = "_bframes" if bframes else ""
    target = CACHE / f"realistic_{w}x{h}_{fps}fps_{minutes:g}min{kind}.mp4"
    if target.exists():
        return target
    source, tmp = debian_video(), target.with_suffix(".part.mp4")
    n_frames, n_samples = int(minutes * 60 * fps), int(minutes * 60 * 44100)
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=44100, layout="stereo")
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
        frame_k = sample_k = 0
        while frame_k < n_frames or sample_k < n_samples:
            with av.open(str(source)) as src:
                for frame in src.decode(video=0, audio=0):
                    if isinstance(frame, av.VideoFrame) and frame_k < n_frames:
                        img = frame.reformat(width=w, height=h, format="yuv420p")
                        img.pts, img.time_base = frame_k, Fraction(1, fps)
                        if bframes:
                            img.pict_type = av.video.frame.PictureType.NONE  # x264 chooses
                        frame_k += 1
                        out.mux(vs.encode(img))
                    elif isinstance(frame, av.AudioFrame) and sample_k < n_samples:
                        for rf in resampler.resample(frame):
                            rf.pts, rf.time_base = sample_k, Fraction(1, 44100)
                            sample_k += rf.samples
                            out.mux(aus.encode(rf))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    tmp.rename(target)
    return target


def matmul_flops(n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of a plain float32 n x n matmul with torch on this machine (best of repeats)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
