"""Media manipulations of figure 12: colour brightness, colour hue and music tempo, by a rate r.

All three share one scale, r = 1 meaning unchanged:

* brightness: every RGB value times r (clipped to the valid range), so an unclipped frame's mean
  luma is multiplied by r;
* hue: ``h_new = (h + 360 (r - 1)) mod 360`` degrees, saturation and value kept (RGB <-> HSV
  conversions written in numpy);
* tempo: the music played r times faster without changing its pitch (``librosa.effects.
  time_stretch``, a phase vocoder), anchored at the centre of the evaluated window (the sound
  there stays there), then cropped, or looped, symmetrically around that anchor back to its
  original length so the clip layout of the track stays the same. (Anchored at the start, the
  evaluated window of the music would come from another part of the song than the video's at
  r != 1, and the curve would measure misalignment as well as tempo.)

Frames are uint8 or float arrays ``[..., 3]`` (float in [0, 1]); audio is a mono float array.

:func:`manipulation_curve` re-extracts the query modality of every item of a store split from its
media with the attribute changed by each rate (frames for brightness and hue: video-to-music
queries; audio for tempo: music-to-video queries), embeds it with a run, and ranks the stored,
unchanged candidates of the other modality at track level; r = 1 gives the plain score.
"""

from __future__ import annotations

import numpy as np

from mvpt.errors import UsageError

ATTRIBUTES = ("brightness", "hue", "tempo")


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not np.isfinite(rate) or rate <= 0:
        raise UsageError(f"change rate must be a positive number, got {rate}")
    return rate


def _as_unit_float(frames) -> tuple[np.ndarray, bool]:
    """(float64 frames in [0, 1], whether the input was uint8)."""
    frames = np.asarray(frames)
    if frames.shape[-1:] != (3,):
        raise UsageError(f"frames must end in 3 RGB channels, got shape {frames.shape}")
    if frames.dtype == np.uint8:
        return frames.astype(np.float64) / 255.0, True
    return frames.astype(np.float64), False


def _restore(frames: np.ndarray, was_uint8: bool) -> np.ndarray:
    frames = np.clip(frames, 0.0, 1.0)
    return np.round(frames * 255.0).astype(np.uint8) if was_uint8 else frames


# ---------------------------------------------------------------------------- colour
def rgb_to_hsv(rgb) -> np.ndarray:
    """float RGB in [0, 1] ``[..., 3]`` -> HSV with hue in degrees [0, 360), s and v in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    spread = value - rgb.min(axis=-1)
    safe = np.where(spread > 0, spread, 1.0)
    hue = np.where(value == r, ((g - b) / safe) % 6.0,
                   np.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = np.where(spread > 0, 60.0 * hue, 0.0) % 360.0
    saturation = np.where(value > 0, spread / np.where(value > 0, value, 1.0), 0.0)
    return np.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv` (hue in degrees, any real value taken mod 360)."""
    hsv = np.asarray(hsv, dtype=np.float64)
    h = (hsv[..., 0] % 360.0) / 60.0
    s, v = hsv[..., 1], hsv[..., 2]
    chroma = v * s
    x = chroma * (1.0 - np.abs(h % 2.0 - 1.0))
    zero = np.zeros_like(h)
    sector = np.minimum(np.floor(h).astype(np.int64), 5)
    choices = [np.stack(c, axis=-1) for c in ((chroma, x, zero), (x, chroma, zero),
                                              (zero, chroma, x), (zero, x, chroma),
                                              (x, zero, chroma), (chroma, zero, x))]
    rgb = np.choose(sector[..., None], choices)
    return rgb + (v - chroma)[..., None]


def shift_hue(frames, *, rate: float) -> np.ndarray:
    """Frames with every hue moved to ``(h + 360 (rate - 1)) mod 360``; same dtype as given."""
    rate = _check_rate(rate)
    unit, was_uint8 = _as_unit_float(frames)
    hsv = rgb_to_hsv(unit)
    hsv[..., 0] = (hsv[..., 0] + 360.0 * (rate - 1.0)) % 360.0
    return _restore(hsv_to_rgb(hsv), was_uint8)


def scale_brightness(frames, *, rate: float) -> np.ndarray:
    """Frames with every RGB value times ``rate``, clipped; same dtype as given."""
    rate = _check_rate(rate)
    unit, was_uint8 = _as_unit_float(frames)
    return _restore(unit * rate, was_uint8)


