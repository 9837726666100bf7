"""Retrieval metrics against a brute-force reference, chance, pools, and evaluate() on a tiny store."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mvpt
from mvpt import cli
from mvpt.errors import ModelError, StoreError, UsageError
from mvpt.eval import (
    DIRECTIONS, DotScores, candidate_counts, chance_metrics, count_ranks, evaluate,
    evaluate_levels, format_table, metrics_from_counts, pair_rank_counts, pool_indices,
    retrieval_metrics,
    segment_windows, track_windows,
)
from mvpt.store import FeatureStore, ItemResult
from tests.fixtures.runs import save_mean_run

KS = (1, 5, 10)


# ---------------------------------------------------------------------------- reference
def brute_force(video, music, *, lengths=None, tracks=None, extra_video=None, extra_music=None,
                extra_lengths=None, ks=KS) -> dict:
    """Full float64 similarity matrices and explicit loops over queries and candidates. Extra
    candidates follow the paired ones; with ``tracks``, a query skips its own track's other
    items; with ``lengths``, candidates of another length."""
    n = len(video)
    dim = np.shape(video)[1]
    extra_video = np.zeros((0, dim)) if extra_video is None else extra_video
    extra_music = np.zeros((0, dim)) if extra_music is None else extra_music
    candidate_lengths = None
    if lengths is not None:
        extra_lengths = [] if extra_lengths is None else extra_lengths
        candidate_lengths = np.concatenate([lengths, extra_lengths])
    out = {}
    for direction, queries, candidates in (
            ("video_to_music", video, np.concatenate([music, extra_music])),
            ("music_to_video", music, np.concatenate([video, extra_video]))):
        matrix = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
        ranks, hits = [], {k: [] for k in ks}
        for i in range(n):
            better = tied = 0
            for j in range(len(candidates)):
                if j == i or (lengths is not None and candidate_lengths[j] != lengths[i]):
                    continue
                if tracks is not None and j < n and tracks[j] == tracks[i]:
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


@pytest.mark.parametrize("block_size", [7, 89, 1000])
def test_compiled_counting_equals_numpy_counting(rng, block_size, monkeypatch):
    """The compiled one-pass counting and numpy's tiles count the same (ties, tracks, extras)."""
    from mvpt import eval as eval_module

    video, music = quantised_pairs(rng)
    tracks = np.arange(len(video)) // 3
    extras = quantised_pairs(np.random.default_rng(5))
    kwargs = {"extra_video": extras[0][:50], "extra_music": extras[1][:70], "tracks": tracks,
              "block_size": block_size}
    assert eval_module._count_kernels() is not None
    compiled = pair_rank_counts(video, music, **kwargs)
    monkeypatch.setenv("MVPT_EVAL_KERNEL", "numpy")
    assert eval_module._count_kernels() is None
    reference = pair_rank_counts(video, music, **kwargs)
    for d in DIRECTIONS:
        assert sum(reference[d][1]) > 0  # ties are there to count
        np.testing.assert_array_equal(compiled[d][0], reference[d][0])
        np.testing.assert_array_equal(compiled[d][1], reference[d][1])


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


def test_column_counts_in_tall_tiles_do_not_wrap():
    """Narrow blocks make tiles of hundreds of rows; a column's count within one tile must not
    wrap (every other candidate ties with every query here)."""
    n = 600
    video = np.ones((n, 4), np.float32) / 2
    counts = pair_rank_counts(video, video.copy(), block_size=300)
    for better, tied in counts.values():
        assert (better == 0).all() and (tied == n - 1).all()


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


def test_extra_candidates_match_brute_force(rng):
    for video, music in (noisy_pairs(rng, n=70), quantised_pairs(rng, n=70)):
        extra_video, extra_music = quantised_pairs(rng, n=45) if video[0, 0] % 1 == 0 else \
            noisy_pairs(rng, n=45)
        extra_music[:5] = music[3]  # copies of a correct candidate: ties with it
        kwargs = dict(extra_video=extra_video, extra_music=extra_music)
        metrics = retrieval_metrics(video, music, block_size=16, **kwargs)
        assert_matches(metrics, brute_force(video, music, **kwargs))
        assert metrics["pool_size"] == 115 and metrics["mean_candidates"] == 115
        assert metrics["n_queries"] == 70
        # distractors only make it harder
        assert metrics["mean_R@10"] < retrieval_metrics(video, music)["mean_R@10"]


