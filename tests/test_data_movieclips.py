"""Music-region detector of appendix A.2: each rule at its edge, then a generated "movie"."""

import csv

import numpy as np
import pytest

from mvpt.data.movieclips import (
    SILENCE_INDEX,
    RegionParams,
    close_gaps,
    detect_regions,
    load_tagger,
    music_frames,
    regions,
)
from mvpt.errors import EncoderError

MUSIC, PIANO, SINGING, SPEECH, DOG = 132, 153, 24, 0, 74


def _probs(*rows: dict[int, float]) -> np.ndarray:
    out = np.zeros((len(rows), 521), np.float32)
    for i, row in enumerate(rows):
        for index, p in row.items():
            out[i, index] = p
    return out


def test_music_threshold_is_inclusive_at_0_3():
    mask = music_frames(_probs({MUSIC: 0.3}, {MUSIC: 0.2999}, {PIANO: 0.3}, {}))
    assert mask.tolist() == [True, False, True, False]


def test_other_class_vetoes_at_0_2_inclusive():
    mask = music_frames(_probs({MUSIC: 0.9, SPEECH: 0.2}, {MUSIC: 0.9, SPEECH: 0.1999},
                               {MUSIC: 0.9, DOG: 0.25}))
    assert mask.tolist() == [False, True, False]


def test_vocal_classes_count_as_music_by_default_and_veto_when_excluded():
    probs = _probs({MUSIC: 0.9, SINGING: 0.8}, {SINGING: 0.35})
    assert music_frames(probs).tolist() == [True, True]
    assert music_frames(probs, params=RegionParams(include_vocal=False)).tolist() == [False, False]


def test_silence_vetoes_only_when_asked():
    probs = _probs({MUSIC: 0.5, SILENCE_INDEX: 0.6})
    assert music_frames(probs).tolist() == [True]
    assert music_frames(probs, params=RegionParams(ignore_silence=False)).tolist() == [False]


def _gapped(gap_frames: int, frame_s: float = 0.1) -> np.ndarray:
    return np.concatenate([np.zeros(5, bool), np.ones(50, bool), np.zeros(gap_frames, bool),
                           np.ones(50, bool), np.zeros(5, bool)])


def test_closing_merges_a_2_9_s_gap_but_not_3_1_s():
    merged = close_gaps(_gapped(29), frame_s=0.1, closing_s=3.0)
    assert merged[5:5 + 50 + 29 + 50].all()
    assert not merged[:5].any() and not merged[-5:].any()  # edges untouched
    kept = close_gaps(_gapped(31), frame_s=0.1, closing_s=3.0)
    assert kept.tolist() == _gapped(31).tolist()


def test_minimum_length_is_inclusive_at_20_s():
    frame_s = 0.25
    mask = np.concatenate([np.ones(80, bool), np.zeros(4, bool), np.ones(79, bool)])
    assert regions(mask, frame_s=frame_s, min_len_s=20.0) == [(0.0, 20.0)]
    shifted = regions(mask, frame_s=frame_s, min_len_s=19.75, offset_s=1.0)
    assert shifted == [(1.0, 21.0), (22.0, 41.75)]


def test_detect_regions_chains_the_rules():
    frame_s = 0.5
    music = [{MUSIC: 0.9}] * 30 + [{}] * 4 + [{MUSIC: 0.9}] * 20  # 15 s, 2 s gap, 10 s
    speech = [{MUSIC: 0.9, SPEECH: 0.5}] * 10
    short = [{MUSIC: 0.9}] * 30  # 15 s: too short
    found = detect_regions(_probs(*music, *speech, *short), frame_s=frame_s)
    assert found == [(0.0, 27.0)]


def test_panns_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderError, match="PANNs"):
        load_tagger("panns", weights=tmp_path / "cnn14.pth")


