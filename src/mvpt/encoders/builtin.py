"""Imports every built-in encoder module so that each registers itself."""

from mvpt.encoders import efficientnet, yamnet  # noqa: F401
from mvpt.encoders import hf  # noqa: F401  (CLIP and CLAP through transformers)
