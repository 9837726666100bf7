"""Media paths recorded in stores and indexes, found again from any working directory.

Stores and indexes record absolute, resolved paths. When a whole folder was moved (a demo folder
copied to another machine, a library renamed), the recorded path no longer exists; it is then
tried relative to the folder's current place, as it stood relative to the folder when recorded.
"""

from __future__ import annotations

import os
from pathlib import Path


def resolve_recorded(recorded: str | os.PathLike, *, folder: str | os.PathLike | None,
                     recorded_folder: str | os.PathLike | None) -> Path:
    """The file ``recorded`` in a folder that was at ``recorded_folder`` and is now at ``folder``:
    the recorded path when it exists, else the same relative place under ``folder``; the recorded
    path again when neither exists (the caller reports it missing). A relative ``recorded`` path
    (stores of mvpt 0.1) is taken from the working directory, then from ``folder``."""
    path = Path(recorded)
    if path.exists() or folder is None:
        return path
    if not path.is_absolute():
        candidate = Path(folder) / path
        return candidate if candidate.exists() else path
    if recorded_folder is not None:
        candidate = Path(os.path.normpath(Path(folder) / os.path.relpath(path, recorded_folder)))
        if candidate.exists():
            return candidate.resolve()
    return path
