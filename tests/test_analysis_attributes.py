"""Attribute-versus-genre matrices: crops, Open Images boxes, balancing, the score and share
filters, and the whole analysis through the CLI on the tiny demo run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mvpt.analysis.attributes import (
    Query,
    balance_classes,
    box_pixels,
    crop_box,
    filter_by_score,
    genre_matrix,
    load_genres,
    normalise_rows,
    read_boxes,
    read_class_names,
    read_rgb,
    read_scores,
    top_k,
    write_png,
)
from mvpt.errors import MediaError, UsageError


def coordinate_image(height: int, width: int) -> np.ndarray:
    """uint8 RGB whose red channel is the row and green channel the column of each pixel."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


# ------------------------------------------------------------------------------ crops and boxes
def test_crop_takes_the_box_pixels_of_a_known_image():
    rgb = coordinate_image(40, 100)
    crop = crop_box(rgb, (0.2, 0.5, 0.25, 0.75))  # xmin, xmax, ymin, ymax
    assert crop.shape == (20, 30, 3)
    assert tuple(crop[0, 0, :2]) == (10, 20) and tuple(crop[-1, -1, :2]) == (29, 49)
    # a box edge inside a pixel takes the whole pixel; a zero-area box still gives one pixel
    assert box_pixels((0.216, 0.5, 0.0, 0.999), width=100, height=40) == (21, 50, 0, 40)
    assert crop_box(rgb, (0.5, 0.5, 1.0, 1.0)).shape == (1, 1, 3)
    assert crop_box(rgb, (0.0, 1.0, 0.0, 1.0)).shape == rgb.shape
    with pytest.raises(UsageError):
        crop_box(rgb, (0.6, 0.5, 0.0, 1.0))
    with pytest.raises(MediaError, match="pic.png"):
        crop_box(rgb, (0.0, 1.2, 0.0, 1.0), source="pic.png")


def test_png_round_trip_keeps_odd_sizes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (37, 51, 3), dtype=np.uint8)
    assert np.array_equal(read_rgb(write_png(tmp_path / "x.png", rgb)), rgb)
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(MediaError, match="bad.png"):
        read_rgb(tmp_path / "bad.png")


BOX_HEADER = ("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,"
              "IsGroupOf,IsDepiction,IsInside\n")


