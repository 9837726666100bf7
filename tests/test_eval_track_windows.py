"""`mvpt eval --level track-windows` measures what `mvpt recommend` ranks: on the demo run it
gives exactly the own-soundtrack rate that `mvpt demo` prints."""

from __future__ import annotations

import json

import pytest

from mvpt.cli import main

pytestmark = pytest.mark.slow


def test_track_windows_equals_the_demos_own_soundtrack_rate(demo, tmp_path):
    rate = demo["own_soundtrack_top10"]
    out = tmp_path / "eval.json"
    assert main(["eval", demo["runs"]["mvpt"], demo["store"], "--level", "track-windows",
                 "--candidates", "all", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["n_items"] == rate["queries"] and result["pool_size"] == rate["library"]
    in_top = result["metrics"]["video_to_music_R@10"] * result["n_items"]
    assert in_top == pytest.approx(rate["in_top"], abs=1e-9)
    ranks = [r for r in rate["ranks"].values() if r is not None]
    assert result["metrics"]["video_to_music_R@1"] * result["n_items"] == pytest.approx(
        sum(r == 1 for r in ranks), abs=1e-9)