# ---------------------------------------------------------------------------- tempo
def change_tempo(audio, *, rate: float, anchor_sample: int | None = None) -> np.ndarray:
    """Mono ``audio`` played ``rate`` times faster at the same pitch, anchored at sample
    ``anchor_sample`` (default: the middle): what sounded there still does, and the stretched
    music is cropped (rate < 1) or looped (rate > 1) around it back to the original number of
    samples."""
    rate = _check_rate(rate)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise UsageError(f"audio must be a non-empty mono array, got shape {audio.shape}")
    anchor = audio.size // 2 if anchor_sample is None else int(anchor_sample)
    if not 0 <= anchor < audio.size:
        raise UsageError(f"anchor sample {anchor} is outside the audio ({audio.size} samples)")
    if rate == 1.0:
        return audio.copy()
    import librosa

    stretched = librosa.effects.time_stretch(audio, rate=rate)
    moved_anchor = round(anchor * stretched.size / audio.size)
    return fit_length(stretched, length=audio.size, start=moved_anchor - anchor)


def fit_length(signal: np.ndarray, *, length: int, start: int = 0) -> np.ndarray:
    """``length`` samples of ``signal`` from sample ``start`` on, the signal repeated (before and
    after itself) where they fall outside it: ``out[i] = signal[(start + i) mod len(signal)]``."""
    if signal.size == 0:
        raise UsageError("cannot loop an empty signal")
    return np.take(signal, (start + np.arange(length)) % signal.size)


def manipulate(attribute: str, media, *, rate: float,
               anchor_sample: int | None = None) -> np.ndarray:
    """Apply one of :data:`ATTRIBUTES` (frames for brightness and hue, audio for tempo); rate 1
    returns an unchanged copy. ``anchor_sample``: for tempo, the sample kept in place (see
    :func:`change_tempo`)."""
    transforms = {"brightness": scale_brightness, "hue": shift_hue, "tempo": change_tempo}
    if attribute not in transforms:
        raise UsageError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    if _check_rate(rate) == 1.0:
        return np.array(media, copy=True)
    if attribute == "tempo":
        return change_tempo(media, rate=rate, anchor_sample=anchor_sample)
    return transforms[attribute](media, rate=rate)


# ---------------------------------------------------------------------------- curves
DEFAULT_RATES = (0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.375, 1.5)
QUERY = {"brightness": ("video", "video_to_music"), "hue": ("video", "video_to_music"),
         "tempo": ("audio", "music_to_video")}


def manipulation_curve(run_dir, store_path, *, attribute: str, rates=DEFAULT_RATES,
                       split: str | None = "test", which: str = "best", extractor=None,
                       embed_fn=None, media_root=None, max_items: int | None = None,
                       ks=(1, 5, 10)) -> dict:
    """Track-level retrieval metrics of the manipulated direction for every rate, plus
    ``reference``: the same metrics from the stored, unchanged features. ``extractor`` (an
    :class:`mvpt.extract.Extractor` for the query modality) defaults to one with the store's
    encoder; ``media_root`` replaces the folder of each item's recorded media path."""
    from mvpt.eval import gather_windows, retrieval_metrics, track_windows
    from mvpt.run import embedder_for
    from mvpt.store import FeatureStore

    if attribute not in QUERY:
        raise UsageError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    modality, direction = QUERY[attribute]
    store = FeatureStore.open(store_path)
    embed, max_clips = embedder_for(run_dir, store, which=which, embed_fn=embed_fn)
    features = store.load(split=split, arrays=("video", "audio"))
    if max_items:
        features = store.load(split=split, arrays=("video", "audio"),
                              ids=features.ids[:max_items])
    if len(features) < 2:
        raise UsageError(f"{store_path}: need at least 2 items in split {split!r} for retrieval")
    windows = track_windows(features.n_clips, max_clips=max_clips)
    other = "audio" if modality == "video" else "video"
    stored = {m: embed(m, gather_windows(features, m, windows)) for m in (modality, other)}
    extractor = extractor or _store_extractor(store, modality)
    per_rate = _reextract_all(features, extractor, attribute=attribute, rates=list(rates),
                              modality=modality, media_root=media_root, windows=windows)

    def score(query_emb) -> dict:
        pair = (query_emb, stored[other]) if modality == "video" else (stored[other], query_emb)
        metrics = retrieval_metrics(*pair, ks=ks)
        out = {key.removeprefix(direction + "_"): value for key, value in metrics.items()
               if key.startswith(direction)}
        # the mean similarity of each query with its own partner: smooth where recalls of a
        # small pool move in steps
        true = np.sum(np.asarray(query_emb, np.float64) * np.asarray(stored[other], np.float64),
                      axis=1)
        out["pair_similarity"] = float(true.mean())
        return out

    curve = []
    for rate, sequences in zip(rates, per_rate):
        queries = [sequences[i][first:first + count] for i, first, count in zip(*windows)]
        curve.append({"rate": float(rate), **score(embed(modality, queries))})
    return {"attribute": attribute, "modality": modality, "direction": direction,
            "run": None if run_dir is None else str(run_dir), "store": str(store_path),
            "split": split, "n_items": len(features), "max_clips": max_clips,
            "reference": score(stored[modality]), "curve": curve}


