"""benchmarks/recipe_suite.py: each ablation row's settings reach `mvpt train`, and a run is
evaluated at every level its tables use (the figures themselves are never asserted)."""

import dataclasses
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import feature_suite  # noqa: E402
import recipe_suite  # noqa: E402

TINY = {"d_hidden": 16, "d_feedforward": 32, "n_heads": 2}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    config = dataclasses.replace(feature_suite.SUITE["base"], name="tiny", n_tracks=60,
                                 video_dim=12, audio_dim=10)
    return feature_suite.ensure_store(config, tmp_path_factory.mktemp("suite"))


@pytest.mark.parametrize("row, steps, twins", [("epochs-2", 2 * (42 // 16), 2),
                                               ("one-window-2", 2 * (42 // 16), 1)])
def test_a_rows_settings_reach_train(row, steps, twins, tiny_store, tmp_path, monkeypatch):
    """A row's run settings are what train() runs with (the benchmark once changed a function
    attribute instead of the module's, and a row silently trained with the defaults)."""
    rows = dict(recipe_suite.ROWS)
    rows["epochs-2"] = ("2 epochs", {"epochs": 2}, {})
    rows["one-window-2"] = ("2 epochs, one window", {"epochs": 2, "windows_per_track": 1}, {})
    monkeypatch.setattr(recipe_suite, "ROWS", rows)
    seen = {}
    import importlib

    train_module = importlib.import_module("mvpt.train")
    real_train = train_module.train

    def spy(*args, **kwargs):
        out = real_train(*args, **kwargs)
        seen.update(kwargs)
        return out

    monkeypatch.setattr(train_module, "train", spy)
    job = {"config": "tiny", "row": row, "model": "mvpt", "seed": 0, "store": str(tiny_store),
           "work": str(tmp_path), "key": f"tiny/{row}/mvpt-s0", "mvpt_size": TINY}
    record = recipe_suite.run_one(job)
    assert record["steps"] == steps and record["batch"] == 16
    assert seen.get("windows_per_track", 2) == twins
    for level in ("track", "segment", "track-windows"):
        for d in recipe_suite.DIRECTIONS:
            assert 0.0 <= record[f"{level}_{d}_R@1"] <= record[f"{level}_{d}_R@10"] <= 1.0
    assert record["track_pool"] == 9 and record["track-windows_pool"] == 60
    assert not any(tmp_path.iterdir())  # checkpoints are deleted after the run


def test_handmade_reference_sees_order_at_both_levels(tmp_path):
    """Without clip noise and with every track an order-only sibling, CCA on the plain mean of a
    window cannot tell siblings apart at track level, and ordered chunks can; at segment level
    (the 10-clip segments `mvpt eval` cuts) ordered chunks still help, by less."""
    config = dataclasses.replace(feature_suite.SUITE["order-heavy"], name="clean",
                                 order_share=1.0, noise=0.0)
    store = feature_suite.ensure_store(config, tmp_path)
    mean, ordered = (feature_suite.handmade_reference(store, chunks=k) for k in (1, 6))
    assert ordered >= 0.95 and mean <= 0.6
    segment = [feature_suite.handmade_reference(store, chunks=k, segment_clips=10) for k in (1, 5)]
    assert segment[1] >= 0.9 and segment[0] <= segment[1] - 0.1 and segment[0] > mean


def test_noise_free_ceilings():
    """Every track alone: nothing ties at track level, order or not. Every track an order-only
    sibling (groups of 2 or 3): a model blind to order ties with the siblings (R@1 1/2 or 1/3),
    one that sees order does not; 10-clip segments tie less (their multisets differ more often),
    and never more for the order-aware model than for the order-free one."""
    alone = dataclasses.replace(feature_suite.SUITE["base"], order_share=0.0, n_tracks=60)
    assert feature_suite.ceilings(alone) == {"order-aware": 1.0, "order-free": 1.0}
    grouped = dataclasses.replace(alone, order_share=1.0)
    track = feature_suite.ceilings(grouped)
    assert track["order-aware"] == 1.0 and 1 / 3 <= track["order-free"] <= 1 / 2
    segment = feature_suite.ceilings(grouped, segment_clips=10)
    assert track["order-free"] < segment["order-free"] <= segment["order-aware"] < 1.0



def test_segment_errors_name_what_a_mistake_confused(tmp_path):
    """Without clip noise, a model that reads each clip's hidden factors in order errs only on a
    segment with the very same clips (a tie broken by listing order): one of its own track or of
    an order-only sibling. One blind to order also takes siblings whose segment holds the same
    sections in another order, never another genre's track. Were the store's items matched to
    the wrong hidden tracks, mistakes would land on other genres."""
    import numpy as np

    import segment_errors

    config = dataclasses.replace(feature_suite.SUITE["order-heavy"], name="tiny-errors",
                                 n_tracks=90, noise=0.0, order_share=1.0, video_dim=12,
                                 audio_dim=10)
    genres, themes, maps, tracks, _ = feature_suite._world(config)
    latents = np.concatenate([feature_suite.clip_latents(t, genres=genres, themes=themes,
                                                         genre_weight=config.genre_weight)
                              for t, _split in tracks])
    seen = {m: maps(m, latents) for m in ("video", "audio")}

    def hidden(modality, sequence):  # each clip's factors, found from its noise-free features
        d = ((sequence[:, None, :] - seen[modality][None]) ** 2).sum(-1)
        return latents[d.argmin(1)]

    def unit(rows):  # a run's embeddings are L2-normalised, so the top score is the nearest
        rows = np.stack(rows).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    ordered = lambda m, seqs: unit([hidden(m, s).ravel() for s in seqs])
    blind = lambda m, seqs: unit([hidden(m, s).mean(0) for s in seqs])

    def counts(embed):
        out = segment_errors.segment_errors(None, config, stores=tmp_path, embed_fn=embed)
        assert out["video_to_music"] == out["music_to_video"]  # the same factors both ways
        return out["video_to_music"]

    exact, mean = counts(ordered), counts(blind)
    assert sum(exact.values()) == sum(mean.values()) > 0
    assert exact["same genre"] == exact["other"] == mean["same genre"] == mean["other"] == 0
    assert exact["right"] > mean["right"] and mean["order sibling"] > exact["order sibling"]