def test_open_images_boxes_and_class_names(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    write_png(images / "aaa.png", coordinate_image(20, 30))
    write_png(images / "sub" / "bbb.png", coordinate_image(20, 30))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(BOX_HEADER
                     + "aaa,xclick,/m/guitar,1,0.1,0.5,0.0,1.0,0,0,0,0,0\n"
                     + "aaa,xclick,/m/piano,1,0.5,1.0,0.5,1.0,0,0,0,0,0\n"
                     + "bbb,xclick,/m/guitar,1,0.0,0.2,0.2,0.4,0,0,0,0,0\n"
                     + "ccc,xclick,/m/guitar,1,0.0,0.2,0.2,0.4,0,0,0,0,0\n"  # no picture
                     + "bbb,xclick,/m/drum,0,0.0,0.2,0.2,0.4,0,0,0,0,0\n")  # confidence 0
    names = tmp_path / "class-descriptions-boxable.csv"
    names.write_text("/m/guitar,Guitar\n/m/piano,Piano\n")  # Open Images ships no header
    assert read_class_names(names) == {"/m/guitar": "Guitar", "/m/piano": "Piano"}
    queries, skipped = read_boxes(boxes, images, class_names=read_class_names(names))
    assert [(q.path.name, q.label) for q in queries] == [
        ("aaa.png", "Guitar"), ("aaa.png", "Piano"), ("bbb.png", "Guitar")]
    assert queries[2].box == (0.0, 0.2, 0.2, 0.4)
    assert skipped == {"image_missing": 1, "confidence_0": 1}
    only, skipped = read_boxes(boxes, images, class_names=read_class_names(names),
                               classes=["piano"])
    assert [q.label for q in only] == ["Piano"] and skipped == {"other_class": 4}
    unmapped, _ = read_boxes(boxes, images)
    assert unmapped[0].label == "/m/guitar"
    (tmp_path / "wrong.csv").write_text("ImageID,LabelName\naaa,/m/guitar\n")
    with pytest.raises(UsageError, match="XMin"):
        read_boxes(tmp_path / "wrong.csv", images)


# ------------------------------------------------------------------------------ filters
def test_balance_draws_exactly_n_per_class_with_the_seed():
    queries = ([Query(Path(f"g{i}.png"), "guitar") for i in range(12)]
               + [Query(Path(f"p{i}.png"), "piano") for i in range(7)]
               + [Query(Path(f"d{i}.png"), "drum") for i in range(3)])
    kept, short = balance_classes(queries, 5, seed=1)
    assert Counter(q.label for q in kept) == {"guitar": 5, "piano": 5}
    assert short == {"drum": 3}
    assert len(set(kept)) == len(kept)
    assert balance_classes(queries, 5, seed=1)[0] == kept
    draws = {tuple(q.path.name for q in balance_classes(queries, 5, seed=s)[0]) for s in range(6)}
    assert len(draws) > 1  # the seed changes the draw
    assert balance_classes(queries, 7, seed=0)[1] == {"drum": 3}
    with pytest.raises(UsageError):
        balance_classes(queries, 0)


def test_score_filter_keeps_a_picture_only_for_its_own_class(tmp_path):
    (tmp_path / "beach").mkdir()
    queries = [Query(tmp_path / "beach" / f"{i}.png", "beach") for i in range(4)]
    scores = tmp_path / "scores.csv"
    scores.write_text("path,class,score\n"
                      "beach/0.png,beach,0.9\n"
                      "beach/1.png,beach,0.2\n"        # exactly the threshold: kept
                      "beach/2.png,beach,0.19\n"       # below: dropped
                      f"{tmp_path}/beach/3.png,forest,0.8\n")  # another class: dropped
    table = read_scores(scores, tmp_path)
    kept, dropped = filter_by_score(queries, table, min_score=0.2)
    assert [q.path.name for q in kept] == ["0.png", "1.png"] and dropped == 2
    assert filter_by_score(queries, table, min_score=0.0)[1] == 1  # no row for its class


def test_matrix_counts_and_rows():
    genres = ["pop", "rock", "jazz"]
    counts = genre_matrix(["a", "a", "b"], [["pop", "pop"], ["rock", "pop"], ["jazz", "jazz"]],
                          classes=["a", "b", "c"], genres=genres)
    assert counts.tolist() == [[3, 1, 0], [0, 0, 2], [0, 0, 0]]
    shares = normalise_rows(counts)
    assert shares[0].tolist() == [0.75, 0.25, 0.0] and shares[2].tolist() == [0, 0, 0]
    best = top_k(np.array([[1.0, 0.0]]), np.array([[0.5, 0], [1.0, 0], [1.0, 0], [-1, 0]]), 3)
    assert best.tolist() == [[1, 2, 0]]  # equal scores keep candidate order


def test_genres_from_a_synthetic_factors_file(tmp_path):
    (tmp_path / "factors.json").write_text(json.dumps(
        {"params": {}, "videos": {"s0-00000": {"genre": "rock"}, "s0-00001": {"genre": "jazz"}}}))
    assert load_genres(tmp_path) == {"s0-00000": "rock", "s0-00001": "jazz"}
    (tmp_path / "manifest.csv").write_text("id,path,split\ns0-00000,videos/a.mp4,test\n")
    assert load_genres(tmp_path / "manifest.csv") == load_genres(tmp_path)
    (tmp_path / "g.csv").write_text("id,genre\nx,pop\n")
    assert load_genres(tmp_path / "g.csv") == {"x": "pop"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "ids.csv").write_text("id,path\nx,a.mp4\n")
    with pytest.raises(UsageError, match="ids.csv"):
        load_genres(tmp_path / "other" / "ids.csv")


# ------------------------------------------------------------------------------ the CLI
CLASSES = {"red": (5, (220, 30, 30)), "blue": (4, (30, 40, 220)), "green": (2, (30, 200, 60))}


def draw(path: Path, colour, *, seed: int) -> Path:
    """A simple picture: a coloured disc on a grey background, placed by ``seed``."""
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    rows, cols = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.integers(14, 34), rng.integers(16, 48), rng.integers(8, 14)
    rgb = np.full((h, w, 3), 90, np.uint8)
    rgb[(rows - cy) ** 2 + (cols - cx) ** 2 <= r * r] = colour
    return write_png(path, rgb)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    for label, (n, colour) in CLASSES.items():
        (root / label).mkdir()
        for i in range(n):
            draw(root / label / f"{label}-{i}.png", colour, seed=100 * len(label) + i)
    return root


def run_cli(demo, images, out: Path, *extra: str) -> dict:
    from mvpt.cli import main

    data = Path(demo["data"]).parent  # the synthetic set: factors.json gives every genre
    code = main(["analyze", "attributes", demo["runs"]["mvpt"], demo["store"], str(images),
                 "--genres", str(data), "--split", "all", "--out", str(out),
                 "--json", str(out / "result.json"), *extra])
    assert code == 0
    return json.loads((out / "result.json").read_text())


def check_matrix(result: dict, genres: dict) -> None:
    """Rows sum to 1, every picture gives ``top`` tracks, the counts are those of the retrieved
    ids' genres."""
    top = result["top"]
    shares = np.asarray(result["shares"])
    assert np.allclose(shares.sum(axis=1), 1.0)
    counts = np.asarray(result["counts"])
    assert counts.sum() == result["n_images"] * top == len(result["queries"]) * top
    for label, row in zip(result["classes"], counts):
        assert row.sum() == result["images_per_class"][label] * top
        assert np.allclose(row / row.sum(), shares[result["classes"].index(label)])
    recount = Counter()
    for q in result["queries"]:
        assert len(q["retrieved"]) == len(set(q["retrieved"])) == top
        recount.update((q["class"], genres[i]) for i in q["retrieved"])
    for i, label in enumerate(result["classes"]):
        for j, genre in enumerate(result["genres"]):
            assert counts[i, j] == recount[(label, genre)]
    assert np.isclose(sum(result["pool_shares"]), 1.0)


@pytest.mark.slow
def test_attributes_cli_matrix_balance_and_share(demo, pictures, tmp_path, capsys):
    genres = load_genres(Path(demo["data"]).parent)
    full = run_cli(demo, pictures, tmp_path / "full", "--top", "3")
    assert full["classes"] == ["blue", "green", "red"]
    assert full["images_per_class"] == {"blue": 4, "green": 2, "red": 5}
    assert full["n_images"] == 11 and full["top"] == 3 and full["n_candidates"] == 40
    check_matrix(full, genres)
    for kind in ("json", "md", "png"):
        assert (tmp_path / "full" / f"attributes.{kind}").is_file()
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "full" / "attributes.png").shape[0] > 100
    assert "| red | 5 |" in capsys.readouterr().out

    # balancing: exactly 3 pictures of each class that has them, the same draw for the seed
    balanced = run_cli(demo, pictures, tmp_path / "bal", "--top", "2", "--balance", "3",
                       "--seed", "4")
    assert balanced["images_per_class"] == {"blue": 3, "red": 3}
    assert balanced["classes_short_of_balance"] == {"green": 2}
    check_matrix(balanced, genres)
    again = run_cli(demo, pictures, tmp_path / "bal2", "--top", "2", "--balance", "3",
                    "--seed", "4")
    assert [q["image"] for q in again["queries"]] == [q["image"] for q in balanced["queries"]]

    # the appendix's share rule: classes whose per-genre shares sum below S are left out
    sums = {c: sum(row) for c, row in zip(full["classes"], full["shares_per_genre"])}
    assert np.isclose(sum(sums.values()), np.count_nonzero(np.asarray(full["counts"]).sum(0)))
    low, high = min(sums.values()), max(sums.values())
    assert high > low
    threshold = (low + high) / 2
    shared = run_cli(demo, pictures, tmp_path / "share", "--top", "3", "--min-share",
                     str(threshold))
    kept = sorted(c for c, s in sums.items() if s >= threshold)
    assert shared["classes"] == kept and sorted(shared["classes_hidden_by_min_share"]) == sorted(
        set(sums) - set(kept))
    check_matrix(shared, genres)
    assert shared["counts"] == [full["counts"][full["classes"].index(c)] for c in kept]


