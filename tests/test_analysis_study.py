"""Human study kit: pairing, side balance, pages, and the binomial test against exact sums."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from mvpt import cli
from mvpt.analysis.study import (
    TASKS,
    analyze_responses,
    build_pairs,
    make_study,
    preference_test,
)
from mvpt.errors import UsageError


def exact_p_greater(wins: int, total: int) -> float:
    """P(X >= wins) for X ~ Binomial(total, 1/2), as an exact rational sum."""
    return sum(math.comb(total, i) for i in range(wins, total + 1)) / 2 ** total


def recs(n: int, offset: int) -> dict:
    """n queries per task; the candidate id depends on ``offset`` so two models disagree."""
    return {task: {f"q{i}": f"c{(i + offset) % n}" for i in range(n)} for task in TASKS}


@pytest.mark.parametrize("wins,total,percent", [(220, 296, 74.3), (257, 372, 69.1)])
def test_paper_numbers(wins, total, percent):
    result = preference_test(wins=wins, total=total)
    assert round(100 * result["fraction"], 1) == percent
    assert result["p_value"] == pytest.approx(exact_p_greater(wins, total), rel=1e-9)
    assert result["p_value"] < 0.01


@pytest.mark.parametrize("wins,total", [(5, 10), (7, 10), (0, 3), (12, 20)])
def test_small_counts_match_exact_sum(wins, total):
    assert preference_test(wins=wins, total=total)["p_value"] == pytest.approx(
        exact_p_greater(wins, total), rel=1e-12)


def test_pairs_distinct_balanced_seeded():
    ours, base = recs(100, 1), recs(100, 2)
    base["video_to_music"]["q0"] = ours["video_to_music"]["q0"]  # agreement: never shown
    pairs = build_pairs(ours, base, participants=4, n_per_task=20, seed=3)
    assert len(pairs) == 4 * 2 * 20
    for task in TASKS:
        queries = [p["query"] for p in pairs if p["task"] == task]
        assert len(set(queries)) == len(queries) == 80
        for who in {p["participant"] for p in pairs}:
            sides = [p["ours_side"] for p in pairs if p["task"] == task and p["participant"] == who]
            assert sides.count("A") == sides.count("B") == 10
    assert "q0" not in [p["query"] for p in pairs if p["task"] == "video_to_music"]
    assert all(p["ours"] != p["baseline"] for p in pairs)
    again = build_pairs(ours, base, participants=4, n_per_task=20, seed=3)
    other = build_pairs(ours, base, participants=4, n_per_task=20, seed=4)
    assert again == pairs and other != pairs
    with pytest.raises(UsageError, match="need 120"):
        build_pairs(ours, base, participants=6, n_per_task=20)


def test_pages_and_analysis_end_to_end(tmp_path):
    (tmp_path / "ours.json").write_text(json.dumps(recs(30, 1)))
    (tmp_path / "base.json").write_text(json.dumps(recs(30, 2)))
    out = tmp_path / "study"
    assert cli.main(["study", "make", str(tmp_path / "ours.json"), str(tmp_path / "base.json"),
                     "--out", str(out), "--participants", "2", "--per-task", "6"]) == 0
    key = json.loads((out / "key.json").read_text())
    page = (out / "participant_01.html").read_text()
    assert "ours_side" not in page and "http" not in page and "media/q" in page
    data = json.loads(re.search(r"const DATA = (.*);\n", page).group(1))
    assert len(data["pairs"]) == 12
    # participant 1 always picks ours; participant 2 always picks side A
    for who, pick in (("p01", lambda p: p["ours_side"]), ("p02", lambda p: "A")):
        choices = [{"pair": p["pair"], "task": p["task"], "choice": pick(p)}
                   for p in key["pairs"] if p["participant"] == who]
        (tmp_path / f"{who}.json").write_text(json.dumps(
            {"study": key["study"], "participant": who, "choices": choices}))
    files = [tmp_path / "p01.json", tmp_path / "p02.json"]
    result = analyze_responses(files, key=out / "key.json")
    for task in TASKS:
        assert result["tasks"][task]["total"] == 12
        assert result["tasks"][task]["wins"] == 6 + 3  # half of p02's pairs have ours on A
    assert cli.main(["study", "analyze", *map(str, files), "--key", str(out / "key.json"),
                     "--out", str(tmp_path / "report")]) == 0
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"study.json", "study.md",
                                                                 "study.png"}
    with pytest.raises(UsageError, match="answered twice"):
        analyze_responses(files + files[:1], key=out / "key.json")


def test_top1_recommendations_from_a_model(tmp_path, rng):
    import numpy as np

    from mvpt.analysis.study import top1_recommendations
    from mvpt.store import FeatureStore, ItemResult

    store = FeatureStore.create(tmp_path / "store", {
        "encoders": {"video": {"name": "v", "version": "1", "dim": 3},
                     "audio": {"name": "a", "version": "1", "dim": 3}},
        "clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30})
    basis = np.eye(3)
    # t0 and t1 look alike (both axis 0), t2 is axis 1, t3 axis 2
    axes = [0, 0, 1, 2]
    store.write_shard([ItemResult(id=f"t{i}", source_path=f"t{i}.mp4", split="test",
                                  status="done", arrays={"video": np.tile(basis[a], (5, 1)),
                                                         "audio": np.tile(basis[a], (5, 1))})
                       for i, a in enumerate(axes)])

    def embed(modality, sequences):
        return np.stack([s.mean(axis=0) for s in sequences])

    recs = top1_recommendations(None, tmp_path / "store", embed_fn=embed)
    assert recs["video_to_music"]["t0"] == "t1" and recs["music_to_video"]["t1"] == "t0"
    assert set(recs["video_to_music"]) == {"t0", "t1", "t2", "t3"}
    assert all(q != c for task in TASKS for q, c in recs[task].items())
    own = top1_recommendations(None, tmp_path / "store", embed_fn=embed, exclude_own=False)
    assert own["video_to_music"]["t2"] == "t2"


def test_page_in_a_browser_records_and_downloads_choices(tmp_path):
    """The static page, opened from disk in headless Chromium: choose A for every pair, download,
    and feed the downloaded file to the analysis."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"{chromium} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    key = make_study(recs(12, 1), recs(12, 2), tmp_path / "study", participants=2, n_per_task=3,
                     seed=5)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium),
                                             args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        errors, remote = [], []
        page.on("console", lambda m: m.type == "error"
                and "Failed to load resource" not in m.text and errors.append(m.text))
        page.on("request", lambda r: r.url.startswith("http") and remote.append(r.url))
        page.goto((tmp_path / "study" / "participant_02.html").as_uri())
        assert page.is_disabled("#save")
        for _ in range(6):
            page.click("text=A fits better")
        assert "All done" in page.text_content("#progress")
        with page.expect_download() as download:
            page.click("#save")
        download.value.save_as(tmp_path / "answers.json")
        browser.close()
    assert remote == [] and errors == []
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert answers["participant"] == "p02" and len(answers["choices"]) == 6
    result = analyze_responses([tmp_path / "answers.json"], key=key)
    mine = [p for p in key["pairs"] if p["participant"] == "p02"]
    for task in TASKS:
        expected = sum(p["ours_side"] == "A" for p in mine if p["task"] == task)
        assert result["tasks"][task] == {**result["tasks"][task], "wins": expected, "total": 3}
