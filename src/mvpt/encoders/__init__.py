"""Per-clip encoders: a registry of stable names (see :mod:`mvpt.encoders.base`)."""

from mvpt.encoders.base import (
    AudioEncoder,
    Encoder,
    EncoderInfo,
    FrameEncoder,
    default_encoder_name,
    get_encoder,
    list_encoders,
    register,
)

__all__ = [
    "AudioEncoder",
    "Encoder",
    "EncoderInfo",
    "FrameEncoder",
    "default_encoder_name",
    "get_encoder",
    "list_encoders",
    "register",
]
