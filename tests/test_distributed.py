"""Extraction on Ray: the same store as the local engine, work on two nodes, a killed worker.

The cluster tests start Ray clusters on 127.0.0.1 only (tests/fixtures/ray_cluster.py): one node
with 2 CPUs and one declared GPU (so that the GPU path can be scheduled), and two nodes of one CPU
each; both are always stopped."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import mvpt
from mvpt.distributed.ray_engine import LOOPBACK_ONLY_ENV, RayEngine
from mvpt.extract import Decoded, Item, ShardUnit
from mvpt.store import FeatureStore, ItemResult
from tests.fixtures.media_factory import write_video

CLUSTER_SCRIPT = Path(__file__).parent / "fixtures" / "ray_cluster.py"
N_FILES = 20


def mvpt_env(**extra) -> dict:
    """This process's environment with this checkout's mvpt first on the path (Ray workers
    inherit the environment of the cluster script), for a loopback test cluster without auth tokens
    (Ray makes one when a token file exists, and a joining node then needs it)."""
    src = Path(mvpt.__file__).resolve().parents[1]
    roots = (str(src), str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH"))
    path = os.pathsep.join(p for p in roots if p)  # mvpt, and tests.fixtures for the workers
    return {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled", **LOOPBACK_ONLY_ENV, **extra}


@contextlib.contextmanager
def ray_cluster(*node_specs: str):
    """A cluster of nodes ``CPUS[:GPUS]`` (the head first) on 127.0.0.1, started by
    tests/fixtures/ray_cluster.py in a temporary folder; yields its address. Always stopped,
    and its folder removed; no other Ray on the machine is touched."""
    pytest.importorskip("ray")
    temp_dir = tempfile.mkdtemp(prefix="mvpt-ray-")  # short: Ray's socket paths live under it
    proc = subprocess.Popen([sys.executable, str(CLUSTER_SCRIPT), temp_dir, *node_specs],
                            env=mvpt_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        address = proc.stdout.readline().strip()
        if not address:
            proc.stdin.close()
            raise AssertionError(f"the test cluster did not start: {proc.stderr.read()[-2000:]}")
        yield address
    finally:
        try:
            proc.stdin.close()
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the script and the Ray processes it started
            proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """One node: 2 CPUs and one declared GPU, so that the GPU path can be scheduled."""
    with ray_cluster("2:1") as address:
        yield address


@pytest.fixture(scope="module")
def two_node_cluster():
    """Two nodes on this machine, one CPU each: one extraction worker per node."""
    with ray_cluster("1", "1") as address:
        yield address


@pytest.fixture(scope="module")
def media20(tmp_path_factory) -> Path:
    """20 short videos and one file that is not a video."""
    folder = tmp_path_factory.mktemp("media20")
    for k in range(N_FILES):
        write_video(folder / f"v{k:02d}.mp4", duration_s=2.0 + k % 2, seed=k)
    (folder / "broken.mp4").write_bytes(b"this is not a video")
    return folder


def cli(*args, timeout=420, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mvpt.cli", *map(str, args)],
                          env=env or mvpt_env(), capture_output=True, text=True, timeout=timeout)


def ray_extract(media: Path, out: Path, address: str, *extra, env=None) -> dict:
    proc = cli("extract", media, "--out", out, "--engine", "ray", "--address", address,
               "--shard-size", "2", "--no-progress", "--json", *extra, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def comparable_rows(store: FeatureStore) -> pd.DataFrame:
    rows = store.all_rows().drop(columns=["node", "shard", "offset"])
    return rows.sort_values("id").reset_index(drop=True)


def test_local_engine_refuses_ray_options(tmp_path):
    proc = cli("extract", tmp_path, "--out", tmp_path / "store", "--address", "auto")
    assert proc.returncode == 2
    assert "--address and --gpus-per-worker need --engine ray" in proc.stderr


@pytest.fixture(scope="module")
def ray_store(cluster, media20, tmp_path_factory) -> tuple[Path, dict]:
    """The 20-file set extracted on the loopback cluster, and the run's --json summary."""
    out = tmp_path_factory.mktemp("ray") / "store"
    return out, ray_extract(media20, out, cluster)


