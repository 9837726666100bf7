"""CLIP (image tower) and CLAP (audio tower) through ``transformers``: optional real encoders.

Weights come from ``model=``: a local folder saved with ``save_pretrained`` (read with
``local_files_only``) or a hub id (tried in the local cache first, then on the hub, which needs
internet). Without ``model=``, the folder or id in ``MVPT_CLIP_MODEL`` / ``MVPT_CLAP_MODEL`` is
used, else the default hub id. Only the tower each encoder needs is built: the checkpoint of a
full ``CLIPModel`` / ``ClapModel`` loads into ``*WithProjection`` with the top-level
``projection_dim``. Outputs are the projected embeddings, L2-normalised (both models are trained
for cosine similarity).

CLIP images are preprocessed here (no torchvision): shorter side resized to the tower's
``image_size`` (bicubic, antialiased), centre crop, CLIP mean/std (from the folder's
``preprocessor_config.json`` when present). CLAP takes 48 kHz audio, one clip per model input,
through its ``ClapFeatureExtractor``; a clip longer than the extractor's ``max_length_s`` is
centre-cropped to it, so no random crop makes the output depend on chance.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from mvpt.encoders.base import (
    AudioEncoder,
    EncoderInfo,
    FrameEncoder,
    check_clip_bounds,
    check_mono_wave,
    denormals_flushed,
    set_torch_threads,
    torch_device,
)
from mvpt.errors import EncoderError

CLIP_DEFAULT_ID = "openai/clip-vit-base-patch32"
CLAP_DEFAULT_ID = "laion/clap-htsat-unfused"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_DEFAULT_DIM = 512  # projection_dim of both default checkpoints, shown before any weights load


# --- locating and loading weights ------------------------------------------------------------


def _model_ref(model: str | Path | None, *, env_var: str, default_id: str) -> str:
    return str(model or os.environ.get(env_var) or default_id)


def _is_local(ref: str) -> bool:
    """A folder on disk, or something that can only be meant as a path (absolute, ./, ~, ...)."""
    path = Path(ref).expanduser()
    return path.exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1 or (os.sep != "/" and os.sep in ref)


def _config_file(ref: str, filename: str) -> Path | None:
    """``filename`` of a local folder or of a hub id already in the local cache; None if absent."""
    if _is_local(ref):
        path = Path(ref).expanduser() / filename
        return path if path.is_file() else None
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, filename)
    return Path(cached) if isinstance(cached, str) else None


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load reports and progress bars, then restore its settings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _from_pretrained(loader, ref: str, *, what: str, **kwargs):
    """``loader(ref, ...)``: local only for a folder; cache first, then the hub, for an id."""
    attempts = [True] if _is_local(ref) else [True, False]
    error: Exception | None = None
    with _quiet_transformers():
        for local_only in attempts:
            try:
                return loader(str(Path(ref).expanduser()) if _is_local(ref) else ref,
                              local_files_only=local_only, **kwargs)
            except (OSError, ValueError) as exc:
                error = exc
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise EncoderError(f"cannot load {what} weights from {ref!r} (no internet here? pass model=<local "
                       f"folder>): {reason}")


def _tower_config(ref: str, *, what: str, tower: str):
    """The tower's sub-config with the top-level projection_dim (a tower config is used as is)."""
    from transformers import AutoConfig

    config = _from_pretrained(AutoConfig.from_pretrained, ref, what=what)
    sub = getattr(config, tower, None)
    if sub is None:
        return config
    sub.projection_dim = config.projection_dim
    return sub


def _version(ref: str) -> str:
    """Model name (hub id or folder name) and a digest of its config.json."""
    label = Path(ref).name if _is_local(ref) else ref
    config_path = _config_file(ref, "config.json")
    digest = hashlib.sha1(config_path.read_bytes()).hexdigest()[:10] if config_path else "unknown"
    return f"{label}@config-{digest}"


def _licence(ref: str) -> str:
    """The ``license:`` of the model card (README.md front matter), as stated there."""
    card = _config_file(ref, "README.md")
    lines = card.read_text(errors="replace").splitlines() if card else []
    if lines and lines[0].strip() == "---":
        for line in lines[1:]:
            if line.strip() == "---":
                break
            key, _, value = line.partition(":")
            if key.strip().lower() in ("license", "licence") and value.strip():
                return f"{value.strip()} (model card)"
    if card or _config_file(ref, "config.json"):
        return "not stated (no licence in a model card)"
    return "unknown (weights not present)"