def test_extra_candidates_with_same_length(rng):
    video, music = noisy_pairs(rng, n=60, noise=0.5)
    extra_video, extra_music = noisy_pairs(rng, n=40)
    lengths, extra_lengths = rng.integers(3, 6, size=60), rng.integers(3, 7, size=40)
    kwargs = dict(extra_video=extra_video, extra_music=extra_music, lengths=lengths,
                  extra_lengths=extra_lengths)
    metrics = retrieval_metrics(video, music, same_length=True, block_size=8, **kwargs)
    assert_matches(metrics, brute_force(video, music, **kwargs))
    counts = candidate_counts(60, lengths=lengths, same_length=True, extra_lengths=extra_lengths)
    expected = [(lengths == n).sum() + (extra_lengths == n).sum() for n in lengths]
    assert counts[0].tolist() == expected
    with pytest.raises(UsageError, match="extra_lengths"):
        retrieval_metrics(video, music, same_length=True, lengths=lengths,
                          extra_video=extra_video, extra_music=extra_music)


@pytest.mark.parametrize("block_size", [1, 5, 16, 1000])
def test_other_tracks_excludes_own_track_like_brute_force(rng, block_size):
    video, music = quantised_pairs(rng, n=60)
    tracks = rng.integers(0, 15, size=60)  # unsorted labels: own-track items scattered
    metrics = retrieval_metrics(video, music, tracks=tracks, block_size=block_size)
    assert_matches(metrics, brute_force(video, music, tracks=tracks))
    same = np.array([(tracks == t).sum() for t in tracks])
    assert metrics["mean_candidates"] == pytest.approx(np.mean(60 - same + 1))
    assert metrics["pool_size"] == 60


def test_other_tracks_with_extras_lengths_and_pools(rng):
    video, music = noisy_pairs(rng, n=80, noise=0.6)
    extra_video, extra_music = noisy_pairs(rng, n=30)
    tracks, lengths = np.repeat(np.arange(20), 4), rng.integers(3, 5, size=80)
    extra_lengths = rng.integers(3, 5, size=30)
    kwargs = dict(tracks=tracks, lengths=lengths, extra_video=extra_video,
                  extra_music=extra_music, extra_lengths=extra_lengths)
    metrics = retrieval_metrics(video, music, same_length=True, block_size=6, **kwargs)
    assert_matches(metrics, brute_force(video, music, **kwargs))
    pooled = retrieval_metrics(video, music, same_length=True, pool=25, seed=2, **kwargs)
    by_hand = [brute_force(video[p], music[p], tracks=tracks[p], lengths=lengths[p],
                           extra_video=extra_video, extra_music=extra_music,
                           extra_lengths=extra_lengths)["music_to_video_R@5"]
               for p in pool_indices(80, pool=25, seed=2)]
    assert pooled["music_to_video_R@5"] == pytest.approx(np.mean(by_hand))
    assert pooled["pool_size"] == 25 + 30


def test_constant_embeddings_match_chance_with_exclusions_and_extras(rng):
    tracks = np.repeat(np.arange(6), [1, 2, 3, 4, 5, 5])
    n = len(tracks)
    ones = np.ones((n, 4), np.float32)
    metrics = retrieval_metrics(ones, ones, tracks=tracks, extra_video=ones[:7],
                                extra_music=ones[:7])
    counts = candidate_counts(n, tracks=tracks, n_extra=7)
    assert counts[0].tolist() == [n + 7 - (tracks == t).sum() + 1 for t in tracks]
    assert metrics == pytest.approx(chance_metrics(counts, pool_size=n + 7))


def test_duplicate_candidates_in_other_blocks_tie_exactly(rng):
    # non-integer vectors: a tie only holds if every block's product rounds the same way
    video, music = noisy_pairs(rng, n=64, dim=256)
    music[[9, 33, 50, 63]] = music[2]
    video[[17, 40]] = video[5]
    for block_size in (3, 8, 64):
        metrics = retrieval_metrics(video, music, block_size=block_size)
        assert_matches(metrics, brute_force(video.astype(np.float64), music.astype(np.float64)))


