"""The encoder contract of per-clip encoders (the registry of names is :mod:`mvpt.encoders`).

A *frame encoder* maps RGB frames to vectors; an *audio encoder* maps a mono waveform and a list of
clip bounds (seconds) to one vector per clip. Each encoder has a stable ``name``, a ``version``
string (stored in the feature store's manifest so features of other encoders are refused), an
output dimension and the preprocessing it expects.

Devices (``device=`` of the built-in encoders, ``mvpt extract --device``): ``"auto"`` (CUDA where
the encoder's runtime offers it, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. The device
is not part of an encoder's identity: features computed on a GPU differ from the CPU's only by
float rounding, so stores made on either mix. A Ray worker given GPUs (``--gpus-per-worker``)
sees only its own, so ``"auto"`` there encodes on that GPU.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import sys
from dataclasses import asdict, dataclass

import numpy as np

from mvpt.errors import EncoderError


@dataclass(frozen=True)
class EncoderInfo:
    """What ``mvpt encoders`` lists about one encoder."""

    name: str
    modality: str  # "video" or "audio"
    dim: int
    version: str
    licence: str
    weights_present: bool
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(abc.ABC):
    """Common attributes of every encoder."""

    name: str = ""
    modality: str = ""
    dim: int = 0
    version: str = ""
    licence: str = "unknown"

    @classmethod
    def info(cls) -> EncoderInfo:
        """What ``mvpt encoders`` lists; cheap (loads no weights). Encoders whose weights may be
        missing say so by overriding it."""
        return EncoderInfo(cls.name, cls.modality, cls.dim, cls.version, cls.licence, True)

    def manifest(self) -> dict:
        """The description stored in a feature store's manifest (must be JSON-serialisable)."""
        return {
            "name": self.name,
            "modality": self.modality,
            "dim": self.dim,
            "version": self.version,
            "extras": self.extra_dims(),
            "preprocessing": self.preprocessing(),
        }

    def extra_dims(self) -> dict[str, int]:
        """Extra per-clip outputs besides the embedding, name -> dimension (e.g. class scores)."""
        return {}

    @abc.abstractmethod
    def preprocessing(self) -> dict:
        """Input preprocessing, for the manifest (sizes, rates, normalisation)."""


class FrameEncoder(Encoder):
    """Encodes RGB frames, uint8 [n, height, width, 3], to float32 [n, dim]."""

    modality = "video"
    #: (width, height) the frames must have; media.read_frames produces it.
    image_size: tuple[int, int] = (224, 224)
    #: "crop": scale the shorter side to the size then centre-crop; "squash": plain resize.
    resize_mode: str = "crop"

    @abc.abstractmethod
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """frames uint8 [n, h, w, 3] -> float32 [n, dim]. Batches internally."""


class AudioEncoder(Encoder):
    """Encodes a mono waveform to one vector per clip."""

    modality = "audio"
    sample_rate_hz: int = 16000

    @abc.abstractmethod
    def encode_clips(self, wave: np.ndarray, clip_bounds_s: np.ndarray) -> dict[str, np.ndarray]:
        """wave float32 [n_samples] at ``sample_rate_hz`` (time 0 = first sample);
        clip_bounds_s float [n_clips, 2] (start, end) in seconds relative to the wave.

        Returns {"embedding": float32 [n_clips, dim], **extras} with each extra
        float32 [n_clips, extra_dims()[name]].
        """


def check_mono_wave(wave: np.ndarray, *, encoder: str) -> np.ndarray:
    """The wave as float32 [n_samples], or EncoderError naming the encoder and the shape."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise EncoderError(f"{encoder} needs a mono wave [n_samples], got shape {wave.shape}")
    return wave


def check_clip_bounds(clip_bounds_s: np.ndarray) -> np.ndarray:
    """Clip bounds as float64 [n_clips, 2], finite with end >= start, or EncoderError."""
    bounds = np.asarray(clip_bounds_s, dtype=np.float64)
    if bounds.ndim != 2 or bounds.shape[1] != 2:
        raise EncoderError(f"clip_bounds_s must have shape [n_clips, 2], got {bounds.shape}")
    if not np.isfinite(bounds).all() or (bounds[:, 1] < bounds[:, 0]).any():
        raise EncoderError("clip_bounds_s must be finite with end >= start for every clip")
    return bounds


DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def parse_device(device: str | None, *, encoder: str) -> str:
    """``device`` checked and lower-cased (None: "auto")."""
    name = (device or "auto").strip().lower()
    if name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name):
        return name
    raise EncoderError(f"{encoder}: device must be {DEVICE_FORMS}, got {device!r}")


def torch_device(device: str | None, *, encoder: str) -> str:
    """The torch device an encoder on PyTorch runs on: "auto" is CUDA when torch has a GPU."""
    import torch

    name = parse_device(device, encoder=encoder)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"{encoder}: device {name!r}, but this torch ({torch.__version__}) "
                           "sees no CUDA GPU")
    return name


def onnx_providers(device: str | None, *, encoder: str,
                   available: list[str] | None = None) -> list:
    """onnxruntime execution providers for ``device`` ("auto": CUDA when this onnxruntime offers
    it; ``available`` defaults to ``onnxruntime.get_available_providers()``)."""
    name = parse_device(device, encoder=encoder)
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if name == "cpu" or (name == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if not has_cuda:
        raise EncoderError(f"{encoder}: device {name!r} needs an onnxruntime with CUDA "
                           f"(pip install onnxruntime-gpu); this one offers "
                           f"{', '.join(available)}")
    device_id = int(name.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]


def session_device(session) -> str:
    """Where an onnxruntime session runs: "cuda:N", or "cpu" (also when onnxruntime fell back
    to the CPU because CUDA would not start)."""
    if session.get_providers()[0] == "CUDAExecutionProvider":
        options = session.get_provider_options().get("CUDAExecutionProvider", {})
        return f"cuda:{options.get('device_id', 0)}"
    return "cpu"


def cpu_thread_count() -> int:
    """Threads for intra-op work: ``MVPT_THREADS`` if set, else every CPU core."""
    return int(os.environ.get("MVPT_THREADS") or 0) or (os.cpu_count() or 1)


def set_torch_threads() -> int:
    """Use every CPU core for intra-op work; returns the thread count."""
    import torch

    n = cpu_thread_count()
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def denormals_flushed():
    """Flush denormal floats to zero inside the block (they made small Transformers 5-10x slower
    on CPU here), then restore the caller's setting: the CPU flag is process-wide, and code
    that needs IEEE subnormals (hypothesis, numerical libraries) must not inherit it."""
    import torch

    was_flushing = sys.float_info.min / 2 == 0.0
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not was_flushing:
            torch.set_flush_denormal(False)


def package_version(dist_name: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def package_licence(dist_name: str) -> str:
    """The licence a distribution states, as is: metadata expression, field or classifier, else the
    first line of its LICENSE file."""
    from importlib import metadata

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return f"unknown ({dist_name} not installed)"
    meta = dist.metadata
    stated = (meta.get("License-Expression") or meta.get("License") or "").strip()
    if stated and stated.upper() != "UNKNOWN":
        return stated.splitlines()[0]
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    if classifiers:
        return "; ".join(classifiers)
    for file in dist.files or []:
        if file.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            first_line = next((ln.strip() for ln in (file.read_text() or "").splitlines()
                               if ln.strip()), "")
            if first_line:
                return f"{first_line} (its {file.name} file)"
    return f"not stated in {dist_name} {dist.version} metadata"
