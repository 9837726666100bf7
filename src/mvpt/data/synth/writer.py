"""Writing synthetic videos: an MP4 of frames and audio (:func:`write_mp4`), one video of a data
set (:func:`generate_video`) and a whole data set with its manifest and factors
(:func:`generate`)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from mvpt.data.synth.music import render_music
from mvpt.data.synth.pictures import render_frames
from mvpt.data.synth.styles import GENRE_NAMES, Section, genre_palette, plan_sections
from mvpt.errors import UsageError
from mvpt.fileio import atomic_path, atomic_write_bytes
from mvpt.splits import stable_split

DEFAULT_DURATION_S = (20.0, 40.0)
AAC_RATES_HZ = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AUDIO_FRAME_SAMPLES = 1024


# -------------------------------------------------------------------------------------- writing
def write_mp4(
    path: str | Path, *, frames: Iterable[np.ndarray], audio: np.ndarray, fps: float,
    sample_rate_hz: int,
) -> None:
    """Write H.264 (yuv420p, ultrafast) + AAC mono (64 kbit/s) to ``path``.

    ``frames`` yields uint8 RGB blocks (frames, height, width, 3), even width and height;
    ``audio`` is float32 mono in [-1, 1].
    """
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="mp4") as container:
        audio_stream = container.add_stream(
            "aac", rate=sample_rate_hz, layout="mono", options={"aac_coder": "fast"}
        )
        audio_stream.bit_rate = 64000
        video_stream = None
        index = 0
        for block in frames:
            if video_stream is None:
                video_stream = container.add_stream(
                    "libx264", rate=rate, options={"preset": "ultrafast", "crf": "20"}
                )
                video_stream.height, video_stream.width = block.shape[1:3]
                video_stream.pix_fmt = "yuv420p"
            for image in block:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = index, 1 / rate
                index += 1
                container.mux(video_stream.encode(frame))
        if video_stream is not None:
            container.mux(video_stream.encode(None))
        _encode_audio(container, audio_stream, audio, sample_rate_hz)


def _encode_audio(container, stream, audio: np.ndarray, sample_rate_hz: int) -> None:
    """Encode in 1024-sample frames with explicit pts (the muxer then trims the AAC priming)."""
    samples = np.ascontiguousarray(audio, dtype=np.float32)[None, :]
    for start in range(0, samples.shape[1], _AUDIO_FRAME_SAMPLES):
        chunk = samples[:, start : start + _AUDIO_FRAME_SAMPLES]
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = sample_rate_hz
        frame.pts, frame.time_base = start, Fraction(1, sample_rate_hz)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


# ------------------------------------------------------------------------------------ data sets
@dataclass
class SynthResult:
    """What :func:`generate` wrote. ``factors`` maps id to that video's factors."""

    out_dir: Path
    manifest_path: Path
    factors_path: Path
    ids: list[str]
    paths: list[Path]
    factors: dict[str, dict] = field(repr=False)


def video_id(seed: int, index: int) -> str:
    """The id of video ``index`` of the data set generated with ``seed``."""
    return f"s{seed}-{index:05d}"


def split_for_id(video_id: str) -> str:
    """``train`` / ``val`` / ``test`` (80/10/10), stable: it depends on the id alone (the same rule
    as ``mvpt extract`` applies to items without a split)."""
    return stable_split(video_id)


