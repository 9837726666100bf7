"""Instrument conditioning (appendix C.1): MedleyDB-layout mixes, strength 0, preference curve."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from mvpt.analysis.conditioning import (
    build_song_mixes,
    conditioning_analysis,
    instrument_names,
    matches_instrument,
    preference_curve,
    song_stems,
    write_conditioning_report,
)
from mvpt.errors import UsageError

RATE = 16000


def write_pcm16(path: Path, samples: np.ndarray) -> np.ndarray:
    """Write mono 16-bit PCM; returns the samples as they will decode (int16 / 32768)."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())
    return pcm.astype(np.float64) / 32768.0


def read_float_wav(path: Path) -> tuple[np.ndarray, int]:
    """Samples and rate of a 32-bit float WAV, parsed here (not through the code under test)."""
    data = Path(path).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    pos, rate, samples = 12, None, None
    while pos < len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = data[pos + 8:pos + 8 + size]
        if tag == b"fmt ":
            assert int.from_bytes(body[:2], "little") == 3  # IEEE float
            rate = int.from_bytes(body[4:8], "little")
        elif tag == b"data":
            samples = np.frombuffer(body, "<f4")
        pos += 8 + size + (size & 1)
    return samples, rate


def tone(freq_hz: float, seconds: float, *, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    return amp * np.sin(2 * np.pi * freq_hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) \
        + 0.01 * rng.standard_normal(t.size)


def clicks(seconds: float, *, bpm: float = 120, amp: float = 0.5) -> np.ndarray:
    out = np.zeros(int(seconds * RATE))
    n = int(0.02 * RATE)
    decay = np.exp(-np.arange(n) / (0.004 * RATE))
    burst = amp * np.random.default_rng(1).standard_normal(n) * decay
    for start in np.arange(0, seconds - 0.05, 60 / bpm):
        i = int(start * RATE)
        out[i:i + n] += burst
    return out


def write_song(root: Path, name: str, stems: list[tuple[str, np.ndarray]],
               *, broken: set[int] = frozenset(), list_label: int | None = None) -> dict:
    """A MedleyDB-layout song; returns {stem key: decoded samples}."""
    song = root / name
    lines = [(f"artist: Test\ntitle: {name}\nmix_filename: {name}_MIX.wav\n"
              f"stem_dir: {name}_STEMS\nstems:")]
    decoded = {}
    for k, (label, samples) in enumerate(stems, start=1):
        key, fname = f"S{k:02d}", f"{name}_STEM_{k:02d}.wav"
        path = song / f"{name}_STEMS" / fname
        if k in broken:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"RIFF not really a wave file")
        else:
            decoded[key] = write_pcm16(path, samples)
        inst = f"[{label}, keyboard]" if list_label == k else label
        lines.append(f"  {key}:\n    component: ''\n    filename: {fname}\n    instrument: {inst}")
    (song / f"{name}_METADATA.yaml").write_text("\n".join(lines) + "\n")
    return decoded


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    root = tmp_path_factory.mktemp("medley")
    sec = 12.0
    decoded = {
        "Alpha_Song": write_song(root, "Alpha_Song", [
            ("clean electric guitar", tone(330, sec, seed=1)), ("drum set", clicks(sec)),
            ("electric bass", tone(82, sec, seed=2)),
            ("distorted electric guitar", tone(660, sec - 1.5, amp=0.2, seed=3))]),
        "Beta_Song": write_song(root, "Beta_Song", [
            ("piano", tone(262, sec, seed=4)), ("acoustic guitar", tone(392, sec, seed=5))],
            list_label=2),
        "Gamma_NoGuitar": write_song(root, "Gamma_NoGuitar", [
            ("piano", tone(220, sec, seed=6)), ("bass drum", clicks(sec, bpm=90))]),
        "Delta_Broken": write_song(root, "Delta_Broken", [
            ("acoustic guitar", tone(300, sec, seed=7)), ("drum set", clicks(sec))],
            broken={2}),
    }
    return root, decoded


def test_instrument_names_match_medleydb_labels():
    names = instrument_names("Guitar")
    assert matches_instrument("clean electric guitar", names)
    assert matches_instrument("Acoustic Guitar", names)
    assert not matches_instrument("guitar amp", names)
    bass = instrument_names("bass, violin")
    assert matches_instrument("double bass", bass) and matches_instrument("violin", bass)
    assert not matches_instrument("bass drum", bass)
    with pytest.raises(UsageError):
        instrument_names(" , ")


