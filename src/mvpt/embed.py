"""Embed clip-feature sequences with a model: the batching under :meth:`mvpt.run.Run.embed`
and training's validation.

A sequence is float16/32 [n_clips, dim] with n_clips >= 1; one longer than the model's K clips is
read through its centred window of K clips (the test-time rule of the paper). Works for every
model kind (MVPt, MLP, linear).
"""

from __future__ import annotations

import numpy as np
import torch

from mvpt.clips import clip_window
from mvpt.errors import ModelError
from mvpt.models.mvpt import JointEmbedder, canonical_modality


def centred(sequence: np.ndarray, max_clips: int) -> np.ndarray:
    """The centred window of at most ``max_clips`` clips of a sequence [n_clips, dim]."""
    first, n = clip_window(len(sequence), max_clips, mode="center")
    return sequence[first:first + n]


def pad_sequences(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """float32 [n, longest, dim] zero-padded and bool mask [n, longest] (True = real clip)."""
    longest = max(len(s) for s in sequences)
    dim = sequences[0].shape[1]
    x = np.zeros((len(sequences), longest, dim), np.float32)
    mask = np.zeros((len(sequences), longest), bool)
    for i, s in enumerate(sequences):
        x[i, :len(s)] = s
        mask[i, :len(s)] = True
    return x, mask


def _validate(sequences: list[np.ndarray], modality: str, dim: int) -> None:
    for i, s in enumerate(sequences):
        if s.ndim != 2 or s.shape[1] != dim or len(s) < 1:
            raise ModelError(f"{modality} sequence {i}: expected [n_clips >= 1, {dim}], "
                             f"got {list(s.shape)}")


@torch.inference_mode()
def encode_sequences(model: JointEmbedder, modality: str, sequences: list[np.ndarray], *,
                     batch_size: int = 256, device="cpu") -> np.ndarray:
    """Embed sequences with ``model`` (set to eval mode by the caller): float32 [n, d_joint].
    Sequences are windowed to ``model.config.max_clips`` and batched by length (less padding)."""
    modality = canonical_modality(modality)
    if not len(sequences):
        return np.zeros((0, model.config.d_joint), np.float32)
    sequences = [centred(np.asarray(s), model.config.max_clips) for s in sequences]
    _validate(sequences, modality, model.input_dims[modality])
    order = np.argsort([len(s) for s in sequences], kind="stable")
    out = np.empty((len(sequences), model.config.d_joint), np.float32)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        x, mask = pad_sequences([sequences[i] for i in idx])
        emb = model.encode(modality, torch.from_numpy(x).to(device),
                           torch.from_numpy(mask).to(device))
        out[idx] = emb.float().cpu().numpy()
    return out
