"""One trained run: the model, its config (the sole owner of K), the clip spec its features need.

Everything that uses a trained model (index, recommend, eval, the analyses, serve, demo) takes a
:class:`Run`::

    run = Run.load("runs/mvpt", which="best")      # or mvpt.load_run(...)
    run.max_clips                                  # K, from the model's config and nowhere else
    run.check(FeatureStore.open("store"))          # refuses features of other encoders
    music = run.embed("audio", [seq_1, seq_2])     # float32 [2, d_joint], unit norm
    frames = run.extractor("video")                # raw media -> clip features (cached)

A sequence is float16/32 [n_clips, dim] with n_clips >= 1; one longer than K clips is read
through its centred window of K clips (the test-time rule of the paper). A store's own
``max_clips`` is only the default K for training a new model.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvpt.errors import ModelError, UsageError
from mvpt.fileio import sha256_of_file
from mvpt.models.checkpoint import (check_compatible, checkpoint_path, model_from_checkpoint,
                                    read_checkpoint)
from mvpt.models.mvpt import JointEmbedder, ModelConfig


@dataclass(frozen=True)
class ClipSpec:
    """How the run's features were made: encoders per modality (name, version, dim, ...), clip
    length in seconds and frames averaged per clip. Raw media must be cut and encoded the same
    way before the model may see them."""

    encoders: dict
    clip_s: float = 1.0
    frames_per_clip: int = 1

    @classmethod
    def from_manifest(cls, manifest: dict) -> ClipSpec:
        return cls(encoders=dict(manifest.get("encoders", {})),
                   clip_s=float(manifest.get("clip_s", 1.0)),
                   frames_per_clip=int(manifest.get("frames_per_clip", 1)))

    def to_dict(self) -> dict:
        return {"encoders": self.encoders, "clip_s": self.clip_s,
                "frames_per_clip": self.frames_per_clip}


@dataclass
class Run:
    """A trained run, loaded: see the module docstring. Build with :meth:`load`."""

    path: Path  # the run folder (or the .pt file given), resolved
    checkpoint: Path
    which: str
    sha256: str  # of the checkpoint file
    model: JointEmbedder
    run_config: dict
    clip_spec: ClipSpec
    epoch: int = 0
    metrics: dict = field(default_factory=dict)
    device: str = "cpu"
    _extractors: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path, *, which: str = "best", device: str = "cpu") -> Run:
        """The ``which`` ("best" or "last") checkpoint of run folder ``path`` (or a .pt file),
        in eval mode on ``device``."""
        ckpt_path = checkpoint_path(path, which)
        ckpt = read_checkpoint(ckpt_path)
        model = model_from_checkpoint(ckpt, source=str(ckpt_path)).to(device).eval()
        history = ckpt.get("history") or [{}]
        epoch = int(ckpt.get("epoch", 0))
        metrics = next((h for h in history if h.get("epoch") == epoch), history[-1])
        return cls(path=Path(path).resolve(), checkpoint=ckpt_path.resolve(), which=which,
                   sha256=file_sha256(ckpt_path), model=model,
                   run_config=dict(ckpt.get("run_config", {})),
                   clip_spec=ClipSpec.from_manifest(ckpt.get("features", {})), epoch=epoch,
                   metrics=metrics, device=str(device))

    @classmethod
    def coerce(cls, run, *, which: str = "best", device: str = "cpu") -> Run:
        """``run`` itself when it is a Run (on its own device), else the run loaded from that
        path onto ``device``."""
        return run if isinstance(run, Run) else cls.load(run, which=which, device=device)

    # -------------------------------------------------------------------------- facts
    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def max_clips(self) -> int:
        """K: the most clips the model reads at once (its config is the only owner)."""
        return int(self.model.config.max_clips)

    @property
    def clip_s(self) -> float:
        return self.clip_spec.clip_s

    @property
    def window_s(self) -> float:
        """The model's longest input in seconds (K x t)."""
        return self.max_clips * self.clip_s

    @property
    def folder(self) -> Path:
        """The run folder (the checkpoint's folder when a .pt file was given)."""
        return self.path if self.path.is_dir() else self.path.parent

    def identity(self) -> dict:
        return {"path": str(self.folder), "which": self.which, "checkpoint_sha256": self.sha256}

    # -------------------------------------------------------------------------- checks
    def check(self, store) -> None:
        """Raise ModelError (one line) when ``store`` (a FeatureStore) holds features of other
        encoders (name, version, dim) or another clip length than the run was trained on."""
        check_compatible(self.clip_spec.to_dict(), store.manifest, store_path=store.path,
                         run=self.folder)

    # -------------------------------------------------------------------------- use
    def embed(self, modality: str, sequences, *, batch_size: int = 256) -> np.ndarray:
        """float32 [n, d_joint] L2-normalised embeddings of clip-feature ``sequences``."""
        from mvpt.embed import encode_sequences

        self.model.eval()
        out = encode_sequences(self.model, modality, list(sequences), batch_size=batch_size,
                               device=self.device)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)

    def extractor(self, modality: str, *, device: str = "auto"):
        """An :class:`~mvpt.extract.Extractor` of raw media for ``modality`` ("video" or
        "audio") with the run's encoder and clip length, its encoder on ``device`` (auto: the
        encoder's own choice, a GPU when there is one); made once per run and device (weights
        load once). Refused when this mvpt builds another version of the encoder than the run's."""
        if (modality, device) not in self._extractors:
            self._extractors[modality, device] = self._new_extractor(modality, device)
        return self._extractors[modality, device]

    def _new_extractor(self, modality: str, device: str = "auto"):
        from mvpt.clips import ClipConfig
        from mvpt.extract import Extractor

        if modality not in ("video", "audio"):
            raise UsageError(f"modality must be 'video' or 'audio', got {modality!r}")
        wanted = self.clip_spec.encoders.get(modality)
        if not wanted:
            raise ModelError(f"{self.folder}: the run has no {modality} encoder in its manifest")
        clip = ClipConfig(clip_s=self.clip_s, max_clips=self.max_clips,
                          frames_per_clip=self.clip_spec.frames_per_clip)
        # "auto" is each encoder's default; an encoder that takes no device takes only that
        options = {modality: {"device": device}} if device != "auto" else None
        extractor = Extractor(**{f"{modality}_encoder": wanted["name"]}, clip=clip,
                              modalities=(modality,), encoder_options=options)
        have = getattr(extractor, modality).manifest()
        if _signature(have) != _signature(wanted):
            raise ModelError(f"{self.folder}: the run was trained on {modality} encoder "
                             f"{_signature(wanted)} (name, version, dim) but this mvpt builds "
                             f"{_signature(have)}")
        return extractor


