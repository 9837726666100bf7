"""One exception root for everything mvpt raises on purpose.

Expected failures (bad input, missing weights, a store made with other encoders) raise a
subclass of :class:`MvptError` whose message is one line: what failed, on which file, and why.
The CLI prints that line and exits 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

from pathlib import Path


class MvptError(Exception):
    """Root of every error mvpt raises on purpose."""


class UsageError(MvptError):
    """A parameter or argument is outside what the function accepts."""


class MediaError(MvptError):
    """A media file cannot be probed or decoded as asked."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class EncoderError(MvptError):
    """An encoder is unknown, its weights are missing, or its input is malformed."""


class StoreError(MvptError):
    """A feature store is missing, corrupt, or incompatible with the request."""


class ModelError(MvptError):
    """A model config or checkpoint is invalid or does not match the features."""


class SearchIndexError(MvptError):
    """A search index folder is missing, corrupt, or was built with another run."""