def _load_tower(encoder, *, model: str | Path | None, batch_size: int, model_class: str, tower: str,
                env_var: str, default_id: str, device: str):
    """Load ``transformers.<model_class>`` for ``encoder`` onto ``device`` and set its common
    attributes; returns the tower's config."""
    what = encoder.name.upper()
    encoder.device = torch_device(device, encoder=encoder.name)
    if batch_size < 1:
        raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
    if importlib.util.find_spec("transformers") is None:
        raise EncoderError(f"{what} needs the transformers package: pip install 'mvpt[hf]'")
    encoder.model_ref = _model_ref(model, env_var=env_var, default_id=default_id)
    if _is_local(encoder.model_ref) and _config_file(encoder.model_ref, "config.json") is None:
        raise EncoderError(f"{what} weights not found: {encoder.model_ref} is not a folder with a config.json "
                           "(pass model=<folder saved with save_pretrained> or a hub id)")
    import transformers

    config = _tower_config(encoder.model_ref, what=what, tower=tower)
    loader = getattr(transformers, model_class).from_pretrained
    encoder._model = _from_pretrained(loader, encoder.model_ref, what=what,
                                      config=config).eval().to(encoder.device)
    encoder.batch_size = batch_size
    encoder.dim = int(config.projection_dim)
    encoder.version = _version(encoder.model_ref)
    encoder.licence = _licence(encoder.model_ref)
    set_torch_threads()
    return config


def _l2_normalise(x):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# --- CLIP ------------------------------------------------------------------------------------


