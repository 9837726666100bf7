"""Qualitative comparison to the baselines (appendix C.4): previews and descriptors side by side.

For each query of a store split, in each direction:

* **video to music**: the query video with (a) its own soundtrack (ground truth), (b) the
  same-genre baseline's pick, a random track of the query's genre (the baseline of appendix C.3;
  here the ground truth is left out of the draw, since (a) already shows it, unless it is alone
  in its genre; seeded by ``seed`` and the query's id and direction, so a query gets the same
  pick whatever else is asked), and (c) the model's
  top track, the argmax of the run's track-level similarity (each track's centred window of at
  most K clips, as :func:`mvpt.eval.evaluate` embeds it) over every track of the split;
* **music to video**: the query's music under three candidate videos chosen the same way.

Each pairing is written as a preview (:func:`mvpt.preview.make_preview`: the video with the music
laid under it, both from the start of their store item) into ``OUT/qualitative_previews``. Beside
each candidate, from its own soundtrack (a candidate video's is the music it came with):

* tempo in BPM: ``librosa.beat.beat_track`` beats, then the slope of beat time against beat
  number (missed beats re-numbered from the median inter-beat interval), 60 / slope;
* genre: the store's genre label (see :mod:`mvpt.analysis.same_genre`);
* loudness: the RMS level in dBFS, ``20 log10 sqrt(mean(x^2))`` of the mono samples (a full-scale
  square wave is 0 dBFS, a full-scale sine -3.01 dBFS); not K-weighted, so not LUFS;
* tags from YAMNet's AudioSet class probabilities (the ``yamnet`` tagger of
  :mod:`mvpt.data.movieclips`), averaged over the audio's frames: the top classes of AudioSet's
  "Musical instrument" subtree (YAMNet 134 "Plucked string instrument" .. 210 "Scratching
  (performance technique)", the subtree's root 133 left out as uninformative), and vocals: the
  share of frames where a singing class (24 "Singing" .. 31 "Rapping", 249 "Vocal music", 250 "A
  capella") reaches ``VOCAL_THRESHOLD``; vocals count as present when that share is at least
  ``VOCAL_MIN_SHARE``.

Descriptors read at most ``MAX_DESCRIBE_S`` seconds of each item (its centred part).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mvpt.errors import EncoderError, StoreError, UsageError

DIRECTIONS = {"v2m": "video_to_music", "m2v": "music_to_video"}
ROLES = ("ground truth", "same genre", "model")
INSTRUMENT_ROOT, INSTRUMENT_FIRST, INSTRUMENT_LAST = 133, 134, 210
VOCAL_CLASSES = (*range(24, 32), 249, 250)
VOCAL_THRESHOLD = 0.3
VOCAL_MIN_SHARE = 0.1
TOP_INSTRUMENTS = 3
TEMPO_RATE_HZ = 22050
MAX_DESCRIBE_S = 60.0
PREVIEW_FOLDER = "qualitative_previews"
LOUDNESS = "RMS level in dBFS (20 log10 of the RMS of the mono samples; not K-weighted)"


# ---------------------------------------------------------------------------- descriptors
def tempo_bpm(wave: np.ndarray, sample_rate_hz: int) -> float | None:
    """Tempo in BPM of mono ``wave`` from librosa's beat tracker (None: fewer than 3 beats).
    The beats are numbered from the median inter-beat interval (so a missed beat skips a number)
    and the tempo is 60 over the least-squares slope of beat time against number."""
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    if wave.size < sample_rate_hz or not np.any(wave):
        return None
    _, frames = librosa.beat.beat_track(y=wave, sr=sample_rate_hz, hop_length=256)
    times = librosa.frames_to_time(np.asarray(frames), sr=sample_rate_hz, hop_length=256)
    if len(times) < 3:
        return None
    step = float(np.median(np.diff(times)))
    numbers = np.round((times - times[0]) / step)
    slope = float(np.polyfit(numbers, times, 1)[0])
    return 60.0 / slope if slope > 0 else None


def rms_dbfs(wave: np.ndarray) -> float:
    """RMS level of mono samples in dBFS (silence: -120)."""
    wave = np.asarray(wave, dtype=np.float64)
    rms = float(np.sqrt(np.mean(wave * wave))) if wave.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-6))


def instrument_classes() -> dict[int, str]:
    """YAMNet index -> name of the "Musical instrument" subtree (root left out), checked by
    name at both ends."""
    from mvpt.encoders.yamnet import class_names

    names = class_names()
    expected = {INSTRUMENT_ROOT: "Musical instrument",
                INSTRUMENT_FIRST: "Plucked string instrument",
                INSTRUMENT_LAST: "Scratching (performance technique)", 24: "Singing",
                249: "Vocal music"}
    for index, name in expected.items():
        if names[index] != name:
            raise EncoderError(f"YAMNet class {index} is {names[index]!r}, expected {name!r}")
    return {i: names[i] for i in range(INSTRUMENT_FIRST, INSTRUMENT_LAST + 1)}


def audio_tags(probs: np.ndarray, *, top: int = TOP_INSTRUMENTS) -> dict:
    """Instrument and vocal tags from per-frame YAMNet probabilities [n_frames, 521]."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        return {"instruments": [], "vocals": False, "vocal_share": 0.0, "vocal_score": 0.0}
    classes = instrument_classes()
    mean = probs.mean(axis=0)
    ranked = sorted(classes, key=lambda i: (-mean[i], i))[:top]
    vocal = probs[:, list(VOCAL_CLASSES)].max(axis=1)
    share = float(np.mean(vocal >= VOCAL_THRESHOLD))
    return {"instruments": [{"name": classes[i], "probability": float(mean[i])} for i in ranked],
            "vocals": share >= VOCAL_MIN_SHARE, "vocal_share": share,
            "vocal_score": float(mean[list(VOCAL_CLASSES)].max())}


