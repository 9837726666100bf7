"""Retrieval metrics against a brute-force reference, chance, pools, and evaluate() on a tiny store."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

import mvpt
from mvpt import cli
from mvpt.errors import ModelError, StoreError, UsageError
from mvpt.eval import (
    DIRECTIONS, candidate_counts, chance_metrics, evaluate, evaluate_levels, format_table,
    pool_indices, retrieval_metrics, segment_windows, track_windows,
)
from mvpt.store import FeatureStore, ItemResult

KS = (1, 5, 10)


# ---------------------------------------------------------------------------- reference
def brute_force(video, music, *, lengths=None, ks=KS) -> dict:
    """Full float64 similarity matrix and explicit loops over queries and candidates."""
    sims = np.asarray(video, np.float64) @ np.asarray(music, np.float64).T
    out = {}
    for direction, matrix in zip(DIRECTIONS, (sims, sims.T)):
        ranks, hits = [], {k: [] for k in ks}
        for i in range(len(matrix)):
            better = tied = 0
            for j in range(len(matrix)):
                if j == i or (lengths is not None and lengths[j] != lengths[i]):
                    continue
                better += matrix[i, j] > matrix[i, i]
                tied += matrix[i, j] == matrix[i, i]
            ranks.append(1 + better + tied / 2)
            # probability of a top-k place when ties are ordered at random
            for k in ks:
                places = range(better + 1, better + tied + 2)
                hits[k].append(sum(p <= k for p in places) / (tied + 1))
        for k in ks:
            out[f"{direction}_R@{k}"] = np.mean(hits[k])
        out[f"{direction}_median_rank"] = np.median(ranks)
        out[f"{direction}_mean_rank"] = np.mean(ranks)
    return out


def assert_matches(metrics: dict, reference: dict) -> None:
    for key, value in reference.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key


def normalised(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def noisy_pairs(rng, n=120, dim=24, noise=0.3):
    video = normalised(rng.normal(size=(n, dim)))
    music = normalised(video + noise * rng.normal(size=(n, dim)))
    return video, music


def quantised_pairs(rng, n=90, dim=6):
    """Small-integer vectors: many exactly equal similarities, plus duplicated candidates."""
    video = rng.integers(-1, 2, size=(n, dim)).astype(np.float32)
    music = np.clip(video + rng.integers(-1, 2, size=(n, dim)), -1, 1).astype(np.float32)
    music[10:20] = music[0]  # ten copies of item 0's music
    video[30:35] = video[25]
    return video, music


# ---------------------------------------------------------------------------- metrics
def test_matches_brute_force_on_random_embeddings(rng):
    video, music = noisy_pairs(rng)
    metrics = retrieval_metrics(video, music)
    assert_matches(metrics, brute_force(video, music))
    assert 0.05 < metrics["video_to_music_R@1"] < 0.9  # neither trivial nor hopeless
    assert metrics["pool_size"] == 120 and metrics["n_pools"] == 1


def test_matches_brute_force_with_ties(rng):
    video, music = quantised_pairs(rng)
    reference = brute_force(video, music)
    metrics = retrieval_metrics(video, music)
    assert_matches(metrics, reference)
    # ties with the correct item really occur, and they cost: chance-like shares, not hits
    sims = video.astype(np.float64) @ music.T
    assert sum((row == row[i]).sum() > 1 for i, row in enumerate(sims)) > 20
    assert metrics["video_to_music_R@1"] < np.mean([row.argmax() == i for i, row in enumerate(sims)])


@pytest.mark.parametrize("block_size", [1, 7, 32, 89, 90, 1000])
def test_blocked_equals_unblocked(rng, block_size):
    for video, music in (noisy_pairs(rng, n=90), quantised_pairs(rng)):
        assert retrieval_metrics(video, music, block_size=block_size) == \
            retrieval_metrics(video, music, block_size=10_000)


def test_constant_embeddings_score_chance_exactly():
    n = 40
    video = np.ones((n, 8), np.float32) / np.sqrt(8)
    metrics = retrieval_metrics(video, video.copy())
    for d in DIRECTIONS:
        assert metrics[f"{d}_R@1"] == pytest.approx(1 / n)
        assert metrics[f"{d}_R@5"] == pytest.approx(5 / n)
        assert metrics[f"{d}_R@10"] == pytest.approx(10 / n)
        assert metrics[f"{d}_median_rank"] == (n + 1) / 2
    assert metrics == pytest.approx(chance_metrics(n))


def test_perfect_embeddings_rank_first(rng):
    video = normalised(rng.normal(size=(200, 16)))
    metrics = retrieval_metrics(video, video, block_size=64)
    for d in DIRECTIONS:
        assert metrics[f"{d}_R@1"] == 1.0
        assert metrics[f"{d}_median_rank"] == 1.0 and metrics[f"{d}_mean_rank"] == 1.0
    assert metrics["mean_R@10"] == 1.0


def test_directions_differ_when_embeddings_are_asymmetric(rng):
    video = normalised(rng.normal(size=(50, 8)))
    music = video.copy()
    music[1:] = music[0]  # every music item alike: music->video still works, video->music ties
    metrics = retrieval_metrics(video, music)
    assert metrics["music_to_video_R@1"] == pytest.approx(1 / 50)  # every music query is item 0's
    assert metrics["video_to_music_R@1"] < 1.0
    assert_matches(metrics, brute_force(video, music))


def test_same_length_ignores_candidates_of_other_lengths(rng):
    video, music = noisy_pairs(rng, n=100, noise=0.4)
    lengths = rng.integers(3, 7, size=100)
    metrics = retrieval_metrics(video, music, lengths=lengths, same_length=True, block_size=9)
    assert_matches(metrics, brute_force(video, music, lengths=lengths))
    # the same as evaluating each length on its own and weighting by its number of queries
    for key in ("video_to_music_R@5", "music_to_video_mean_rank"):
        per_length = [(lengths == n).sum() * retrieval_metrics(video[lengths == n],
                                                               music[lengths == n])[key]
                      for n in np.unique(lengths)]
        assert metrics[key] == pytest.approx(sum(per_length) / 100)
    # making other-length candidates irresistible changes nothing for a query
    lure = music.copy()
    lure[lengths != 3] = video[lengths == 3].mean(axis=0)
    a = retrieval_metrics(video[lengths == 3], music[lengths == 3])
    b = retrieval_metrics(video, lure, lengths=lengths, same_length=True)
    assert b["video_to_music_R@1"] * 100 >= a["video_to_music_R@1"] * (lengths == 3).sum()
    assert retrieval_metrics(video, lure)["video_to_music_R@1"] < b["video_to_music_R@1"]


def test_same_length_chance_is_per_query():
    lengths = np.array([3] * 4 + [5] * 20)
    counts = candidate_counts(24, lengths=lengths, same_length=True)
    assert counts[0].tolist() == [4] * 4 + [20] * 20
    chance = chance_metrics(counts)
    assert chance["video_to_music_R@1"] == pytest.approx((4 * 1 / 4 + 20 * 1 / 20) / 24)
    assert chance["video_to_music_R@5"] == pytest.approx((4 * 1.0 + 20 * 5 / 20) / 24)
    assert chance["video_to_music_median_rank"] == 10.5  # (20 + 1) / 2 for most queries
    assert chance["mean_candidates"] == pytest.approx((16 + 400) / 24)
    constant = retrieval_metrics(np.ones((24, 2)), np.ones((24, 2)), lengths=lengths,
                                 same_length=True)
    assert constant == pytest.approx(chance)


def test_pools_are_seeded_disjoint_and_averaged(rng):
    video, music = noisy_pairs(rng, n=250, noise=0.3)
    pools = pool_indices(250, pool=100, seed=3)
    assert len(pools) == 2 and len(np.intersect1d(pools[0], pools[1])) == 0
    first = retrieval_metrics(video, music, pool=100, seed=3)
    assert first == retrieval_metrics(video, music, pool=100, seed=3)
    assert first != retrieval_metrics(video, music, pool=100, seed=4)
    by_hand = [retrieval_metrics(video[p], music[p]) for p in pools]
    assert first["video_to_music_R@1"] == pytest.approx(
        np.mean([m["video_to_music_R@1"] for m in by_hand]))
    assert (first["pool_size"], first["n_pools"], first["n_queries"]) == (100, 2, 200)
    # a smaller pool is easier than the whole set
    assert first["mean_R@10"] > retrieval_metrics(video, music)["mean_R@10"]
    assert chance_metrics(candidate_counts(250, pool=100, seed=3))["video_to_music_R@1"] == pytest.approx(0.01)


def test_identical_embeddings_in_pools_give_perfect_recall(rng):
    video = normalised(rng.normal(size=(64, 8)))
    metrics = retrieval_metrics(video, video, pool=16, seed=1)
    assert metrics["video_to_music_R@1"] == 1.0 and metrics["n_pools"] == 4


def test_pool_larger_than_set_uses_everything(rng):
    video, music = noisy_pairs(rng, n=30)
    assert retrieval_metrics(video, music, pool=500) == retrieval_metrics(video, music)


def test_bad_inputs_raise_clear_errors(rng):
    video, music = noisy_pairs(rng, n=10)
    with pytest.raises(UsageError, match="one shape"):
        retrieval_metrics(video, music[:5])
    with pytest.raises(UsageError, match="NaN"):
        retrieval_metrics(np.full_like(video, np.nan), music)
    with pytest.raises(UsageError, match="needs lengths"):
        retrieval_metrics(video, music, same_length=True)
    with pytest.raises(UsageError, match="pool must be"):
        retrieval_metrics(video, music, pool=0)


def test_format_table_prints_percent_and_chance(rng):
    video, music = noisy_pairs(rng, n=50)
    table = format_table([("MVPt", retrieval_metrics(video, music)),
                          ("MLP", retrieval_metrics(music, video))], chance_metrics(50))
    lines = table.splitlines()
    assert len(lines) == 5 and lines[2].startswith("| MVPt |") and lines[4].startswith("| chance |")
    assert "| 25.5 | 25.5 | 2.00 | 10.00 | 20.00 | 2.00 | 10.00 | 20.00 | 20.00 | 50 |" in lines[4]


# ---------------------------------------------------------------------------- windows
def test_track_and_segment_windows():
    items, firsts, counts = track_windows(np.array([40, 12, 0]), max_clips=30)
    assert items.tolist() == [0, 1] and firsts.tolist() == [5, 0] and counts.tolist() == [30, 12]
    items, firsts, counts = segment_windows(np.array([25, 8, 30]), segment_clips=10)
    assert items.tolist() == [0, 0, 2, 2, 2]
    assert firsts.tolist() == [0, 10, 0, 10, 20] and set(counts.tolist()) == {10}


# ---------------------------------------------------------------------------- evaluate
DIM = 6


def make_store(path, track_clips, *, rng, split="test", constant_in_time=False):
    """A store whose audio features equal the video features plus a little noise."""
    store = FeatureStore.create(path, {
        "encoders": {"video": {"name": "fake-v", "version": "1", "dim": DIM},
                     "audio": {"name": "fake-a", "version": "1", "dim": DIM}},
        "clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30,
    })
    results = []
    for i, n in enumerate(track_clips):
        video = rng.normal(size=(1 if constant_in_time else n, DIM)).repeat(
            n if constant_in_time else 1, axis=0)
        audio = video + 0.01 * rng.normal(size=video.shape)
        results.append(ItemResult(id=f"t{i}", source_path=f"t{i}.mp4", split=split,
                                  status="done", duration_s=float(n),
                                  arrays={"video": video, "audio": audio}))
    store.write_shard(results)
    return store


class MeanEmbed:
    """Stand-in model: the normalised mean of a sequence's clip features; records lengths."""

    def __init__(self):
        self.lengths = {"video": [], "audio": []}

    def __call__(self, modality, sequences):
        self.lengths[modality].extend(len(s) for s in sequences)
        return normalised(np.stack([s.mean(axis=0) for s in sequences]))


