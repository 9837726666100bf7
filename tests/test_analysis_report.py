"""`mvpt analyze all`: every analysis the inputs allow on the demo's run, one report page, which
renders in Debian's Chromium (screenshot saved to tests/artifacts/report.png)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mvpt.analysis.report import ANALYSES, find_baselines, markdown_to_html
from mvpt.cli import main

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"


def test_markdown_to_html_tables_lists_and_escaping():
    text = ("# Title\n\nSome `code` and **bold** <b>raw</b>\n\n- one\n- two\n\n"
            "| model | R@1 |\n|---|---:|\n| mvpt <x> | 12.5 |\n| chance | 1.8 |\n")
    page = markdown_to_html(text)
    assert "<h3>Title</h3>" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert "&lt;b&gt;raw&lt;/b&gt;" in page and "<b>" not in page
    assert "<ul><li>one</li><li>two</li></ul>" in page
    assert "<tr><th>model</th><th>R@1</th></tr>" in page
    assert '<tr><td>mvpt &lt;x&gt;</td><td class="num">12.5</td></tr>' in page
    assert page.count("<tr>") == 3  # the rule row is not a row


@pytest.fixture(scope="module")
def report_dir(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = main(["analyze", "all", demo["runs"]["mvpt"], demo["store"], "--genres", demo["data"],
                 "--quick", "--max-items", "8", "--out", str(out)])
    assert code == 0
    return out


def test_every_analysis_is_done_or_skipped_with_a_reason(report_dir, demo):
    report = json.loads((report_dir / "report.json").read_text())
    status = {e["name"]: e for e in report["analyses"]}
    assert list(status) == [a.name for a in ANALYSES]
    for name in ("shortcut", "same_genre", "manipulate_brightness", "manipulate_hue",
                 "manipulate_tempo", "tsne", "qualitative"):
        assert status[name]["status"] == "done", status[name]
    for name in ("attributes", "conditioning", "study"):  # their inputs were not given
        assert status[name]["status"] == "skipped" and "--" in status[name]["reason"]
    # the demo's baselines were found beside its MVPt run and are rows of the shortcut table
    assert sorted(Path(b).name for b in report["baselines"]) == ["linear", "mlp"]
    assert sorted(Path(b).name for b in find_baselines(Path(demo["runs"]["mvpt"]))) == [
        "linear", "mlp"]
    import matplotlib.image

    for entry in status.values():
        for name in entry.get("files", []):
            path = report_dir / name
            assert path.is_file(), name
            if name.endswith(".png"):
                assert matplotlib.image.imread(path).shape[0] > 50
            if name.endswith(".json"):
                json.loads(path.read_text())
    # the same-genre baseline on the demo data: closed form = simulation, above chance
    for level in json.loads((report_dir / "same_genre.json").read_text())["results"]:
        expected, chance = level["expected"], level["chance"]
        assert expected["video_to_music_R@1"] > chance["video_to_music_R@1"], level["level"]
        assert level["simulated"]["video_to_music_R@1"] == pytest.approx(
            expected["video_to_music_R@1"], abs=0.1)
    curve = json.loads((report_dir / "manipulate_hue.json").read_text())
    assert [p["rate"] for p in curve["curve"]] == [0.5, 0.75, 1.0, 1.25, 1.5]
    page = (report_dir / "report.html").read_text()
    assert page.count("<section") == len(ANALYSES)
    assert page.count("<img ") == sum(any(f.endswith(".png") for f in e.get("files", []))
                                      for e in status.values())
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_a_failing_analysis_is_recorded_and_the_rest_go_on(demo, tmp_path, capsys):
    code = main(["analyze", "all", demo["runs"]["mvpt"], demo["store"], "--genres", demo["data"],
                 "--baseline", str(tmp_path / "no-such-run"), "--only", "shortcut,same_genre",
                 "--out", str(tmp_path / "out")])
    assert code == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    status = {e["name"]: e for e in report["analyses"]}
    assert list(status) == ["shortcut", "same_genre"]
    assert status["shortcut"]["status"] == "failed" and "no-such-run" in status["shortcut"]["reason"]
    assert status["same_genre"]["status"] == "done"
    assert "shortcut" in capsys.readouterr().out


def test_unknown_analysis_name_is_a_usage_error(demo, tmp_path):
    assert main(["analyze", "all", demo["runs"]["mvpt"], demo["store"], "--only", "nope",
                 "--out", str(tmp_path)]) == 2


@pytest.mark.slow
def test_report_page_renders_in_chromium(report_dir, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            requested = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto((report_dir / "report.html").as_uri())
            page.wait_for_load_state("load")
            sizes = page.locator("img").evaluate_all(
                "list => list.map(i => [i.complete, i.naturalWidth])")
            assert sizes and all(done and width > 100 for done, width in sizes)
            assert page.locator("section").count() == len(ANALYSES)
            assert page.locator("section#shortcut table th").count() >= 3
            assert page.locator("section .status.done").count() >= 7
            assert all(url.startswith("file://") for url in requested)
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "report.png")


def scores_store(path, *, rng, n=12, with_scores=True):
    """A store of random clip features, with random YAMNet class scores when asked."""
    from mvpt.store import FeatureStore, ItemResult

    arrays = {"video": 4, "audio": 4, **({"audio_scores": 521} if with_scores else {})}
    extras = {"extras": {"scores": 521}} if with_scores else {}
    store = FeatureStore.create(path, {
        "encoders": {"video": {"name": "v", "version": "1", "dim": 4},
                     "audio": {"name": "a", "version": "1", "dim": 4, **extras}},
        "clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30})
    store.write_shard([ItemResult(id=f"t{i}", source_path=f"t{i}.mp4", split="test",
                                  status="done", duration_s=5.0,
                                  arrays={k: rng.random((5, d)) for k, d in arrays.items()})
                       for i in range(n)])
    return store


def test_genres_are_tagged_from_the_store_when_it_has_none(tmp_path, rng):
    from mvpt.analysis.report import Inputs, Skip, _genre_source
    from mvpt.data.genres import genre_class_names

    store = scores_store(tmp_path / "store", rng=rng)
    inputs = Inputs(run=tmp_path / "run", store=store.path, out=tmp_path / "out")
    labels = _genre_source(inputs)
    assert set(labels) == {f"t{i}" for i in range(12)}
    assert set(labels.values()) <= set(genre_class_names()) and len(set(labels.values())) > 1
    assert _genre_source(inputs) is labels  # tagged once per report
    assert not (store.path / "annotations").exists()  # the store is left as it was
    bare = scores_store(tmp_path / "bare", rng=rng, with_scores=False)
    with pytest.raises(Skip, match="none could be tagged"):
        _genre_source(Inputs(run=tmp_path / "run", store=bare.path, out=tmp_path / "out"))
