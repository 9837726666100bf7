"""Two writers on one target at once: `mvpt extract` twice on a store, `mvpt index` twice on an
index. The second is refused with a clear message naming the first's pid; the target stays whole.

Issue 12, finding 2: a second extraction removed the first one's unfinished shard, the first then
recreated the folder and wrote DONE without audio.npy, and every later load failed. The first run
is paused (SIGSTOP) mid-way so that the two overlap whatever the machine's speed."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from mvpt.store import FeatureStore
from tests.fixtures.media_factory import write_video

pytestmark = pytest.mark.slow


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "mvpt.cli", *map(str, args)]


def wait_for(condition, what: str, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, f"the first run ended before {what}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextmanager
def paused_first_run(args: list, ready, what: str):
    """Start `mvpt ARGS`, wait for ``ready()``, pause it for the block, then let it finish;
    yields its Popen (its returncode is set after the block)."""
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(ready, what, proc)
        os.kill(proc.pid, signal.SIGSTOP)
        yield proc
        os.kill(proc.pid, signal.SIGCONT)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def files_of(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_ino for p in sorted(folder.rglob("*"))}


def test_two_extractions_on_one_store(tmp_path):
    (tmp_path / "media").mkdir()
    videos = [write_video(tmp_path / "media" / f"v{k}.mp4", duration_s=2.0, seed=k)
              for k in range(4)]
    store = tmp_path / "store"
    args = ["extract", tmp_path / "media", "--out", store, "--shard-size", "2", "--no-progress"]
    first_done = lambda: any(store.glob("shards/shard-*/DONE"))  # noqa: E731
    with paused_first_run(args, first_done, "its first shard") as first:
        before = files_of(store)
        second = subprocess.run(cli(*args), capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stderr
        assert f"mvpt extract: error: {store}: feature store in use by pid {first.pid} " \
               in second.stderr and "Traceback" not in second.stderr
        assert files_of(store) == before  # the refused run touched nothing
    assert first.returncode == 0, first.stderr
    result = FeatureStore.open(store)
    assert result.check() == []
    assert sorted(result.rows()["id"]) == sorted(v.stem for v in videos)
    assert len(result.load()) == 4


def real_encoder_run(run_dir: Path) -> Path:
    """A linear-kind run over the real default encoders (random projections): enough for
    `mvpt index` to extract, window and encode a music library."""
    import torch

    from mvpt.encoders import get_encoder
    from mvpt.models.checkpoint import make_checkpoint, save_checkpoint
    from mvpt.models.factory import build_model, load_config

    encoders = {m: get_encoder(n).manifest() for m, n in (("video", "efficientnet-lite0"),
                                                          ("audio", "yamnet"))}
    model = build_model(load_config("linear", name="concurrency", d_joint=8),
                        video_dim=encoders["video"]["dim"], audio_dim=encoders["audio"]["dim"])
    torch.manual_seed(0)
    with torch.no_grad():
        for modality in ("video", "audio"):
            proj = getattr(model, f"proj_{modality}")
            proj.copy_(torch.randn(proj.shape))
        model.correlations.fill_(1.0)
        model.fitted.fill_(True)
    features = {"clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30, "encoders": encoders}
    save_checkpoint(run_dir / "best.pt", make_checkpoint(
        model=model, features=features, run_config={"model": "linear"}, epoch=0, step=0,
        history=[]))
    return run_dir


def test_two_index_builds_on_one_index(tmp_path):
    from mvpt.index import Index

    run = real_encoder_run(tmp_path / "run")
    (tmp_path / "music").mkdir()
    for k in range(3):
        write_video(tmp_path / "music" / f"m{k}.m4a", duration_s=4.0 + k, has_video=False)
    index = tmp_path / "index"
    args = ["index", run, tmp_path / "music", "--out", index, "--no-progress",
            "--window-seconds", "2", "--stride-seconds", "1"]
    extracting = lambda: (index / "store" / "manifest.json").exists()  # noqa: E731
    with paused_first_run(args, extracting, "its extraction") as first:
        before = files_of(index)
        second = subprocess.run(cli(*args), capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stderr
        assert f"mvpt index: error: {index}: index in use by pid {first.pid} " in second.stderr
        removal = subprocess.run(cli("index", "--remove", "m0", "--out", index),
                                 capture_output=True, text=True, timeout=300)
        assert removal.returncode == 1 and f"in use by pid {first.pid}" in removal.stderr
        assert files_of(index) == before
    assert first.returncode == 0, first.stderr
    built = Index.load(index)
    assert sorted(built.table["item_id"].unique()) == ["m0", "m1", "m2"]
    assert FeatureStore.open(index / "store").check() == []