# --------------------------------------------------------------------------- generated movie
RATE_HZ = 16000
# (kind, seconds): music regions 3-29 (with a 2 s silent gap) and 54-78; 35-50 is too short.
PLAN = [("silence", 3), ("rock", 12), ("silence", 2), ("jazz", 12), ("speech", 6),
        ("electronic", 15), ("speech", 4), ("hiphop", 24), ("silence", 3)]
EXPECTED = [(3.0, 29.0), (54.0, 78.0)]


def _write_movie(path):
    from mvpt.data.synth import music_clip, write_mp4
    from tests.fixtures.speech import speech_like

    parts = []
    for seed, (kind, seconds) in enumerate(PLAN):
        if kind == "silence":
            parts.append(np.zeros(seconds * RATE_HZ, np.float32))
        elif kind == "speech":
            parts.append(speech_like(seconds, RATE_HZ, seed))
        else:
            parts.append(music_clip(kind, duration_s=seconds, sample_rate_hz=RATE_HZ, seed=seed))
    wave = 0.8 * np.concatenate(parts) / max(1e-6, float(np.abs(np.concatenate(parts)).max()))
    write_mp4(path, frames=[], audio=wave.astype(np.float32), fps=12.0, sample_rate_hz=RATE_HZ)


@pytest.fixture(scope="module")
def movie_run(tmp_path_factory):
    from mvpt.cli import main

    folder = tmp_path_factory.mktemp("movie")
    movie = folder / "film.mp4"
    _write_movie(movie)
    broken = folder / "broken.mp4"
    broken.write_bytes(b"not a video")
    manifest = folder / "out" / "music.csv"
    rc = main(["data", "movieclips", str(movie), str(broken), "--out", str(manifest)])
    return rc, movie, broken, manifest


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_movie_music_regions_within_one_second(movie_run):
    rc, movie, _, manifest = movie_run
    assert rc == 0
    rows = _read(manifest)
    assert [r["id"] for r in rows] == ["film_000", "film_001"]
    assert {r["path"] for r in rows} == {str(movie.resolve())}
    found = [(float(r["start_s"]), float(r["end_s"])) for r in rows]
    for (a, b), (ea, eb) in zip(found, EXPECTED):
        assert abs(a - ea) <= 1.0 and abs(b - eb) <= 1.0, found


@pytest.mark.slow
def test_failed_file_recorded_and_rerun_skips(movie_run, capsys):
    from mvpt.cli import main

    _, movie, broken, manifest = movie_run
    failed = _read(manifest.parent / "failed.csv")
    assert [r["path"] for r in failed] == [str(broken.resolve())]
    assert failed[0]["reason"]
    before = manifest.read_text()
    assert main(["data", "movieclips", str(movie), "--out", str(manifest), "--json"]) == 0
    assert '"skipped": 1' in capsys.readouterr().out
    assert manifest.read_text() == before


@pytest.mark.slow
def test_extract_accepts_the_manifest(movie_run):
    from mvpt.extract import collect_items

    _, movie, _, manifest = movie_run
    items = collect_items([manifest])
    assert [it.id for it in items] == ["film_000", "film_001"]
    assert all(it.path == str(movie.resolve()) and it.end_s > it.start_s for it in items)


def test_tagger_chunking_does_not_change_probabilities(monkeypatch):
    from mvpt.data import taggers
    from mvpt.data.synth import music_clip

    wave = music_clip("jazz", duration_s=8.0, sample_rate_hz=RATE_HZ, seed=1)
    tagger = load_tagger("yamnet", hop_s=0.24)
    whole = tagger.frame_probabilities(wave)
    monkeypatch.setattr(taggers, "_PATCH_CHUNK", 7)
    chunked = tagger.frame_probabilities(wave)
    assert whole.probs.shape == (len(whole.probs), 521) and len(whole.probs) > 7
    np.testing.assert_allclose(chunked.probs, whole.probs, atol=1e-6)
    assert whole.frame_s == pytest.approx(0.24)