class TwoPartScores:
    """Another scoring through the same counting: the sum of two halves' dot products, each
    from its own product (what a multi-window scoring does), no extra candidates."""

    def __init__(self, video, music):
        self.halves = [DotScores(video[:, :4], music[:, :4]), DotScores(video[:, 4:], music[:, 4:])]
        self.whole = DotScores(video, music)
        self.n = len(video)

    def n_extra(self, direction):
        return 0

    def pairs(self, rows, cols, out):
        first = self.halves[0].pairs(rows, cols, out=out)
        return np.add(first, self.halves[1].pairs(rows, cols, out=np.empty_like(out)), out=out)

    def tolerances(self):
        return self.whole.tolerances()


@pytest.mark.parametrize("block_size", [7, 64])
def test_another_scoring_plugs_into_the_counting(rng, block_size):
    video, music = quantised_pairs(rng, n=50, dim=8)
    counts = count_ranks(TwoPartScores(video, music), block_size=block_size, threads=2)
    metrics = metrics_from_counts(counts, n_candidates=np.full(50, 50), pool_size=50)
    assert_matches(metrics, brute_force(video, music))
    assert metrics["pool_size"] == 50 and metrics["mean_candidates"] == 50


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


def make_store(path, track_clips, *, rng, split="test", constant_in_time=False, copies=0,
               noise=0.01):
    """A store whose audio features equal the video features plus ``noise`` (little by
    default); ``copies``: that many tracks of split "train" with the features of the first
    tracks."""
    store = FeatureStore.create(path, {
        "encoders": {"video": {"name": "fake-v", "version": "1", "dim": DIM},
                     "audio": {"name": "fake-a", "version": "1", "dim": DIM}},
        "clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30,
    })
    results = []
    for i, n in enumerate(track_clips):
        video = rng.normal(size=(1 if constant_in_time else n, DIM)).repeat(
            n if constant_in_time else 1, axis=0)
        audio = video + noise * rng.normal(size=video.shape)
        results.append(ItemResult(id=f"t{i}", source_path=f"t{i}.mp4", split=split,
                                  status="done", duration_s=float(n),
                                  arrays={"video": video, "audio": audio}))
    results += [ItemResult(id=f"copy{i}", source_path=f"copy{i}.mp4", split="train",
                           status="done", duration_s=r.duration_s, arrays=r.arrays)
                for i, r in enumerate(results[:copies])]
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


def test_other_tracks_leaves_out_the_own_tracks_segments(tmp_path, rng):
    make_store(tmp_path / "store", [20, 20, 30, 10], rng=rng, constant_in_time=True)
    result = evaluate(None, tmp_path / "store", level="segment", embed_fn=MeanEmbed(),
                      segment_negatives="other-tracks")
    assert result["segment_negatives"] == "other-tracks" and result["n_items"] == 8
    # indistinguishable own-track segments no longer compete: every query ranks first
    assert result["metrics"]["video_to_music_R@1"] == 1.0
    assert result["metrics"]["music_to_video_median_rank"] == 1.0
    # 8 segments in the pool; a query's candidates: 8 less the other segments of its track
    expected = np.array([7, 7, 7, 7, 6, 6, 6, 8])
    assert result["pool_size"] == 8
    assert result["metrics"]["mean_candidates"] == pytest.approx(expected.mean())
    assert result["chance"]["mean_candidates"] == pytest.approx(expected.mean())
    assert result["chance"]["video_to_music_R@1"] == pytest.approx(np.mean(1 / expected))
    track = evaluate(None, tmp_path / "store", level="track", embed_fn=MeanEmbed(),
                     segment_negatives="other-tracks")
    assert track["segment_negatives"] is None and track["pool_size"] == 4