def _store_extractor(store, modality: str):
    from mvpt.clips import ClipConfig
    from mvpt.extract import Extractor

    m = store.manifest
    clip = ClipConfig(clip_s=float(m.get("clip_s", 1.0)), max_clips=int(m.get("max_clips", 30)),
                      frames_per_clip=int(m.get("frames_per_clip", 1)))
    name = m.get("encoders", {}).get(modality, {}).get("name")
    return Extractor(**{f"{modality}_encoder": name}, clip=clip, modalities=(modality,))


def window_centre_sample(bounds_s: np.ndarray, first: int, count: int, *, rate_hz: int) -> int:
    """The sample of an item's decoded audio (which starts at its first clip) at the centre of
    its evaluated window of ``count`` clips from clip ``first``."""
    centre_s = (bounds_s[first, 0] + bounds_s[first + count - 1, 1]) / 2 - bounds_s[0, 0]
    return int(round(centre_s * rate_hz))


def _reextract_all(features, extractor, *, attribute: str, rates: list, modality: str,
                   media_root, windows) -> list[list[np.ndarray]]:
    """Per rate, the clip features of every item re-extracted with the attribute changed by that
    rate (each item decoded once, one item in memory at a time), rounded to float16 like the
    store's. A tempo change is anchored at the centre of the item's evaluated window (``windows``:
    item index, first clip, clips, as :func:`mvpt.eval.track_windows`)."""
    from dataclasses import replace
    from pathlib import Path

    from mvpt.errors import MediaError
    from mvpt.extract import Item, decode_item

    field = "frames" if modality == "video" else "wave"
    spans = {int(i): (int(first), int(count)) for i, first, count in zip(*windows)}
    out = [[] for _ in rates]
    for k, (row, n_clips) in enumerate(zip(features.rows.itertuples(), features.n_clips)):
        path = Path(media_root) / Path(row.source_path).name if media_root else row.source_path
        end = None if not np.isfinite(row.end_s) else float(row.end_s)
        dec = decode_item(Item(row.id, str(path), "query", float(row.start_s), end),
                          extractor.decode_spec())
        if dec.error:
            raise MediaError(path, dec.error.removeprefix(f"{path}: "))
        anchor = None
        if field == "wave" and k in spans:
            anchor = min(len(dec.wave) - 1, window_centre_sample(
                dec.bounds_s, *spans[k], rate_hz=extractor.decode_spec().audio_rate_hz))
        for sequences, rate in zip(out, rates):
            changed = replace(dec, **{field: manipulate(attribute, getattr(dec, field), rate=rate,
                                                        anchor_sample=anchor)})
            result = extractor.encode(changed)
            if result.status != "done":
                raise MediaError(path, result.error or "re-extraction failed")
            seq = np.asarray(result.arrays[modality], dtype=np.float16).astype(np.float32)
            if len(seq) != n_clips:
                raise MediaError(path, f"re-extracted {len(seq)} clips, the store has {n_clips}; "
                                 "was it extracted with other settings?")
            sequences.append(seq)
    return out


def curve_markdown(result: dict, *, ks=(1, 5, 10)) -> str:
    """A markdown table of :func:`manipulation_curve`: one row per rate, then the reference."""
    head = ["r"] + [f"R@{k}" for k in ks] + ["median rank", "pair similarity"]
    title = (f"{result['attribute']} changed by r, {result['direction'].replace('_', ' ')} "
             f"retrieval at track level ({result['n_items']} items, split {result['split']})")
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    rows = [(f"{p['rate']:g}", p) for p in result["curve"]] + [("stored", result["reference"])]
    for name, p in rows:
        cells = ([name] + [f"{100 * p[f'R@{k}']:.2f}" for k in ks]
                 + [f"{p['median_rank']:g}", f"{p['pair_similarity']:.4f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_curve_report(result: dict, out_dir, *, ks=(1, 5, 10)) -> dict:
    """``manipulate_ATTRIBUTE.json/.md/.png`` (recall against r) in ``out_dir``."""
    from mvpt.analysis import new_figure, write_report

    fig, ax = new_figure()
    rates = [p["rate"] for p in result["curve"]]
    for k in ks:
        ax.plot(rates, [100 * p[f"R@{k}"] for p in result["curve"]], marker="o", label=f"R@{k}")
    ax.axvline(1.0, color="gray", linestyle=":")
    ax.set_xlabel(f"{result['attribute']} change rate r")
    ax.set_ylabel(f"{result['direction'].replace('_', ' ')} recall (%)")
    ax.legend(loc="lower left")
    if all("pair_similarity" in p for p in result["curve"]):
        twin = ax.twinx()
        twin.plot(rates, [p["pair_similarity"] for p in result["curve"]], color="black",
                  linestyle="--", marker=".", label="true pair similarity")
        twin.set_ylabel("mean similarity of the true pair")
        twin.legend(loc="lower right")
    return write_report(out_dir, name=f"manipulate_{result['attribute']}", data=result,
                        markdown=curve_markdown(result, ks=ks), figure=fig)