def describe_audio(path, *, start_s: float = 0.0, end_s: float | None = None, tagger=None,
                   max_s: float = MAX_DESCRIBE_S) -> dict:
    """Tempo, loudness and YAMNet tags of the audio of ``path`` in ``[start_s, end_s)`` (its
    centred ``max_s`` seconds at most). ``tagger`` defaults to :func:`mvpt.data.movieclips.
    load_tagger` ("yamnet")."""
    from mvpt import media

    info = media.probe(path)
    end = info.duration_s if end_s is None or not np.isfinite(end_s) else min(end_s,
                                                                               info.duration_s)
    start = max(0.0, float(start_s) if np.isfinite(start_s) else 0.0)
    if end - start > max_s:
        start = start + (end - start - max_s) / 2
        end = start + max_s
    wave = media.read_audio(path, sample_rate_hz=TEMPO_RATE_HZ, start_s=start, end_s=end,
                            info=info)
    if tagger is None:
        from mvpt.data.movieclips import load_tagger

        tagger = load_tagger("yamnet")
    tag_wave = media.read_audio(path, sample_rate_hz=tagger.sample_rate_hz, start_s=start,
                                end_s=end, info=info)
    tags = audio_tags(tagger.frame_probabilities(tag_wave).probs)
    return {"tempo_bpm": tempo_bpm(wave, TEMPO_RATE_HZ), "loudness_dbfs": rms_dbfs(wave),
            "described_s": [start, end], **tags}


# ---------------------------------------------------------------------------- model and picks
def split_similarity(run_dir, store_path, *, split: str = "test", which: str = "best",
                     embed_fn=None) -> tuple[object, np.ndarray]:
    """(store rows of the split's tracks with clips, float32 [n, n] similarity: row i = video i,
    column j = music j), at track level as :func:`mvpt.eval.evaluate` embeds them."""
    from mvpt.eval import gather_windows, track_windows
    from mvpt.run import embedder_for
    from mvpt.store import FeatureStore

    store = FeatureStore.open(store_path)
    embed, max_clips = embedder_for(run_dir, store, which=which, embed_fn=embed_fn)
    features = store.load(split=split, arrays=("video", "audio"))
    windows = track_windows(features.n_clips, max_clips=max_clips)
    if len(windows[0]) < 2:
        raise StoreError(f"{store_path}: need at least 2 extracted tracks in split {split!r}, "
                         f"found {len(windows[0])}")
    video = embed("video", gather_windows(features, "video", windows))
    music = embed("audio", gather_windows(features, "audio", windows))
    rows = features.rows.iloc[windows[0]].reset_index(drop=True)
    return rows, (np.asarray(video, np.float32) @ np.asarray(music, np.float32).T)


def choose_queries(ids: Sequence[str], *, queries: Sequence[str] | None = None,
                   random_n: int | None = None, seed: int = 0) -> list[int]:
    """Positions of the queries: the given ids (each must be in ``ids``) or ``random_n`` drawn
    without replacement (seeded), in split order."""
    ids = [str(i) for i in ids]
    if queries:
        where = {i: k for k, i in enumerate(ids)}
        unknown = [q for q in queries if q not in where]
        if unknown:
            raise UsageError(f"query id(s) {', '.join(unknown[:5])} not among the {len(ids)} "
                             "extracted tracks of the split")
        return [where[q] for q in dict.fromkeys(queries)]
    n = min(random_n or 3, len(ids))
    return sorted(np.random.default_rng(seed).choice(len(ids), size=n, replace=False).tolist())