def _clip_mean_std(ref: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    path = _config_file(ref, "preprocessor_config.json")
    if path is None:
        return CLIP_MEAN, CLIP_STD
    settings = json.loads(path.read_text())
    return tuple(settings.get("image_mean", CLIP_MEAN)), tuple(settings.get("image_std", CLIP_STD))


class ClipEncoder(FrameEncoder):
    """CLIP image embeddings (projection_dim, L2-normalised) per frame."""

    name = "clip"
    resize_mode = "crop"

    @classmethod
    def info(cls) -> EncoderInfo:
        return _clip_info()

    def __init__(self, *, model: str | Path | None = None, batch_size: int = 32, device: str = "auto"):
        import torch

        config = _load_tower(self, model=model, batch_size=batch_size, model_class="CLIPVisionModelWithProjection",
                             tower="vision_config", env_var="MVPT_CLIP_MODEL", default_id=CLIP_DEFAULT_ID,
                             device=device)
        self.image_size = (int(config.image_size), int(config.image_size))
        mean, std = _clip_mean_std(self.model_ref)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def preprocessing(self) -> dict:
        return {"image_size": list(self.image_size), "resize_mode": self.resize_mode,
                "resize": "shorter side, bicubic antialiased", "mean": self._mean.flatten().tolist(),
                "std": self._std.flatten().tolist(), "output": "image_embeds, L2-normalised"}

    def _pixels(self, frames: np.ndarray):
        """uint8 [n, h, w, 3] -> normalised float [n, 3, size, size] (resize shorter side, crop)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.image_size[0]
        height, width = x.shape[2:]
        if (height, width) != (size, size):
            scale = size / min(height, width)
            new_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
            x = F.interpolate(x, size=new_hw, mode="bicubic", antialias=True, align_corners=False)
            top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
            x = x[:, :, top : top + size, left : left + size].clamp_(0.0, 1.0)
        return (x - self._mean) / self._std

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        import torch

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise EncoderError(f"clip needs uint8 frames [n, height, width, 3], got {frames.dtype} {frames.shape}")
        out = np.empty((len(frames), self.dim), np.float32)
        with torch.inference_mode(), denormals_flushed():
            for start in range(0, len(frames), self.batch_size):
                pixels = self._pixels(frames[start : start + self.batch_size]).to(self.device)
                embeds = self._model(pixel_values=pixels).image_embeds
                out[start : start + len(pixels)] = _l2_normalise(embeds).cpu().numpy()
        return out


# --- CLAP ------------------------------------------------------------------------------------


def _clap_feature_extractor(ref: str, audio_config):
    from transformers import ClapFeatureExtractor

    if _config_file(ref, "preprocessor_config.json") is not None:
        extractor = _from_pretrained(ClapFeatureExtractor.from_pretrained, ref, what="CLAP")
    else:
        extractor = ClapFeatureExtractor(feature_size=audio_config.num_mel_bins)
    if extractor.feature_size != audio_config.num_mel_bins:
        raise EncoderError(f"CLAP at {ref!r}: feature extractor gives {extractor.feature_size} mel bins, "
                           f"the model expects {audio_config.num_mel_bins}")
    return extractor


class ClapEncoder(AudioEncoder):
    """CLAP audio embeddings (projection_dim, L2-normalised), one per clip, 48 kHz input."""

    name = "clap"

    @classmethod
    def info(cls) -> EncoderInfo:
        return _clap_info()

    def __init__(self, *, model: str | Path | None = None, batch_size: int = 8, device: str = "auto"):
        config = _load_tower(self, model=model, batch_size=batch_size, model_class="ClapAudioModelWithProjection",
                             tower="audio_config", env_var="MVPT_CLAP_MODEL", default_id=CLAP_DEFAULT_ID,
                             device=device)
        self._extractor = _clap_feature_extractor(self.model_ref, config)
        self._truncation = "fusion" if config.enable_fusion else "rand_trunc"
        self.sample_rate_hz = int(self._extractor.sampling_rate)
        self.max_clip_samples = int(self._extractor.nb_max_samples)

    def preprocessing(self) -> dict:
        return {"sample_rate_hz": self.sample_rate_hz, "max_clip_s": self.max_clip_samples / self.sample_rate_hz,
                "longer_clips": "centre crop", "truncation": self._truncation,
                "feature_extractor": "ClapFeatureExtractor", "output": "audio_embeds, L2-normalised"}

    def _clip_waves(self, wave: np.ndarray, bounds_s: np.ndarray) -> list[np.ndarray]:
        """Each clip's samples, centre-cropped to the extractor's maximum; an empty clip is 0.1 s of silence."""
        pieces = []
        for start_s, end_s in bounds_s:
            first = min(len(wave), max(0, round(start_s * self.sample_rate_hz)))
            stop = min(len(wave), max(first, round(end_s * self.sample_rate_hz)))
            excess = stop - first - self.max_clip_samples
            if excess > 0:
                first, stop = first + excess // 2, first + excess // 2 + self.max_clip_samples
            piece = wave[first:stop]
            pieces.append(piece if len(piece) else np.zeros(self.sample_rate_hz // 10, np.float32))
        return pieces

    def encode_clips(self, wave: np.ndarray, clip_bounds_s: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        wave = check_mono_wave(wave, encoder=self.name)
        pieces = self._clip_waves(wave, check_clip_bounds(clip_bounds_s))
        out = np.empty((len(pieces), self.dim), np.float32)
        with torch.inference_mode(), denormals_flushed():
            for start in range(0, len(pieces), self.batch_size):
                batch = pieces[start : start + self.batch_size]
                features = self._extractor(batch, sampling_rate=self.sample_rate_hz, truncation=self._truncation,
                                           return_tensors="pt")
                not_longer = torch.zeros((len(batch), 1), dtype=torch.bool,
                                         device=self.device)  # every clip fits: no fusion crops
                embeds = self._model(input_features=features["input_features"].float().to(self.device),
                                     is_longer=not_longer)
                out[start : start + len(batch)] = _l2_normalise(embeds.audio_embeds).cpu().numpy()
        return {"embedding": out}


# --- registry --------------------------------------------------------------------------------


def _info_for(name: str, *, modality: str, env_var: str, default_id: str, description: str) -> EncoderInfo:
    ref = _model_ref(None, env_var=env_var, default_id=default_id)
    config_path = _config_file(ref, "config.json")
    dim = _DEFAULT_DIM
    if config_path is not None:
        dim = int(json.loads(config_path.read_text()).get("projection_dim", _DEFAULT_DIM))
    return EncoderInfo(
        name=name,
        modality=modality,
        dim=dim,
        version=_version(ref),
        licence=_licence(ref),
        weights_present=config_path is not None and importlib.util.find_spec("transformers") is not None,
        description=f"{description}; weights from model=<folder or hub id> or ${env_var} (default {default_id})",
    )


def _clip_info() -> EncoderInfo:
    return _info_for("clip", modality="video", env_var="MVPT_CLIP_MODEL", default_id=CLIP_DEFAULT_ID,
                     description="CLIP image tower via transformers (the paper's visual encoder)")


def _clap_info() -> EncoderInfo:
    return _info_for("clap", modality="audio", env_var="MVPT_CLAP_MODEL", default_id=CLAP_DEFAULT_ID,
                     description="CLAP audio tower via transformers, 48 kHz")

