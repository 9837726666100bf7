"""Length-shortcut control on a tiny store with stand-in models."""

from __future__ import annotations

import numpy as np
import pytest

import mvpt.eval
from mvpt import cli
from mvpt.analysis.shortcut import shortcut_control, summary_markdown
from mvpt.store import FeatureStore, ItemResult

DIM = 4


def make_store(path, clips, *, rng):
    store = FeatureStore.create(path, {
        "encoders": {"video": {"name": "v", "version": "1", "dim": DIM},
                     "audio": {"name": "a", "version": "1", "dim": DIM}},
        "clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30})
    results = []
    for i, n in enumerate(clips):
        video = rng.normal(size=(n, DIM))
        results.append(ItemResult(id=f"t{i}", source_path=f"t{i}.mp4", split="test",
                                  status="done", arrays={"video": video,
                                                         "audio": video + 0.3 * rng.normal(size=(n, DIM))}))
    store.write_shard(results)
    return path


def mean_embed(modality, sequences):
    out = np.stack([s.mean(axis=0) for s in sequences]).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def length_embed(modality, sequences):
    """A model that sees only the length: a one-hot of the clip count."""
    return np.eye(31, dtype=np.float32)[[len(s) for s in sequences]]


@pytest.fixture
def store(tmp_path, rng):
    return make_store(tmp_path / "store", [5, 5, 5, 5, 8, 8, 8, 12, 12, 12, 12, 12, 20, 20, 20, 20],
                      rng=rng)


def test_length_only_model_gains_nothing_under_control(store):
    result = shortcut_control([None, None], store, names=["content", "length"],
                              embed_fns=[mean_embed, length_embed])
    normal, control = result["settings"]
    assert not normal["same_length"] and control["same_length"]
    content = {s["setting"]: s["runs"][0]["metrics"] for s in result["settings"]}
    length = {s["setting"]: s["runs"][1]["metrics"] for s in result["settings"]}
    # the length-only model is exactly at chance once lengths carry no information ...
    for key in ("video_to_music_R@1", "music_to_video_R@1", "mean_R@10"):
        assert length["same-length candidates"][key] == pytest.approx(control["chance"][key])
    # ... and above chance without the control; it is chance restricted to same-length groups
    assert length["all candidates"]["video_to_music_R@1"] == pytest.approx(
        control["chance"]["video_to_music_R@1"])
    assert length["all candidates"]["video_to_music_R@1"] > normal["chance"]["video_to_music_R@1"]
    # a content model keeps beating chance under the control
    assert content["same-length candidates"]["video_to_music_R@1"] > \
        2 * control["chance"]["video_to_music_R@1"]
    assert control["chance"]["mean_candidates"] < normal["chance"]["mean_candidates"] == 16
    text = summary_markdown(result)
    assert "length (same-length candidates)" in text and "chance (all candidates)" in text


def test_cli_writes_report(store, tmp_path, monkeypatch, capsys):
    real = mvpt.eval.evaluate_levels
    monkeypatch.setattr(mvpt.eval, "evaluate_levels",
                        lambda run, path, **kw: real(None, path, **{**kw, "embed_fn": mean_embed}))
    out = tmp_path / "out"
    assert cli.main(["analyze", "shortcut", "runA", "runB", str(store), "--out", str(out),
                     "--names", "mvpt,mlp"]) == 0
    assert "mlp (same-length candidates)" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"shortcut.json", "shortcut.md", "shortcut.png"}
    assert cli.main(["analyze", "shortcut", str(store)]) == 2
