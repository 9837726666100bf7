"""Conditioning on an instrument (appendix C.1, figure 8 of the paper: the guitar experiment).

Songs come in MedleyDB's multitrack layout::

    SONGS_DIR/Song/Song_METADATA.yaml     stems: {S01: {filename: Song_STEM_01.wav,
                                                        instrument: clean electric guitar}, ...}
    SONGS_DIR/Song/Song_STEMS/Song_STEM_01.wav ...
    SONGS_DIR/Song/Song_MIX.wav           (not used: the mixes are rebuilt from the stems)

For every song with at least one stem of the instrument, two versions are built from its stems,
mono (every stem mixed down by :func:`mvpt.media.read_audio`) at the stems' sample rate: **with**
(the plain sum of every stem at unit gain) and **without** (the sum of every stem but the
instrument's, times one gain that gives it the integrated loudness of *with*: ITU-R BS.1770 /
EBU R128 LUFS, measured with ``pyloudnorm``), so the two differ by the instrument and not by how
loud they are. Both are written as 32-bit float WAV files (a sum may exceed
full scale; nothing is clipped) into ``OUT/cache/mixes``, their names carrying a hash of their
samples, and indexed as a music library with the run (:func:`mvpt.index.build_index` into
``OUT/cache/index-SHA``, so a second call extracts nothing again).

Each query video is embedded as :func:`mvpt.recommend.recommend` does, and its windows are
conditioned on example pictures of the instrument with :func:`mvpt.recommend.attribute_direction`
and :func:`mvpt.recommend.condition_queries` (``normalize(q + a c)``) at each strength ``a``. A
version's score is the recommender's: its best (query window, song window) inner product. Per
strength the analysis reports, over all (video, song) pairs, the share where the version with the
instrument scores strictly higher (ties count as not higher and are counted apart) and the mean
score difference (with minus without). Strength 0 leaves the queries, and so the scores, exactly
those of an unconditioned recommendation.

Instrument names match MedleyDB labels case-insensitively when equal or when the label ends with
the name as whole words: ``guitar`` matches ``clean electric guitar``, ``distorted electric
guitar`` and ``acoustic guitar``; ``bass`` matches ``electric bass`` and ``double bass`` but not
``bass drum``. Several names are separated by commas. A stem whose ``instrument`` is a list
matches when any entry does.

A song whose metadata or stems cannot be read, that has no stem of the instrument, or whose every
stem is the instrument is recorded in ``skipped_songs`` with the reason; the others go on. So is
a query video that cannot be read (``failed_videos``).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mvpt.errors import MediaError, MvptError, UsageError

DEFAULT_STRENGTHS = (0.0, 0.25, 0.5, 1.0, 2.0)
VERSIONS = ("with", "without")
METADATA_SUFFIX = "_METADATA.yaml"


# ---------------------------------------------------------------------------- MedleyDB layout
def find_songs(songs_dir) -> list[Path]:
    """Song folders of a MedleyDB-layout folder (those holding ``NAME/NAME_METADATA.yaml``, or
    any ``*_METADATA.yaml``), sorted by name."""
    root = Path(songs_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder of MedleyDB songs")
    songs = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob(f"*{METADATA_SUFFIX}")))
    if not songs:
        raise UsageError(f"{root}: no song folders with a *{METADATA_SUFFIX} file (MedleyDB "
                         "layout: Song/Song_METADATA.yaml, Song/Song_STEMS/Song_STEM_01.wav)")
    return songs


def metadata_path(song_dir) -> Path:
    """``Song/Song_METADATA.yaml``, else the folder's only ``*_METADATA.yaml``."""
    song_dir = Path(song_dir)
    own = song_dir / f"{song_dir.name}{METADATA_SUFFIX}"
    if own.is_file():
        return own
    found = sorted(song_dir.glob(f"*{METADATA_SUFFIX}"))
    if len(found) != 1:
        raise MediaError(song_dir, f"expected one *{METADATA_SUFFIX} file, found {len(found)}")
    return found[0]


