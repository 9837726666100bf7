"""Extraction into a feature store: contents, incremental adds, bad inputs, CLI, kill and resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mvpt.clips import ClipConfig
from mvpt.errors import StoreError
from mvpt.extract import Extractor, collect_items, extract, stable_split
from mvpt.store import FeatureStore
from tests.fixtures.fake_extraction import alive
from tests.fixtures.media_factory import make_bad_inputs, write_video


@pytest.fixture(scope="module")
def extractor():
    return Extractor()


def shard_stats(store_path: Path) -> dict:
    """(inode, mtime) of every file in every finished shard."""
    store = FeatureStore.open(store_path)
    return {str(f.relative_to(store_path)): (f.stat().st_ino, f.stat().st_mtime_ns)
            for d in store.shard_dirs() for f in sorted(d.iterdir())}


def make_videos(folder: Path, n: int, *, duration_s=3.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_video(folder / f"v{k:02d}.mp4", duration_s=duration_s + (k % 3), seed=k)
            for k in range(n)]


def test_extract_writes_clip_features(tmp_path, extractor):
    videos = make_videos(tmp_path / "media", 3)
    summary = extract([tmp_path / "media"], tmp_path / "store", extractor=extractor,
                      shard_size=2, progress=False)
    assert (summary.done, summary.failed, summary.skipped) == (3, 0, 0)
    store = FeatureStore.open(tmp_path / "store")
    assert len(store.shard_dirs()) == 2
    m = store.manifest
    assert m["clip_s"] == 1.0 and m["max_clips"] == 30
    assert m["encoders"]["video"]["name"] == "efficientnet-lite0"
    assert m["encoders"]["audio"]["name"] == "yamnet"
    rows = store.rows().set_index("id")
    for k, v in enumerate(videos):
        expected_clips = int(3.0 + k % 3)
        row = rows.loc[v.stem]
        assert row["n_clips"] == expected_clips and row["duration_s"] == expected_clips
        assert row["source_path"] == str(v) and row["split"] == stable_split(v.stem)
        arrays = store.read(v.stem)
        assert arrays["video"].shape == (expected_clips, 1280)
        assert arrays["audio"].shape == (expected_clips, 1024)
        assert arrays["audio_scores"].shape == (expected_clips, 521)
        assert np.isfinite(arrays["video"].astype(np.float32)).all()
    # the stored features are the encoders' outputs on the clips' middle frames and audio
    from mvpt import media

    frames = media.read_frames(videos[2], [0.5, 1.5, 2.5, 3.5, 4.5], size=(224, 224))
    direct = extractor.video.encode_frames(frames).astype(np.float16)
    np.testing.assert_allclose(store.read("v02")["video"], direct, atol=2e-3)
    wave = media.read_audio(videos[2], sample_rate_hz=16000, end_s=5.0)
    bounds = np.array([[k, k + 1.0] for k in range(5)])
    direct = extractor.audio.encode_clips(wave, bounds)["embedding"].astype(np.float16)
    np.testing.assert_allclose(store.read("v02")["audio"], direct, atol=2e-3)


def test_adding_files_extracts_only_them(tmp_path, extractor):
    make_videos(tmp_path / "media", 2)
    extract([tmp_path / "media"], tmp_path / "store", extractor=extractor, progress=False)
    before = shard_stats(tmp_path / "store")
    write_video(tmp_path / "media" / "new.mp4", duration_s=2.0, seed=9)
    summary = extract([tmp_path / "media"], tmp_path / "store", extractor=extractor,
                      progress=False)
    assert (summary.done, summary.skipped) == (1, 2)
    after = shard_stats(tmp_path / "store")
    assert {k: after[k] for k in before} == before
    assert len(after) > len(before)
    again = extract([tmp_path / "media"], tmp_path / "store", extractor=extractor,
                    progress=False)
    assert (again.done, again.failed, again.skipped) == (0, 0, 3)


def test_store_with_other_clip_length_is_refused(tmp_path, extractor):
    make_videos(tmp_path / "media", 1)
    extract([tmp_path / "media"], tmp_path / "store", extractor=extractor, progress=False)
    other = Extractor(clip=ClipConfig(clip_s=0.5))
    with pytest.raises(StoreError, match="clip_s=1.0, not clip_s=0.5.*another --out"):
        extract([tmp_path / "media"], tmp_path / "store", extractor=other, progress=False)


# An extraction needs frames and audio over whole clips: the media reader accepts a 0.5 s file,
# but it holds no 1 s clip.
EXTRACTION_FAILS = {"short": "shorter than one clip"}
REASONS = {
    "zero_bytes": "empty|zero|no data|invalid",
    "text_as_mp4": "not a media file|invalid|unrecognised|unknown",
    "missing": "not found|no such file|does not exist",
    "no_audio": "no audio stream",
    "no_video": "no video stream",
    "short": "shorter than one clip",
}


@pytest.mark.slow
def test_bad_inputs_mixed_with_good_files(tmp_path, extractor):
    good = make_videos(tmp_path / "good", 2)
    extract(good, tmp_path / "store", extractor=extractor, progress=False)
    before_stats = shard_stats(tmp_path / "store")
    before_rows = FeatureStore.open(tmp_path / "store").rows(status=None)

    cases = make_bad_inputs(tmp_path / "bad")
    assert len({c.kind for c in cases}) >= 12
    more_good = make_videos(tmp_path / "good2", 2)
    inputs = [c.path for c in cases] + more_good
    summary = extract(inputs, tmp_path / "store", extractor=extractor, progress=False)

    store = FeatureStore.open(tmp_path / "store")
    rows = store.rows(status=None).set_index("source_path")
    for c in cases:
        row = rows.loc[str(c.path)]
        if c.expect == "ok" and c.kind not in EXTRACTION_FAILS:
            assert row["status"] == "done", (c.kind, row["error"])
            assert row["n_clips"] >= 1
        else:
            assert row["status"] == "failed", c.kind
            assert row["error"].startswith(str(c.path)), row["error"]
            assert "\n" not in row["error"]
            if c.kind in REASONS:
                assert re.search(REASONS[c.kind], row["error"], re.IGNORECASE), (
                    c.kind, row["error"])
    for v in more_good:
        assert rows.loc[str(v), "status"] == "done"
    assert summary.done + summary.failed == len(inputs)
    # nothing already in the store changed
    after = shard_stats(tmp_path / "store")
    assert {k: after[k] for k in before_stats} == before_stats
    kept = store.rows(status=None).set_index("id").loc[before_rows["id"]]
    assert kept["n_clips"].tolist() == before_rows["n_clips"].tolist()


def test_manifest_csv_regions_and_splits(tmp_path, extractor):
    v = write_video(tmp_path / "media" / "long.mp4", duration_s=6.0)
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("id,path,split,start_s,end_s\n"
                        "whole,media/long.mp4,test,,\n"
                        "part,media/long.mp4,,1.5,4.0\n"
                        f"abs,{v},val,4.2,\n", encoding="utf-8")
    items = {it.id: it for it in collect_items([csv_path])}
    assert items["part"].split == stable_split("part") and items["whole"].split == "test"
    extract([csv_path], tmp_path / "store", extractor=extractor, progress=False)
    rows = FeatureStore.open(tmp_path / "store").rows().set_index("id")
    assert rows.loc["whole", "n_clips"] == 6
    assert rows.loc["part", "n_clips"] == 2  # 1.5-3.5 s: whole clips inside 1.5-4.0
    assert rows.loc["part", "start_s"] == 1.5 and rows.loc["part", "end_s"] == 3.5
    assert rows.loc["abs", "n_clips"] == 1 and rows.loc["abs", "split"] == "val"


def test_stable_split_proportions():
    splits = [stable_split(f"video-{k}") for k in range(5000)]
    fractions = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(fractions["train"] - 0.8) < 0.03 and abs(fractions["test"] - 0.1) < 0.02
    assert stable_split("abc") == stable_split("abc")


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "mvpt.cli", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


def test_cli_exit_codes_and_json(tmp_path):
    (tmp_path / "junk.mp4").write_text("not a video")
    res = run_cli("extract", tmp_path / "junk.mp4", "--out", tmp_path / "s", "--no-progress")
    assert res.returncode == 1
    assert f"{tmp_path / 'junk.mp4'}:" in res.stderr and "Traceback" not in res.stderr
    write_video(tmp_path / "ok.mp4", duration_s=2.0)
    res = run_cli("extract", tmp_path / "ok.mp4", tmp_path / "junk.mp4", "--out",
                  tmp_path / "s", "--no-progress", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (1, 1, 0)
    res = run_cli("extract", tmp_path / "ok.mp4", "--out", tmp_path / "s", "--no-progress")
    assert res.returncode == 0 and "0 done, 0 failed, 1 skipped" in res.stdout
    res = run_cli("extract", "--out", tmp_path / "s")
    assert res.returncode == 2


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    videos = make_videos(tmp_path / "media", 10, duration_s=2.0)
    args = ["extract", tmp_path / "media", "--shard-size", "2", "--no-progress"]
    run_cli(*args, "--out", tmp_path / "reference", check=True)

    proc = subprocess.Popen([sys.executable, "-m", "mvpt.cli", *map(str, args), "--out",
                             str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed" / "shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(shards.glob("shard-*/DONE")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(shards.glob("shard-*/DONE")))
    assert 1 <= finished < 5, "the kill must land between the first and the last shard"
    before = shard_stats(tmp_path / "killed")

    res = run_cli(*args, "--out", tmp_path / "killed", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["skipped"] == 2 * finished  # finished items are not encoded again
    assert summary["done"] == len(videos) - 2 * finished
    after = shard_stats(tmp_path / "killed")
    assert {k: after[k] for k in before} == before  # finished shards untouched

    ref, got = FeatureStore.open(tmp_path / "reference"), FeatureStore.open(tmp_path / "killed")
    cols = ["id", "source_path", "start_s", "end_s", "duration_s", "split", "status", "n_clips"]
    ref_rows = ref.rows().sort_values("id")[cols].reset_index(drop=True)
    got_rows = got.rows().sort_values("id")[cols].reset_index(drop=True)
    assert ref_rows.equals(got_rows)
    ids = ref_rows["id"].tolist()
    a, b = ref.load(ids=ids), got.load(ids=ids)
    for name in ("video", "audio", "audio_scores"):
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])


def test_ids_from_file_names_are_made_unique(tmp_path):
    from mvpt.extract import Item, _unique_ids

    a, b = tmp_path / "x" / "clip.mp4", tmp_path / "y" / "clip.mp4"
    items = collect_items([a, b, a])
    assert [it.path for it in items] == [str(a), str(b)]  # a file listed twice is kept once
    assert items[0].id == "clip" and items[1].id.startswith("clip~")
    # a new file whose name is taken in the store by another file gets its own id
    again = _unique_ids([Item("clip", str(b), "train")], {"clip": str(a)})
    assert again[0].id == items[1].id
    with pytest.raises(Exception, match="given to two files"):
        _unique_ids([Item("k", "p1", "train", named=True), Item("k", "p2", "train", named=True)],
                    {})


def test_decode_workers_exit_when_their_parent_is_killed():
    script = Path(__file__).parent / "fixtures" / "orphan_pool.py"
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())
    assert alive(worker)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker), "the decode worker outlived its killed parent"


@pytest.mark.parametrize("workers, env, expected", [
    (1, None, "AUTO"),  # one decode process: FFmpeg's threads spread its work over the cores
    (2, None, "NONE"),  # several: the processes are the parallelism, each decodes on one thread
    (2, "FRAME", "FRAME"),  # the user's MVPT_DECODE_THREADS wins
])
def test_several_decode_processes_decode_single_threaded(tmp_path, monkeypatch, workers, env,
                                                         expected):
    from mvpt.extract import _decoded_stream
    from tests.fixtures.fake_extraction import FakeExtractor, fake_inputs, thread_type_decode

    if env is None:
        monkeypatch.delenv("MVPT_DECODE_THREADS", raising=False)
    else:
        monkeypatch.setenv("MVPT_DECODE_THREADS", env)
    items = collect_items(fake_inputs(tmp_path, 3))
    decoded = list(_decoded_stream(items, FakeExtractor().decode_spec(), workers,
                                   decode=thread_type_decode))
    assert [d.title for d in decoded] == [expected] * 3


# ------------------------------------------------------------------------------ decoder crashes
def test_a_file_that_crashes_its_decoder_is_recorded_and_the_run_goes_on(tmp_path):
    """Issue 12, finding 4: a killed decode worker ended the run with BrokenProcessPool, and the
    file was never recorded, so every rerun died on it."""
    from tests.fixtures.fake_extraction import FakeExtractor, fake_inputs

    inputs = fake_inputs(tmp_path, 5)
    inputs.insert(2, tmp_path / "crash-me.mp4")
    summary = extract(inputs, tmp_path / "store", extractor=FakeExtractor(), shard_size=4,
                      decode_workers=1, progress=False)
    assert (summary.done, summary.failed) == (5, 1)
    failure = summary.failures[0]
    assert failure["id"] == "crash-me"
    assert failure["error"] == (f"{tmp_path / 'crash-me.mp4'}: the decoder crashed on this file "
                                "(its process died while decoding it)")
    store = FeatureStore.open(tmp_path / "store")
    assert store.rows()["id"].tolist() == [p.stem for p in inputs if p.stem != "crash-me"]
    assert store.rows(status="failed")["error"].tolist() == [failure["error"]]
    again = extract(inputs, tmp_path / "store", extractor=FakeExtractor(), decode_workers=1,
                    progress=False)
    assert (again.skipped, again.done, again.failed) == (6, 0, 0)  # the rerun does not die on it


@pytest.mark.slow
def test_a_file_that_hangs_its_decoder_times_out(tmp_path):
    from tests.fixtures.fake_extraction import FakeExtractor, fake_inputs

    inputs = [*fake_inputs(tmp_path, 2), tmp_path / "hang-me.mp4", *fake_inputs(tmp_path, 2,
                                                                                prefix="late")]
    summary = extract(inputs, tmp_path / "store", extractor=FakeExtractor(), decode_workers=2,
                      decode_timeout_s=4, progress=False)
    assert (summary.done, summary.failed) == (4, 1)
    assert summary.failures[0]["error"] == (f"{tmp_path / 'hang-me.mp4'}: decoding took longer "
                                            "than 4 s (timed out; the decoder was stopped)")
    rows = FeatureStore.open(tmp_path / "store").rows(status=None)
    assert rows["id"].tolist() == [p.stem for p in inputs]  # order kept around the retry