def test_candidates_all_ranks_the_split_against_the_whole_store(tmp_path, rng):
    # two train tracks are exact copies of test tracks 0 and 1: each ties with its original
    make_store(tmp_path / "store", [25, 30, 20, 40, 12], rng=rng, copies=2)
    embed = MeanEmbed()
    result = evaluate(None, tmp_path / "store", level="track", embed_fn=embed, candidates="all")
    assert embed.lengths["video"] == [25, 30, 20, 30, 12, 25, 30]  # 5 queries, then 2 extras
    assert (result["candidates"], result["n_items"], result["n_extra_items"]) == ("all", 5, 2)
    assert result["pool_size"] == 7 and result["metrics"]["n_queries"] == 5
    for direction in DIRECTIONS:
        assert result["metrics"][f"{direction}_R@1"] == pytest.approx((2 * 0.5 + 3) / 5)
        assert result["chance"][f"{direction}_R@1"] == pytest.approx(1 / 7)
    assert result["chance"]["pool_size"] == 7
    split_only = evaluate(None, tmp_path / "store", level="track", embed_fn=MeanEmbed())
    assert split_only["metrics"]["video_to_music_R@1"] == 1.0 and split_only["pool_size"] == 5
    segment = evaluate(None, tmp_path / "store", level="segment", embed_fn=MeanEmbed(),
                       candidates="all", same_length=True)
    # 2 + 3 + 2 + 4 + 1 test segments; copies add 2 + 3 segments of the same length
    assert (segment["n_items"], segment["n_extra_items"], segment["pool_size"]) == (12, 5, 17)
    assert segment["metrics"]["mean_candidates"] == 17
    with pytest.raises(UsageError, match="no pool to draw"):
        evaluate(None, tmp_path / "store", embed_fn=MeanEmbed(), candidates="all", pool=2)
    with pytest.raises(UsageError, match="segment_negatives must be one of"):
        evaluate(None, tmp_path / "store", embed_fn=MeanEmbed(), segment_negatives="own")


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
def make_run(path, store, *, max_clips=20):
    """A real run (see tests/fixtures/runs.py) that embeds as MeanEmbed does."""
    return save_mean_run(path, store.manifest, max_clips=max_clips, names=("best", "last"))


def test_evaluate_loads_the_run_and_refuses_other_encoders(tmp_path, rng):
    store = make_store(tmp_path / "store", [45, 25, 31], rng=rng)
    make_run(tmp_path / "run", store)
    result = evaluate(tmp_path / "run", tmp_path / "store", which="last")
    assert result["which"] == "last"
    # K is the model's (20), not the store's (30), and the run embeds as the mean of its window.
    assert result["max_clips"] == 20 and result["metrics"]["mean_R@10"] == 1.0
    same = evaluate(None, tmp_path / "store", embed_fn=MeanEmbed(), max_clips=20)
    assert result["metrics"] == pytest.approx(same["metrics"])
    with pytest.raises(UsageError, match="the model's config owns K"):
        evaluate(tmp_path / "run", tmp_path / "store", max_clips=30)
    other = FeatureStore.create(tmp_path / "other", dict(
        store.manifest, encoders=dict(store.manifest["encoders"],
                                      audio={"name": "other", "version": "1", "dim": DIM})))
    with pytest.raises(ModelError, match="audio encoder"):
        evaluate(tmp_path / "run", other.path)


def test_evaluate_takes_a_loaded_run(tmp_path, rng):
    store = make_store(tmp_path / "store", [25, 25, 31], rng=rng)
    run = mvpt.load_run(make_run(tmp_path / "run", store))
    result = evaluate(run, tmp_path / "store")
    assert result["run"] == str((tmp_path / "run").resolve()) and result["max_clips"] == 20


def test_cli_prints_tables_and_json(tmp_path, rng, capsys):
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


def test_cli_segment_negatives_and_candidates(tmp_path, rng, capsys):
    store = make_store(tmp_path / "store", [25, 25, 31, 8], rng=rng, copies=1)
    make_run(tmp_path / "run", store)
    args = ["eval", str(tmp_path / "run"), str(tmp_path / "store")]
    assert cli.main(args + ["--segment-negatives", "other-tracks", "--candidates", "all",
                            "--json", str(tmp_path / "out.json")]) == 0
    text = capsys.readouterr().out
    assert "own track left out" in text and "outside the split" in text
    track, segment = json.loads((tmp_path / "out.json").read_text())["results"]
    assert (track["pool_size"], track["n_extra_items"]) == (5, 1)
    assert segment["segment_negatives"] == "other-tracks" and segment["n_extra_items"] == 2
    assert segment["pool_size"] == 7 + 2 and segment["chance"]["pool_size"] == 9
    assert cli.main(args + ["--candidates", "all", "--pool", "2"]) == 2  # a usage error
    err = capsys.readouterr().err
    assert "no pool to draw" in err and len(err.strip().splitlines()) == 1