def same_genre_pick(labels: Sequence, query: int, *, seed: int, key: str) -> int | None:
    """A random item with the query's label other than the query itself (the query when no
    other item has its label), drawn with a generator seeded by ``seed`` and ``key``; None when
    the query has no label."""
    if labels[query] is None:
        return None
    pool = [j for j, g in enumerate(labels) if g == labels[query] and j != query] or [query]
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return int(pool[rng.integers(len(pool))])


# ---------------------------------------------------------------------------- the analysis
def qualitative_analysis(run_dir, store_path, *, queries: Sequence[str] | None = None,
                         random_n: int | None = None, direction: str = "both",
                         split: str = "test", seed: int = 0, which: str = "best", genres=None,
                         out_dir="analysis", previews: bool = True, tagger=None,
                         embed_fn=None) -> dict:
    """Candidates, descriptors and previews for the chosen queries; returns the JSON object of
    the report. ``genres`` as for :func:`mvpt.analysis.same_genre.read_genre_labels` (default:
    the store's annotation)."""
    from mvpt.analysis.same_genre import read_genre_labels

    if direction not in (*DIRECTIONS, "both"):
        raise UsageError(f"direction must be v2m, m2v or both, got {direction!r}")
    directions = list(DIRECTIONS) if direction == "both" else [direction]
    labels_by_id = read_genre_labels(genres if genres is not None else store_path)
    rows, sims = split_similarity(run_dir, store_path, split=split, which=which,
                                  embed_fn=embed_fn)
    ids = rows["id"].astype(str).tolist()
    labels = [labels_by_id.get(i) for i in ids]
    picked = choose_queries(ids, queries=queries, random_n=random_n, seed=seed)
    if tagger is None:
        from mvpt.data.movieclips import load_tagger

        tagger = load_tagger("yamnet")
    described: dict[int, dict] = {}

    def item(j: int) -> dict:
        if j not in described:
            row = rows.iloc[j]
            described[j] = {"id": ids[j], "title": _title(row), "source_path": row["source_path"],
                            "start_s": _time(row["start_s"]), "end_s": _time(row["end_s"]),
                            "genre": labels[j],
                            **describe_audio(row["source_path"], start_s=_time(row["start_s"]),
                                             end_s=_time(row["end_s"]), tagger=tagger)}
        return described[j]

    preview_dir = Path(out_dir) / PREVIEW_FOLDER
    made: dict[tuple[int, int], dict] = {}
    entries = []
    for q in picked:
        for d in directions:
            scores = sims[q, :] if d == "v2m" else sims[:, q]
            choices = {"ground truth": q,
                       "same genre": same_genre_pick(labels, q, seed=seed, key=f"{ids[q]}/{d}"),
                       "model": int(np.argmax(scores))}
            candidates = []
            for role, j in choices.items():
                if j is None:
                    candidates.append({"role": role, "id": None,
                                       "note": "the query has no genre label"})
                    continue
                cand = {"role": role, **item(j), "score": float(scores[j]),
                        "model_rank": int(1 + np.sum(scores > scores[j])),
                        "is_ground_truth": j == q}
                if previews:
                    pair = (q, j) if d == "v2m" else (j, q)
                    if pair not in made:  # a pick equal to another shares its preview
                        made[pair] = _preview(rows, *pair, preview_dir, f"{ids[q]}-{d}-{role}")
                    cand["preview"] = made[pair]
                candidates.append(cand)
            entries.append({"direction": DIRECTIONS[d], "query": item(q),
                            "candidates": candidates})
    return {"run": None if run_dir is None else str(run_dir), "store": str(store_path),
            "split": split, "which": which, "seed": seed, "n_candidates": len(ids),
            "loudness": LOUDNESS, "vocal_threshold": VOCAL_THRESHOLD,
            "vocal_min_share": VOCAL_MIN_SHARE, "queries": entries}


def _title(row) -> str:
    title = row.get("title")
    return title if isinstance(title, str) and title else Path(str(row["source_path"])).stem


def _time(value) -> float | None:
    value = float(value) if value is not None else float("nan")
    return value if np.isfinite(value) else None


def _preview(rows, video: int, music: int, folder: Path, name: str) -> dict:
    """The preview of item ``video``'s picture with item ``music``'s sound, both from their
    items' starts."""
    from mvpt.preview import make_preview

    v, m = rows.iloc[video], rows.iloc[music]
    out = folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.mp4"
    info = make_preview(v["source_path"], m["source_path"], _time(m["start_s"]) or 0.0, out,
                        video_start_s=_time(v["start_s"]) or 0.0)
    return info.to_dict()