@pytest.mark.slow
def test_attributes_cli_scores_and_boxes(demo, pictures, tmp_path):
    genres = load_genres(Path(demo["data"]).parent)
    scores = tmp_path / "scores.csv"
    scores.write_text("path,class,score\n"
                      "red/red-0.png,red,0.9\nred/red-1.png,red,0.1\nred/red-2.png,red,0.5\n"
                      "blue/blue-0.png,blue,0.3\nblue/blue-1.png,red,0.9\n")
    filtered = run_cli(demo, pictures, tmp_path / "scored", "--top", "2", "--scores",
                       str(scores), "--min-score", "0.25")
    assert filtered["images_per_class"] == {"blue": 1, "red": 2}
    assert filtered["n_images_found"] == 11 and filtered["n_images_dropped_by_score"] == 8
    assert sorted(Path(q["image"]).name for q in filtered["queries"]) == [
        "blue-0.png", "red-0.png", "red-2.png"]
    check_matrix(filtered, genres)

    images = tmp_path / "open-images"
    images.mkdir()
    write_png(images / "0001.png", coordinate_image(60, 80))
    draw(images / "0002.png", (220, 30, 30), seed=3)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(BOX_HEADER
                     + "0001,xclick,/m/04szw,1,0.1,0.6,0.2,0.9,0,0,0,0,0\n"
                     + "0002,xclick,/m/04szw,1,0.0,0.5,0.0,0.5,0,0,0,0,0\n"
                     + "0002,xclick,/m/05r5c,1,0.3,0.9,0.1,0.7,0,0,0,0,0\n"
                     + "0003,xclick,/m/05r5c,1,0.3,0.9,0.1,0.7,0,0,0,0,0\n")
    names = tmp_path / "names.csv"
    names.write_text("LabelName,DisplayName\n/m/04szw,Musical instrument\n/m/05r5c,Piano\n")
    result = run_cli(demo, images, tmp_path / "boxes", "--top", "4", "--boxes", str(boxes),
                     "--class-names", str(names))
    assert result["images_per_class"] == {"Musical instrument": 2, "Piano": 1}
    assert result["boxes_left_out"] == {"image_missing": 1}
    assert [q["box"] for q in result["queries"]][0] == [0.1, 0.6, 0.2, 0.9]
    check_matrix(result, genres)


