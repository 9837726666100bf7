"""The index: exact search and offsets, approximate recall, incremental adds, removal, resume,
run identity, CLI.

Media are generated; features come from the toy encoders and the hand-set linear run of
:mod:`tests.fixtures.toy_index` (red pictures <-> low tones, green <-> mid, blue <-> high).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mvpt
from mvpt.clips import sliding_windows
from mvpt.errors import SearchIndexError, UsageError
from mvpt.index import Index, build_index, open_index, rebuild_index, remove_items
from mvpt.run import file_sha256
from mvpt.store import FeatureStore
from tests.fixtures.toy_index import audio_calls, build, make_linear_run, run_cli


# ------------------------------------------------------------------------------ constructed vectors
def random_walk_windows(rng, n_items: int, windows: int, dim: int, step: float = 0.3):
    """Per item a smooth random walk of unit vectors, and its table (windows every 5 s)."""
    base = rng.normal(size=(n_items, 1, dim))
    steps = rng.normal(size=(n_items, windows, dim)) * step
    vectors = (base + np.cumsum(steps, axis=1)).reshape(-1, dim).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pd.DataFrame({
        "item_id": np.repeat([f"item-{i:04d}" for i in range(n_items)], windows),
        "start_s": np.tile(np.arange(windows) * 5.0, n_items),
        "end_s": np.tile(np.arange(windows) * 5.0 + 10.0, n_items)})
    return vectors, table


def brute_force_items(vectors, table, queries, top):
    """Reference ranking: per item the max inner product over (query, window) pairs."""
    scores = (queries @ vectors.T).max(axis=0)
    best = pd.DataFrame({"item": table["item_id"], "score": scores}).groupby("item")["score"].max()
    return best.sort_values(ascending=False, kind="stable").index[:top].tolist(), best


def test_exact_search_returns_right_item_and_offset(rng):
    vectors, table = random_walk_windows(rng, n_items=300, windows=12, dim=32)
    index = Index.from_vectors(vectors, table)
    target = 7 * 12 + 9  # item 7, window 9: starts at 45 s
    query = vectors[target] + 0.01 * rng.normal(size=32)
    hits = index.search(query[None], top=5, query_windows_s=[(0.0, 10.0)])
    assert hits[0].item_id == "item-0007"
    assert hits[0].window_start_s == 45.0 and hits[0].offset_s == 45.0
    assert hits[0].score > 0.99 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert len({h.item_id for h in hits}) == 5
    # The same window matched by a query window starting at 20 s: start the item 25 s in.
    late = index.search(query[None], top=1, query_windows_s=[(20.0, 30.0)])[0]
    assert late.offset_s == 25.0 and late.query_start_s == 20.0
    early = index.search(query[None], top=1, query_windows_s=[(50.0, 60.0)])[0]
    assert early.offset_s == 0.0  # cannot start before the item's beginning


def test_grouping_matches_brute_force_when_one_item_floods_the_neighbours(rng):
    """An item with 300 near-identical windows fills the first FAISS neighbours; the ranking of
    distinct items must still equal the brute-force per-item maximum."""
    vectors, table = random_walk_windows(rng, n_items=200, windows=6, dim=16)
    query = rng.normal(size=(3, 16)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    flood = query[0] + 0.05 * rng.normal(size=(300, 16))
    flood_table = pd.DataFrame({"item_id": "flood", "start_s": np.arange(300) * 5.0,
                                "end_s": np.arange(300) * 5.0 + 10.0})
    vectors = np.concatenate([vectors, flood / np.linalg.norm(flood, axis=1, keepdims=True)])
    table = pd.concat([table, flood_table], ignore_index=True)
    hits = Index.from_vectors(vectors, table).search(query, top=10)
    expected, best = brute_force_items(vectors, table, query, 10)
    assert [h.item_id for h in hits] == expected
    assert hits[0].item_id == "flood"
    np.testing.assert_allclose([h.score for h in hits], best[expected].to_numpy(), atol=1e-5)


def structured_library(rng, *, n_tracks=150, clips=60, latent=8, dim=64, copies=4):
    """Windows shaped like encoded tracks: a smooth hidden sequence per track (AR(1), 8-d,
    crowded so that neighbours come from many tracks), 10-clip windows every 5 clips through a
    fixed non-linear tower, each window repeated with noise as large as the distance between
    neighbouring windows, so near-duplicates do not make recall trivial. Returns vectors, their
    table (one item per vector) and 100 queries (fresh noisy copies)."""
    z = np.empty((n_tracks, clips, latent))
    z[:, 0] = rng.normal(size=(n_tracks, latent))
    for t in range(1, clips):
        z[:, t] = 0.8 * z[:, t - 1] + 0.6 * rng.normal(size=(n_tracks, latent))
    windows = np.stack([z[:, s:s + 10].mean(axis=1) for s in range(0, clips - 9, 5)], axis=1)
    base = np.tanh(windows @ rng.normal(size=(latent, dim)))
    base /= np.linalg.norm(base, axis=-1, keepdims=True)
    noise = np.median(np.linalg.norm(np.diff(base, axis=1), axis=-1)) / np.sqrt(dim)
    base = base.reshape(-1, dim)
    vectors = np.concatenate([base + noise * rng.normal(size=base.shape) for _ in range(copies)])
    table = pd.DataFrame({"item_id": [f"w{i}" for i in range(len(vectors))], "start_s": 0.0,
                          "end_s": 10.0})
    queries = base[rng.choice(len(base), 100, replace=False)]
    queries = queries + noise * rng.normal(size=queries.shape)
    return vectors.astype(np.float32), table, queries.astype(np.float32)


def recall_at_10(exact: Index, approx: Index, queries: np.ndarray) -> float:
    found = [len({h.item_id for h in exact.search(q[None], top=10)}
                 & {h.item_id for h in approx.search(q[None], top=10)}) / 10 for q in queries]
    return float(np.mean(found))


@pytest.mark.parametrize("kind, weak", [("hnsw", {"M": 4, "ef_construction": 8}),
                                        ("ivf", {"nprobe": 1})])
def test_approximate_recall_at_10_against_exact(rng, kind, weak):
    vectors, table, queries = structured_library(rng)
    exact = Index.from_vectors(vectors, table)
    recall = recall_at_10(exact, Index.from_vectors(vectors, table, kind=kind), queries)
    weak_recall = recall_at_10(exact, Index.from_vectors(vectors, table, kind=kind, params=weak),
                               queries)
    assert recall >= 0.95, f"{kind} recall@10 {recall:.3f}"
    assert weak_recall < recall - 0.05  # the data is hard enough to tell settings apart


# ------------------------------------------------------------------------------ from media
def expected_windows(duration_s: float, window=10, stride=5) -> list[tuple[float, float]]:
    return [(float(s), float(s + n)) for s, n in sliding_windows(int(duration_s), window, stride)]


def test_build_index_windows_and_manifest(tmp_path, linear_run, library):
    summary = build(linear_run, library[:3], tmp_path / "idx")
    assert summary.added_items == ["low-high-mid", "mid-mid", "low-low-low"]
    assert summary.items == 3 and summary.windows == summary.added_windows == 5 + 3 + 5
    index = open_index(tmp_path / "idx")
    rows = index.table[index.table["item_id"] == "low-high-mid"]
    assert list(zip(rows["start_s"], rows["end_s"])) == expected_windows(30.0)
    assert (rows["title"] == "low-high-mid").all()  # no title tag: the file stem
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["windows"]["window_s"] == 10.0 and manifest["windows"]["stride_s"] == 5.0
    assert manifest["run"]["checkpoint_sha256"] == file_sha256(linear_run / "best.pt")
    assert manifest["search"]["kind"] == "exact" and manifest["vectors"] == 13
    store = FeatureStore.open(tmp_path / "idx" / "store")
    assert set(store.array_dims) == {"audio"}  # a music index extracts no frames


def test_default_windows_are_the_runs_longest_input_every_third(tmp_path, linear_run, library):
    run = mvpt.load_run(linear_run)
    summary = build_index(run, library[:1], tmp_path / "idx", progress=False, decode_workers=0)
    windows = json.loads((tmp_path / "idx" / "index.json").read_text())["windows"]
    assert run.window_s == 30.0
    assert (windows["window_s"], windows["stride_s"]) == (30.0, 10.0)
    assert summary.windows == 1  # a 30 s track is one 30 s window


def test_adding_files_extracts_and_encodes_only_them(tmp_path, linear_run, library):
    build(linear_run, library[:3], tmp_path / "idx")
    shards_before = [d.name for d in FeatureStore.open(tmp_path / "idx" / "store").shard_dirs()]
    audio_calls().clear()
    summary = build(linear_run, library, tmp_path / "idx")
    assert audio_calls() == [20, 40]  # the two new files' clips, nothing else
    assert summary.added_items == ["high-low", "mid-low-high-high"]
    assert summary.already_indexed == 3 and summary.added_windows == 3 + 7
    shards_after = [d.name for d in FeatureStore.open(tmp_path / "idx" / "store").shard_dirs()]
    assert shards_after[:len(shards_before)] == shards_before and len(shards_after) == 2
    assert open_index(tmp_path / "idx").n_items == 5
    audio_calls().clear()
    again = build(linear_run, library, tmp_path / "idx")
    assert audio_calls() == [] and again.added_items == [] and again.windows == 23


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_remove_items(tmp_path, linear_run, library, kind):
    build(linear_run, library, tmp_path / "idx", kind=kind)
    query = np.array([[0.0, 0.0, 1.0]], np.float32)  # "high" tone direction
    before = [h.item_id for h in open_index(tmp_path / "idx").search(query, top=5)]
    assert before[0] in ("high-low", "mid-low-high-high", "low-high-mid")
    assert remove_items(tmp_path / "idx", [before[0]]) > 0
    index = open_index(tmp_path / "idx")
    after = [h.item_id for h in index.search(query, top=5)]
    assert before[0] not in after and after == before[1:]
    assert index.n_items == 4 and before[0] not in set(index.table["item_id"])
    assert index.n_vectors == len(index.table)
    with pytest.raises(UsageError, match="no item"):
        remove_items(tmp_path / "idx", ["not-there"])


def test_removed_item_comes_back_only_when_requested(tmp_path, linear_run, library):
    build(linear_run, library, tmp_path / "idx")
    remove_items(tmp_path / "idx", ["mid-mid"])
    build(linear_run, [library[0]], tmp_path / "idx")  # another request: mid-mid stays out
    assert "mid-mid" not in set(open_index(tmp_path / "idx").table["item_id"])
    audio_calls().clear()
    summary = build(linear_run, [library[1]], tmp_path / "idx")
    assert summary.added_items == ["mid-mid"] and audio_calls() == []  # from the store


def test_resume_after_kill_during_indexing(tmp_path, linear_run, library, monkeypatch):
    out = tmp_path / "idx"
    build(linear_run, library[:2], out)
    reference = open_index(out).search(np.eye(3, dtype=np.float32), top=2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between the new files and the manifest

    monkeypatch.setattr(sys.modules["mvpt.index"], "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        build(linear_run, library, out)
    monkeypatch.undo()
    # The old index is intact and searchable; the new data files are strays.
    assert open_index(out).n_items == 2
    assert open_index(out).search(np.eye(3, dtype=np.float32), top=2) == reference
    assert len(list(out.glob("vectors-*.faiss"))) == 2
    audio_calls().clear()
    summary = build(linear_run, library, out)
    assert audio_calls() == []  # extraction had finished: nothing decoded again
    assert summary.items == 5 and len(summary.added_items) == 3
    assert len(list(out.glob("vectors-*.faiss"))) == 1  # strays cleaned


def test_resume_after_kill_during_the_first_commit(tmp_path, linear_run, library, monkeypatch):
    out = tmp_path / "idx"
    monkeypatch.setattr(sys.modules["mvpt.index"], "atomic_write_json", lambda *a, **k: sys.exit(9))
    with pytest.raises(SystemExit):
        build(linear_run, library[:2], out)
    monkeypatch.undo()
    assert not (out / "index.json").exists() and list(out.glob("vectors-*.faiss"))
    with pytest.raises(SearchIndexError, match="not an index"):
        open_index(out)
    assert build(linear_run, library[:2], out).items == 2
    assert open_index(out).n_items == 2


def test_nothing_to_index_says_why(tmp_path, linear_run):
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(b"not audio" * 100)
    with pytest.raises(SearchIndexError, match=r"nothing to index \(1 of 1 file\(s\) failed\): "
                                                r".*junk.m4a"):
        build(linear_run, [junk], tmp_path / "idx")


def test_resume_after_kill_during_extraction(tmp_path, linear_run, library, monkeypatch):
    out = tmp_path / "idx"
    real_extract = __import__("mvpt.extract", fromlist=["extract"]).extract

    def extract_then_die(*args, **kwargs):
        real_extract(*args, **{**kwargs, "shard_size": 2, "max_shards": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["mvpt.extract"], "extract", extract_then_die)
    with pytest.raises(KeyboardInterrupt):
        build(linear_run, library, out)
    monkeypatch.undo()
    assert not (out / "index.json").exists()
    audio_calls().clear()
    summary = build(linear_run, library, out)
    assert len(audio_calls()) == 3  # the first shard's two files were kept
    assert summary.items == 5


def test_refuses_another_run(tmp_path, linear_run, library):
    build(linear_run, library[:1], tmp_path / "idx")
    other = make_linear_run(tmp_path / "other", audio_map=np.diag([1.0, 2.0, 3.0]))
    with pytest.raises(SearchIndexError, match=r"built with run .* not .*other"):
        build(other, library[1:2], tmp_path / "idx")
    assert open_index(tmp_path / "idx").n_items == 1
    # A run retrained in place (same folder, new checkpoint) is refused when searching too.
    make_linear_run(linear_run.parent / "moved", audio_map=np.eye(3) * 2)
    index = Index.load(tmp_path / "idx")
    index.manifest["run"]["path"] = str(linear_run.parent / "moved")
    with pytest.raises(SearchIndexError, match="checkpoint sha256"):
        _ = index.run


def test_refuses_changed_settings_and_bad_windows(tmp_path, linear_run, library):
    build(linear_run, library[:1], tmp_path / "idx")
    with pytest.raises(UsageError, match="window_s=10.0, not 20.0"):
        build(linear_run, library[:1], tmp_path / "idx", window_s=20.0)
    with pytest.raises(UsageError, match="K=30"):
        build(linear_run, library[:1], tmp_path / "idx2", window_s=40.0)


def test_rebuild_as_another_kind_keeps_results(tmp_path, linear_run, library):
    build(linear_run, library, tmp_path / "idx")
    queries = np.eye(3, dtype=np.float32)
    before = open_index(tmp_path / "idx").search(queries, top=5)
    manifest = rebuild_index(tmp_path / "idx", kind="hnsw")
    index = open_index(tmp_path / "idx")
    assert manifest["search"]["kind"] == index.kind == "hnsw"
    assert [h.item_id for h in index.search(queries, top=5)] == [h.item_id for h in before]


def test_index_cli(tmp_path, linear_run, library, capsys):
    out = tmp_path / "idx"
    done = run_cli(capsys, "index", linear_run, *library[:2], "--out", out, "--no-progress",
                   "--decode-workers", "0", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["items"] == 2 and summary["added_items"] == ["low-high-mid", "mid-mid"]
    done = run_cli(capsys, "index", "--out", out, "--remove", "mid-mid")
    assert done.returncode == 0 and "removed 1 item(s), 1 windows" in done.stdout  # 20 s: one 30 s window
    done = run_cli(capsys, "index", "--out", out)
    assert done.returncode == 2 and "give a RUN" in done.stderr
    other = make_linear_run(tmp_path / "other", audio_map=np.eye(3) * 3)
    done = run_cli(capsys, "index", other, library[2], "--out", out, "--no-progress")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "built with run" in done.stderr


def test_media_paths_are_absolute_and_survive_moving_the_folder(tmp_path, linear_run, library,
                                                                monkeypatch):
    creator = tmp_path / "creator"
    (creator / "music").mkdir(parents=True)
    for path in library[:2]:
        (creator / "music" / path.name).write_bytes(path.read_bytes())
    monkeypatch.chdir(creator)
    build(linear_run, ["music"], "library")  # relative arguments, as typed
    recorded = pq_source_paths(creator / "library")
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in recorded)
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "moved"
    creator.rename(moved)
    assert not any(Path(p).exists() for p in recorded)  # the recorded paths are gone
    index = open_index(moved / "library")
    found = sorted(set(index.table["source_path"]))
    assert found == sorted(str(moved / "music" / p.name) for p in library[:2])


def pq_source_paths(index_dir: Path) -> list[str]:
    import pyarrow.parquet as pq

    manifest = json.loads((index_dir / "index.json").read_text())
    return pq.read_table(index_dir / manifest["files"]["table"]).column("source_path").to_pylist()


def test_resolve_recorded_paths(tmp_path):
    from mvpt.paths import resolve_recorded

    (tmp_path / "new" / "music").mkdir(parents=True)
    (tmp_path / "new" / "music" / "a.wav").write_bytes(b"x")
    old = tmp_path / "old"
    moved = resolve_recorded(old / "music" / "a.wav", folder=tmp_path / "new" / "index",
                             recorded_folder=old / "index")
    assert moved == (tmp_path / "new" / "music" / "a.wav").resolve()
    missing = old / "music" / "b.wav"
    assert resolve_recorded(missing, folder=tmp_path / "new" / "index",
                            recorded_folder=old / "index") == missing
    assert resolve_recorded("music/a.wav", folder=tmp_path / "new",
                            recorded_folder=None) == tmp_path / "new" / "music" / "a.wav"


def test_mean_scoring_ranks_by_the_mean_over_all_pairs(rng):
    vectors = rng.normal(size=(7, 4)).astype(np.float32)
    table = pd.DataFrame({"item_id": ["a", "a", "a", "b", "b", "c", "c"],
                          "start_s": np.arange(7) * 5.0, "end_s": np.arange(7) * 5.0 + 10.0})
    index = Index.from_vectors(vectors, table)
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = unit(queries) @ unit(vectors).T
    codes = table["item_id"].to_numpy()
    want_mean = {i: sims[:, codes == i].mean() for i in "abc"}
    want_max = {i: sims[:, codes == i].max() for i in "abc"}
    for scoring, want in (("mean", want_mean), ("max", want_max)):
        hits = index.search(queries, top=3, scoring=scoring)
        assert [h.item_id for h in hits] == sorted(want, key=want.get, reverse=True), scoring
        assert [h.score for h in hits] == pytest.approx(sorted(want.values(), reverse=True),
                                                        abs=1e-5)
    with pytest.raises(UsageError, match="scoring must be one of max, mean"):
        index.search(queries, scoring="median")


def _item_vectors(index_dir, item_id: str) -> np.ndarray:
    """The window vectors of ``item_id`` in the index at ``index_dir``, in start order."""
    from mvpt.index import all_vectors

    index = open_index(index_dir)
    ids, vectors = all_vectors(index.faiss_index)
    by_id = dict(zip(ids.tolist(), vectors))
    rows = index.table[index.table["item_id"] == item_id].sort_values("start_s")
    return np.stack([by_id[v] for v in rows["vector_id"]])


def test_index_on_a_chosen_device(tmp_path, tiny_index, capsys):
    """``--device cpu`` builds the same vectors as the default (auto is the CPU here); a device
    this machine lacks, or a misspelt one, is one line, before the index folder is made."""
    import torch

    run, table = tiny_index.parent / "run", open_index(tiny_index).table
    item, track = table["item_id"].iloc[0], table["source_path"].iloc[0]
    out = tmp_path / "on-cpu"
    done = run_cli(capsys, "index", run, track, "--out", out, "--window-seconds", "4",
                   "--stride-seconds", "2", "--device", "cpu", "--no-progress",
                   "--decode-workers", "0")
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(_item_vectors(out, item), _item_vectors(tiny_index, item),
                               atol=1e-5)
    wrong = ["gpu"] + (["cuda"] if not torch.cuda.is_available() else [])
    for device in wrong:
        done = run_cli(capsys, "index", run, track, "--out", tmp_path / device, "--device",
                       device, "--no-progress")
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"device {device!r}" in done.stderr or f"got {device!r}" in done.stderr
        assert not (tmp_path / device).exists()
