"""t-SNE of track-level embeddings: the k-NN genre agreement against a brute-force count, the
perplexity clamp, and the whole analysis through the CLI on the tiny demo run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mvpt.analysis.tsne import clamp_perplexity, knn_genre_agreement
from mvpt.errors import UsageError


def brute_force_agreement(embeddings, genres, k: int) -> tuple[float, float]:
    """(agreement, chance) by plain loops: cosine similarity to every other item, sorted by
    similarity then index; random neighbours share the genre with odds (n_g - 1) / (n - 1)."""
    x = [np.asarray(e, np.float64) / np.linalg.norm(e) for e in embeddings]
    n = len(x)
    shares, chances = [], []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: (-float(x[i] @ x[j]), j))
        shares.append(sum(genres[j] == genres[i] for j in others[:k]) / k)
        chances.append(sum(genres[j] == genres[i] for j in range(n) if j != i) / (n - 1))
    return float(np.mean(shares)), float(np.mean(chances))


def test_knn_agreement_matches_brute_force(rng):
    genres = list(rng.choice(["pop", "rock", "jazz", "folk"], size=57))
    centres = {g: rng.normal(size=8) for g in set(genres)}
    emb = np.stack([centres[g] + 1.5 * rng.normal(size=8) for g in genres])
    for k in (1, 4, 10):
        got = knn_genre_agreement(emb, genres, k=k, block_size=16)
        want = brute_force_agreement(emb, genres, k)
        assert got["k"] == k and got["n"] == 57
        assert got["agreement"] == pytest.approx(want[0])
        assert got["chance"] == pytest.approx(want[1])
    assert got["agreement"] > got["chance"]  # clustered by construction


def test_knn_agreement_extremes():
    # two tight clusters: every neighbour shares the genre; chance from frequencies 3:2
    emb = np.array([[1, 0.01], [1, 0.0], [1, -0.01], [0, 1], [0.01, 1]])
    genres = ["a", "a", "a", "b", "b"]
    result = knn_genre_agreement(emb, genres, k=1)
    assert result["agreement"] == 1.0
    assert result["chance"] == pytest.approx((3 * 2 + 2 * 1) / (5 * 4))
    assert knn_genre_agreement(emb, genres, k=50)["k"] == 4  # clamped to n - 1
    # genres opposite to the geometry: no neighbour agrees
    assert knn_genre_agreement(emb, ["a", "b", "c", "d", "e"], k=2)["agreement"] == 0.0
    with pytest.raises(UsageError):
        knn_genre_agreement(emb[:1], ["a"], k=1)


def test_perplexity_clamp():
    assert clamp_perplexity(30, 1000) == 30
    assert clamp_perplexity(30, 31) == 10
    assert clamp_perplexity(30, 3) == 1.0
    with pytest.raises(UsageError):
        clamp_perplexity(0, 10)


def independent_embeddings(demo, ids: list[str], store_array: str) -> np.ndarray:
    """Track-level embeddings computed without the analysis module: the run's model over each
    track's centred window of K clips."""
    from mvpt.embed import centred
    from mvpt.run import Run
    from mvpt.store import FeatureStore

    run = Run.load(demo["runs"]["mvpt"])
    features = FeatureStore.open(demo["store"]).load(arrays=(store_array,), ids=ids)
    assert features.ids == ids
    sequences = [centred(features.item(i, store_array).astype(np.float32), run.max_clips)
                 for i in range(len(ids))]
    return run.embed(store_array, sequences)


@pytest.mark.slow
def test_tsne_cli_points_figure_and_score(demo, tmp_path, capsys):
    import matplotlib.image

    from mvpt.analysis.attributes import load_genres
    from mvpt.cli import main
    from mvpt.store import FeatureStore

    data = Path(demo["data"]).parent
    genres = load_genres(data)
    test_ids = FeatureStore.open(demo["store"]).rows(split="test")["id"].tolist()
    assert len(test_ids) >= 3
    out = tmp_path / "out"
    code = main(["analyze", "tsne", demo["runs"]["mvpt"], demo["store"], "--genres", str(data),
                 "--knn", "2", "--out", str(out), "--json", str(out / "result.json")])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert json.loads((out / "tsne.json").read_text()) == result
    assert result["n_points"] == len(test_ids) and result["perplexity_clamped"]
    assert result["perplexity"] == pytest.approx(max(1.0, (len(test_ids) - 1) / 3))
    assert "clamped from 30" in capsys.readouterr().out
    assert [p["modality"] for p in result["panels"]] == ["music", "video"]
    for panel, array in zip(result["panels"], ("audio", "video")):
        points = panel["points"]
        assert [p["id"] for p in points] == test_ids
        assert all(p["genre"] == genres[p["id"]] for p in points)
        assert np.isfinite([[p["x"], p["y"]] for p in points]).all()
        emb = independent_embeddings(demo, test_ids, array)
        agreement, chance = brute_force_agreement(emb, [genres[i] for i in test_ids], 2)
        assert panel["knn"]["k"] == 2
        assert panel["knn"]["agreement"] == pytest.approx(agreement, abs=1e-9)
        assert panel["knn"]["chance"] == pytest.approx(chance)
    image = matplotlib.image.imread(out / "tsne.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > image.shape[0]
    assert "k-NN genre agreement" in (out / "tsne.md").read_text()


@pytest.mark.slow
def test_tsne_cli_sample_of_one_modality(demo, tmp_path):
    from mvpt.cli import main

    data = Path(demo["data"]).parent
    out = tmp_path / "out"
    args = ["analyze", "tsne", demo["runs"]["mvpt"], demo["store"], "--genres", str(data),
            "--split", "all", "--modality", "music", "--max-points", "25", "--perplexity", "5",
            "--seed", "3", "--out", str(out), "--json", str(out / "r.json")]
    assert main(args) == 0
    result = json.loads((out / "r.json").read_text())
    assert result["n_items"] == 40 and result["n_points"] == 25
    assert result["perplexity"] == 5 and not result["perplexity_clamped"]
    (panel,) = result["panels"]
    ids = [p["id"] for p in panel["points"]]
    assert panel["modality"] == "music" and len(set(ids)) == 25
    assert panel["knn"]["k"] == 10 and 0 <= panel["knn"]["agreement"] <= 1
    assert main(args) == 0  # the seed fixes the sample
    assert [p["id"] for p in json.loads((out / "r.json").read_text())["panels"][0]["points"]] == ids
    assert main(args[:-2] + ["--max-points", "2"]) == 2  # bad usage: too few points
