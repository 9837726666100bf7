"""Qualitative comparison (appendix C.4): descriptors on known signals, picks, previews, report."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from mvpt.analysis.qualitative import (
    audio_tags,
    choose_queries,
    rms_dbfs,
    same_genre_pick,
    tempo_bpm,
)
from mvpt.errors import UsageError

SR = 22050


def click_track(bpm: float, seconds: float = 20.0, *, sr: int = SR) -> np.ndarray:
    """Short decaying 1 kHz clicks every 60 / bpm seconds."""
    out = np.zeros(int(seconds * sr), np.float32)
    n = int(0.01 * sr)
    click = np.sin(2 * np.pi * 1000 * np.arange(n) / sr) * np.exp(-np.arange(n) / (0.002 * sr))
    for start_s in np.arange(0.0, seconds - 0.02, 60.0 / bpm):
        i = round(float(start_s) * sr)
        out[i:i + n] += click.astype(np.float32)
    return out


@pytest.mark.slow  # the first beat tracking compiles librosa's numba code
@pytest.mark.parametrize("bpm", [90.0, 128.0, 150.0])
def test_tempo_of_click_tracks_within_3_percent(bpm):
    measured = tempo_bpm(click_track(bpm), SR)
    assert measured == pytest.approx(bpm, rel=0.03)


def test_tempo_of_silence_is_none():
    assert tempo_bpm(np.zeros(SR * 5, np.float32), SR) is None


def test_rms_dbfs_of_known_signals():
    t = np.arange(SR) / SR
    assert rms_dbfs(np.sign(np.sin(2 * np.pi * 100 * t + 0.1))) == pytest.approx(0.0, abs=1e-6)
    assert rms_dbfs(0.5 * np.sin(2 * np.pi * 100 * t)) == pytest.approx(-9.03, abs=0.01)
    assert rms_dbfs(np.zeros(10)) == pytest.approx(-120.0)


def test_audio_tags_pick_instruments_and_vocals():
    probs = np.zeros((20, 521), np.float32)
    probs[:, 135] = 0.6   # Guitar
    probs[:, 157] = 0.3   # Drum kit
    probs[:, 133] = 0.9   # "Musical instrument" itself: left out
    probs[:, 137] = 0.1   # Bass guitar
    probs[:, 0] = 0.9     # Speech: not an instrument, not singing
    tags = audio_tags(probs)
    assert [t["name"] for t in tags["instruments"]] == ["Guitar", "Drum kit", "Bass guitar"]
    assert tags["instruments"][0]["probability"] == pytest.approx(0.6)
    assert not tags["vocals"] and tags["vocal_share"] == 0.0
    probs[:5, 24] = 0.5   # Singing in a quarter of the frames
    sung = audio_tags(probs)
    assert sung["vocals"] and sung["vocal_share"] == pytest.approx(0.25)
    probs[:1, 24] = 0.0
    probs[1:5, 24] = 0.0
    probs[:1, 249] = 0.5  # "Vocal music" in one frame of 20: below the share
    assert not audio_tags(probs)["vocals"]


def test_same_genre_pick_and_query_choice():
    labels = ["rock", "jazz", "rock", None, "rock", "pop"]
    for key in ("a", "b", "c", "d"):
        pick = same_genre_pick(labels, 0, seed=1, key=key)
        assert labels[pick] == "rock" and pick != 0
        assert same_genre_pick(labels, 0, seed=1, key=key) == pick  # seeded
    assert {same_genre_pick(labels, 0, seed=s, key="q") for s in range(20)} == {2, 4}
    assert same_genre_pick(labels, 5, seed=0, key="q") == 5  # alone in its genre
    assert same_genre_pick(labels, 3, seed=0, key="q") is None
    ids = ["a", "b", "c", "d", "e"]
    assert choose_queries(ids, queries=["c", "a", "c"]) == [2, 0]
    drawn = choose_queries(ids, random_n=3, seed=4)
    assert len(set(drawn)) == 3 and drawn == choose_queries(ids, random_n=3, seed=4)
    with pytest.raises(UsageError, match="zz"):
        choose_queries(ids, queries=["a", "zz"])


def media_durations(path: Path) -> tuple[float, float]:
    """(video seconds, audio seconds) decoded from a file."""
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate)
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        astream = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(audio=0))
        rate = astream.rate
    return frames / fps, samples / rate


@pytest.mark.slow
def test_qualitative_on_the_demo_run(demo, tmp_path):
    from mvpt.cli import main
    from mvpt.run import Run
    from mvpt.store import FeatureStore

    store = FeatureStore.open(demo["store"])
    test_ids = store.rows(split="test")["id"].astype(str).tolist()
    assert len(test_ids) >= 3
    genres = {i: "pop" for i in store.rows()["id"].astype(str)}
    genres.update({i: ("rock", "jazz")[k % 2] for k, i in enumerate(test_ids)})
    genres_csv = tmp_path / "genres.csv"
    genres_csv.write_text("id,genre\n" + "".join(f"{i},{g}\n" for i, g in genres.items()))
    query = test_ids[0]
    out = tmp_path / "out"
    code = main(["analyze", "qualitative", demo["runs"]["mvpt"], demo["store"],
                 "--queries", query, "--genres", str(genres_csv), "--out", str(out)])
    assert code == 0
    for suffix in ("json", "md", "png"):
        assert (out / f"qualitative.{suffix}").stat().st_size > 0
    result = json.loads((out / "qualitative.json").read_text())
    assert [e["direction"] for e in result["queries"]] == ["video_to_music", "music_to_video"]

    # the model's pick is the argmax of the similarity, recomputed here from the run
    run = Run.load(demo["runs"]["mvpt"])
    feats = store.load(split="test", arrays=("video", "audio"))
    ids = [str(i) for i in feats.ids]
    video, music = (run.embed(m, [feats.item(i, m) for i in range(len(ids))])
                    for m in ("video", "audio"))
    sims = video @ music.T
    q = ids.index(query)
    for entry in result["queries"]:
        assert entry["query"]["id"] == query and entry["query"]["genre"] == genres[query]
        scores = sims[q] if entry["direction"] == "video_to_music" else sims[:, q]
        by_role = {c["role"]: c for c in entry["candidates"]}
        assert list(by_role) == ["ground truth", "same genre", "model"]
        assert by_role["ground truth"]["id"] == query
        assert by_role["model"]["id"] == ids[int(np.argmax(scores))]
        assert by_role["model"]["score"] == pytest.approx(float(scores.max()), abs=1e-5)
        pick = by_role["same genre"]
        assert pick["genre"] == genres[query] and genres[pick["id"]] == genres[query]
        assert pick["id"] != query  # other test tracks share the genre
        assert pick["score"] == pytest.approx(float(scores[ids.index(pick["id"])]), abs=1e-5)
        for c in entry["candidates"]:
            assert c["tempo_bpm"] is None or 30 < c["tempo_bpm"] < 300
            assert -120 <= c["loudness_dbfs"] <= 0
            assert len(c["instruments"]) == 3 and isinstance(c["vocals"], bool)
            preview = Path(c["preview"]["path"])
            assert preview.parent == out / "qualitative_previews" and preview.is_file()
            video_s, audio_s = media_durations(preview)
            assert video_s > 1 and abs(video_s - audio_s) < 0.1

    markdown = (out / "qualitative.md").read_text()
    assert markdown.count("| ground truth |") == 2 and "loudness (dBFS RMS)" in markdown
