"""Recommend: music for a video from a music index, or videos for a piece of music from a video
index. :func:`recommend` is the one function the CLI and the HTTP API wrap.

The query file's clip features are extracted in memory with the run's encoder (the video's frames
for a music index, the music's audio for a video index), cut into windows of the index's length
and stride (at most ``MAX_QUERY_WINDOWS``, evenly spread over a long query), and each window goes
through the run's tower. An item's score is its best (query window, item window) inner product;
its ``offset_s`` is where to start playing it alongside the query from 0 s so that the two best
windows line up (``max(0, item window start - query window start)``).

Conditioning on a visually defined attribute (the paper's guitar experiment): each example image
is encoded by the frame encoder, its feature repeated over as many clips as a query window (a
still video), and passed through the video tower; the mean of these embeddings, normalised, is the
attribute direction ``c``. Each query window's vector ``q`` becomes ``normalize(q + strength *
c)``; ``strength = 0`` leaves the query, and so the ranking, exactly unchanged. The same direction
steers a music query towards videos showing the attribute.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mvpt.errors import MediaError, UsageError
from mvpt.index import Index, WindowHit, open_index
from mvpt.run import Run

MAX_QUERY_WINDOWS = 32
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
_QUERY_OF = {"music": "video", "video": "audio"}  # index modality -> query store modality


@dataclass
class Recommendation:
    """Ranked items for one query, best first."""

    query_path: str
    query_modality: str  # "video" (searching music) or "music" (searching videos)
    index_path: str
    index_modality: str
    query_duration_s: float
    query_windows_s: list[tuple[float, float]]
    hits: list[WindowHit]
    condition: dict | None = None
    preview_path: str | None = None
    timings_s: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hits"] = [h.to_dict() for h in self.hits]
        out["query_windows_s"] = [list(w) for w in self.query_windows_s]
        return out

    def format_table(self) -> str:
        """A plain-text table: rank, score, offset mm:ss, title."""
        lines = [f"{'rank':>4}  {'score':>6}  {'offset':>7}  title"]
        for h in self.hits:
            lines.append(f"{h.rank:>4}  {h.score:>6.3f}  {format_mm_ss(h.offset_s):>7}  {h.title}")
        if not self.hits:
            lines.append("(the index is empty)")
        return "\n".join(lines)


def format_mm_ss(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def recommend(
    index: str | Path | Index,
    query_path: str | Path,
    *,
    top: int = 10,
    condition_images: Iterable[str | Path] | None = None,
    strength: float = 0.0,
    preview: str | Path | None = None,
) -> Recommendation:
    """The ``top`` items of ``index`` (an :class:`~mvpt.index.Index` or its folder; its run is the
    one it was built with) for the media file ``query_path``
    (a video for a music index, a music or video file's audio for a video index). Optionally
    conditioned on example images (``strength`` > 0 pulls towards them), and with a preview of
    the best hit laid together with the query written to ``preview`` (.mp4 or .webm)."""
    import time

    if top < 1:
        raise UsageError(f"top must be >= 1, got {top}")
    t0 = time.perf_counter()
    index = index if isinstance(index, Index) else open_index(index)
    queries, spans, duration_s = embed_query(index, query_path)
    t1 = time.perf_counter()
    condition = None
    images = list(condition_images or [])
    if images and strength != 0.0:
        direction = attribute_direction(index.run, images, clips=index.windows.window_clips)
        queries = condition_queries(queries, direction, strength=strength)
        condition = {"images": [str(p) for p in image_files(images)], "strength": strength}
    hits = index.search(queries, top=top, query_windows_s=spans)
    t2 = time.perf_counter()
    result = Recommendation(
        query_path=str(query_path), query_modality=_word(_QUERY_OF[index.modality]),
        index_path=str(index.path or ""), index_modality=index.modality, query_duration_s=duration_s,
        query_windows_s=[(float(a), float(b)) for a, b in spans], hits=hits,
        condition=condition, timings_s={"query_features": t1 - t0, "search": t2 - t1})
    if preview is not None and hits:
        result.preview_path = str(write_hit_preview(result, hits[0], preview))
    return result


def _word(store_modality: str) -> str:
    return "music" if store_modality == "audio" else "video"


def query_windows(n_clips: int, index: Index, *, max_windows: int = MAX_QUERY_WINDOWS
                  ) -> list[tuple[int, int]]:
    """(first clip, clips) of the query windows: the index's windows, evenly thinned to at most
    ``max_windows``."""
    windows = index.windows.cut(n_clips)
    if len(windows) > max_windows:
        picks = np.unique(np.round(np.linspace(0, len(windows) - 1, max_windows)).astype(int))
        windows = [windows[i] for i in picks]
    return windows


def embed_query(index: Index, query_path) -> tuple[np.ndarray, np.ndarray, float]:
    """(vectors [m, d], window spans in seconds [m, 2], duration in seconds) of a query file."""
    modality = _QUERY_OF[index.modality]
    try:
        result = index.run.extractor(modality).extract_file(query_path)
    except MediaError as exc:
        if "stream" not in exc.reason:
            raise
        raise MediaError(query_path, f"{exc.reason}; a {index.modality} index is searched with "
                                     f"a {_word(modality)} query") from None
    clips = result.arrays[modality]
    windows = query_windows(len(clips), index)
    clip_s = index.windows.clip_s
    spans = np.array([(first * clip_s, (first + n) * clip_s) for first, n in windows])
    vectors = index.run.embed(modality, [clips[f:f + n] for f, n in windows])
    return vectors, spans, float(result.duration_s)


# ------------------------------------------------------------------------------ conditioning
def image_files(images: Iterable[str | Path]) -> list[Path]:
    """Image files from files and folders (searched recursively), in a stable order."""
    out: list[Path] = []
    for item in images:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.is_file():
            out.append(p)
        else:
            raise MediaError(p, "condition image not found")
    if not out:
        raise UsageError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in "
                         f"{[str(i) for i in images]}")
    return out


def load_image(path: str | Path, *, size: tuple[int, int], resize_mode: str = "crop") -> np.ndarray:
    """uint8 RGB [height, width, 3] of an image file at ``size`` (width, height): "crop" scales
    until the size is covered and cuts the centre, "squash" stretches."""
    import av

    width, height = size
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.FFmpegError, StopIteration, OSError, IndexError) as exc:
        raise MediaError(path, f"not a readable image ({type(exc).__name__})") from None
    if resize_mode == "crop":
        scale = max(width / frame.width, height / frame.height)
        w, h = max(width, round(frame.width * scale)), max(height, round(frame.height * scale))
        rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
        top, left = (h - height) // 2, (w - width) // 2
        return np.ascontiguousarray(rgb[top:top + height, left:left + width])
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def attribute_direction(run: Run, images: Iterable[str | Path], *, clips: int) -> np.ndarray:
    """float32 [d] unit vector: the mean video-tower embedding of ``run`` of the images as still
    videos of ``clips`` clips."""
    encoder = run.extractor("video").video
    frames = np.stack([load_image(p, size=tuple(encoder.image_size),
                                  resize_mode=encoder.resize_mode) for p in image_files(images)])
    mean = still_embeddings(run, frames, clips=clips).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def still_embeddings(run: Run, frames: np.ndarray, *, clips: int) -> np.ndarray:
    """float32 [n, d]: each uint8 RGB picture of ``frames`` [n, h, w, 3] (at the frame encoder's
    size, see :func:`load_image`) as a still video of ``clips`` clips through ``run``'s frame
    encoder and video tower, in one batch."""
    encoder = run.extractor("video").video
    features = np.asarray(encoder.encode_frames(frames), dtype=np.float32)
    stills = [np.repeat(f[None, :], clips, axis=0) for f in features]
    return np.asarray(run.embed("video", stills), dtype=np.float32)


def condition_queries(queries: np.ndarray, direction: np.ndarray, *, strength: float) -> np.ndarray:
    """normalize(q + strength * c) for every query row (strength 0: the queries unchanged)."""
    if strength == 0.0:
        return queries
    moved = queries + strength * direction[None, :]
    return (moved / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)).astype(
        np.float32)


# ------------------------------------------------------------------------------ preview
def write_hit_preview(result: Recommendation, hit: WindowHit, out: str | Path) -> Path:
    """A preview of ``hit`` with the query: the video with the music laid under it, aligned on
    their best windows."""
    from mvpt.preview import make_preview

    music_lead_s = max(0.0, hit.query_start_s - hit.window_start_s)
    if result.index_modality == "music":  # video query, music hit
        # signed: a music window earlier in its track than the video's makes the music enter late
        return make_preview(result.query_path, hit.source_path, hit.aligned_start_s, out).path
    return make_preview(hit.source_path, result.query_path, music_lead_s, out,
                        video_start_s=hit.offset_s).path