@pytest.mark.slow
def test_still_queries_are_the_conditioning_code_of_recommend(demo, tmp_path):
    """A picture's query is what `attribute_direction` makes of that picture alone, and a box's
    query is that of the cropped picture."""
    from mvpt.analysis.attributes import still_embeddings
    from mvpt.run import Run
    from mvpt.recommend import attribute_direction

    run = Run.load(demo["runs"]["mvpt"])
    pictures = [draw(tmp_path / f"p{i}.png", colour, seed=i)
                for i, (_, colour) in enumerate(CLASSES.values())]
    box = (0.25, 0.75, 0.0, 0.5)
    crop = write_png(tmp_path / "crop.png", crop_box(read_rgb(pictures[0]), box))
    queries = [Query(p, "x") for p in pictures] + [Query(pictures[0], "x", box)]
    got = still_embeddings(run, queries, clips=7, batch_size=2)
    want = [attribute_direction(run, [p], clips=7) for p in pictures + [crop]]
    assert got.shape == (4, len(want[0]))
    assert np.allclose(got, np.stack(want), atol=1e-5)
    assert not np.allclose(got[0], got[3], atol=1e-3)  # the crop is another query
    shorter = still_embeddings(run, queries[:1], clips=2)
    assert np.allclose(shorter[0], attribute_direction(run, pictures[:1], clips=2), atol=1e-5)


@pytest.mark.slow
def test_attributes_cli_errors_name_the_file(demo, tmp_path, capsys):
    from mvpt.cli import main

    (tmp_path / "empty").mkdir()
    code = main(["analyze", "attributes", demo["runs"]["mvpt"], demo["store"],
                 str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert code == 2 and str(tmp_path / "empty") in capsys.readouterr().err
    (tmp_path / "pics" / "cls").mkdir(parents=True)
    (tmp_path / "pics" / "cls" / "broken.png").write_bytes(b"no picture here")
    code = main(["analyze", "attributes", demo["runs"]["mvpt"], demo["store"],
                 str(tmp_path / "pics"), "--genres", str(Path(demo["data"]).parent),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "broken.png" in err and err.count("\n") == 1
