"""ONNX files exported from PyTorch encoders, kept in a per-user cache, and CPU sessions over them.

An encoder that runs on onnxruntime exports its network once and keeps the file in the cache
folder (``MVPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/mvpt``, else ``~/.cache/mvpt``), in a file named
by a hash of everything that decides the exported graph (the weights' sha256, the torch and onnx
versions, the exporter's revision). The file is written atomically, with a sidecar
(``<file>.sha256``) holding its own sha256. On load, a file that is missing, truncated or altered
(its hash differs from the sidecar's) or that onnxruntime refuses is exported again, never a
crash; when the cache folder cannot be written, the export is used from memory (and a warning
says so).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from mvpt.errors import EncoderError
from mvpt.fileio import atomic_write_bytes, atomic_write_text, sha256_of_file

ALLOW_SPINNING = False
"""Whether onnxruntime's idle threads spin; off, so that they leave the cores to a decoder running
beside them (measured in benchmarks/extract.py)."""


def cache_dir() -> Path:
    """The per-user cache folder of mvpt (``MVPT_CACHE_DIR`` overrides it)."""
    explicit = os.environ.get("MVPT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mvpt"


def cached_file(name: str, key: dict, folder: Path | None = None) -> Path:
    """Where the export of ``name`` for ``key`` (JSON-serialisable) lives in the cache."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (folder or cache_dir()) / f"{name}-{digest}.onnx"


def _read_verified(path: Path) -> bytes | None:
    """The file's bytes when its sidecar holds their sha256; None when either is missing or they
    disagree (a truncated or altered file)."""
    try:
        data = path.read_bytes()
        expected = path.with_name(path.name + ".sha256").read_text().strip()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == expected else None


def _save(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
        atomic_write_text(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest())
    except OSError as exc:
        warnings.warn(f"{path}: cannot write the ONNX cache ({exc}); using the export from memory "
                      "(set MVPT_CACHE_DIR to a writable folder to keep it)", stacklevel=3)


def cached_session(name: str, key: dict, export: Callable[[], bytes], *, threads: int,
                   folder: Path | None = None, providers: list | None = None):
    """An onnxruntime session over the cached export of ``name`` for ``key`` (on ``providers``,
    default the CPU); ``export()`` returns the ONNX bytes and runs only when the cached file is
    missing, damaged or refused. Returns (session, path of the cached file)."""
    path = cached_file(name, key, folder)
    data = _read_verified(path)
    if data is not None:
        try:
            return cpu_session(data, threads=threads, providers=providers), path
        except EncoderError:
            pass  # a file onnxruntime refuses is exported again
    data = export()
    _save(path, data)
    try:
        return cpu_session(data, threads=threads, providers=providers), path
    except EncoderError as exc:
        raise EncoderError(f"{path}: onnxruntime cannot load the fresh ONNX export of {name} "
                           f"({exc})") from None


def cpu_session(model: bytes | str | Path, *, threads: int, providers: list | None = None):
    """An onnxruntime session with ``threads`` intra-op threads for its CPU work (spinning as
    :data:`ALLOW_SPINNING` says), on ``providers`` (default: the CPU alone; see
    :func:`mvpt.encoders.base.onnx_providers`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning",
                                    "1" if ALLOW_SPINNING else "0")
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / RuntimeError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(f"onnxruntime refused the model: {reason}") from None
