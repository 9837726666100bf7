"""Training: windows, cached-embedding gradients, learning on synthetic features, checkpoints,
resume after a real kill, and torchrun data parallelism."""

import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mvpt.cli import main as cli_main
from mvpt.run import Run
from mvpt.settings import DEFAULT_GRAD_CLIP, DEFAULT_LR, RunConfig
from mvpt.errors import ModelError, UsageError
from mvpt.models import build_model, info_nce, load_config
from mvpt.models.checkpoint import read_checkpoint
from mvpt.store import FeatureStore
from mvpt.streaming import ShardedFeatures, prefetch
from tests.fixtures.stores import make_constant_store, make_synthetic_store
from mvpt.train import (
    Batch,
    backward_windows,
    contrastive_backward,
    epoch_plan,
    separated_starts,
    gather_batch,
    lr_factor,
    sample_windows,
    train,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY_MVPT = {"d_hidden": 32, "d_feedforward": 64, "d_joint": 16, "dropout": 0.0}
# Exactly reproducible on CPU: one thread, seeded windows and dropout per epoch.
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "MVPT_THREADS": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny models run fastest, and exactly reproducibly, on one thread."""
    monkeypatch.setenv("MVPT_THREADS", "1")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "store"
    # Tracks of at least K = 30 clips: a batch's shared window length is capped by its shortest
    # track, so shorter tracks would shorten every training window.
    make_synthetic_store(path, n_train=192, n_val=64, video_dim=12, audio_dim=10, seed=1,
                         clips_range=(30, 40), shard_size=100)
    return path


def tiny_config_file(tmp_path, **overrides) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"name": "tiny", "kind": "mvpt", **TINY_MVPT, **overrides}))
    return path


def metric_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- windows, batches
def test_sample_windows_lengths_and_positions(rng):
    n_clips = rng.integers(1, 60, size=2000)
    starts, lengths = sample_windows(n_clips, rng=rng, min_clips=10, max_clips=30)
    assert np.all(lengths == np.minimum(lengths, n_clips)) and lengths.max() == 30
    long = n_clips >= 30
    assert lengths[long].min() == 10 and set(np.unique(lengths[long])) == set(range(10, 31))
    assert np.all(lengths[n_clips < 10] == n_clips[n_clips < 10])  # short tracks: used whole
    assert np.all(starts >= 0) and np.all(starts + lengths <= n_clips)
    assert starts[n_clips > 45].max() > 20  # windows move inside long tracks


def test_epoch_plan_is_seeded_and_drops_the_partial_batch():
    n_clips = np.arange(10, 110)
    plan = lambda seed, epoch: epoch_plan(100, seed=seed, epoch=epoch, batch_size=32,
                                          min_clips=10, max_clips=30, n_clips=n_clips)
    a, b, c = plan(0, 1), plan(0, 1), plan(0, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert len(a[0]) == 96 and len(set(a[0])) == 96


@pytest.mark.parametrize("policy", ["per-batch", "fixed"])
def test_a_batch_shares_one_window_length(policy):
    """Every window of a batch has the same length: drawn per batch in [10, 30] (or 30 when
    fixed), capped by the batch's shortest track; positions stay random per track."""
    n_clips = np.random.default_rng(3).integers(8, 60, size=640)
    tracks, starts, lengths = epoch_plan(640, seed=0, epoch=1, batch_size=32, min_clips=10,
                                         max_clips=30, n_clips=n_clips, policy=policy)
    per_batch = lengths.reshape(20, 32)
    assert np.all(per_batch == per_batch[:, :1])
    shortest = n_clips[tracks].reshape(20, 32).min(1)
    drawn_cap = 30 if policy == "fixed" else per_batch[:, 0]
    assert np.all(per_batch[:, 0] == np.minimum(drawn_cap, shortest))
    assert np.all(starts >= 0) and np.all(starts + lengths <= n_clips[tracks])
    assert len(set(starts.tolist())) > 20
    long = epoch_plan(640, seed=0, epoch=1, batch_size=32, min_clips=10, max_clips=30,
                      n_clips=np.full(640, 45), policy=policy)[2].reshape(20, 32)[:, 0]
    if policy == "fixed":
        assert set(long.tolist()) == {30}
    else:
        assert long.min() >= 10 and long.max() <= 30 and len(set(long.tolist())) > 8


@pytest.mark.parametrize("policy", ["per-batch", "fixed"])
def test_two_windows_per_track_are_separated_twins(policy):
    """windows_per_track=2: where the batch's tracks leave room, each track gives two adjacent
    windows of the batch's length whose starts are at least a third of it apart; where they do
    not (a window of all of a K-clip track), the batch is one window per track, as before."""
    n_clips = np.random.default_rng(5).integers(45, 60, size=640)
    n_clips[:40] = 30  # some tracks of exactly K clips: no room for twins of K clips
    tracks, starts, lengths = epoch_plan(640, seed=1, epoch=2, batch_size=33, min_clips=10,
                                         max_clips=30, n_clips=n_clips, policy=policy,
                                         windows_per_track=2)
    assert len(tracks) == len(starts) == len(lengths) == (640 // 33) * 33
    assert np.all(starts >= 0) and np.all(starts + lengths <= n_clips[tracks])
    paired_batches = 0
    for b in range(640 // 33):
        t, s, ln = (x[b * 33:(b + 1) * 33] for x in (tracks, starts, lengths))
        assert len(set(ln.tolist())) == 1
        if t[0] == t[1]:
            paired_batches += 1
            twins = t[:32].reshape(16, 2)
            assert np.all(twins[:, 0] == twins[:, 1]) and len(set(twins[:, 0])) == 16
            assert t[32] not in set(twins[:, 0])  # the odd batch's lone window
            gaps = np.abs(s[:32:2] - s[1:32:2])
            assert np.all(gaps >= max(1, ln[0] // 3))
        else:
            assert len(set(t.tolist())) == 33
    assert 3 < paired_batches < 640 // 33 or (policy == "per-batch" and paired_batches > 3)
    k_clip = epoch_plan(64, seed=0, epoch=1, batch_size=16, min_clips=30, max_clips=30,
                        n_clips=np.full(64, 30), policy=policy, windows_per_track=2)
    assert len(set(k_clip[0].tolist())) == 64 and np.all(k_clip[1] == 0)


def test_separated_starts_cover_both_sides():
    """The second start lands on either side of the first, never closer than the gap, even when
    the room is exactly the gap."""
    rng = np.random.default_rng(0)
    room, gap = np.full(4000, 12), np.full(4000, 4)
    a, b = separated_starts(room, gap, rng=rng)
    assert np.all(np.abs(a - b) >= 4) and np.all((a >= 0) & (a <= 12) & (b >= 0) & (b <= 12))
    assert (b < a).mean() == pytest.approx(0.5, abs=0.05)
    a, b = separated_starts(np.full(50, 5), np.full(50, 5), rng=rng)
    assert sorted(set(zip(a.tolist(), b.tolist()))) == [(0, 5), (5, 0)]


def test_gather_batch_reads_aligned_windows(store_path):
    features = FeatureStore.open(store_path).load(split="train", arrays=("video", "audio"))
    tracks, starts, lengths = np.array([3, 0]), np.array([2, 0]), np.array([5, 12])
    batch = gather_batch(features, tracks, starts, lengths)
    assert batch.video.shape == (2, 12, 12) and batch.audio.shape == (2, 12, 10)
    assert batch.mask.sum(1).tolist() == [5, 12]
    np.testing.assert_array_equal(batch.audio[0, :5].numpy(), features.item(3, "audio")[2:7])
    np.testing.assert_array_equal(batch.video[1].numpy(), features.item(0, "video")[:12])
    assert float(batch.video[0, 5:].abs().sum()) == 0.0


def test_streamed_windows_equal_the_in_memory_copy(store_path):
    """Windows read from the memory-mapped shards (3 of them) are those of the in-memory split,
    bit for bit, in the same item order."""
    store = FeatureStore.open(store_path)
    memory = store.load(split="train", arrays=("video", "audio"))
    streamed = ShardedFeatures(store, split="train", arrays=("video", "audio"))
    assert len(store.shard_dirs()) == 3 and streamed.ids == memory.ids
    np.testing.assert_array_equal(streamed.n_clips, memory.n_clips)
    for i in (0, 99, 100, 191):
        np.testing.assert_array_equal(streamed.item(i, "audio"), memory.item(i, "audio"))
    plan = epoch_plan(len(memory), seed=0, epoch=1, batch_size=64, min_clips=10, max_clips=30,
                      n_clips=memory.n_clips, policy="per-track")
    for lo in (0, 64):
        part = [x[lo:lo + 64] for x in plan]
        a, b = gather_batch(memory, *part), gather_batch(streamed, *part)
        assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
        assert torch.equal(a.mask, b.mask) and not bool(a.mask.all())


def test_backward_windows_play_their_clips_in_reverse(store_path):
    """A window marked backwards holds the same clips, last first, in both modalities (still
    aligned clip by clip), in memory and streamed alike; a padded window reverses its valid
    clips only and keeps its padding at the end."""
    store = FeatureStore.open(store_path)
    memory = store.load(split="train", arrays=("video", "audio"))
    streamed = ShardedFeatures(store, split="train", arrays=("video", "audio"))
    tracks, starts, lengths = np.array([3, 0, 150]), np.array([2, 0, 7]), np.array([5, 12, 12])
    backwards = np.array([True, False, True])
    forward = gather_batch(memory, tracks, starts, lengths)
    for features in (memory, streamed):
        batch = gather_batch(features, tracks, starts, lengths, backwards)
        assert torch.equal(batch.mask, forward.mask)
        for name in ("video", "audio"):
            x, ref = getattr(batch, name), getattr(forward, name)
            assert torch.equal(x[0, :5], ref[0, :5].flip(0)) and float(x[0, 5:].abs().sum()) == 0
            assert torch.equal(x[1], ref[1]) and torch.equal(x[2], ref[2].flip(0))
            assert not torch.equal(x[0], ref[0])


def test_backward_windows_are_seeded_per_epoch():
    """Which windows play backwards: about ``share`` of them, the same for the same (seed,
    epoch), others for another epoch, none at share 0, all at 1."""
    half = backward_windows(4000, seed=3, epoch=1, share=0.5)
    assert 0.45 < half.mean() < 0.55
    assert np.array_equal(half, backward_windows(4000, seed=3, epoch=1, share=0.5))
    assert not np.array_equal(half, backward_windows(4000, seed=3, epoch=2, share=0.5))
    assert not backward_windows(4000, seed=3, epoch=1, share=0.0).any()
    assert backward_windows(10, seed=3, epoch=1, share=1.0).all()


def test_prefetch_keeps_order_raises_errors_and_stops_early():
    assert list(prefetch(iter(range(10)), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise ModelError("shard-00002: unreadable")

    with pytest.raises(ModelError, match="shard-00002: unreadable"):
        list(prefetch(failing()))
    produced = []

    def counting():
        for i in range(1000):
            produced.append(i)
            yield i

    items = prefetch(counting(), depth=2)
    assert next(items) == 0
    items.close()
    assert len(produced) <= 5
    assert not any(t.name == "mvpt-prefetch" and t.is_alive() for t in threading.enumerate())


def test_lr_schedule_warms_up_then_anneals():
    f = lambda step: lr_factor(step, warmup_steps=4, total_steps=104)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(54) == pytest.approx(0.5) and f(104) == pytest.approx(0.0)


def test_default_warm_up_is_a_tenth_of_the_run(store_path, tmp_path):
    """By default the learning rate rises linearly over the first tenth of the steps, then
    follows the cosine; a run that sets warmup_steps keeps it."""
    assert RunConfig().warmup_for(480) == 48 and RunConfig(warmup_steps=0).warmup_for(480) == 0
    assert RunConfig(warmup_share=0.3).warmup_for(480) == 144
    assert RunConfig(warmup_share=0.3, warmup_steps=7).warmup_for(480) == 7
    with pytest.raises(UsageError, match=r"warmup_share must be in \[0, 1\), got 1.0"):
        RunConfig(warmup_share=1.0).validate()
    train(store_path, tmp_path / "run", model="mlp", model_overrides={"d_hidden": 8},
          batch_size=64, epochs=20, lr=1e-2, progress=False)
    lines = metric_lines(tmp_path / "run")
    total, first = lines[-1]["step"], lines[0]["step"]
    warm = round(total / 10)
    assert warm > first > 0  # epoch 1 ends inside the warm-up
    for m in (lines[0], lines[5], lines[-1]):
        assert m["lr"] == pytest.approx(1e-2 * lr_factor(m["step"], warmup_steps=warm,
                                                         total_steps=total))
    # still rising after epoch 1, below where a run without warm-up would be
    assert lines[0]["lr"] < 0.9 * 1e-2 * lr_factor(first, warmup_steps=0, total_steps=total)
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["run_config"]["warmup_steps"] is None
    assert ckpt["training"]["scheduler"]["lr_lambdas"][0]["warmup_steps"] == warm


def mean_r1(metrics: dict) -> float:
    return (metrics["video_to_music_R@1"] + metrics["music_to_video_R@1"]) / 2


def test_validation_ranks_both_levels_as_mvpt_eval_does(store_path, tmp_path):
    """Each epoch validates at track and segment level (10 s) on the val split, with the numbers
    `mvpt eval --split val` gives for the same weights; best.pt keeps the best mean R@1 of the two
    levels, a tie going to the later epoch (a track-level R@10 saturates on a small val split,
    so it chose the first epoch to reach it, mid-schedule)."""
    from mvpt.eval import evaluate_levels

    run = tmp_path / "run"
    train(store_path, run, model="mvpt", model_overrides=TINY_MVPT, epochs=3, batch_size=32,
          progress=False)
    lines = metric_lines(run)
    results = {r["level"]: r for r in evaluate_levels(run, store_path, split="val", which="last",
                                                      levels=("track", "segment"))}
    segment = results["segment"]
    assert segment["n_items"] > 2 * segment["n_tracks"]  # several segments per track
    last = lines[-1]
    assert last["val_r1"] == pytest.approx(mean_r1(results["track"]["metrics"]))
    assert last["val_segment_r1"] == pytest.approx(mean_r1(results["segment"]["metrics"]))
    assert last["val_r1_levels"] == pytest.approx((last["val_r1"] + last["val_segment_r1"]) / 2)
    best = max(lines, key=lambda m: (m["val_r1_levels"], m["epoch"]))["epoch"]
    assert read_checkpoint(run / "best.pt")["epoch"] == best


@pytest.mark.parametrize("rule, tie_goes_to_later", [("r1", True), ("track-r10", False)])
def test_best_checkpoint_rules(rule, tie_goes_to_later):
    from mvpt.train import _is_better

    epoch = {"val_score": 1.0, "val_r1": 0.5, "val_r1_levels": 0.4}
    assert _is_better(epoch, {}, rule=rule)
    assert _is_better(epoch, {"epoch": 3, **epoch}, rule=rule) == tie_goes_to_later
    assert not _is_better(epoch, {"epoch": 3, **epoch, "val_r1": 0.6, "val_r1_levels": 0.6},
                          rule=rule)
    assert _is_better({**epoch, "val_r1_levels": 0.1}, epoch, rule="last")
    assert RunConfig().best_rule == "r1" and RunConfig(best_by="last").best_rule == "last"
    with pytest.raises(UsageError, match="best_by"):
        RunConfig(best_by="loss").validate()


# ---------------------------------------------------------------------------- cached embeddings
def gradients(model, batch, *, chunk_size):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    loss = contrastive_backward(model, batch, chunk_size=chunk_size)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters()}


def random_batch(rng, n=16, length=20) -> Batch:
    mask = torch.from_numpy(rng.random((n, length)) < 0.7)
    mask[:, 0] = True
    return Batch(torch.from_numpy(rng.normal(size=(n, length, 12)).astype(np.float32)),
                 torch.from_numpy(rng.normal(size=(n, length, 10)).astype(np.float32)), mask)


@pytest.mark.parametrize("chunk_size", [5, 8])
def test_cached_embedding_gradient_equals_full_batch_gradient(chunk_size, rng):
    torch.manual_seed(0)
    model = build_model(load_config("mvpt", **{**TINY_MVPT, "d_hidden": 16}),
                        video_dim=12, audio_dim=10)
    batch = random_batch(rng)
    full_loss, full = gradients(model, batch, chunk_size=None)
    cached_loss, cached = gradients(model, batch, chunk_size=chunk_size)
    assert cached_loss == pytest.approx(full_loss, rel=1e-6)
    assert float(full["logit_scale.log_scale"].abs()) > 0
    for name in full:
        torch.testing.assert_close(cached[name], full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_cached_embeddings_replay_the_same_dropout(rng):
    """With dropout, the re-run of each chunk must see the RNG state of its cached forward pass:
    the gradient equals that of chunk-by-chunk forward passes with gradients."""
    torch.manual_seed(0)
    model = build_model(load_config("mvpt", **{**TINY_MVPT, "dropout": 0.3}),
                        video_dim=12, audio_dim=10)
    batch = random_batch(rng)
    _, cached = gradients(model, batch, chunk_size=6)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    parts = [model(p.video, p.mask, p.audio, p.mask)
             for p in (batch.slice(0, 6), batch.slice(6, 12), batch.slice(12, 16))]
    info_nce(torch.cat([v for v, _ in parts]), torch.cat([a for _, a in parts]),
             model.logit_scale()).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(cached[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------- training
def test_mvpt_learns_synthetic_correspondence(store_path, tmp_path):
    # a short hand-set recipe (8 epochs at lr 3e-3, no warm-up), not the defaults
    result = train(store_path, tmp_path / "run", model="mvpt", model_overrides=TINY_MVPT,
                   epochs=8, batch_size=32, lr=3e-3, warmup_steps=0, progress=False)
    lines = metric_lines(tmp_path / "run")
    assert [m["epoch"] for m in lines] == list(range(1, 9))
    assert {"loss", "lr", "temperature", "val_score", "val_video_to_music_R@10",
            "val_music_to_video_median_rank", "epoch_time_s", "time"} <= set(lines[0])
    chance = 10 / 64
    final = result["final"]
    assert final["val_score"] > 4 * chance and final["val_r1"] > 15 / 64
    assert lines[-1]["loss"] < 0.6 * lines[0]["loss"]
    assert lines[-1]["lr"] == pytest.approx(0.0) and lines[1]["lr"] < 3e-3
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    best_epoch = max(lines, key=lambda m: (m["val_r1_levels"], m["epoch"]))["epoch"]
    assert best["epoch"] == best_epoch == result["best"]["epoch"]
    assert "training" not in best and "optimizer" in read_checkpoint(
        tmp_path / "run" / "last.pt")["training"]
    # the eval contract: the trained model embeds the val split as it scored it
    loaded = Run.load(tmp_path / "run", which="last")
    val = FeatureStore.open(store_path).load(split="val", arrays=("video", "audio"))
    music = loaded.embed("audio", [val.item(i, "audio") for i in range(len(val))])
    video = loaded.embed("video", [val.item(i, "video") for i in range(len(val))])
    top1 = (video @ music.T).argmax(1) == np.arange(len(val))
    assert top1.mean() == pytest.approx(final["val_video_to_music_R@1"])


@pytest.mark.parametrize("policy, cue", [("per-batch", False), ("fixed", False),
                                         ("per-track", True)])
def test_window_length_is_no_cue_for_the_loss(policy, cue, tmp_path, rng):
    """Features that carry nothing but their length (every clip the same constant vector, tracks
    of 5 to 40 clips): no model can tell the pairs of a batch apart, so the loss must stay at
    log(batch) after 50 steps. A window length per track (the sampler before issue 10, kept as
    "per-track") lets the model match video and music by length alone: its loss drops."""
    make_constant_store(tmp_path / "store", n_clips=rng.integers(5, 41, size=320).tolist())
    train(tmp_path / "store", tmp_path / "run", model="mvpt", model_overrides=TINY_MVPT,
          epochs=5, batch_size=32, lr=3e-3, progress=False, window_policy=policy)
    lines = metric_lines(tmp_path / "run")
    assert lines[-1]["step"] == 50
    stays = lines[-1]["loss"] == pytest.approx(np.log(32), rel=0.02)
    assert stays != cue, lines[-1]["loss"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["run_config"]["window_policy"] == policy


def interrupted_after(epoch: int, monkeypatch):
    """Make training stop (as if killed) right after ``epoch``'s checkpoint is written."""
    train_module = importlib.import_module("mvpt.train")  # the module; mvpt.train is the function

    end_epoch = train_module._end_epoch

    def end_then_stop(run, **kwargs):
        end_epoch(run, **kwargs)
        if kwargs["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_end_epoch", end_then_stop)


def test_resume_with_more_epochs_keeps_the_learning_rate_schedule(store_path, tmp_path,
                                                                  monkeypatch):
    """A 4-epoch run stopped after epoch 2 and resumed with --epochs 6 trains epochs 3 and 4
    exactly as the uninterrupted 4-epoch run (same learning rates, so the same losses); epochs
    5 and 6 are a warm restart: a new cosine from the peak learning rate to 0."""
    kwargs = {"model": "mlp", "model_overrides": {"d_hidden": 8}, "batch_size": 32,
              "lr": 1e-2, "warmup_steps": 0, "progress": False}
    train(store_path, tmp_path / "whole", epochs=4, **kwargs)
    with monkeypatch.context() as patch:
        interrupted_after(2, patch)
        with pytest.raises(KeyboardInterrupt):
            train(store_path, tmp_path / "resumed", epochs=4, **kwargs)
    train(store_path, tmp_path / "resumed", epochs=6, resume=True, **kwargs)
    whole, resumed = metric_lines(tmp_path / "whole"), metric_lines(tmp_path / "resumed")
    assert [m["loss"] for m in resumed[:4]] == [m["loss"] for m in whole]
    assert [m["lr"] for m in resumed[:3]] == [m["lr"] for m in whole[:3]]
    assert whole[3]["lr"] == 0.0  # the 4-epoch cosine ends at 0 ...
    # ... then the restart: the lr after epoch 4 is the peak again, after epoch 5 half of it
    assert resumed[3]["lr"] == pytest.approx(1e-2) and resumed[4]["lr"] == pytest.approx(5e-3)
    assert resumed[5]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_streaming_training_equals_in_memory_training(store_path, tmp_path, monkeypatch):
    """Training that reads every batch from the shards (never loading a split: FeatureStore.load
    is disabled) gives the same losses, metrics and weights as training on the in-memory copy."""
    kwargs = {"model": tiny_config_file(tmp_path, dropout=0.1), "epochs": 2, "batch_size": 32,
              "progress": False}
    train(store_path, tmp_path / "memory", in_memory=True, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(FeatureStore, "load", lambda *a, **k: pytest.fail("a split was loaded"))
        train(store_path, tmp_path / "streamed", **kwargs)
    assert comparable(metric_lines(tmp_path / "streamed")) == comparable(
        metric_lines(tmp_path / "memory"))
    a, b = (read_checkpoint(tmp_path / r / "last.pt")["model_state"]
            for r in ("streamed", "memory"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reverse_share_reaches_training_and_leaves_a_mean_unchanged(store_path, tmp_path):
    """Windows played backwards change what MVPt (which sees the order) trains on, and leave the
    MLP (which sees the mean of the clips) where it was, up to float rounding of the sum."""
    def losses(model, share, name):
        overrides = {"mlp": {"d_hidden": 8}}.get(model, {})
        config = tiny_config_file(tmp_path) if model == "mvpt" else model
        train(store_path, tmp_path / name, model=config, model_overrides=overrides, epochs=2,
              batch_size=32, reverse_share=share, progress=False)
        return [m["loss"] for m in metric_lines(tmp_path / name)]

    assert losses("mvpt", 0.5, "mvpt-half") != pytest.approx(losses("mvpt", 0.0, "mvpt"),
                                                               rel=1e-4)
    assert losses("mlp", 1.0, "mlp-all") == pytest.approx(losses("mlp", 0.0, "mlp"), rel=1e-5)


@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_baselines_train_through_the_same_entry_point(model, store_path, tmp_path):
    overrides = {"mlp": {"d_hidden": 32, "d_joint": 16}, "linear": {"d_joint": 8}}[model]
    result = train(store_path, tmp_path / "run", model=model, model_overrides=overrides,
                   epochs=4, batch_size=32, lr=3e-3, progress=False)
    assert result["final"]["val_score"] > 3 * 10 / 64
    assert len(metric_lines(tmp_path / "run")) == (1 if model == "linear" else 4)
    loaded = Run.load(tmp_path / "run")
    assert loaded.config.kind == model
    emb = loaded.embed("video", [np.ones((40, 12), np.float16)])
    assert emb.shape == (1, overrides["d_joint"])


def test_batch_larger_than_training_set_is_clamped(tmp_path, caplog):
    store = tmp_path / "small"
    make_synthetic_store(store, n_train=20, n_val=8, video_dim=12, audio_dim=10)
    with caplog.at_level(logging.WARNING, logger="mvpt.train"):
        result = train(store, tmp_path / "run", model="mlp", model_overrides={"d_hidden": 8},
                       epochs=1, batch_size=2048, progress=False)
    assert "batch size 2048 is larger than the 20 training tracks: clamped to 20" in caplog.text
    assert result["global_batch_size"] == 20 and result["batch_size_clamped"]


def test_automatic_batch_size_gives_several_steps_per_epoch(tmp_path):
    from mvpt.train import auto_batch_size

    assert auto_batch_size(100_000) == 2048  # the paper's batch at scale
    assert auto_batch_size(478) == 59 and auto_batch_size(20) == 16
    store = tmp_path / "small"
    make_synthetic_store(store, n_train=200, n_val=8, video_dim=12, audio_dim=10)
    result = train(store, tmp_path / "run", model="mlp", model_overrides={"d_hidden": 8},
                   epochs=1, progress=False)
    assert result["global_batch_size"] == 25 and not result["batch_size_clamped"]


def test_run_folder_is_never_overwritten_and_resume_keeps_settings(store_path, tmp_path):
    run = tmp_path / "run"
    kwargs = {"model": "mlp", "model_overrides": {"d_hidden": 8}, "batch_size": 64, "progress": False}
    train(store_path, run, epochs=1, **kwargs)
    with pytest.raises(UsageError, match="holds a run already; pass --resume"):
        train(store_path, run, epochs=1, **kwargs)
    with pytest.raises(UsageError, match=r"other settings than the run: lr=0.01 \(run: 0.0005\)"):
        train(store_path, run, epochs=2, resume=True, lr=0.01, **kwargs)
    result = train(store_path, run, epochs=2, resume=True, **kwargs)
    assert result["resumed_from_epoch"] == 1 and [m["epoch"] for m in metric_lines(run)] == [1, 2]


def test_resume_without_lr_keeps_the_runs_own(store_path, tmp_path):
    """A run started at another peak learning rate (1e-3, the default before 5e-4) resumes
    without ``lr`` at its own; a new run without it gets the default."""
    run = tmp_path / "run"
    kwargs = {"model": "mlp", "model_overrides": {"d_hidden": 8}, "batch_size": 64, "progress": False}
    train(store_path, run, epochs=1, lr=1e-3, **kwargs)
    train(store_path, run, epochs=2, resume=True, **kwargs)
    assert read_checkpoint(run / "last.pt")["run_config"]["lr"] == 1e-3
    assert [m["epoch"] for m in metric_lines(run)] == [1, 2]
    train(store_path, tmp_path / "new", epochs=1, **kwargs)
    assert read_checkpoint(tmp_path / "new" / "last.pt")["run_config"]["lr"] == DEFAULT_LR == 5e-4


@pytest.mark.parametrize("clip", [0.0, 0.02])
def test_grad_clip_bounds_the_gradient_of_every_step(clip, store_path, tmp_path, monkeypatch):
    """With ``grad_clip`` the gradients AdamW steps on have at most that L2 norm (all
    parameters together); without it (0) the same run's gradients are longer."""
    norms = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    train(store_path, tmp_path / "run", model=tiny_config_file(tmp_path), epochs=2,
          batch_size=32, grad_clip=clip, progress=False)
    assert len(norms) == 2 * (192 // 32)
    if clip:
        assert max(norms) <= clip * (1 + 1e-5)
    else:
        assert min(norms) > 0.02  # so the bound above is the clipping's doing
    stored = read_checkpoint(tmp_path / "run" / "last.pt")["run_config"]
    assert stored["grad_clip"] == clip


def test_resume_without_grad_clip_keeps_the_runs_own(store_path, tmp_path):
    """Like ``lr``: a run resumes at its own clipping, a new run gets the default, and a run
    saved before the setting (no clipping then) resumes without it."""
    kwargs = {"model": "mlp", "model_overrides": {"d_hidden": 8}, "batch_size": 64,
              "progress": False}
    train(store_path, tmp_path / "run", epochs=1, grad_clip=0.5, **kwargs)
    train(store_path, tmp_path / "run", epochs=2, resume=True, **kwargs)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["run_config"]["grad_clip"] == 0.5
    with pytest.raises(UsageError, match=r"grad_clip=2.0 \(run: 0.5\)"):
        train(store_path, tmp_path / "run", epochs=3, resume=True, grad_clip=2.0, **kwargs)
    train(store_path, tmp_path / "new", epochs=1, **kwargs)
    assert (read_checkpoint(tmp_path / "new" / "last.pt")["run_config"]["grad_clip"]
            == DEFAULT_GRAD_CLIP)
    with pytest.raises(UsageError, match="grad_clip must be >= 0"):
        train(store_path, tmp_path / "bad", epochs=1, grad_clip=-1.0, **kwargs)


def test_a_run_saved_before_window_policies_resumes_with_per_track(store_path, tmp_path):
    """A last.pt written before issue 10 (no window_policy, the schedule a plain function) was
    trained with a length per track: resuming needs --window-policy per-track, and its 2-epoch
    cosine is followed by a warm restart over the 2 added epochs."""
    run = tmp_path / "run"
    kwargs = {"model": "mlp", "model_overrides": {"d_hidden": 8}, "batch_size": 64,
              "lr": 1e-2, "progress": False}
    # no warm-up, as every run before the warm-up default; resuming with the default keeps it
    train(store_path, run, epochs=2, window_policy="per-track", warmup_steps=0, **kwargs)
    ckpt = read_checkpoint(run / "last.pt")
    del ckpt["run_config"]["window_policy"]
    del ckpt["run_config"]["best_by"]  # made before the setting: best.pt by track-level R@10
    del ckpt["run_config"]["warmup_share"]  # (the same: a tenth, the only share there was)
    del ckpt["run_config"]["reverse_share"]  # (the same: no window played backwards)
    del ckpt["run_config"]["grad_clip"]  # (the same: no clipping)
    ckpt["training"]["scheduler"]["lr_lambdas"] = [None, None]
    torch.save(ckpt, run / "last.pt")
    with pytest.raises(UsageError, match=r"window_policy='per-batch' \(run: 'per-track'\)"):
        train(store_path, run, epochs=4, resume=True, **kwargs)
    train(store_path, run, epochs=4, resume=True, window_policy="per-track", **kwargs)
    lrs = [m["lr"] for m in metric_lines(run)]
    assert lrs[1] == 0.0 and lrs[2] == pytest.approx(5e-3) and lrs[3] == pytest.approx(0.0)
    stored = read_checkpoint(run / "last.pt")["run_config"]
    assert stored["best_by"] == "track-r10" and stored["reverse_share"] == 0.0
    assert stored["grad_clip"] == 0.0


def test_resume_refuses_a_store_of_other_encoders(store_path, tmp_path):
    run = tmp_path / "run"
    train(store_path, run, model="linear", progress=False)
    other = tmp_path / "other"
    shutil.copytree(store_path, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["encoders"]["audio"]["version"] = "2"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"audio encoder \('synthetic-audio', '2', 10\)"):
        Run.load(run).check(FeatureStore.open(other))
    with pytest.raises(ModelError, match="features do not fit the model"):
        train(other, run, model="linear", resume=True, progress=False)


def test_cli_train_and_models(store_path, tmp_path, capsys):
    assert cli_main(["models", "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["linear", "mlp", "mvpt"]
    run = str(tmp_path / "run")
    assert cli_main(["train", str(store_path), "--out", run, "--model", "linear",
                     "--window-policy", "fixed", "--warmup-share", "0.25", "--grad-clip", "3",
                     "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "linear" and summary["best"]["epoch"] == 1
    config = json.loads(Path(run, "config.json").read_text())
    assert config["run_config"]["window_policy"] == "fixed"
    assert config["run_config"]["warmup_share"] == 0.25 and config["run_config"]["lr"] == 5e-4
    assert config["run_config"]["grad_clip"] == 3.0
    assert cli_main(["train", str(store_path), "--out", run, "--model", "linear"]) == 2
    assert "holds a run already" in capsys.readouterr().err
    assert cli_main(["train", str(tmp_path / "nowhere"), "--out", run + "2"]) == 1


# ---------------------------------------------------------------------------- processes
def cli_command(store, run, config, *extra):
    return [sys.executable, "-m", "mvpt.cli", "train", str(store), "--out", str(run),
            "--model", str(config), "--batch-size", "32", "--no-progress", *extra]


def comparable(lines: list[dict]) -> list[dict]:
    """Metrics without the wall-clock fields."""
    return [{k: v for k, v in m.items() if k not in ("epoch_time_s", "tracks_per_s", "time")}
            for m in lines]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(store_path, tmp_path):
    """SIGKILL mid-run (after the first epoch's checkpoint, certainly before the last), then
    --resume: every epoch's loss and validation metrics, and the final weights, equal those of an
    uninterrupted run exactly (tolerance 0: CPU, one thread, windows and dropout seeded per
    epoch; dropout is on)."""
    config = tiny_config_file(tmp_path, dropout=0.1)
    epochs = ["--epochs", "3"]
    whole = subprocess.Popen(cli_command(store_path, tmp_path / "whole", config, *epochs),
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    epoch_at_kill = kill_after_first_checkpoint(
        cli_command(store_path, tmp_path / "killed", config, *epochs), tmp_path / "killed")
    assert 1 <= epoch_at_kill < 3
    resumed = subprocess.run(cli_command(store_path, tmp_path / "killed", config, *epochs,
                                         "--resume", "--json"),
                             env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from_epoch"] == epoch_at_kill
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    assert comparable(metric_lines(tmp_path / "killed")) == comparable(
        metric_lines(tmp_path / "whole"))
    a, b = (read_checkpoint(tmp_path / r / "last.pt")["model_state"] for r in ("killed", "whole"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def kill_after_first_checkpoint(command: list[str], run_dir: Path) -> int:
    """Start ``command``, freeze it (SIGSTOP) as soon as last.pt exists, check that it had not
    finished, then SIGKILL it; returns the epoch of the checkpoint it left."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = run_dir / "last.pt"
    try:
        while not last.exists() and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGSTOP)  # a stopped process can neither finish nor write
        assert process.poll() is None, "the run ended before it could be killed"
        epoch = read_checkpoint(last)["epoch"]
    finally:
        process.kill()
    assert process.wait() == -signal.SIGKILL
    return epoch


@pytest.mark.slow
def test_torchrun_two_processes_match_one(store_path, tmp_path):
    """Two gloo processes with the same global batch (16 tracks each, embeddings all-gathered
    with gradients) follow the one-process run: per-epoch loss within 1e-4 relative and
    validation metrics within 0.02 (observed: identical metrics, loss equal to ~1e-7)."""
    # torchrun ships with torch, beside this interpreter (on PATH in an activated environment)
    torchrun = shutil.which("torchrun") or shutil.which("torchrun", path=Path(sys.executable).parent)
    assert torchrun, "torchrun (shipped with torch) is not installed"
    config = tiny_config_file(tmp_path)
    args = ["--epochs", "3"]
    one = subprocess.Popen(cli_command(store_path, tmp_path / "one", config, *args),
                           env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2",
                          *cli_command(store_path, tmp_path / "two", config, *args)[1:]],
                         env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stderr[-2000:]
    assert one.wait(timeout=300) == 0, one.stderr.read()
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    for a, b in zip(metric_lines(tmp_path / "one"), metric_lines(tmp_path / "two"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        for key in ("val_score", "val_r1"):
            assert b[key] == pytest.approx(a[key], abs=0.02), key


def test_the_stores_k_is_only_the_default_of_a_new_model(tmp_path):
    store = tmp_path / "store"
    make_synthetic_store(store, n_train=16, n_val=4, video_dim=12, audio_dim=10)
    manifest = json.loads((store / "manifest.json").read_text())
    (store / "manifest.json").write_text(json.dumps({**manifest, "max_clips": 12}))
    train(store, tmp_path / "from-store", model="linear", progress=False)
    assert Run.load(tmp_path / "from-store").max_clips == 12
    train(store, tmp_path / "given", model="linear", progress=False,
          model_overrides={"max_clips": 20})
    assert Run.load(tmp_path / "given").max_clips == 20