def _genre_for(seed: int, index: int) -> str:
    """Genres come in shuffled blocks: each block of len(GENRES) videos has every genre once."""
    shuffle_rng = np.random.default_rng([seed, index // len(GENRE_NAMES), 1])
    return GENRE_NAMES[shuffle_rng.permutation(len(GENRE_NAMES))[index % len(GENRE_NAMES)]]


def _duration_for(
    duration_s: float | tuple[float, float], equal_length: bool, rng: np.random.Generator
) -> float:
    """A fixed length, one drawn from the range, or (equal_length) the middle of the range."""
    if isinstance(duration_s, (int, float)):
        return float(duration_s)
    low_s, high_s = duration_s
    if equal_length:
        return (low_s + high_s) / 2.0  # 30 s for the default range
    return float(rng.uniform(low_s, high_s))


def generate_video(
    out_dir: str | Path, *, index: int, seed: int = 0,
    duration_s: float | tuple[float, float] = DEFAULT_DURATION_S, equal_length: bool = False,
    size: tuple[int, int] = (96, 64), fps: float = 12.0, audio_rate_hz: int = 16000,
) -> dict:
    """Write video ``index`` of data set ``seed`` to ``out_dir/videos/<id>.mp4``; return factors.

    The file depends only on these arguments, not on which other videos are generated, so
    videos can be made in any order, in parallel, or a few at a time.
    """
    _validate(1, seed, duration_s, size, fps, audio_rate_hz)
    if not isinstance(index, int) or index < 0:
        raise UsageError(f"index must be a non-negative integer, got {index!r}")
    plan_rng, audio_rng, video_rng = (np.random.default_rng([seed, index, k]) for k in range(3))
    genre = _genre_for(seed, index)
    n_frames = max(1, int(round(_duration_for(duration_s, equal_length, plan_rng) * fps)))
    length_s = n_frames / fps
    sections = plan_sections(genre, duration_s=length_s, fps=fps, rng=plan_rng,
                             palette=genre_palette(genre, seed=seed))
    audio = render_music(sections, genre=genre, duration_s=length_s, sample_rate_hz=audio_rate_hz,
                         rng=audio_rng)
    frames = render_frames(sections, genre=genre, duration_s=length_s, size=size, fps=fps,
                           rng=video_rng)
    ident = video_id(seed, index)
    path = Path(out_dir) / "videos" / f"{ident}.mp4"
    with atomic_path(path) as partial:  # a crash never leaves a truncated video under the name
        write_mp4(partial, frames=frames, audio=audio, fps=fps, sample_rate_hz=audio_rate_hz)
    return {"id": ident, "index": index, "genre": genre, "duration_s": round(length_s, 6),
            "sections": [section.to_dict() for section in sections]}


def _validate(n: int, seed: int, duration_s, size, fps: float, audio_rate_hz: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise UsageError(f"n must be a positive integer, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    bounds = (duration_s, duration_s) if isinstance(duration_s, (int, float)) else tuple(duration_s)
    if len(bounds) != 2 or not 1.0 <= bounds[0] <= bounds[1]:
        raise UsageError(f"duration_s must be >= 1 s, or a range (low, high) with "
                         f"1 <= low <= high; got {duration_s!r}")
    width, height = size
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise UsageError(f"size must be (width, height) in pixels, even and >= 16; got {size!r}")
    if not 1.0 <= fps <= 120.0:
        raise UsageError(f"fps must be between 1 and 120, got {fps}")
    if audio_rate_hz not in AAC_RATES_HZ:
        raise UsageError(f"audio_rate_hz must be one of {AAC_RATES_HZ}, got {audio_rate_hz}")


def _write_manifest(path: Path, ids: list[str]) -> None:
    with atomic_path(path) as partial, partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path", "split"])
        for ident in ids:
            writer.writerow([ident, f"videos/{ident}.mp4", split_for_id(ident)])


def generate(
    out_dir: str | Path, *, n: int, seed: int = 0,
    duration_s: float | tuple[float, float] = DEFAULT_DURATION_S, equal_length: bool = False,
    size: tuple[int, int] = (96, 64), fps: float = 12.0, audio_rate_hz: int = 16000,
    progress: bool = False,
) -> SynthResult:
    """Write ``n`` synthetic music videos, ``manifest.csv`` and ``factors.json`` under ``out_dir``.

    ``duration_s`` is one length or a (low, high) range drawn per video. ``equal_length`` gives
    every video the middle of the range (30 s by default), which removes the length shortcut of
    appendix C.6. ``size`` is (width, height) in pixels; ``fps`` and ``audio_rate_hz`` are rates.
    """
    _validate(n, seed, duration_s, size, fps, audio_rate_hz)
    out = Path(out_dir)
    indices: Iterable[int] = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth", unit="video")
    factors = {}
    for index in indices:
        info = generate_video(out, index=index, seed=seed, duration_s=duration_s,
                              equal_length=equal_length, size=size, fps=fps,
                              audio_rate_hz=audio_rate_hz)
        factors[info["id"]] = info
    ids = list(factors)
    _write_manifest(out / "manifest.csv", ids)
    params = {"seed": seed, "n": n, "duration_s": duration_s, "equal_length": equal_length,
              "size": list(size), "fps": fps, "audio_rate_hz": audio_rate_hz}
    factors_path = out / "factors.json"
    atomic_write_bytes(factors_path, json.dumps({"params": params, "videos": factors},
                                                indent=1).encode())
    paths = [out / "videos" / f"{ident}.mp4" for ident in ids]
    return SynthResult(out, out / "manifest.csv", factors_path, ids, paths, factors)


def load_factors(out_dir: str | Path) -> dict[str, dict]:
    """Factors of a generated data set, id -> factors, with sections as :class:`Section`."""
    data = json.loads((Path(out_dir) / "factors.json").read_text())
    return {
        ident: {**info, "sections": [Section.from_dict(s) for s in info["sections"]]}
        for ident, info in data["videos"].items()
    }