def read_metadata(path) -> dict:
    """A MedleyDB metadata YAML file as a dict (needs PyYAML)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover
        raise MvptError("reading MedleyDB metadata needs PyYAML: pip install pyyaml") from None
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MediaError(path, f"unreadable metadata ({reason})") from None
    if not isinstance(data, dict) or not isinstance(data.get("stems"), dict):
        raise MediaError(path, "metadata has no 'stems' mapping")
    return data


def song_stems(song_dir) -> list[dict]:
    """``[{"stem": "S01", "path": Path, "instruments": [label, ...]}, ...]`` of a song folder, in
    stem order, from its metadata (stem folder ``stem_dir``, default ``Song_STEMS``)."""
    song_dir = Path(song_dir)
    meta_path = metadata_path(song_dir)
    meta = read_metadata(meta_path)
    stem_dir = song_dir / str(meta.get("stem_dir") or f"{song_dir.name}_STEMS")
    stems = []
    for key in sorted(meta["stems"], key=str):
        entry = meta["stems"][key]
        if not isinstance(entry, dict) or not entry.get("filename"):
            raise MediaError(meta_path, f"stem {key} has no filename")
        labels = entry.get("instrument")
        labels = labels if isinstance(labels, list) else [labels]
        stems.append({"stem": str(key), "path": stem_dir / str(entry["filename"]),
                      "instruments": [str(x) for x in labels if x is not None]})
    if not stems:
        raise MediaError(meta_path, "metadata lists no stems")
    return stems


def instrument_names(instrument: str | Sequence[str]) -> list[str]:
    """Lower-case names from ``"guitar"``, ``"guitar,violin"`` or a list."""
    parts = instrument.split(",") if isinstance(instrument, str) else list(instrument)
    names = [" ".join(str(p).lower().split()) for p in parts]
    names = [n for n in names if n]
    if not names:
        raise UsageError("give an instrument name (e.g. --instrument guitar)")
    return names


def matches_instrument(label: str, names: Sequence[str]) -> bool:
    """True when the MedleyDB ``label`` is one of ``names`` or ends with one as whole words."""
    words = " ".join(str(label).lower().split())
    return any(words == n or words.endswith(" " + n) for n in names)


# ---------------------------------------------------------------------------- mixing
def wav_bytes(samples: np.ndarray, *, rate_hz: int) -> bytes:
    """A mono 32-bit IEEE float WAV file (format 3, with a ``fact`` chunk) of ``samples``."""
    data = np.ascontiguousarray(samples, dtype="<f4").tobytes()
    n = len(data) // 4
    fmt = struct.pack("<HHIIHHH", 3, 1, rate_hz, rate_hz * 4, 4, 32, 0)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"fact" + struct.pack("<II", 4, n) + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_wav(path, samples: np.ndarray, *, rate_hz: int) -> Path:
    """Write :func:`wav_bytes` atomically, unless the same bytes are there already (its
    modification time then stays, and the feature store keeps its features)."""
    from mvpt.fileio import atomic_write_bytes

    path = Path(path)
    data = wav_bytes(samples, rate_hz=rate_hz)
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        atomic_write_bytes(path, data)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def build_song_mixes(song_dir, names: Sequence[str], mix_dir) -> dict:
    """Write the song's two versions into ``mix_dir``; returns ``{"song", "with", "without",
    "instrument_stems", "other_stems", "sample_rate_hz", "duration_s", "loudness_lufs" (both
    versions'), "without_gain"}``. Raises MvptError (one
    line naming the file) when the song cannot be used."""
    song_dir = Path(song_dir)
    stems = song_stems(song_dir)
    for s in stems:
        s["match"] = any(matches_instrument(label, names) for label in s["instruments"])
    inst = [s for s in stems if s["match"]]
    rest = [s for s in stems if not s["match"]]
    if not inst:
        found = sorted({label for s in stems for label in s["instruments"]})
        raise UsageError(f"{song_dir}: no stem of {', '.join(names)} (has {', '.join(found)})")
    if not rest:
        raise UsageError(f"{song_dir}: every stem is {', '.join(names)}; nothing is left "
                         "without it")
    for s in stems:
        if not s["path"].is_file():
            raise MediaError(s["path"], f"stem {s['stem']} not found")
    mixes, rate = _mix_versions(stems)
    mixes["without"], gain, loudness = match_loudness(mixes["without"], mixes["with"],
                                                      rate_hz=rate, source=song_dir)
    out = {"song": song_dir.name, "sample_rate_hz": rate,
           "duration_s": len(mixes["with"]) / rate, "loudness_lufs": loudness,
           "without_gain": gain,
           "instrument_stems": [_stem_record(s) for s in inst],
           "other_stems": [_stem_record(s) for s in rest]}
    tag = {"with": "all", "without": "no-" + _slug("-".join(names))}
    for version, wave in mixes.items():
        digest = hashlib.sha1(wave.tobytes()).hexdigest()[:10]
        path = Path(mix_dir) / f"{_slug(song_dir.name)}__{tag[version]}__{digest}.wav"
        out[version] = str(write_wav(path, wave, rate_hz=rate))
    return out


def _mix_versions(stems: list[dict]) -> tuple[dict[str, np.ndarray], int]:
    """({"with": float32, "without": float32} sums, sample rate): each stem read mono at the
    first stem's rate (others resampled) and added in float64, one stem in memory at a time;
    shorter stems count as zeros after their end."""
    from mvpt import media

    rate = media.probe(stems[0]["path"]).audio_rate_hz
    if rate <= 0:
        raise MediaError(stems[0]["path"], "no audio stream in the stem")
    sums = {"with": np.zeros(0), "without": np.zeros(0)}
    for stem in stems:
        wave = np.asarray(media.read_audio(stem["path"], sample_rate_hz=rate), dtype=np.float64)
        for version in ("with",) if stem["match"] else VERSIONS:
            total = sums[version]
            if len(total) < len(wave):
                total = sums[version] = np.pad(total, (0, len(wave) - len(total)))
            total[:len(wave)] += wave
    n = max(len(t) for t in sums.values())
    return {v: np.pad(t, (0, n - len(t))).astype(np.float32) for v, t in sums.items()}, int(rate)


def integrated_loudness(samples: np.ndarray, *, rate_hz: int, source) -> float:
    """Integrated loudness (LUFS, ITU-R BS.1770-4) of mono ``samples``; MediaError naming
    ``source`` when it is too short to measure (one 0.4 s block) or silent."""
    import pyloudnorm

    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) < round(0.4 * rate_hz):
        raise MediaError(source, f"too short to measure its loudness ({len(samples) / rate_hz:.2f} "
                                 "s < 0.4 s)")
    loudness = float(pyloudnorm.Meter(rate_hz).integrated_loudness(samples))
    if not np.isfinite(loudness):
        raise MediaError(source, "a mix is silent; its loudness cannot be matched")
    return loudness


def match_loudness(signal: np.ndarray, reference: np.ndarray, *, rate_hz: int,
                   source) -> tuple[np.ndarray, float, float]:
    """(``signal`` times the gain that gives it ``reference``'s integrated loudness, float32;
    that gain; the reference's loudness in LUFS)."""
    target = integrated_loudness(reference, rate_hz=rate_hz, source=source)
    gain = 10.0 ** ((target - integrated_loudness(signal, rate_hz=rate_hz, source=source)) / 20)
    return (np.asarray(signal, np.float64) * gain).astype(np.float32), float(gain), target


def _stem_record(stem: dict) -> dict:
    return {"stem": stem["stem"], "path": str(stem["path"]), "instruments": stem["instruments"]}


# ---------------------------------------------------------------------------- scoring
def conditioning_analysis(run_dir, songs_dir, videos: Sequence, *, images, instrument,
                          strengths: Sequence[float] = DEFAULT_STRENGTHS, out_dir="analysis",
                          which: str = "best", progress: bool = False) -> dict:
    """Build both versions of every usable song, index them with the run and score every query
    video against them at every conditioning strength; returns the JSON object of the report
    (``pairs``: per (video, song), the scores of each version per strength, in the order of
    ``strengths``; ``curve``: per strength, the share where the version with the instrument is
    higher and the mean difference)."""
    from mvpt.index import build_index, open_index
    from mvpt.run import Run
    from mvpt.recommend import attribute_direction, embed_query, image_files

    strengths = [float(a) for a in strengths]
    if not strengths or not all(np.isfinite(strengths)):
        raise UsageError(f"strengths must be finite numbers, got {strengths}")
    videos = [str(v) for v in videos]
    if not videos:
        raise UsageError("give at least one query video")
    names = instrument_names(instrument)
    pictures = image_files([images] if isinstance(images, (str, Path)) else images)
    cache = Path(out_dir) / "cache"

    songs, skipped = [], []
    for song_dir in find_songs(songs_dir):
        try:
            songs.append(build_song_mixes(song_dir, names, cache / "mixes"))
        except MvptError as exc:
            skipped.append({"song": song_dir.name, "reason": str(exc)})
    if not songs:
        reasons = "; ".join(s["reason"] for s in skipped[:3])
        raise UsageError(f"{songs_dir}: no song has stems of {', '.join(names)} to compare "
                         f"({reasons})")

    run = Run.coerce(run_dir, which=which)
    index_dir = cache / f"index-{run.sha256[:12]}"
    mixes = [s[v] for s in songs for v in VERSIONS]
    summary = build_index(run, mixes, index_dir, modality="music", which=which,
                          progress=progress)
    failed_mixes = {f.get("path"): f.get("error") for f in summary.extract.get("failures", [])}
    index = open_index(index_dir)
    wanted = {str(Path(s[v]).resolve()): (k, v) for k, s in enumerate(songs) for v in VERSIONS}
    indexed = {wanted[str(Path(p).resolve())] for p in index.table["source_path"]
               if str(Path(p).resolve()) in wanted}
    kept = []
    for k, song in enumerate(songs):
        if all((k, v) in indexed for v in VERSIONS):
            kept.append(song)
        else:
            error = next((failed_mixes[song[v]] for v in VERSIONS if song[v] in failed_mixes),
                         "a mix was not extracted")
            skipped.append({"song": song["song"], "reason": str(error)})
    songs = kept
    if not songs:
        raise UsageError(f"{songs_dir}: no song's mixes could be extracted")
    row_of = {str(Path(s[v]).resolve()): (k, v) for k, s in enumerate(songs) for v in VERSIONS}

    direction = attribute_direction(run, pictures, clips=index.windows.window_clips)
    pairs, failed_videos = [], []
    for video in videos:
        try:
            queries, spans, _ = embed_query(index, video)
        except MvptError as exc:
            failed_videos.append({"video": video, "reason": str(exc)})
            continue
        scores = {(k, v): [] for k in range(len(songs)) for v in VERSIONS}
        for strength in strengths:
            for (k, v), value in version_scores(index, queries, spans, direction,
                                                strength=strength, rows=row_of).items():
                scores[(k, v)].append(value)
        for k, song in enumerate(songs):
            pairs.append({"video": video, "song": song["song"],
                          "with": scores[(k, "with")], "without": scores[(k, "without")]})
    if not pairs:
        raise UsageError(f"no query video could be read ({failed_videos[0]['reason']})")
    return {
        "run": str(run.folder), "which": which, "songs_dir": str(songs_dir),
        "instrument": names, "images": [str(p) for p in pictures], "strengths": strengths,
        "index": str(index_dir), "videos": [p["video"] for p in pairs[::len(songs)]],
        "songs": songs, "skipped_songs": skipped, "failed_videos": failed_videos,
        "pairs": pairs, "curve": preference_curve(pairs, strengths),
    }


def version_scores(index, queries: np.ndarray, spans: np.ndarray, direction: np.ndarray, *,
                   strength: float, rows: dict) -> dict:
    """{(song, version): score} of the conditioned queries against every indexed mix named in
    ``rows`` (resolved source path -> (song, version)): the recommender's best-window score."""
    from mvpt.recommend import condition_queries

    moved = condition_queries(queries, direction, strength=strength)
    hits = index.search(moved, top=index.n_items, query_windows_s=spans)
    out = {}
    for hit in hits:
        key = rows.get(str(Path(hit.source_path).resolve()))
        if key is not None and key not in out:
            out[key] = float(hit.score)
    missing = set(rows.values()) - set(out)
    if missing:
        raise UsageError(f"{index.path}: {len(missing)} mixes missing from the index")
    return out


def preference_curve(pairs: Sequence[dict], strengths: Sequence[float]) -> list[dict]:
    """Per strength: pairs, how many prefer each version or tie, the share where the version with
    the instrument scores strictly higher, and the mean and standard error of with - without."""
    curve = []
    for j, strength in enumerate(strengths):
        diff = np.array([p["with"][j] - p["without"][j] for p in pairs], dtype=np.float64)
        higher, lower = int(np.sum(diff > 0)), int(np.sum(diff < 0))
        curve.append({
            "strength": float(strength), "n_pairs": int(diff.size), "with_higher": higher,
            "without_higher": lower, "ties": int(diff.size - higher - lower),
            "share_with_higher": higher / diff.size,
            "mean_difference": float(diff.mean()),
            "sem_difference": float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1
            else None,
        })
    return curve


# ---------------------------------------------------------------------------- report
def summary_markdown(result: dict) -> str:
    """A caption (songs, videos, pictures, what was skipped) and one row per strength."""
    inst = ", ".join(result["instrument"])
    caption = (f"Conditioning on **{inst}** ({len(result['images'])} pictures): "
               f"{len(result['videos'])} query videos x {len(result['songs'])} songs, each song "
               f"with and without its {inst} stems (appendix C.1).")
    head = ("| strength a | pairs | with > without | ties | share with higher | "
            "mean score difference (with - without) |")
    lines = [caption, "", head, "|---:|---:|---:|---:|---:|---:|"]
    for p in result["curve"]:
        lines.append(f"| {p['strength']:g} | {p['n_pairs']} | {p['with_higher']} | {p['ties']} "
                     f"| {100 * p['share_with_higher']:.1f} % | {p['mean_difference']:+.4f} |")
    notes = [f"- skipped song {s['song']}: {s['reason']}" for s in result["skipped_songs"]]
    notes += [f"- failed video: {v['reason']}" for v in result["failed_videos"]]
    return "\n".join(lines + ([""] + notes if notes else []))


def write_conditioning_report(result: dict, out_dir) -> dict:
    """``conditioning.json``, ``conditioning.md`` and ``conditioning.png`` (share with the
    instrument higher, and mean score difference, against the strength) in ``out_dir``."""
    from mvpt.analysis import new_figure, write_report

    fig, ax = new_figure(width=6)
    xs = [p["strength"] for p in result["curve"]]
    ax.plot(xs, [100 * p["share_with_higher"] for p in result["curve"]], marker="o",
            color="C0", label="share with instrument higher")
    ax.axhline(50, color="C0", linestyle=":", linewidth=1)
    ax.set_xlabel("conditioning strength a")
    ax.set_ylabel("with instrument higher (% of pairs)", color="C0")
    ax.set_ylim(-5, 105)
    right = ax.twinx()
    means = [p["mean_difference"] for p in result["curve"]]
    errs = [p["sem_difference"] or 0.0 for p in result["curve"]]
    right.errorbar(xs, means, yerr=errs, marker="s", color="C1", capsize=3,
                   label="mean score difference")
    right.axhline(0, color="C1", linestyle=":", linewidth=1)
    right.set_ylabel("mean score difference (with - without)", color="C1")
    ax.set_title(f"conditioning on {', '.join(result['instrument'])}")
    return write_report(out_dir, name="conditioning", data=result,
                        markdown=summary_markdown(result), figure=fig)