def test_cli_choices_are_the_library_choices():
    from mvpt.commands import eval as command
    from mvpt import eval as library

    assert command.SEGMENT_NEGATIVES == library.SEGMENT_NEGATIVES
    assert command.CANDIDATES == library.CANDIDATES
    from mvpt.index import SCORINGS

    assert command.SCORINGS == SCORINGS


def test_cli_reports_missing_store_in_one_line(tmp_path, capsys):
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


# ---------------------------------------------------------------------------- track-windows
def brute_force_window_metrics(store, *, window, stride, scoring, ks=KS) -> dict:
    """Every (query window, candidate window) cosine with explicit loops; a track's score is the
    max or mean over its pairs; fair ties."""
    from mvpt.clips import sliding_windows

    feats = store.load(arrays=("video", "audio"))
    tracks = {m: [np.asarray(feats.item(i, m), np.float64) for i in range(len(feats))]
              for m in ("video", "audio")}

    def windows(x):
        means = [x[f:f + n].mean(axis=0) for f, n in sliding_windows(len(x), window, stride)]
        return np.stack([m / np.linalg.norm(m) for m in means])

    out = {}
    for direction, (qm, cm) in zip(DIRECTIONS, (("video", "audio"), ("audio", "video"))):
        hits, ranks = {k: [] for k in ks}, []
        for i, query in enumerate(tracks[qm]):
            pairs = [windows(query) @ windows(c).T for c in tracks[cm]]
            scores = np.array([p.max() if scoring == "max" else p.mean() for p in pairs])
            others = np.delete(scores, i)
            better, tied = int(np.sum(others > scores[i] + 1e-6)), int(
                np.sum(np.abs(others - scores[i]) <= 1e-6))
            ranks.append(1 + better + tied / 2)
            for k in ks:
                hits[k].append(sum(p <= k for p in range(better + 1, better + tied + 2))
                               / (tied + 1))
        for k in ks:
            out[f"{direction}_R@{k}"] = np.mean(hits[k])
        out[f"{direction}_median_rank"] = np.median(ranks)
    return out


@pytest.mark.parametrize("scoring", ["max", "mean"])
def test_track_windows_matches_brute_force(tmp_path, rng, scoring):
    store = make_store(tmp_path / "store", [45, 25, 31, 12, 40, 20, 33, 27], rng=rng, noise=1.5)
    result = evaluate(None, tmp_path / "store", level="track-windows", embed_fn=MeanEmbed(),
                      window_s=10, stride_s=5, scoring=scoring)
    want = brute_force_window_metrics(store, window=10, stride=5, scoring=scoring)
    for key, value in want.items():
        assert result["metrics"][key] == pytest.approx(value, abs=1e-9), key
    assert 0 < result["metrics"]["video_to_music_R@1"] < 1  # the ranks are not trivial
    assert result["windows"]["window_s"] == 10 and result["pool_size"] == 8
    assert result["chance"]["video_to_music_R@1"] == pytest.approx(1 / 8)


def test_track_windows_defaults_and_refusals(tmp_path, rng):
    make_store(tmp_path / "store", [45, 25, 31], rng=rng, noise=1.5)
    run = make_run(tmp_path / "run", FeatureStore.open(tmp_path / "store"), max_clips=20)
    result = evaluate(run, tmp_path / "store", level="track-windows")
    assert (result["windows"]["window_s"], result["windows"]["stride_s"]) == (20.0, 7.0)
    with pytest.raises(UsageError, match="no pool"):
        evaluate(run, tmp_path / "store", level="track-windows", pool=2)
    assert cli.main(["eval", str(run), str(tmp_path / "store"), "--level", "track-windows",
                     "--window-seconds", "10", "--scoring", "mean"]) == 0