@pytest.mark.slow
def test_ray_extraction_summary(ray_store):
    out, summary = ray_store
    assert (summary["done"], summary["failed"]) == (N_FILES, 1)
    assert summary["engine"]["workers"] == 2 and summary["engine"]["redone"] == []
    assert "broken.mp4: not a media file" in summary["failures"][0]["error"]
    assert FeatureStore.open(out).all_rows()["node"].notna().all()


@pytest.mark.slow
def test_two_node_cluster_extracts_on_both_nodes(two_node_cluster, media20, tmp_path):
    summary = ray_extract(media20, tmp_path / "store", two_node_cluster)
    assert (summary["done"], summary["failed"]) == (N_FILES, 1)
    nodes = FeatureStore.open(tmp_path / "store").all_rows()["node"]
    assert nodes.nunique() == 2, nodes.value_counts()  # both nodes extracted files
    assert (nodes.value_counts() >= 2).all()


@pytest.fixture(scope="module")
def split_store(cluster, media20, tmp_path_factory) -> tuple[Path, dict]:
    """The 20-file set extracted by the split pipeline (decode tasks, encode-only workers: the
    GPU pipeline) on CPUs."""
    out = tmp_path_factory.mktemp("split") / "store"
    return out, api_extract(cluster, out, [media20], pipeline="split")


@pytest.fixture(scope="module")
def local_store(media20, tmp_path_factory) -> Path:
    """The 20-file set extracted by the local engine, with the encoders on one thread like a
    one-CPU Ray worker."""
    out = tmp_path_factory.mktemp("local") / "store"
    local = cli("extract", media20, "--out", out, "--shard-size", "2", "--no-progress",
                env=mvpt_env(MVPT_THREADS="1"))
    assert local.returncode == 0, local.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["ray_store", "split_store"])
def test_ray_store_equals_local_store(pipeline, local_store, request):
    out, summary = request.getfixturevalue(pipeline)
    assert summary["engine"]["split"] == (pipeline == "split_store")
    ray_store, local_store = FeatureStore.open(out), FeatureStore.open(local_store)
    pd.testing.assert_frame_equal(comparable_rows(ray_store), comparable_rows(local_store))
    for item_id in ray_store.rows()["id"]:
        a, b = ray_store.read(item_id), local_store.read(item_id)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{item_id} {name}")


def runs_a_unit(pid: int) -> bool:
    """Whether process ``pid`` is a Ray worker running an extraction unit: Ray titles a worker
    after the method it runs and titles it back in a ``finally`` before the task's reply leaves
    the process."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ExtractWorker.run_unit")
    except OSError:
        return False


def busy_worker_pids() -> list[int]:
    """Ray worker processes running an extraction unit."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and runs_a_unit(int(p.name))]


