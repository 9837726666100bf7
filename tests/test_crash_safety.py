"""Crash safety: writes are durable before they are vouched for, and a kill at any filesystem call
of shard writing, index commit or checkpoint save leaves state a reader and a resume handle."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mvpt.store import FeatureStore
from tests.fixtures.fake_extraction import FakeExtractor, fake_inputs

KILL_POINTS = Path(__file__).parent / "fixtures" / "kill_points.py"


@pytest.fixture
def fs_calls(monkeypatch) -> list[tuple]:
    """Every os.fsync (as the path of its descriptor) and os.replace, in order."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))))
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        real_replace(src, dst, **kwargs)
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def unsynced_renames(events: list[tuple]) -> list[str]:
    """Renames whose data was not flushed before, or whose folder was not flushed after."""
    problems = []
    for i, event in enumerate(events):
        if event[0] != "replace":
            continue
        _, src, dst = event
        if ("fsync", src) not in events[:i]:
            problems.append(f"{dst}: renamed into place before its data was flushed")
        if ("fsync", os.path.dirname(dst)) not in events[i + 1:]:
            problems.append(f"{dst}: its folder was not flushed after the rename")
    return problems


def renamed(events: list[tuple]) -> list[str]:
    return [os.path.basename(e[2]) for e in events if e[0] == "replace"]


def test_shard_files_are_flushed_before_done_vouches_for_them(tmp_path, fs_calls):
    from mvpt.extract import extract

    extract(fake_inputs(tmp_path, 3), tmp_path / "store", extractor=FakeExtractor(),
            shard_size=2, decode_workers=0, progress=False)
    names = renamed(fs_calls)
    assert names.count("DONE") == 2 and names.count("video.npy") == 2
    assert "manifest.json" in names and "rows.parquet" in names
    assert unsynced_renames(fs_calls) == []
    shards = os.path.realpath(tmp_path / "store" / "shards")
    first_done = next(i for i, e in enumerate(fs_calls) if e[0] == "replace"
                      and e[2].endswith("DONE"))
    assert ("fsync", shards) in fs_calls[:first_done]  # the new shard's folder entry too


def test_index_commit_and_checkpoint_are_flushed(tmp_path, fs_calls):
    from mvpt.index import build_index
    from tests.fixtures.toy_index import make_linear_run, write_music

    run = make_linear_run(tmp_path / "run")
    assert renamed(fs_calls) == ["best.pt"]
    (tmp_path / "music").mkdir()
    music = write_music(tmp_path / "music" / "a.m4a", ["low", "high"], section_s=4.0)
    fs_calls.clear()
    build_index(run, [music], tmp_path / "index", progress=False, decode_workers=0,
                window_s=4.0, stride_s=2.0)
    names = renamed(fs_calls)
    assert {"windows-00001.parquet", "vectors-00001.faiss", "index.json", "DONE"} <= set(names)
    assert unsynced_renames(fs_calls) == []


def test_atomic_writers(tmp_path, fs_calls):
    from mvpt.fileio import atomic_path, atomic_save_npy, atomic_write_bytes, atomic_write_json

    atomic_write_bytes(tmp_path / "a" / "b.bin", b"xyz")
    atomic_write_json(tmp_path / "c.json", {"k": [1, 2]})
    atomic_save_npy(tmp_path / "d.npy", np.arange(3, dtype=np.int64))
    with atomic_path(tmp_path / "e.txt") as tmp:
        assert tmp.name.startswith(".e.txt.") and tmp.suffix == ".txt"  # for ffmpeg & co.
        tmp.write_text("from another writer")  # e.g. ffmpeg or pyarrow writing to a path
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"xyz"
    assert json.loads((tmp_path / "c.json").read_text()) == {"k": [1, 2]}
    assert np.load(tmp_path / "d.npy").tolist() == [0, 1, 2]
    assert (tmp_path / "e.txt").read_text() == "from another writer"
    assert unsynced_renames(fs_calls) == [] and len(renamed(fs_calls)) == 4
    assert ("fsync", os.path.realpath(tmp_path)) in fs_calls  # the new folder a/ is recorded
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.json", "d.npy", "e.txt"]
    with pytest.raises(FileNotFoundError):  # a folder removed by someone else stays removed
        atomic_write_bytes(tmp_path / "gone" / "x.bin", b"", make_parents=False)
    assert not (tmp_path / "gone").exists()


@pytest.mark.slow
@pytest.mark.parametrize("scenario, at_least", [("store", 30), ("index", 10), ("checkpoint", 4)])
def test_kill_at_every_filesystem_call_then_resume(tmp_path, scenario, at_least):
    """tests/fixtures/kill_points.py: for every k, os._exit at the k-th filesystem call; what a
    reader then sees is whole and a resumed run ends equal to an uninterrupted one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(KILL_POINTS), scenario, str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["calls"] >= at_least  # the hook saw the writer's calls
    assert report["problems"] == []


def test_a_killed_store_create_is_resumed(tmp_path):
    """What a kill during the first write of a store leaves (its lock, a temporary manifest)
    does not make the folder foreign."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / ".lock").write_text("")
    (tmp_path / "store" / ".manifest.json.x1y2.tmp").write_text("{")
    with FeatureStore.writing(tmp_path / "store", FakeExtractor().manifest()) as store:
        assert store.manifest["encoders"]["video"]["dim"] == 3
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [".lock", "manifest.json",
                                                                      "shards"]