def test_evaluate_track_level(tmp_path, rng):
    make_store(tmp_path / "store", [45, 25, 31, 12, 40, 20], rng=rng)
    embed = MeanEmbed()
    result = evaluate(None, tmp_path / "store", level="track", embed_fn=embed)
    assert embed.lengths["video"] == [30, 25, 30, 12, 30, 20] == embed.lengths["audio"]
    assert result["level"] == "track" and result["max_clips"] == 30
    assert result["n_items"] == result["pool_size"] == 6
    assert result["metrics"]["video_to_music_R@1"] == 1.0
    assert result["chance"]["video_to_music_R@1"] == pytest.approx(1 / 6)
    assert evaluate(None, tmp_path / "store", embed_fn=MeanEmbed(), max_clips=10)["max_clips"] == 10


def test_evaluate_segment_level_counts_segments(tmp_path, rng):
    make_store(tmp_path / "store", [25, 8, 30, 10], rng=rng)
    embed = MeanEmbed()
    result = evaluate(None, tmp_path / "store", level="segment", segment_s=10, embed_fn=embed)
    assert result["n_items"] == 2 + 0 + 3 + 1
    assert result["n_tracks_dropped"] == 1 and result["n_tracks_used"] == 3
    assert result["segment_clips"] == 10 and set(embed.lengths["video"]) == {10}
    assert result["metrics"]["music_to_video_R@1"] == 1.0
    assert result["chance"]["pool_size"] == 6