def freeze_a_busy_worker() -> int | None:
    """Stop (SIGSTOP) a worker in the middle of a unit and return its pid; None when none is.
    A worker still titled after ``run_unit`` once stopped has not sent that unit's result, so
    killing it takes the unit with it. Without the stop, a unit could end between reading the
    title and the kill; near the end of a run nothing is then left to redo (seen in CI)."""
    for pid in busy_worker_pids():
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        if runs_a_unit(pid):
            return pid
        os.kill(pid, signal.SIGCONT)
    return None


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.slow
def test_killed_worker_only_its_unit_is_redone(cluster, media20, tmp_path):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "mvpt.cli", "extract", str(media20), "--out", str(out),
           "--engine", "ray", "--address", cluster, "--shard-size", "2", "--no-progress",
           "--json", str(tmp_path / "summary.json")]
    run = subprocess.Popen(cmd, env=mvpt_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_for(lambda: list(out.glob("shards/*/DONE")), 300, "a first shard")
        victim = wait_for(freeze_a_busy_worker, 60, "a worker stopped in the middle of a unit")
        os.kill(victim, signal.SIGKILL)
        _, err = run.communicate(timeout=420)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    units = (N_FILES + 1 + 1) // 2
    assert (summary["done"], summary["failed"]) == (N_FILES, 1)
    engine = summary["engine"]
    assert len(engine["redone"]) == 1, engine["redone"]
    assert engine["units_run"] == units + 1  # every other unit ran once
    store = FeatureStore.open(out)
    assert len(store.shard_dirs()) == units
    written = pd.concat(pq.read_table(d / "rows.parquet").to_pandas() for d in store.shard_dirs())
    assert sorted(written["id"]) == sorted(store.all_rows()["id"])  # no item written twice
    redone = set(engine["redone"][0]["items"])
    assert len(redone) == 2 and redone <= set(store.rows(status=None)["id"])  # redone and written


@pytest.mark.slow
def test_gpu_workers_encode_what_cpu_tasks_decode(cluster, media20, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for k in range(3):
        (media / f"v{k:02d}.mp4").symlink_to(media20 / f"v{k:02d}.mp4")
    summary = ray_extract(media, tmp_path / "store", cluster, "--gpus-per-worker", "1")
    assert summary["done"] == 3 and summary["engine"]["workers"] == 1  # one GPU in the cluster
    store = FeatureStore.open(tmp_path / "store")
    assert store.all_rows()["node"].nunique() == 1
    assert store.read("v01")["video"].shape == (3, 1280)


@pytest.mark.parametrize("pipeline", ["whole", "split"])
def test_ray_workers_decode_on_one_thread(cluster, tmp_path, pipeline):
    """A worker (or decode task) holds one CPU and the cluster runs one per CPU, so its decode
    process decodes on one thread, as the local engine's several decode processes do (FFmpeg's
    threads would compete with the other workers, at a higher CPU cost per frame); they used
    FFmpeg's threads ("AUTO") before."""
    from tests.fixtures.fake_extraction import fake_inputs

    summary = api_extract(cluster, tmp_path / "store", fake_inputs(tmp_path, 4),
                          pipeline=pipeline, fake="thread-type", shard_size=2)
    assert summary["done"] == 4
    rows = FeatureStore.open(tmp_path / "store").rows(status=None)
    assert list(rows["title"]) == ["NONE"] * 4


# ------------------------------------------------------------------ decoders that crash or hang
RAY_API_RUN = """
import json, sys
from mvpt.distributed import RayEngine
from mvpt.extract import Extractor, extract
from tests.fixtures.fake_extraction import FakeExtractor, ThreadTypeExtractor
address, out, pipeline, fake, shard_size, timeout_s, *inputs = sys.argv[1:]
engine = RayEngine(address=address, decode_timeout_s=float(timeout_s), split=pipeline == "split")
extractor = {"fake": FakeExtractor, "thread-type": ThreadTypeExtractor}.get(fake, Extractor)()
summary = extract(inputs, out, extractor=extractor, shard_size=int(shard_size), progress=False,
                  engine=engine)
print(json.dumps(summary.to_dict()))
"""


def api_extract(address: str, out: Path, inputs: list, *, pipeline: str,
                fake: bool | str = False, shard_size: int = 2,
                decode_timeout_s: float = 600) -> dict:
    """``mvpt.extract.extract`` on Ray with the "whole" or "split" pipeline (the Python API's
    options), from a driver process of its own; the summary. ``fake``: True for
    FakeExtractor, "thread-type" for ThreadTypeExtractor, False for the real extractor."""
    kind = {True: "fake", False: "real"}.get(fake, fake)
    args = [address, out, pipeline, kind, shard_size, decode_timeout_s]
    proc = subprocess.run([sys.executable, "-c", RAY_API_RUN, *map(str, [*args, *inputs])],
                          env=mvpt_env(), capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["whole", "split"])
def test_a_decoder_that_crashes_or_hangs_on_ray_costs_only_its_file(cluster, tmp_path,
                                                                      pipeline):
    """As with the local engine (tests/test_extract.py), on either Ray pipeline: the file
    whose decoder crashes or hangs is recorded as failed with the reason, and nothing else is
    lost (no unit redone, every other file extracted)."""
    from tests.fixtures.fake_extraction import fake_inputs

    # units of 3; the hanging file is not first in its unit (a decoder's first wait also gets
    # its process's start-up time, mvpt.extract.POOL_START_S)
    late = fake_inputs(tmp_path, 3, prefix="late")
    inputs = [*fake_inputs(tmp_path, 2), tmp_path / "crash-me.mp4", late[0],
              tmp_path / "hang-me.mp4", *late[1:]]
    summary = api_extract(cluster, tmp_path / "store", inputs, pipeline=pipeline, fake=True,
                          shard_size=3, decode_timeout_s=4)
    assert (summary["done"], summary["failed"]) == (5, 2)
    assert summary["engine"]["redone"] == [] and summary["engine"]["split"] == (pipeline == "split")
    errors = {f["id"]: f["error"] for f in summary["failures"]}
    assert errors == {
        "crash-me": f"{tmp_path / 'crash-me.mp4'}: the decoder crashed on this file (its process "
                    "died while decoding it)",
        "hang-me": f"{tmp_path / 'hang-me.mp4'}: decoding took longer than 4 s (timed out; the "
                   "decoder was stopped)"}
    rows = FeatureStore.open(tmp_path / "store").rows(status=None)
    assert sorted(rows["id"]) == sorted(p.stem for p in inputs)


def test_a_worker_keeps_its_decode_process_between_units(tmp_path):
    """A Ray worker decodes unit after unit in one child process (starting one costs about a CPU
    second); after a crash the replacement is kept in its place; closing the keeper ends it."""
    from mvpt.distributed.ray_engine import decode_unit
    from mvpt.extract import DecodePoolKeeper
    from tests.fixtures.fake_extraction import alive, fake_inputs, pid_decode

    def unit(k: int, *paths) -> ShardUnit:
        return ShardUnit(k, tuple(Item(p.stem, str(p), "train") for p in paths))

    def pids(u: ShardUnit, keeper) -> list[str]:
        decoded = list(decode_unit(u, None, pid_decode, 30, keeper=keeper))
        return [d.title if d.error is None else "failed" for d in decoded]

    files = fake_inputs(tmp_path, 6)
    keeper = DecodePoolKeeper()
    first, second = pids(unit(0, *files[:2]), keeper), pids(unit(1, files[2]), keeper)
    assert len(set(first + second)) == 1 and int(first[0]) != os.getpid()
    after_crash = pids(unit(2, tmp_path / "crash-me.mp4", files[3]), keeper)
    assert after_crash[0] == "failed" and after_crash[1] not in first
    replaced, again = pids(unit(3, files[4]), keeper), pids(unit(4, files[5]), keeper)
    assert replaced == again and replaced[0] not in first + after_crash
    keeper.close()
    child = int(replaced[0])
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)
    alone = [pids(unit(5 + k, files[k]), None)[0] for k in range(2)]
    assert alone[0] != alone[1]  # without a keeper, each unit starts its own


# ------------------------------------------------------------------ scheduling, without Ray
class FakeRef:
    def __init__(self, value):
        self.value = value


class FakeRay:
    """Just enough of the ray module for RayEngine._schedule: units finish in submission
    order; a unit listed in ``kill`` makes its worker die the first ``kill[index]`` times."""

    class exceptions:
        class RayError(Exception):
            pass

    def __init__(self, kill: dict[int, int]):
        self.kill_left = dict(kill)
        self.killed = 0

    def wait(self, refs, num_returns):
        return [refs[0]], refs[1:]

    def get(self, ref):
        if isinstance(ref.value, Exception):
            raise ref.value
        return ref.value

    def kill(self, actor):
        self.killed += 1


class FakeWorker:
    def __init__(self, ray: FakeRay):
        self.run_unit = self
        self.ray = ray

    def remote(self, unit: ShardUnit):
        if self.ray.kill_left.get(unit.index, 0) > 0:
            self.ray.kill_left[unit.index] -= 1
            return FakeRef(FakeRay.exceptions.RayError("ActorDiedError: the actor died"))
        return FakeRef([ItemResult(id=it.id, source_path=it.path, split=it.split,
                                   status="done", node="n") for it in unit.items])


class FakeExtractor:
    def encode(self, dec: Decoded) -> ItemResult:
        return ItemResult(id=dec.item.id, source_path=dec.item.path, split=dec.item.split,
                          status="failed", error=dec.error)


def schedule(kill: dict[int, int], max_attempts: int):
    ray = FakeRay(kill)
    engine = RayEngine(max_attempts=max_attempts)
    engine._new_worker = lambda ray_, extractor: FakeWorker(ray)
    units = [ShardUnit(k, (Item(f"i{k}", f"/m/i{k}.mp4", "train"),)) for k in range(4)]
    workers = [FakeWorker(ray), FakeWorker(ray)]
    done = list(engine._schedule(ray, workers, units, FakeExtractor()))
    return engine, ray, {u.index: results for u, results in done}


def test_schedule_redoes_only_the_dead_workers_unit():
    engine, ray, done = schedule({2: 1}, max_attempts=3)
    assert sorted(done) == [0, 1, 2, 3]
    assert all(r[0].status == "done" for r in done.values())
    assert [r["unit"] for r in engine.redone] == [2] and engine.units_run == 5
    assert ray.killed == 1  # the dead worker was replaced once


def test_schedule_gives_up_after_max_attempts_and_records_the_items():
    engine, _, done = schedule({1: 5}, max_attempts=2)
    assert sorted(done) == [0, 1, 2, 3]
    assert done[1][0].status == "failed"
    assert "its Ray worker failed 2 times (RayError: ActorDiedError" in done[1][0].error
    assert done[1][0].error.startswith("/m/i1.mp4: ")
    assert engine.redone[-1]["gave_up"] and engine.units_run == 5


def make_random_linear_run(run_dir: Path) -> Path:
    """A run whose model is a linear map with random towers over the default encoders'
    features (enough to index with: `mvpt index` only needs the run to embed windows)."""
    import torch

    from mvpt.encoders import get_encoder
    from mvpt.models.checkpoint import make_checkpoint, save_checkpoint
    from mvpt.models.factory import build_model, load_config

    rng = np.random.default_rng(0)
    model = build_model(load_config("linear", name="random-linear", d_joint=8),
                        video_dim=1280, audio_dim=1024)
    with torch.no_grad():
        for modality, dim in (("video", 1280), ("audio", 1024)):
            getattr(model, f"proj_{modality}").copy_(torch.as_tensor(rng.normal(size=(dim, 8))))
        model.correlations.fill_(1.0)
        model.fitted.fill_(True)
    encoders = {m: get_encoder(name).manifest()
                for m, name in (("video", "efficientnet-lite0"), ("audio", "yamnet"))}
    features = {"clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30, "encoders": encoders}
    save_checkpoint(run_dir / "best.pt", make_checkpoint(
        model=model, features=features, run_config={"model": "linear"}, epoch=0, step=0,
        history=[]))
    return run_dir


def window_vectors(index_dir: Path) -> dict:
    from mvpt.index import all_vectors, open_index

    index = open_index(index_dir)
    ids, vectors = all_vectors(index.faiss_index)
    by_id = dict(zip(ids.tolist(), vectors))
    return {(row.item_id, round(float(row.start_s), 3)): by_id[row.vector_id]
            for row in index.table.itertuples()}


@pytest.mark.slow
def test_index_on_ray_equals_local_index(cluster, media20, tmp_path):
    run = make_random_linear_run(tmp_path / "run")
    media = [media20 / f"v{k:02d}.mp4" for k in range(4)]
    common = ["--window-seconds", "2", "--stride-seconds", "1", "--no-progress"]
    on_ray = cli("index", run, *media, "--out", tmp_path / "ray", *common, "--engine", "ray",
                 "--address", cluster, "--json")
    assert on_ray.returncode == 0, on_ray.stderr[-2000:]
    assert json.loads(on_ray.stdout)["extract"]["engine"]["name"] == "ray"
    local = cli("index", run, *media, "--out", tmp_path / "local", *common)
    assert local.returncode == 0, local.stderr[-2000:]
    a, b = window_vectors(tmp_path / "ray"), window_vectors(tmp_path / "local")
    assert a.keys() == b.keys() and len(a) >= 4
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=str(key))


def test_ray_engine_without_ray_says_how_to_install_it(monkeypatch):
    from mvpt.errors import UsageError

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    unit = ShardUnit(0, (Item("a", "/m/a.mp4", "train"),))
    with pytest.raises(UsageError, match=r"needs the ray package: pip install 'mvpt\[ray\]'"):
        list(RayEngine().run([unit], FakeExtractor()))
    assert list(RayEngine().run([], FakeExtractor())) == []  # nothing to do: no Ray needed
