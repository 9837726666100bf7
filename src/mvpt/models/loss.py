"""Symmetric InfoNCE over a batch of paired video and music embeddings, with a learnable
temperature.

Every pair (video i, music i) is a positive and every other music (video) of the batch is a
negative for video (music) i. The temperature is kept as ``log(1 / temperature)`` so that it stays
positive, and clamped to ``[temperature_min, inf)`` (CLIP's choice: at most a logit scale of 100).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LogitScale(nn.Module):
    """The learnable inverse temperature ``exp(log_scale)``, clamped to ``1 / temperature_min``."""

    def __init__(self, *, temperature_init: float = 0.07, temperature_min: float = 0.01):
        super().__init__()
        self.max_log_scale = math.log(1.0 / temperature_min)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature_init)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.forward().detach())


def info_nce(video_emb: torch.Tensor, music_emb: torch.Tensor,
             logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of the video-to-music and music-to-video cross-entropies; row i of each embedding
    matrix [B, d] (L2-normalised) is a positive pair."""
    if video_emb.shape != music_emb.shape:
        raise ValueError(f"embedding shapes differ: {tuple(video_emb.shape)} "
                         f"and {tuple(music_emb.shape)}")
    logits = logit_scale * video_emb.float() @ music_emb.float().T
    targets = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
