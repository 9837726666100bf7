"""benchmarks/order_synth.py: the set issue 10 describes (30 s videos, 3-8 unequal sections, half
the videos in groups of 2-3 playing the same sections in other orders, a group in one split)."""

import csv
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import av
import pytest

from mvpt.data.synth import genre_palette, place_themes
from mvpt.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import order_synth  # noqa: E402


def test_plan_groups_play_the_same_unequal_sections_in_other_orders():
    videos = order_synth.plan(200, seed=3)
    assert len(videos) == 200
    groups = defaultdict(list)
    for v in videos:
        groups[v["group"]].append(v)
        frames = [f for _, f in v["sections"]]
        assert 3 <= len(frames) <= 8
        assert sum(frames) == round(order_synth.SECONDS * order_synth.FPS)
        assert min(frames) >= round(order_synth.MIN_SECTION_S * order_synth.FPS)
        themes = [k for k, _ in v["sections"]]
        assert all(a != b for a, b in zip(themes, themes[1:]))
    sizes = Counter(len(g) for g in groups.values())
    assert set(sizes) <= {1, 2, 3} and sizes[2] and sizes[3]
    in_groups = sum(len(g) for g in groups.values() if len(g) > 1)
    assert 98 <= in_groups <= 102  # half, give or take the last group
    unequal = 0
    for members in groups.values():
        assert len({m["genre"] for m in members}) == 1
        assert len({tuple(map(tuple, m["sections"])) for m in members}) == len(members)
        assert len({tuple(sorted(map(tuple, m["sections"]))) for m in members}) == 1
        unequal += len({f for _, f in members[0]["sections"]}) > 1
    assert unequal >= 0.9 * len(groups)


def test_a_written_set_keeps_each_group_in_one_split_and_plays_30_seconds(tmp_path):
    order_synth.main([str(tmp_path / "set"), "--n", "6", "--seed", "1", "--workers", "1"])
    with open(tmp_path / "set" / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [f"o1-{i:05d}" for i in range(6)]
    split_of = defaultdict(set)
    for r in rows:
        split_of[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    factors = json.loads((tmp_path / "set" / "factors.json").read_text())["videos"]
    for r in rows:
        sections = factors[r["id"]]["sections"]
        assert sections[0]["start_s"] == 0 and sections[-1]["end_s"] == pytest.approx(30.0)
        with av.open(str(tmp_path / "set" / r["path"])) as container:
            seconds = float(container.duration) / av.time_base
        assert seconds == pytest.approx(30.0, abs=0.1)


def test_place_themes_puts_each_theme_in_its_bounds():
    palette = genre_palette("rock", seed=0, size=3)
    sections = place_themes("rock", [palette[2], palette[0]], [0.0, 4.5, 30.0])
    assert [(s.start_s, s.end_s, s.tempo_bpm) for s in sections] == [
        (0.0, 4.5, palette[2].tempo_bpm), (4.5, 30.0, palette[0].tempo_bpm)]
    with pytest.raises(UsageError, match="increasing section bounds"):
        place_themes("rock", [palette[0]], [0.0, 4.5, 30.0])
    with pytest.raises(UsageError, match="increasing section bounds"):
        place_themes("rock", [palette[0], palette[1]], [0.0, 4.5, 4.5])
