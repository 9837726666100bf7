"""Architectures as small JSON files in ``models/configs/``, read into dataclasses and built.

``list_models()`` names the shipped configs; ``load_config("mvpt")`` (or a path to a JSON file, or
a dict) gives a config dataclass; ``build_model(config, video_dim=..., audio_dim=...)`` the model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn

from mvpt.errors import ModelError
from mvpt.models.baselines import LinearBaseline, LinearConfig, MLPBaseline, MLPConfig
from mvpt.models.mvpt import JointEmbedder, ModelConfig, MVPt, MVPtConfig

CONFIG_DIR = Path(__file__).parent / "configs"
_KINDS: dict[str, tuple[type[ModelConfig], type[JointEmbedder]]] = {
    "mvpt": (MVPtConfig, MVPt),
    "mlp": (MLPConfig, MLPBaseline),
    "linear": (LinearConfig, LinearBaseline),
}
# Feature dimensions of the default encoders (efficientnet-lite0, yamnet), for listings.
DEFAULT_DIMS = {"video": 1280, "audio": 1024}


def list_models() -> list[str]:
    """Names of the shipped architecture configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def config_from_dict(data: dict, *, source: str = "config") -> ModelConfig:
    """The config dataclass of ``data["kind"]``; unknown kinds or fields raise ModelError."""
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ModelError(f"{source}: kind must be one of {sorted(_KINDS)}, got {kind!r}")
    cls = _KINDS[kind][0]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelError(f"{source}: unknown field(s) {unknown} for kind {kind!r}; "
                         f"known: {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ModelError(f"{source}: {exc}") from None


def load_config(name_or_path, **overrides) -> ModelConfig:
    """A config from a shipped name ("mvpt", "mlp", "linear"), a JSON file path, a dict or a
    config; keyword ``overrides`` replace fields (e.g. ``d_hidden=64`` for a tiny model)."""
    if isinstance(name_or_path, ModelConfig):
        data, source = name_or_path.to_dict(), name_or_path.name or "config"
    elif isinstance(name_or_path, dict):
        data, source = dict(name_or_path), "config"
    else:
        path = Path(name_or_path)
        if not path.suffix and (CONFIG_DIR / f"{name_or_path}.json").is_file():
            path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ModelError(f"unknown model {str(name_or_path)!r}: not a file and not one of "
                             f"{list_models()}")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: unreadable model config ({exc})") from None
        data.setdefault("name", path.stem)
        source = str(path)
    return config_from_dict({**data, **overrides}, source=source)


def build_model(config, *, video_dim: int, audio_dim: int) -> JointEmbedder:
    """A freshly initialised model of ``config`` (a config, name, path or dict) for clip features
    of ``video_dim`` and ``audio_dim``."""
    if not isinstance(config, ModelConfig):
        config = load_config(config)
    if video_dim < 1 or audio_dim < 1:
        raise ModelError(f"feature dims must be >= 1, got video {video_dim}, audio {audio_dim}")
    return _KINDS[config.kind][1](config, video_dim=video_dim, audio_dim=audio_dim)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe_models(*, video_dim: int = DEFAULT_DIMS["video"],
                    audio_dim: int = DEFAULT_DIMS["audio"]) -> list[dict]:
    """One dict per shipped config: name, kind, parameter count (for the given feature dims; the
    linear baseline's fitted projections count as parameters) and the config itself."""
    out = []
    for name in list_models():
        config = load_config(name)
        model = build_model(config, video_dim=video_dim, audio_dim=audio_dim)
        n = count_parameters(model) + sum(b.numel() for b in model.buffers())
        out.append({"name": name, "kind": config.kind, "parameters": n,
                    "feature_dims": {"video": video_dim, "audio": audio_dim},
                    "config": config.to_dict()})
    return out
