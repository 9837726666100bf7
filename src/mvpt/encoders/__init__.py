"""Per-clip encoders and their registry: a table of stable names -> ``"module:Class"``.

The table is plain data: an encoder's module is imported only when the encoder is asked for
(:func:`get_encoder`, :func:`list_encoders`), and the encoder modules import only
:mod:`mvpt.encoders.base` (the contract), never this registry, so there is no import circle.
A class describes itself with ``info()`` (cheap: loads no weights).
"""

from __future__ import annotations

import importlib
import inspect

from mvpt.encoders.base import AudioEncoder, Encoder, EncoderInfo, FrameEncoder
from mvpt.errors import EncoderError

ENCODERS: dict[str, str] = {
    "efficientnet-lite0": "mvpt.encoders.efficientnet:EfficientNetLite0Encoder",
    "yamnet": "mvpt.encoders.yamnet:YamnetEncoder",
    "clip": "mvpt.encoders.hf:ClipEncoder",
    "clap": "mvpt.encoders.hf:ClapEncoder",
}
DEFAULT_ENCODERS: dict[str, str] = {"video": "efficientnet-lite0", "audio": "yamnet"}
MODALITIES = ("video", "audio")


def register(name: str, target: str) -> None:
    """Add (or replace) the encoder ``name``: ``target`` is ``"module:Class"`` of an
    :class:`~mvpt.encoders.base.Encoder` subclass (a plug-in's or a test's)."""
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise EncoderError(f"encoder {name!r}: target must be 'module:Class', got {target!r}")
    ENCODERS[name] = target


def encoder_class(name: str) -> type[Encoder]:
    """The class registered as ``name`` (imports its module)."""
    if name not in ENCODERS:
        raise EncoderError(f"unknown encoder {name!r}; known encoders: {', '.join(sorted(ENCODERS))}")
    module, _, attr = ENCODERS[name].partition(":")
    cls = getattr(importlib.import_module(module), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Encoder)) or cls.modality not in MODALITIES:
        raise EncoderError(f"encoder {name!r}: {ENCODERS[name]} is not a video or audio encoder class")
    return cls


def get_encoder(name: str, **kwargs) -> Encoder:
    """Build the encoder registered as ``name`` (kwargs go to its class, e.g. a weights path);
    an option its class does not take is an :class:`EncoderError` naming it."""
    cls = encoder_class(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise EncoderError(f"encoder {name!r} does not take the options {sorted(kwargs)}: "
                           f"{exc}") from None
    return cls(**kwargs)


def list_encoders() -> list[EncoderInfo]:
    """Every registered encoder, defaults first."""
    defaults = set(DEFAULT_ENCODERS.values())
    classes = {name: encoder_class(name) for name in ENCODERS}
    order = sorted(classes, key=lambda n: (n not in defaults, classes[n].modality, n))
    return [classes[name].info() for name in order]


def default_encoder_name(modality: str) -> str:
    if modality not in DEFAULT_ENCODERS:
        raise EncoderError(f"no default encoder registered for modality {modality!r}")
    return DEFAULT_ENCODERS[modality]


__all__ = [
    "DEFAULT_ENCODERS",
    "ENCODERS",
    "AudioEncoder",
    "Encoder",
    "EncoderInfo",
    "FrameEncoder",
    "default_encoder_name",
    "encoder_class",
    "get_encoder",
    "list_encoders",
    "register",
]
