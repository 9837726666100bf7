"""Splits by group, never by item: the regions of one film share one split, from the manifest
`mvpt data movieclips` writes through `mvpt extract` into the feature store."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mvpt.splits import stable_split


def test_stable_split_hashes_the_group_when_given():
    assert stable_split("film_000", "film") == stable_split("film")
    assert stable_split("film_001", "film") == stable_split("film")
    assert stable_split("film_000", "") == stable_split("film_000", None) == stable_split("film_000")
    # the group decides: over many ids of one group, one split
    assert len({stable_split(f"x{k}", "one film") for k in range(50)}) == 1


def _read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _splits_per_group(pairs) -> dict[str, set[str]]:
    out = defaultdict(set)
    for group, split in pairs:
        out[group].add(split)
    return out


@pytest.fixture()
def film_manifest(tmp_path, monkeypatch) -> Path:
    """`find_music_regions` over 200 films of 3 music regions each (the tagger is replaced: no
    media is read)."""
    from mvpt.data import movieclips

    monkeypatch.setattr(movieclips, "file_regions",
                        lambda path, tagger, params: [(0.0, 25.0), (40.0, 70.0), (90.0, 120.0)])
    films = [tmp_path / "films" / f"film{k:03d}.mkv" for k in range(200)]
    out = tmp_path / "music.csv"
    summary = movieclips.find_music_regions(films, out, tagger=object())
    assert summary.regions == 600
    return out


def test_movieclips_manifest_puts_no_film_in_two_splits(film_manifest):
    from mvpt.extract import collect_items

    rows = _read(film_manifest)
    assert len(rows) == 600
    assert {r["group"] for r in rows} == {f"film{k:03d}" for k in range(200)}
    per_film = _splits_per_group((r["group"], r["split"]) for r in rows)
    assert all(len(s) == 1 for s in per_film.values()), "a film is in two splits"
    assert {next(iter(s)) for s in per_film.values()} == {"train", "val", "test"}
    # extract reads the same group and split back
    items = collect_items([film_manifest])
    per_film = _splits_per_group((it.group, it.split) for it in items)
    assert len(per_film) == 200 and all(len(s) == 1 for s in per_film.values())
    assert all(it.split == stable_split(it.id, it.group) for it in items)


def test_manifest_group_without_split_is_hashed_by_group(tmp_path):
    from mvpt.extract import collect_items

    manifest = tmp_path / "m.csv"
    lines = ["id,path,group,start_s,end_s"] + [f"r{k},film.mp4,{'ab'[k % 2]},{k},{k + 1}"
                                              for k in range(40)]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = collect_items([manifest])
    assert {it.split for it in items if it.group == "a"} == {stable_split("a")}
    assert {it.split for it in items if it.group == "b"} == {stable_split("b")}


@pytest.fixture(scope="module")
def toy_extractor():
    from mvpt.clips import ClipConfig
    from mvpt.extract import Extractor
    from tests.fixtures.toy_index import ToyAudioEncoder, ToyFrameEncoder  # registers them

    return Extractor(video_encoder=ToyFrameEncoder.name, audio_encoder=ToyAudioEncoder.name,
                     clip=ClipConfig(clip_s=1.0, max_clips=30))


def test_extract_keeps_the_manifests_group_and_split(tmp_path, toy_extractor):
    from mvpt.extract import extract
    from mvpt.store import FeatureStore
    from tests.fixtures.media_factory import write_video

    for name in ("film_a", "film_b"):
        write_video(tmp_path / "media" / f"{name}.mp4", duration_s=4.0, seed=len(name))
    manifest = tmp_path / "regions.csv"
    manifest.write_text(
        "id,path,group,split,start_s,end_s\n"
        "a0,media/film_a.mp4,film_a,,0,2\n"
        "a1,media/film_a.mp4,film_a,,2,4\n"
        "b0,media/film_b.mp4,film_b,val,0,2\n"
        "b1,media/film_b.mp4,film_b,val,2,4\n"
        "lone,media/film_b.mp4,,,0,4\n", encoding="utf-8")
    summary = extract([manifest], tmp_path / "store", extractor=toy_extractor, progress=False,
                      decode_workers=0)
    assert summary.done == 5
    rows = FeatureStore.open(tmp_path / "store").rows().set_index("id")
    assert rows.loc[["a0", "a1"], "split"].tolist() == [stable_split("film_a")] * 2
    assert rows.loc[["b0", "b1"], "split"].tolist() == ["val", "val"]
    assert rows.loc[["a0", "a1", "b0", "b1"], "group"].tolist() == ["film_a"] * 2 + ["film_b"] * 2
    assert rows.loc["lone", "split"] == stable_split("lone") and pd.isna(rows.loc["lone", "group"])


def test_a_store_written_without_the_group_column_still_opens(tmp_path):
    import numpy as np

    from mvpt.store import FeatureStore, ItemResult

    store = FeatureStore.create(tmp_path / "s", {
        "clip_s": 1.0, "frames_per_clip": 1,
        "encoders": {"video": {"name": "v", "version": "1", "dim": 2}}})
    shard = store.write_shard([ItemResult(id="x", source_path="x.mp4", split="test",
                                          status="done", arrays={"video": np.ones((2, 2))})])
    table = pq.read_table(shard / "rows.parquet")
    pq.write_table(table.drop(["group"]), shard / "rows.parquet")  # as an older version wrote it
    rows = FeatureStore.open(tmp_path / "s").rows()
    assert rows["id"].tolist() == ["x"] and rows["split"].tolist() == ["test"]
    assert rows["group"].isna().all()


def test_an_older_manifest_gets_groups_when_films_are_added(tmp_path, monkeypatch):
    """A manifest written before groups (id,path,start_s,end_s) gains group and split for its
    rows when `find_music_regions` adds a film to it."""
    from mvpt.data import movieclips

    monkeypatch.setattr(movieclips, "file_regions", lambda path, tagger, params: [(0.0, 30.0)])
    out = tmp_path / "music.csv"
    out.write_text("id,path,start_s,end_s\nold_000,/films/old.mkv,0.000,25.000\n"
                   "old_001,/films/old.mkv,40.000,70.000\n", encoding="utf-8")
    movieclips.find_music_regions([tmp_path / "new.mkv"], out, tagger=object())
    rows = {r["id"]: r for r in _read(out)}
    assert [rows[i]["group"] for i in ("old_000", "old_001", "new_000")] == ["old", "old", "new"]
    assert rows["old_000"]["split"] == rows["old_001"]["split"] == stable_split("old")
    assert rows["new_000"]["split"] == stable_split("new")