def load_run(path, *, which: str = "best", device: str = "cpu") -> Run:
    """:meth:`Run.load`: the model of a run folder, ready to embed."""
    return Run.load(path, which=which, device=device)


def _signature(entry: dict) -> tuple:
    return entry.get("name"), entry.get("version"), entry.get("dim")


def file_sha256(path) -> str:
    """SHA-256 of a file, cached by (path, size, modification time)."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of_file(path)


def embedder_for(run, store, *, which: str = "best", embed_fn=None,
                 max_clips: int | None = None) -> tuple:
    """``(embed(modality, sequences) -> float32 [n, d], K)`` for reading ``store`` (a
    FeatureStore): the run's (a Run or its folder; the store is checked against it, K is the
    model's), or ``embed_fn`` (baselines and tests) with ``max_clips``, by default the store's."""
    if embed_fn is not None:
        k = max_clips or store.manifest.get("max_clips")
        if not k:
            raise UsageError(f"{store.path}: no max_clips in the store manifest; pass max_clips")
        return embed_fn, int(k)
    if run is None:
        raise UsageError("need a run or an embed_fn")
    run = Run.coerce(run, which=which)
    run.check(store)
    if max_clips is not None and int(max_clips) != run.max_clips:
        raise UsageError(f"max_clips={max_clips} differs from the run's K={run.max_clips}; the "
                         "model's config owns K")
    return run.embed, run.max_clips