def test_segments_of_the_same_track_are_hard_negatives(tmp_path, rng):
    # features constant in time: a track's segments are indistinguishable from each other
    make_store(tmp_path / "store", [20, 20, 30], rng=rng, constant_in_time=True)
    result = evaluate(None, tmp_path / "store", level="segment", embed_fn=MeanEmbed())
    metrics = result["metrics"]
    # 7 segments: ranks 1.5 (x4, two-segment tracks) and 2 (x3, three-segment track)
    assert metrics["video_to_music_mean_rank"] == pytest.approx((4 * 1.5 + 3 * 2) / 7, abs=1e-6)
    assert metrics["video_to_music_R@1"] == pytest.approx((4 / 2 + 3 / 3) / 7)


def test_evaluate_same_length_and_pools(tmp_path, rng):
    make_store(tmp_path / "store", [12, 12, 12, 20, 20, 25, 25, 25, 25], rng=rng)
    result = evaluate(None, tmp_path / "store", same_length=True, embed_fn=MeanEmbed())
    assert result["chance"]["mean_candidates"] == pytest.approx((9 + 4 + 16) / 9)
    pooled = evaluate(None, tmp_path / "store", pool=4, seed=1, embed_fn=MeanEmbed())
    assert (pooled["pool_size"], pooled["metrics"]["n_pools"]) == (4, 2)
    assert pooled["chance"]["video_to_music_R@1"] == pytest.approx(0.25)


