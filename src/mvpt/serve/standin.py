"""A stand-in for the trained pipeline, so the server can be tested and load-tested without a run.

:func:`standin_engine` ranks the tracks of a small index folder (:func:`write_standin_index`:
synthetic music videos and WAV songs with an ``items.parquet``) by a score derived from a hash of
the query file and the track id, deterministic but meaningless; conditioning images shift the
scores in proportion to ``strength``. Its previews are real WebM files (VP8 + Opus) with the
track laid under the query video from its offset. Never used by ``mvpt serve`` itself.
"""

from __future__ import annotations

import hashlib
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd

from mvpt.errors import UsageError
from mvpt.media import probe
from mvpt.serve.audio import add_opus_stream, encode_audio, pcm_chunks
from mvpt.serve.engine import ITEMS_FILE, Engine, read_items_parquet

PREVIEW_TIME_BASE = Fraction(1, 1000)
PREVIEW_MAX_WIDTH = 640


@dataclass
class StandInRecommendation:
    query: str
    results: list[dict]

    def to_dict(self) -> dict:
        return {"query": self.query, "direction": "video_to_music", "results": self.results}


def standin_engine() -> Engine:
    return Engine(recommend=standin_recommend, make_preview=standin_preview, load_items=read_items_parquet)


def standin_recommend(index_dir, query_path, *, top: int = 10, condition_images=None,
                      strength: float = 0.0, preview=None) -> StandInRecommendation:
    """The ``top`` tracks by hash score; offsets where the query's length fits in the track."""
    items = read_items_parquet(Path(index_dir))
    query_s = probe(query_path).duration_s
    seed = _digest(Path(query_path).read_bytes()[:65536])
    shift = _digest(b"".join(Path(p).read_bytes()[:4096] for p in condition_images or []))
    rows = []
    for item in items.to_dict("records"):
        score = _unit(seed + item["item_id"]) * 1.1 - 0.2
        if condition_images:
            score += strength * (_unit(shift + item["item_id"]) - 0.5)
        room_s = max(0.0, float(item["duration_s"]) - query_s)
        offset_s = round(_unit("offset" + seed + item["item_id"]) * room_s * 2) / 2
        rows.append({"item_id": item["item_id"], "title": item["title"],
                     "path": str(Path(index_dir) / item["path"]),
                     "offset_s": offset_s, "end_s": min(float(item["duration_s"]), offset_s + query_s),
                     "score": round(float(np.clip(score, -1, 1)), 4)})
    rows.sort(key=lambda row: -row["score"])
    results = [{"rank": rank, **row} for rank, row in enumerate(rows[:top], start=1)]
    return StandInRecommendation(query=str(query_path), results=results)


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _unit(text: str) -> float:
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / 16**12


def standin_preview(video_path, music_path, offset_s: float, out_path, *, fade_s: float = 0.5,
                    container: str = "webm") -> Path:
    """``video_path``'s picture (VP8) with ``music_path`` from ``offset_s`` under it (Opus)."""
    if container != "webm":
        raise UsageError(f"the stand-in writes WebM previews only, not {container!r}")
    out_path = Path(out_path)
    with av.open(str(video_path)) as source, av.open(str(out_path), "w", format="webm") as out:
        video_in = source.streams.video[0]
        duration_s = (source.duration or 0) / 1e6 or float(video_in.duration * video_in.time_base)
        video_out = _vp8_stream(out, video_in)
        audio_out = add_opus_stream(out)
        packets = list(_encode_picture(source, video_in, video_out))
        chunks = pcm_chunks(Path(music_path), start_s=offset_s, end_s=offset_s + duration_s)
        packets += list(encode_audio(audio_out, chunks, fade_s=fade_s, duration_s=duration_s))
        for packet in sorted(packets, key=lambda p: float((p.pts or 0) * p.time_base)):
            out.mux(packet)
    return out_path


def _vp8_stream(out, video_in):
    """Fast VP8: one thread (libvpx's own threads ran 4x slower here, on 2 busy cores)."""
    width = min(PREVIEW_MAX_WIDTH, video_in.codec_context.width) // 2 * 2
    height = int(video_in.codec_context.height * width / video_in.codec_context.width) // 2 * 2
    stream = out.add_stream("libvpx", rate=video_in.average_rate or 25,
                            options={"deadline": "realtime", "cpu-used": "8", "threads": "1"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.bit_rate = 800_000
    stream.time_base = PREVIEW_TIME_BASE
    stream.codec_context.time_base = PREVIEW_TIME_BASE
    return stream


def _encode_picture(source, video_in, video_out):
    last_pts = -1
    for frame in source.decode(video_in):
        pts = max(last_pts + 1, round((frame.time or 0.0) / PREVIEW_TIME_BASE))
        image = frame.reformat(width=video_out.width, height=video_out.height, format="yuv420p")
        image.pts, image.time_base, last_pts = pts, PREVIEW_TIME_BASE, pts
        yield from video_out.encode(image)
    yield from video_out.encode(None)


def write_standin_index(folder, *, n_tracks: int = 6, duration_s: float = 20.0, seed: int = 0) -> Path:
    """An index folder the stand-in serves: ``tracks/`` (even tracks are synthetic music videos,
    MP4 H.264 + AAC, so the server must transcode them; odd ones WAV songs it serves as they are)
    and ``items.parquet``. Returns the folder."""
    from mvpt.data.synth import GENRE_NAMES, generate_video, music_clip

    folder = Path(folder)
    tracks = folder / "tracks"
    rows = []
    for index in range(n_tracks):
        if index % 2 == 0:
            factors = generate_video(tracks, index=index, seed=seed, duration_s=duration_s)
            path, genre = tracks / "videos" / f"{factors['id']}.mp4", factors["genre"]
        else:
            genre = GENRE_NAMES[index % len(GENRE_NAMES)]
            path = _write_wav(tracks / f"song-{index:02d}.wav",
                              music_clip(genre, duration_s=duration_s, seed=seed + index), rate_hz=16000)
        rows.append({"item_id": f"{genre}/{path.stem}", "path": str(path.relative_to(folder)),
                     "title": f"{genre.title()} track {index + 1}", "duration_s": probe(path).duration_s})
    pd.DataFrame(rows).to_parquet(folder / ITEMS_FILE, index=False)
    return folder


def _write_wav(path: Path, samples: np.ndarray, *, rate_hz: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(pcm.tobytes())
    return path
