"""Run checkpoints: one file that can always rebuild its model and refuses foreign features.

A run folder holds ``best.pt`` (best validation score) and ``last.pt`` (end of the latest epoch,
with everything needed to resume), ``config.json`` (the same configs, readable) and
``metrics.jsonl``. A checkpoint is a dict saved with ``torch.save`` (loadable with
``weights_only=True``)::

    format, format_version
    model_config     the architecture's config dict (kind, sizes, ...)
    input_dims       {"video": 1280, "audio": 1024}
    model_state      the model's state_dict
    run_config       the training arguments
    features         the feature store's encoders (name, version, dim), clip_s, frames_per_clip
    epoch, step, history (one metrics dict per finished epoch), best (score, epoch)
    training         optimizer / scheduler / scaler state and RNG states (last.pt only)
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from mvpt.errors import ModelError
from mvpt.fileio import atomic_path
from mvpt.models.factory import build_model, config_from_dict
from mvpt.models.mvpt import JointEmbedder
from mvpt.store import compat_problem

FORMAT = "mvpt-run"
FORMAT_VERSION = 1
CHECKPOINT_NAMES = {"best": "best.pt", "last": "last.pt"}
# K (max_clips) is not among them: the model config owns it (see mvpt.run).
_FEATURE_KEYS = ("encoders", "clip_s", "frames_per_clip")


def features_manifest(store_manifest: dict) -> dict:
    """The part of a store's manifest a model depends on: the encoders (name, version, dim,
    and their preprocessing where the store records it) and the clip length."""
    out = {k: store_manifest[k] for k in _FEATURE_KEYS if k in store_manifest}
    out["encoders"] = {m: _encoder_entry(e)
                       for m, e in sorted(store_manifest.get("encoders", {}).items())}
    return out


def _encoder_entry(encoder: dict) -> dict:
    entry = {k: encoder.get(k) for k in ("name", "version", "dim")}
    if "preprocessing" in encoder:
        entry["preprocessing"] = encoder["preprocessing"]
    return entry


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_checkpoint(*, model: JointEmbedder, features: dict, run_config: dict, epoch: int,
                    step: int, history: list[dict], best: dict | None = None,
                    training: dict | None = None) -> dict:
    """The checkpoint dict of ``model`` after ``epoch`` epochs (``training``: resume state)."""
    ckpt = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "input_dims": dict(model.input_dims),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "run_config": dict(run_config), "features": dict(features),
        "epoch": int(epoch), "step": int(step), "history": list(history),
        "best": dict(best or {}),
    }
    if training is not None:
        ckpt["training"] = training
    return ckpt


def save_checkpoint(path, checkpoint: dict) -> Path:
    """Write atomically and durably (temporary file, fsync, rename, fsync of the folder): a kill
    or a power loss leaves the old file or the new one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise ModelError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path}: not an mvpt run checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: checkpoint format {ckpt.get('format_version')} is not "
                         f"supported (this mvpt reads format {FORMAT_VERSION})")
    return ckpt


def model_from_checkpoint(ckpt: dict, *, source: str = "checkpoint") -> JointEmbedder:
    """Rebuild the model of a checkpoint dict and load its weights (on CPU)."""
    config = config_from_dict(ckpt["model_config"], source=source)
    dims = ckpt["input_dims"]
    model = build_model(config, video_dim=int(dims["video"]), audio_dim=int(dims["audio"]))
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{source}: weights do not fit the model config ({first})") from None
    return model


def checkpoint_path(run_dir, which: str = "best") -> Path:
    """``run_dir/best.pt`` or ``last.pt``; ``run_dir`` may also be a .pt file itself."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if which not in CHECKPOINT_NAMES:
        raise ModelError(f"which must be one of {sorted(CHECKPOINT_NAMES)}, got {which!r}")
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: no such run folder")
    path = run_dir / CHECKPOINT_NAMES[which]
    if not path.is_file():
        found = sorted(p.name for p in run_dir.glob("*.pt"))
        raise ModelError(f"{run_dir}: no {path.name} (found: {found or 'no checkpoints'}); "
                         "train first or pick another --which")
    return path


def check_compatible(trained: dict, store_manifest: dict, *, store_path=None, run=None) -> None:
    """Raise ModelError (one line) when a store's encoders (name, version, dim) or clip length
    differ from those a model was trained on. ``trained``: a checkpoint dict or its ``features``
    dict; ``run``: the run folder, named in the message."""
    trained = trained.get("features", trained)
    problem = compat_problem(features_manifest(store_manifest), features_manifest(trained))
    if problem:
        where = store_path or "feature store"
        of_run = f" of run {run}" if run is not None else ""
        raise ModelError(f"{where}: features do not fit the model{of_run}: {problem}; "
                         "extract features with the encoders the model was trained on")