def test_evaluate_refuses_empty_split_and_long_segments(tmp_path, rng):
    make_store(tmp_path / "store", [25, 12], rng=rng)
    with pytest.raises(StoreError, match="no extracted items in split 'val'"):
        evaluate(None, tmp_path / "store", split="val", embed_fn=MeanEmbed())
    with pytest.raises(UsageError, match="more than the model's window"):
        evaluate(None, tmp_path / "store", level="segment", segment_s=40, embed_fn=MeanEmbed())
    with pytest.raises(StoreError, match="lasts one segment of 30 clips"):
        evaluate(None, tmp_path / "store", level="segment", segment_s=30, embed_fn=MeanEmbed())


# ---------------------------------------------------------------------------- run loading + CLI
@pytest.fixture
def fake_embed_module(monkeypatch):
    """A stand-in for mvpt.embed whose model is the mean of clip features."""
    module = types.ModuleType("mvpt.embed")
    module.loaded = None

    def load_model(run_dir, *, which="best"):
        manifest = json.loads((run_dir / "manifest.json").read_text())
        module.loaded = types.SimpleNamespace(manifest=manifest, config={},
                                              run_config={"max_clips": 20}, which=which)
        return module.loaded

    def embed_sequences(loaded, modality, sequences, batch_size=256):
        return MeanEmbed()(modality, sequences)

    module.load_model, module.embed_sequences = load_model, embed_sequences
    monkeypatch.setitem(sys.modules, "mvpt.embed", module)
    monkeypatch.setattr(mvpt, "embed", module, raising=False)
    return module


