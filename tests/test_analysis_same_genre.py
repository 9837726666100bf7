"""Same-genre baseline: closed form against simulation, against tied one-hot retrieval, on a store."""

from __future__ import annotations

import numpy as np
import pytest

from mvpt.analysis.same_genre import (
    evaluate_same_genre,
    expected_metrics,
    genre_group_sizes,
    read_genre_labels,
    simulate_metrics,
    write_same_genre_report,
)
from mvpt.eval import DIRECTIONS, retrieval_metrics
from mvpt.store import FeatureStore, ItemResult


def test_closed_form_by_hand():
    labels = ["rock"] * 20 + ["pop"] * 4 + ["jazz"]
    assert genre_group_sizes(labels).tolist() == [20] * 20 + [4] * 4 + [1]
    m = expected_metrics(labels)
    # R@5: rock min(1, 5/20) = 0.25 for 20 queries, pop and jazz always found
    assert m["video_to_music_R@5"] == pytest.approx((20 * 0.25 + 5) / 25)
    assert m["music_to_video_R@1"] == pytest.approx((20 / 20 + 4 / 4 + 1) / 25)
    assert m["video_to_music_median_rank"] == pytest.approx(10.5)


def test_closed_form_matches_monte_carlo(rng):
    labels = rng.choice(["rock", "pop", "jazz", "metal", "folk"], p=[.4, .3, .15, .1, .05],
                        size=300)
    expected = expected_metrics(labels)
    simulated = simulate_metrics(labels, n_trials=400, seed=1)
    for d in DIRECTIONS:
        for k in (1, 5, 10):
            assert simulated[f"{d}_R@{k}"] == pytest.approx(expected[f"{d}_R@{k}"], abs=0.01)
        assert simulated[f"{d}_mean_rank"] == pytest.approx(expected[f"{d}_mean_rank"], rel=0.02)
    # informative genres beat chance over all 300 candidates
    assert expected["mean_R@10"] > 2 * 10 / 300


def test_closed_form_equals_tied_one_hot_retrieval(rng):
    """Scoring 1 for the query's genre and 0 otherwise, with ties in random order, is the baseline."""
    labels = rng.integers(0, 7, size=120)
    onehot = np.eye(7)[labels]
    tied = retrieval_metrics(onehot, onehot)
    expected = expected_metrics(labels)
    for key in ("video_to_music_R@1", "video_to_music_R@10", "music_to_video_R@5",
                "video_to_music_median_rank", "mean_R@10"):
        assert tied[key] == pytest.approx(expected[key])


def test_single_genre_is_chance():
    m = expected_metrics(["rock"] * 50)
    assert m["video_to_music_R@10"] == pytest.approx(10 / 50)


def test_store_levels_and_report(tmp_path):
    store = FeatureStore.create(tmp_path / "store", {
        "encoders": {"video": {"name": "v", "version": "1", "dim": 2},
                     "audio": {"name": "a", "version": "1", "dim": 2}},
        "clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30})
    clips = [25, 12, 9, 40, 21, 30]  # 10 s segments: 2, 1, 0, 4, 2, 3
    store.write_shard([ItemResult(id=f"t{i}", source_path=f"t{i}.mp4", split="test",
                                  status="done", arrays={"video": np.zeros((n, 2)),
                                                         "audio": np.zeros((n, 2))})
                       for i, n in enumerate(clips)])
    csv = tmp_path / "genres.csv"
    csv.write_text("id,genre\nt0,rock\nt1,rock\nt2,pop\nt3,pop\nt4,jazz\n")  # t5 unlabelled
    assert read_genre_labels(csv)["t3"] == "pop"
    track, segment = evaluate_same_genre(tmp_path / "store", genres=csv, n_trials=50)
    assert track["n_items"] == 5 and track["n_tracks_unlabelled"] == 1
    assert track["expected"]["video_to_music_R@1"] == pytest.approx((2 / 2 + 2 / 2 + 1) / 5)
    # segments: rock 2 + 1 = 3, pop 0 + 4 = 4, jazz 2
    assert segment["n_items"] == 9
    assert segment["expected"]["video_to_music_R@1"] == pytest.approx(
        (3 * (1 / 3) + 4 * (1 / 4) + 2 * (1 / 2)) / 9)
    paths = write_same_genre_report([track, segment], tmp_path / "out")
    assert set(paths) == {"json", "markdown", "png"}
    assert "same-genre (expected)" in (tmp_path / "out" / "same_genre.md").read_text()


def test_cli_same_genre(tmp_path, capsys):
    from mvpt import cli

    store = FeatureStore.create(tmp_path / "store", {
        "encoders": {"video": {"name": "v", "version": "1", "dim": 2},
                     "audio": {"name": "a", "version": "1", "dim": 2}},
        "clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30})
    store.write_shard([ItemResult(id=f"t{i}", source_path=f"t{i}.mp4", split="test",
                                  status="done", arrays={"video": np.zeros((12, 2)),
                                                         "audio": np.zeros((12, 2))})
                       for i in range(8)])
    (tmp_path / "g.csv").write_text("id,genre\n" + "".join(f"t{i},{'ab'[i % 2]}\n"
                                                           for i in range(8)))
    assert cli.main(["analyze", "same-genre", str(tmp_path / "store"), "--genres",
                     str(tmp_path / "g.csv"), "--out", str(tmp_path / "out"),
                     "--trials", "20"]) == 0
    text = capsys.readouterr().out
    assert "**track level**" in text and "**segment level**" in text
    assert (tmp_path / "out" / "same_genre.png").stat().st_size > 0
    # no labels anywhere: one clear error, exit 1
    assert cli.main(["analyze", "same-genre", str(tmp_path / "store"),
                     "--out", str(tmp_path / "out2")]) == 1
