"""The baselines MVPt is compared with; both see only the mean of the clip features over the valid
clips, so they ignore temporal order.

- :class:`MLPBaseline` (the paper's): per modality an MLP from the mean clip feature to the joint
  space, trained with the same contrastive loss as MVPt.
- :class:`LinearBaseline`: regularised CCA between the mean clip features of the two modalities,
  fitted in closed form (no SGD). Each modality is centred, projected on its canonical directions
  and scaled by ``canonical correlation ** correlation_power``; strong on small data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mvpt.errors import ModelError
from mvpt.models.loss import LogitScale
from mvpt.models.mvpt import JointEmbedder, ModelConfig, masked_mean


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    kind: str = "mlp"
    d_hidden: int = 512
    n_layers: int = 2  # linear layers per modality
    dropout: float = 0.1
    input_norm: bool = True
    temperature_init: float = 0.07
    temperature_min: float = 0.01

    def __post_init__(self):
        if self.n_layers < 1:
            raise ModelError(f"model {self.name!r}: n_layers must be >= 1, got {self.n_layers}")


@dataclass(frozen=True)
class LinearConfig(ModelConfig):
    kind: str = "linear"
    regularization: float = 1e-3  # ridge added to each covariance, relative to its mean variance
    correlation_power: float = 1.0


def _mlp(*, input_dim: int, config: MLPConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.LayerNorm(input_dim) if config.input_norm else nn.Identity()]
    width = input_dim
    for _ in range(config.n_layers - 1):
        layers += [nn.Linear(width, config.d_hidden), nn.GELU(), nn.Dropout(config.dropout)]
        width = config.d_hidden
    layers.append(nn.Linear(width, config.d_joint))
    return nn.Sequential(*layers)


class MLPBaseline(JointEmbedder):
    """Mean clip feature -> MLP -> L2-normalised joint embedding, one MLP per modality."""

    def __init__(self, config: MLPConfig, *, video_dim: int, audio_dim: int):
        super().__init__()
        self.config = config
        self.input_dims = {"video": video_dim, "audio": audio_dim}
        self.branches = nn.ModuleDict({
            m: _mlp(input_dim=d, config=config) for m, d in self.input_dims.items()})
        self.logit_scale = LogitScale(temperature_init=config.temperature_init,
                                      temperature_min=config.temperature_min)

    def _encode(self, modality, x, mask):
        return F.normalize(self.branches[modality](masked_mean(x, mask)), dim=-1)


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return (vectors / np.sqrt(np.clip(values, 1e-12, None))) @ vectors.T


class LinearBaseline(JointEmbedder):
    """Regularised CCA on mean clip features. Call :meth:`fit` once; until then it is unfitted
    and refuses to encode. Its buffers have fixed shapes, so a checkpoint rebuilds it."""

    def __init__(self, config: LinearConfig, *, video_dim: int, audio_dim: int):
        super().__init__()
        self.config = config
        self.input_dims = {"video": video_dim, "audio": audio_dim}
        self.logit_scale = None
        for m, d in self.input_dims.items():
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"proj_{m}", torch.zeros(d, config.d_joint))
        self.register_buffer("correlations", torch.zeros(config.d_joint))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, video_means: np.ndarray, audio_means: np.ndarray) -> LinearBaseline:
        """Fit on paired mean features, float [n, video_dim] and [n, audio_dim]."""
        x = np.asarray(video_means, np.float64)
        y = np.asarray(audio_means, np.float64)
        if len(x) != len(y) or len(x) < 2:
            raise ModelError(f"linear baseline needs >= 2 paired examples, "
                             f"got {len(x)} and {len(y)}")
        mx, my = x.mean(0), y.mean(0)
        x, y = x - mx, y - my
        whiten = []
        for z in (x, y):
            cov = z.T @ z / (len(z) - 1)
            ridge = self.config.regularization * max(np.trace(cov) / len(cov), 1e-12)
            whiten.append(_inverse_sqrt(cov + ridge * np.eye(len(cov))))
        wx, wy = whiten
        u, s, vt = np.linalg.svd(wx @ (x.T @ y / (len(x) - 1)) @ wy)
        k = min(self.config.d_joint, len(s))
        for name, value in (("mean_video", mx), ("mean_audio", my)):
            getattr(self, name).copy_(torch.from_numpy(value))
        self.proj_video.zero_()[:, :k] = torch.from_numpy(wx @ u[:, :k])
        self.proj_audio.zero_()[:, :k] = torch.from_numpy(wy @ vt.T[:, :k])
        self.correlations.zero_()[:k] = torch.from_numpy(s[:k])
        self.fitted.fill_(True)
        return self

    def _encode(self, modality, x, mask):
        if not bool(self.fitted):
            raise ModelError("the linear baseline is not fitted yet (train it first)")
        mean = masked_mean(x.to(self.proj_video.dtype), mask)
        z = (mean - getattr(self, f"mean_{modality}")) @ getattr(self, f"proj_{modality}")
        z = z * self.correlations.clamp(min=0) ** self.config.correlation_power
        return F.normalize(z, dim=-1)