# ---------------------------------------------------------------------------- report
def _cell(c: dict) -> list[str]:
    if c.get("id") is None:
        return [c["role"], "-", "-", "-", "-", "-", "-", "-", c.get("note", "")]
    tempo = "-" if c["tempo_bpm"] is None else f"{c['tempo_bpm']:.1f}"
    inst = ", ".join(f"{t['name']} {t['probability']:.2f}" for t in c["instruments"])
    vocals = f"{'yes' if c['vocals'] else 'no'} ({100 * c['vocal_share']:.0f} %)"
    preview = Path(c["preview"]["path"]).name if c.get("preview") else ""
    name = c["title"] + (" (= ground truth)" if c["is_ground_truth"] and c["role"] != "ground truth"
                         else "")
    return [c["role"], name, f"{c['score']:.3f} (#{c['model_rank']})", tempo,
            str(c["genre"] or "-"), f"{c['loudness_dbfs']:.1f}", inst, vocals, preview]


def summary_markdown(result: dict) -> str:
    """One table per query and direction."""
    head = ["candidate", "track / video", "model score (rank)", "tempo (BPM)", "genre",
            "loudness (dBFS RMS)", "instruments (YAMNet)", "vocals", "preview"]
    parts = [(f"Qualitative comparison (appendix C.4), split {result['split']}, "
              f"{result['n_candidates']} candidates per query. Loudness: {result['loudness']}.")]
    for e in result["queries"]:
        q = e["query"]
        kind = "video" if e["direction"] == "video_to_music" else "music"
        tempo = "-" if q["tempo_bpm"] is None else f"{q['tempo_bpm']:.1f} BPM"
        caption = (f"**{e['direction'].replace('_', ' ')}**: query {kind} {q['title']} "
                   f"(id {q['id']}, genre {q['genre'] or '-'}, its music {tempo}, "
                   f"{q['loudness_dbfs']:.1f} dBFS)")
        lines = [caption, "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(_cell(c)) + " |" for c in e["candidates"]]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _still(path: str, start_s: float | None, end_s: float | None) -> np.ndarray:
    """A 160x90 frame from the middle of an item (grey when unreadable)."""
    from mvpt import media
    from mvpt.errors import MvptError

    try:
        info = media.probe(path)
        end = info.duration_s if end_s is None else min(end_s, info.duration_s)
        t = ((start_s or 0.0) + end) / 2
        return media.read_frames(path, [min(t, max(0.0, info.duration_s - 0.05))],
                                 size=(160, 90), info=info)[0]
    except MvptError:
        return np.full((90, 160, 3), 128, np.uint8)


def write_qualitative_report(result: dict, out_dir) -> dict:
    """``qualitative.json``, ``qualitative.md`` and ``qualitative.png`` (a contact sheet: per
    query and direction, a frame of the query video, or of the three candidate videos, and bars
    of the candidates' tempo and loudness beside the query's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mvpt.analysis import write_report

    entries = result["queries"]
    fig, axes = plt.subplots(max(1, len(entries)), 3, figsize=(12, 2.4 * max(1, len(entries))),
                             squeeze=False, gridspec_kw={"width_ratios": [1.6, 1, 1]})
    for row, e in zip(axes, entries):
        q = e["query"]
        shown = [c for c in e["candidates"] if c.get("id") is not None]
        if e["direction"] == "video_to_music":
            image = _still(q["source_path"], q["start_s"], q["end_s"])
        else:
            image = np.concatenate([_still(c["source_path"], c["start_s"], c["end_s"])
                                    for c in shown], axis=1)
        row[0].imshow(image)
        row[0].set_axis_off()
        row[0].set_title(f"{e['direction'].replace('_', ' ')}: {q['title']}", fontsize=8)
        names = [c["role"] for c in shown]
        for ax, key, label in ((row[1], "tempo_bpm", "tempo (BPM)"),
                               (row[2], "loudness_dbfs", "loudness (dBFS RMS)")):
            values = np.array([np.nan if c[key] is None else c[key] for c in shown], float)
            floor = 0.0 if key == "tempo_bpm" else min(-60.0, np.nanmin(values, initial=0) - 5)
            ax.barh(names, values - floor, left=floor,
                    color=[f"C{ROLES.index(n)}" for n in names])
            if q[key] is not None:
                ax.axvline(q[key], color="black", linestyle=":", linewidth=1)
            ax.set_xlabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.invert_yaxis()
    fig.tight_layout()
    return write_report(out_dir, name="qualitative", data=result,
                        markdown=summary_markdown(result), figure=fig)