def make_run(path, store):
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps(store.manifest))


def test_evaluate_loads_the_run_and_refuses_other_encoders(tmp_path, rng, fake_embed_module):
    store = make_store(tmp_path / "store", [45, 25, 31], rng=rng)
    make_run(tmp_path / "run", store)
    result = evaluate(tmp_path / "run", tmp_path / "store", which="last")
    assert fake_embed_module.loaded.which == "last"
    assert result["max_clips"] == 20 and result["metrics"]["mean_R@10"] == 1.0
    other = dict(store.manifest, encoders=dict(store.manifest["encoders"],
                                               audio={"name": "other", "version": "1", "dim": DIM}))
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(other))
    with pytest.raises(ModelError, match="audio encoder"):
        evaluate(tmp_path / "run", tmp_path / "store")


def test_evaluate_calls_check_store_when_the_loader_has_it(tmp_path, rng, fake_embed_module):
    store = make_store(tmp_path / "store", [25, 25], rng=rng)
    make_run(tmp_path / "run", store)

    def refuse(loaded, store):
        raise ModelError(f"{store.path}: refused")

    fake_embed_module.check_store = refuse
    with pytest.raises(ModelError, match="refused"):
        evaluate(tmp_path / "run", tmp_path / "store")


def test_cli_prints_tables_and_json(tmp_path, rng, fake_embed_module, capsys):
    store = make_store(tmp_path / "store", [25, 25, 31, 8], rng=rng)
    make_run(tmp_path / "run", store)
    assert cli.main(["eval", str(tmp_path / "run"), str(tmp_path / "store"),
                     "--json", str(tmp_path / "out.json")]) == 0
    text = capsys.readouterr().out
    assert "track level" in text and "segment level" in text and "1 tracks shorter" in text
    assert text.count("| chance |") == 2 and "one pool of 4" in text and "one pool of 7" in text
    saved = json.loads((tmp_path / "out.json").read_text())
    assert [r["level"] for r in saved["results"]] == ["track", "segment"]
    assert saved["results"][1]["metrics"]["video_to_music_R@1"] == 1.0

    assert cli.main(["eval", str(tmp_path / "run"), str(tmp_path / "store"), "--level", "track",
                     "--same-length", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["same_length"] is True and len(out["results"]) == 1


def test_cli_reports_missing_store_in_one_line(tmp_path, capsys, fake_embed_module):
    assert cli.main(["eval", str(tmp_path / "run"), str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "not a feature store" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_evaluate_a_real_linear_run(tmp_path):
    train_module = pytest.importorskip("mvpt.train")
    from tests.fixtures.stores import make_synthetic_store

    make_synthetic_store(tmp_path / "store", n_train=64, n_val=8, n_test=32, seed=1)
    train_module.train(tmp_path / "store", tmp_path / "run", model="linear", progress=False)
    track, segment = evaluate_levels(tmp_path / "run", tmp_path / "store")
    assert track["max_clips"] == 30 and track["n_items"] == 32
    assert segment["n_items"] > 32 and segment["n_tracks_dropped"] == 0  # tracks of 12-40 clips
    for result in (track, segment):
        assert result["metrics"]["mean_R@10"] > 2 * result["chance"]["mean_R@10"]
    make_synthetic_store(tmp_path / "other", n_train=4, n_test=4, audio_dim=16)
    with pytest.raises(ModelError, match="do not fit"):
        evaluate(tmp_path / "run", tmp_path / "other")
