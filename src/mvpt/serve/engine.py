"""What the server calls to do the work: recommend, make a preview, read an index's tracks.

:func:`default_engine` is the real pipeline (:func:`mvpt.recommend.recommend`,
:func:`mvpt.preview.make_preview`, the index's window table). Its calls are module-level
functions, so they run in the server's worker processes (:mod:`mvpt.serve.worker`); tests may
pass an engine of their own through ``create_app(..., engine=..., isolate=False)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mvpt.errors import StoreError


@dataclass(frozen=True)
class Track:
    """A track of the index, as the server serves it."""

    item_id: str
    path: Path
    title: str
    duration_s: float | None


@dataclass(frozen=True)
class Engine:
    """``recommend(index_dir, query_path, *, top, condition_images, strength)`` returns
    :meth:`mvpt.recommend.Recommendation.to_dict`'s dict; ``make_preview(video_path, music_path,
    offset_s, out_path, *, fade_s, container)`` writes ``out_path``; ``load_items(index_dir)``
    returns the items table (a DataFrame with ``item_id``, ``path``, ``title``, ``duration_s``)."""

    recommend: Callable[..., dict]
    make_preview: Callable[..., object]
    load_items: Callable[[Path], pd.DataFrame]


def default_engine() -> Engine:
    return Engine(recommend=recommend_dict, make_preview=make_preview, load_items=load_index_items)


def recommend_dict(index_dir, query_path, **options) -> dict:
    from mvpt.recommend import recommend

    return recommend(index_dir, query_path, **options).to_dict()


def make_preview(video_path, music_path, offset_s, out_path, **options) -> None:
    from mvpt.preview import make_preview as write_preview

    write_preview(video_path, music_path, offset_s, out_path, **options)


def load_index_items(index_dir: Path) -> pd.DataFrame:
    """The index's items table (item_id, path, title, duration_s), one row per item, taken from
    the window table of :func:`mvpt.index.open_index`. The server plays music under videos, so
    it refuses an index of videos."""
    from mvpt.index import open_index

    index = open_index(index_dir)
    if index.modality != "music":
        raise StoreError(f"{index_dir}: an index of {index.modality}; `mvpt serve` needs a music "
                         "index (`mvpt index RUN MUSIC... --out INDEX --modality music`)")
    return items_from_windows(index.table)


def items_from_windows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per item of an index's window table (its first window's columns)."""
    first = table.drop_duplicates("item_id", keep="first")
    return pd.DataFrame({"item_id": first["item_id"].astype(str), "path": first["source_path"],
                         "title": first["title"], "duration_s": first["item_duration_s"]})


def tracks_by_id(items: pd.DataFrame, *, index_dir: Path) -> dict[str, Track]:
    """Tracks keyed by ``item_id``; relative paths are taken from ``index_dir``."""
    missing = {"item_id", "path"} - set(items.columns)
    if missing:
        raise StoreError(f"{index_dir}: items table lacks column(s) {sorted(missing)}")
    tracks = {}
    for row in items.to_dict("records"):
        item_id = str(row["item_id"])
        path = Path(row["path"])
        title = row.get("title")
        duration = row.get("duration_s")
        tracks[item_id] = Track(
            item_id=item_id,
            path=path if path.is_absolute() else Path(index_dir) / path,
            title=str(title) if isinstance(title, str) and title else Path(item_id).name,
            duration_s=float(duration) if duration is not None and pd.notna(duration) else None,
        )
    return tracks


def unreadable_tracks(tracks: dict[str, Track]) -> list[str]:
    """Ids of the tracks whose file is missing or cannot be read, in index order."""
    return [item_id for item_id, track in tracks.items()
            if not (track.path.is_file() and os.access(track.path, os.R_OK))]


def response_payload(result: dict, *, query_name: str) -> dict:
    """What ``POST /api/recommend`` returns from a Recommendation's ``to_dict()``:
    ``{"query", "direction", "results": [{"rank", "item_id", "title", "offset_s", "end_s",
    "score", ...}], "query_duration_s", ...}``. Never a path of the server's (the library's files,
    the upload's temporary copy)."""
    rows = [_hit_row(hit, query_s=result.get("query_duration_s")) for hit in result["hits"]]
    direction = f"{result.get('query_modality', 'video')}_to_{result.get('index_modality', 'music')}"
    payload = {"query": query_name, "direction": direction, "results": rows}
    for key in ("query_duration_s", "timings_s"):
        if key in result:
            payload[key] = result[key]
    if result.get("condition"):
        condition = result["condition"]
        payload["condition"] = {"images": len(condition.get("images", [])),
                                "strength": condition.get("strength")}
    return payload


def _hit_row(hit: dict, *, query_s: float | None) -> dict:
    """A contract row from a WindowHit: the track plays from ``offset_s`` for the query's length."""
    end_s = hit["offset_s"] + query_s if query_s else hit["window_end_s"]
    if hit.get("item_duration_s"):
        end_s = min(end_s, hit["item_duration_s"])
    extra = {k: v for k, v in hit.items() if k not in ("source_path",)}
    return {**extra, "end_s": round(float(end_s), 3)}
