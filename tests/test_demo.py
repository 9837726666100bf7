"""The demo: the whole pipeline on generated data (reduced size)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mvpt import media

pytestmark = pytest.mark.slow


def test_demo_makes_every_artefact(demo):
    out = Path(demo["out"])
    assert json.loads((out / "summary.json").read_text())["out"] == demo["out"]
    for name in ("mvpt", "mlp", "linear"):
        assert (Path(demo["runs"][name]) / "best.pt").is_file()
    for level in ("track", "segment"):
        table = demo["tables"][level]
        assert table.count("\n") == 5  # header, rule, three models, chance
        for name in ("mvpt", "mlp", "linear", "chance"):
            assert f"| {name} |" in table
    rate = demo["own_soundtrack_top10"]
    assert rate["queries"] >= 1 and 0 <= rate["in_top"] <= rate["queries"]


def test_demo_preview_has_equal_audio_and_video_durations(demo):
    preview = Path(demo["preview"])
    info = media.probe(preview)
    assert info.has_video and info.has_audio
    import av

    with av.open(str(preview)) as c:
        durations = {s.type: float(s.duration * s.time_base) for s in c.streams
                     if s.duration is not None}
    assert abs(durations["video"] - durations["audio"]) < 0.1, durations


def test_demo_is_resumable_and_its_cli_runs(demo):
    # a second run over the same folder reuses every stage and gives the same tables
    res = subprocess.run([sys.executable, "-m", "mvpt.cli", "demo", "--tiny", "--out",
                          demo["out"], "--no-progress", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    again = json.loads(res.stdout)
    assert again["tables"] == demo["tables"]


def test_demo_store_genres_and_figure(demo, tmp_path):
    import matplotlib.image

    from mvpt.data.genres import read_genres, tag_genres, write_genre_stats

    # YAMNet hears (almost) every synthesiser track as "Electronic music"; relative tagging takes
    # the genre each track has most compared with the rest of the store
    tag_genres(demo["store"], relative=True)
    genres = read_genres(demo["store"])
    assert len(genres) >= 30 and len(set(genres.values())) >= 3, genres
    write_genre_stats(demo["store"], tmp_path / "stats")
    counts = json.loads((tmp_path / "stats" / "genres.json").read_text())
    assert matplotlib.image.imread(tmp_path / "stats" / "genres.png").shape[0] > 100
    assert counts
