"""The feature store: layout, atomic shards, reading back, compatibility, one writer, checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mvpt.errors import StoreError
from mvpt.store import FeatureStore, ItemResult, compat_problem


def manifest(video_dim=4, version="1", clip_s=1.0):
    return {
        "clip_s": clip_s, "max_clips": 30, "frames_per_clip": 1,
        "encoders": {
            "video": {"name": "v", "version": version, "dim": video_dim},
            "audio": {"name": "a", "version": "1", "dim": 3, "extras": {"scores": 2}},
        },
    }


def item(rng, iid, n, split="train", video_dim=4):
    return ItemResult(
        id=iid, source_path=f"/m/{iid}.mp4", split=split, status="done", duration_s=float(n),
        end_s=float(n),
        arrays={"video": rng.normal(size=(n, video_dim)), "audio": rng.normal(size=(n, 3)),
                "audio_scores": rng.random((n, 2))},
    )


def test_round_trip_and_layout(tmp_path, rng):
    store = FeatureStore.create(tmp_path / "s", manifest())
    a, b = item(rng, "a", 3), item(rng, "b", 5, split="test")
    bad = ItemResult(id="c", source_path="/m/c.mp4", split="train", status="failed",
                     error="/m/c.mp4: no audio stream")
    shard = store.write_shard([a, bad, b])
    assert sorted(p.name for p in shard.iterdir()) == [
        "DONE", "audio.npy", "audio_scores.npy", "offsets.npy", "rows.parquet", "video.npy"]
    # plain numpy and pandas can read it
    np.testing.assert_array_equal(np.load(shard / "offsets.npy"), [0, 3, 3, 8])
    video = np.load(shard / "video.npy")
    assert video.dtype == np.float16 and video.shape == (8, 4)
    rows = pd.read_parquet(shard / "rows.parquet")
    assert rows["id"].tolist() == ["a", "c", "b"]
    assert rows.loc[1, "error"] == "/m/c.mp4: no audio stream"

    s2 = FeatureStore.open(tmp_path / "s")
    got = s2.read("b")
    np.testing.assert_allclose(got["video"], b.arrays["video"].astype(np.float16))
    assert got["audio_scores"].shape == (5, 2)
    assert s2.rows()["id"].tolist() == ["a", "b"]
    assert s2.rows(status="failed")["id"].tolist() == ["c"]
    assert s2.rows(split="test")["id"].tolist() == ["b"]
    with pytest.raises(StoreError, match="failed extraction: /m/c.mp4: no audio stream"):
        s2.read("c")
    with pytest.raises(StoreError, match="no item 'zz'"):
        s2.read("zz")


def test_load_concatenates_across_shards_in_order(tmp_path, rng):
    store = FeatureStore.create(tmp_path / "s", manifest())
    items = [item(rng, f"i{k}", k + 1) for k in range(5)]
    store.write_shard(items[:2])
    store.write_shard(items[2:])
    feats = FeatureStore.open(tmp_path / "s").load(arrays=["audio"])
    assert feats.ids == [f"i{k}" for k in range(5)]
    np.testing.assert_array_equal(feats.n_clips, [1, 2, 3, 4, 5])
    for k, it in enumerate(items):
        np.testing.assert_array_equal(feats.item(k, "audio"), it.arrays["audio"].astype(np.float16))
    picked = FeatureStore.open(tmp_path / "s").load(ids=["i3", "i0"])
    assert picked.ids == ["i3", "i0"]


def test_newest_shard_supersedes_an_id(tmp_path, rng):
    store = FeatureStore.create(tmp_path / "s", manifest())
    store.write_shard([ItemResult(id="x", source_path="p", split="train", status="failed",
                                  error="p: truncated")])
    again = item(rng, "x", 2)
    store.write_shard([again])
    s = FeatureStore.open(tmp_path / "s")
    assert s.rows()["id"].tolist() == ["x"] and s.summary()["failed"] == 0


def test_unfinished_shard_is_invisible_and_removed(tmp_path, rng):
    store = FeatureStore.create(tmp_path / "s", manifest())
    done = store.write_shard([item(rng, "a", 2)])
    stat_before = (done / "video.npy").stat()
    partial = store.write_shard([item(rng, "b", 2)])
    (partial / "DONE").unlink()  # as if killed before the marker
    s = FeatureStore.open(tmp_path / "s")
    assert s.rows()["id"].tolist() == ["a"]
    assert s.remove_unfinished() == [partial] and not partial.exists()
    after = (done / "video.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat_before.st_ino, stat_before.st_mtime_ns)
    # the next shard reuses the freed number
    assert s.next_shard_dir().name == partial.name


def test_incompatible_store_is_refused(tmp_path):
    FeatureStore.create(tmp_path / "s", manifest())
    with pytest.raises(StoreError, match=r"video encoder \('v', '1', 4\).*not \('v', '2', 4\)"):
        FeatureStore.create(tmp_path / "s", manifest(version="2"))
    with pytest.raises(StoreError, match="clip_s=1.0, not clip_s=0.5"):
        FeatureStore.create(tmp_path / "s", manifest(clip_s=0.5))
    assert compat_problem(manifest(), manifest()) is None


def test_shape_mismatch_and_bad_folders(tmp_path, rng):
    store = FeatureStore.create(tmp_path / "s", manifest())
    wrong = item(rng, "w", 3, video_dim=5)
    with pytest.raises(StoreError, match=r"'video' has shape \(3, 5\), expected \(3, 4\)"):
        store.write_shard([wrong])
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore.open(tmp_path / "nothing")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("hi")
    with pytest.raises(StoreError, match="not empty and is not a feature store"):
        FeatureStore.create(tmp_path / "full", manifest())
    (tmp_path / "s" / "manifest.json").write_text("{broken")
    with pytest.raises(StoreError, match="unreadable manifest"):
        FeatureStore.open(tmp_path / "s")


def test_manifest_is_json_with_format_version(tmp_path):
    FeatureStore.create(tmp_path / "s", manifest())
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["encoders"]["audio"]["extras"] == {"scores": 2}


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path, rng):
    path = tmp_path / "s"
    with FeatureStore.writing(path, manifest()) as store:
        store.write_shard([item(rng, "a", 2)])
        unfinished = store.next_shard_dir()
        unfinished.mkdir()  # the first writer is halfway through its next shard
        with pytest.raises(StoreError, match=rf"^{path}: feature store in use by pid "
                                             rf"{os.getpid()} "):
            with FeatureStore.writing(path, manifest()):
                pass
        assert unfinished.is_dir()  # the refused writer removed nothing
    with FeatureStore.writing(path, manifest()) as again:  # released at the end of the block
        assert again.rows()["id"].tolist() == ["a"] and not unfinished.exists()


def test_a_shard_folder_removed_underneath_is_not_recreated(tmp_path, rng, monkeypatch):
    """Issue 12, finding 2: another writer removed this writer's unfinished shard between two of
    its files; the folder was recreated and DONE written without the first file."""
    store = FeatureStore.create(tmp_path / "s", manifest())
    real_replace = os.replace

    def replace_then_another_writer_cleans_up(src, dst):
        real_replace(src, dst)
        if str(dst).endswith("audio.npy"):
            FeatureStore.open(tmp_path / "s").remove_unfinished()

    monkeypatch.setattr(os, "replace", replace_then_another_writer_cleans_up)
    with pytest.raises(StoreError, match="shard folder was removed while being written"):
        store.write_shard([item(rng, "a", 2)])
    monkeypatch.undo()
    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.shard_dirs(done_only=False) == [] and len(reopened.load()) == 0


def break_shards(store: FeatureStore) -> dict[str, str]:
    """Damage the first three of four shards as a bug or a power loss could; shard name -> what
    `check` should say."""
    shards = store.shard_dirs()
    (shards[0] / "audio.npy").unlink()
    (shards[1] / "video.npy").write_bytes(b"")  # renamed into place, data never reached the disk
    np.save(shards[2] / "audio_scores.npy", np.zeros((1, 2), np.float16))
    return {shards[0].name: "audio.npy missing or unreadable (FileNotFoundError",
            shards[1].name: "video.npy missing or unreadable (EOFError",
            shards[2].name: "audio_scores.npy is float16 (1, 2), expected float16 (2, 2)"}


def test_check_finds_every_broken_done_shard(tmp_path, rng):
    store = FeatureStore.create(tmp_path / "s", manifest())
    for k in range(4):
        store.write_shard([item(rng, f"i{k}", 2)])
    assert store.check() == []
    expected = break_shards(store)
    found = {d.name: why for d, why in FeatureStore.open(tmp_path / "s").check()}
    assert sorted(found) == sorted(expected)
    for name, why in expected.items():
        assert found[name].startswith(why), found[name]
    with pytest.raises(StoreError, match=r"shard-00000: broken shard \(audio.npy missing"):
        FeatureStore.open(tmp_path / "s").load()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mvpt.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_store_check_command(tmp_path, rng):
    store = FeatureStore.create(tmp_path / "s", manifest())
    for k in range(4):
        store.write_shard([item(rng, f"i{k}", 2)])
    res = run_cli("store", "check", tmp_path / "s")
    assert res.returncode == 0 and "is sound (4 finished shards)" in res.stdout, res.stderr
    expected = break_shards(store)
    res = run_cli("store", "check", tmp_path / "s")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 3, res.stderr
    for line, (name, why) in zip(lines, sorted(expected.items())):
        assert line.startswith(f"{tmp_path / 's' / 'shards' / name}: {why}")
    res = run_cli("store", "check", tmp_path / "s", "--remove-broken")
    assert res.returncode == 0 and "3 broken shard(s) removed" in res.stdout, res.stderr
    assert run_cli("store", "check", tmp_path / "s").returncode == 0
    assert FeatureStore.open(tmp_path / "s").rows()["id"].tolist() == ["i3"]
    res = run_cli("store", "check", tmp_path / "nothing")
    assert res.returncode == 1 and "not a feature store" in res.stderr