def test_mixes_are_sample_exact_sums_of_the_right_stems(songs, tmp_path):
    root, decoded = songs
    names = instrument_names("guitar")
    mix = build_song_mixes(root / "Alpha_Song", names, tmp_path)
    stems = decoded["Alpha_Song"]
    n = max(len(s) for s in stems.values())
    pad = {k: np.pad(s, (0, n - len(s))) for k, s in stems.items()}
    expect_with = (pad["S01"] + pad["S02"] + pad["S03"] + pad["S04"]).astype(np.float32)
    expect_without = (pad["S02"] + pad["S03"]).astype(np.float32)
    got_with, rate = read_float_wav(Path(mix["with"]))
    got_without, _ = read_float_wav(Path(mix["without"]))
    assert rate == RATE == mix["sample_rate_hz"]
    assert got_with.shape == (n,) and got_without.shape == (n,)  # the short stem is padded
    assert np.array_equal(got_with, expect_with)
    gain = mix["without_gain"]
    assert gain > 1.0  # fewer stems, so turned up to the loudness of the full mix
    assert np.allclose(got_without, gain * expect_without, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(got_with, got_without)
    assert [s["stem"] for s in mix["instrument_stems"]] == ["S01", "S04"]
    assert [s["stem"] for s in mix["other_stems"]] == ["S02", "S03"]
    # a list of labels matches when any entry does
    beta = build_song_mixes(root / "Beta_Song", names, tmp_path)
    assert [s["stem"] for s in beta["instrument_stems"]] == ["S02"]
    assert song_stems(root / "Beta_Song")[1]["instruments"] == ["acoustic guitar", "keyboard"]
    got_beta, _ = read_float_wav(Path(beta["without"]))
    assert np.allclose(got_beta, beta["without_gain"] * decoded["Beta_Song"]["S01"],
                       rtol=1e-6, atol=1e-7)
    # building again rewrites nothing: the cache file keeps its modification time
    before = Path(mix["with"]).stat().st_mtime_ns
    assert build_song_mixes(root / "Alpha_Song", names, tmp_path)["with"] == mix["with"]
    assert Path(mix["with"]).stat().st_mtime_ns == before


def lufs(samples: np.ndarray) -> float:
    import pyloudnorm

    return float(pyloudnorm.Meter(RATE).integrated_loudness(np.asarray(samples, np.float64)))


@pytest.mark.parametrize("song", ["Alpha_Song", "Beta_Song"])
def test_with_and_without_mixes_are_loudness_matched(songs, tmp_path, song):
    """The two versions differ by the instrument, not by how loud they are (ITU-R BS.1770
    integrated loudness, measured here with pyloudnorm, within 0.5 dB)."""
    root, decoded = songs
    mix = build_song_mixes(root / song, instrument_names("guitar"), tmp_path)
    got_with, _ = read_float_wav(Path(mix["with"]))
    got_without, _ = read_float_wav(Path(mix["without"]))
    plain_without = sum(s for k, s in decoded[song].items()
                        if k in {r["stem"] for r in mix["other_stems"]})
    assert abs(lufs(plain_without) - lufs(got_with)) > 1.0  # the plain sums differ
    assert lufs(got_without) == pytest.approx(lufs(got_with), abs=0.5)
    assert mix["loudness_lufs"] == pytest.approx(lufs(got_with), abs=0.05)


def test_preference_curve_counts():
    pairs = [{"with": [0.5, 0.6], "without": [0.4, 0.6]},
             {"with": [0.1, 0.3], "without": [0.2, 0.1]}]
    curve = preference_curve(pairs, [0.0, 1.0])
    assert [p["share_with_higher"] for p in curve] == [0.5, 0.5]
    assert curve[1]["ties"] == 1 and curve[1]["without_higher"] == 0
    assert curve[0]["mean_difference"] == pytest.approx(0.0)
    assert curve[1]["mean_difference"] == pytest.approx(0.1)


def write_image(path: Path, rgb) -> Path:
    picture = np.zeros((48, 64, 3), np.uint8)
    picture[:] = rgb
    picture[12:36, 16:48] = (200, 120, 40)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@pytest.mark.slow
def test_conditioning_analysis_on_the_demo_run(demo, songs, tmp_path):
    from mvpt.cli import main
    from mvpt.recommend import recommend

    root, _ = songs
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, rgb in enumerate([(30, 30, 30), (90, 60, 20)]):
        write_image(pictures / f"guitar-{i}.png", rgb)
    videos = sorted((Path(demo["data"]).parent / "videos").glob("*.mp4"))[:2]
    assert len(videos) == 2
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"not a video")
    out = tmp_path / "out"
    strengths = [0.0, 0.5, 1.0, 4.0]
    code = main(["analyze", "conditioning", demo["runs"]["mvpt"], str(root),
                 *map(str, videos), str(broken_video), "--images", str(pictures),
                 "--instrument", "guitar", "--strengths", ",".join(map(str, strengths)),
                 "--out", str(out)])
    assert code == 0
    for suffix in ("json", "md", "png"):
        assert (out / f"conditioning.{suffix}").stat().st_size > 0
    result = json.loads((out / "conditioning.json").read_text())
    assert result["strengths"] == strengths
    assert [s["song"] for s in result["songs"]] == ["Alpha_Song", "Beta_Song"]
    skipped = {s["song"]: s["reason"] for s in result["skipped_songs"]}
    assert set(skipped) == {"Gamma_NoGuitar", "Delta_Broken"}
    assert "no stem of guitar" in skipped["Gamma_NoGuitar"]
    assert "Delta_Broken_STEM_02.wav" in skipped["Delta_Broken"]
    assert [v["video"] for v in result["failed_videos"]] == [str(broken_video)]
    assert len(result["pairs"]) == 2 * 2

    # one curve entry per strength; shares and means recomputed from the per-pair scores
    assert [p["strength"] for p in result["curve"]] == strengths
    for j, point in enumerate(result["curve"]):
        diff = np.array([p["with"][j] - p["without"][j] for p in result["pairs"]])
        assert 0.0 <= point["share_with_higher"] <= 1.0
        assert point["share_with_higher"] == pytest.approx(np.mean(diff > 0))
        assert point["mean_difference"] == pytest.approx(diff.mean())
        assert point["n_pairs"] == len(result["pairs"])
    scores_1 = np.array([[p["with"][2], p["without"][2]] for p in result["pairs"]])
    scores_0 = np.array([[p["with"][0], p["without"][0]] for p in result["pairs"]])
    assert not np.allclose(scores_1, scores_0)  # conditioning moves the scores

    # strength 0 is exactly the unconditioned recommendation's score of each version
    mix_of = {(s["song"], v): Path(s[v]).resolve() for s in result["songs"]
              for v in ("with", "without")}
    for video in map(str, videos):
        rec = recommend(result["index"], video, top=100)
        plain = {Path(h.source_path).resolve(): h.score for h in rec.hits}
        for p in (p for p in result["pairs"] if p["video"] == video):
            assert p["with"][0] == plain[mix_of[(p["song"], "with")]]
            assert p["without"][0] == plain[mix_of[(p["song"], "without")]]

    markdown = (out / "conditioning.md").read_text()
    assert "| 0.5 |" in markdown and "Delta_Broken" in markdown


def test_no_usable_song_is_one_clear_error(songs, tmp_path):
    root, _ = songs
    picture = write_image(tmp_path / "violin.png", (10, 10, 10))
    with pytest.raises(UsageError, match="no song has stems of violin"):
        conditioning_analysis("no-run", root, ["v.mp4"], images=[picture], instrument="violin",
                              out_dir=tmp_path / "out")


def test_report_without_a_model(tmp_path):
    result = {"instrument": ["guitar"], "images": ["a.png"], "videos": ["v.mp4"],
              "songs": [{"song": "S"}], "skipped_songs": [], "failed_videos": [],
              "pairs": [{"with": [0.2, 0.5], "without": [0.3, 0.1]}]}
    result["curve"] = preference_curve(result["pairs"], [0.0, 1.0])
    paths = write_conditioning_report(result, tmp_path)
    assert set(paths) == {"json", "markdown", "png"}
    text = Path(paths["markdown"]).read_text()
    assert "| 0 | 1 | 0 | 0 | 0.0 % | -0.1000 |" in text
    assert "| 1 | 1 | 1 | 0 | 100.0 % | +0.4000 |" in text
