"""MVPt: a Transformer over each modality's sequence of per-clip features, pooled into a shared,
L2-normalised embedding space (the paper's model; seed appendix B). The paper has one Transformer
per modality; ``shared_encoder`` (on in the shipped config) runs one for both.

Per modality: (optional LayerNorm of the input features, our addition for features of any scale)
-> linear projection to ``d_hidden`` (256) -> + positional encodings (at most ``max_clips`` = K
positions; the original Transformer's fixed sinusoids by default, since the appendix follows that
design; learned embeddings as an option) -> ``n_layers`` (2) pre-LN Transformer encoder layers with
``n_heads`` (2) heads -> pooling over the valid clips only -> linear projection to ``d_joint`` ->
L2 normalisation.

Pooling (the paper does not say which it used): "mean" of the output clips; "cls", a learned
token's output; or "pyramid", the means of the window split into n equal consecutive parts for
each n of ``pyramid_levels`` (shipped: 1 and 2, the whole window and its halves), concatenated:
the whole window's mean plus where in the window things happen, in parts of the window's own
length, so a 10 s and a 30 s window share the layout. A part that cuts a clip takes it with the
share it covers (:func:`pyramid_weights`), so no part is empty however short the window.

Padding never changes an output: padded clips are masked out of attention (key padding mask) and
of the pooling, so a sequence embeds the same alone or batched with longer ones.

Options measured on the feature suite (README, "The training recipe"): ``shared_encoder``, one
Transformer, final norm and head for both modalities (each keeps its input norm, projection and
positions); ``positional_scale``, a learnable weight on the positional encodings.

This module also holds what every model shares: :class:`ModelConfig`, :class:`JointEmbedder`
(the ``encode(modality, x, mask)`` interface) and :func:`masked_mean`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mvpt.errors import ModelError
from mvpt.models.loss import LogitScale

MODALITIES = ("video", "audio")
POOLINGS = ("mean", "cls", "pyramid")
_MODALITY_ALIASES = {"video": "video", "audio": "audio", "music": "audio"}


@dataclass(frozen=True)
class ModelConfig:
    """Fields every architecture has. ``max_clips`` (K) is the longest sequence a model sees."""

    name: str = ""
    kind: str = ""
    d_joint: int = 256
    max_clips: int = 30

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MVPtConfig(ModelConfig):
    kind: str = "mvpt"
    d_hidden: int = 256
    n_layers: int = 2
    n_heads: int = 2
    d_feedforward: int = 1024
    dropout: float = 0.1
    # "mean" over valid clips, "cls" or "pyramid" (see the module docstring). The shipped config
    # (configs/mvpt.json) says "pyramid"; "mean" stays the default here so that a config or
    # checkpoint written without the key keeps its meaning.
    pooling: str = "mean"
    pyramid_levels: tuple[int, ...] = (1, 2)  # "pyramid": for each n, n equal consecutive parts
    positional: str = "sinusoidal"  # fixed sinusoids (the original Transformer's), or "learned"
    # A learnable scale on the positional encodings, per branch, started at this value (kept as
    # its log, so it stays positive): how much where a clip is weighs against what it is. None
    # (the default here, so older configs and checkpoints keep their meaning): no scale.
    positional_scale: float | None = None
    input_norm: bool = True
    # Dropout on the (normalised) input clip features while training, each feature of each clip
    # alone; 0 (the default here, so older configs and checkpoints keep their meaning): none.
    input_dropout: float = 0.0
    # Add an MLP of the mean of the projected input clips to the pooled Transformer output: the
    # plain mix the MLP baseline sees stays one residual path away, the Transformer adds order.
    mean_skip: bool = False
    # One Transformer (its layers, final LayerNorm and output head) for both modalities; each
    # keeps its own input LayerNorm, projection and positions. False (the default here, so older
    # configs and checkpoints keep their meaning): one Transformer per modality, as in the paper.
    shared_encoder: bool = False
    temperature_init: float = 0.07
    temperature_min: float = 0.01

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ModelError(f"model {self.name!r}: pooling must be one of {', '.join(POOLINGS)}, "
                             f"got {self.pooling!r}")
        levels = self.pyramid_levels
        if (isinstance(levels, (str, bytes)) or not levels
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                           for n in levels)):
            raise ModelError(f"model {self.name!r}: pyramid_levels must be a list of part counts "
                             f">= 1, got {levels!r}")
        object.__setattr__(self, "pyramid_levels", tuple(levels))  # JSON gives a list
        if self.positional not in ("sinusoidal", "learned"):
            raise ModelError(f"model {self.name!r}: positional must be 'sinusoidal' or 'learned', "
                             f"got {self.positional!r}")
        if self.positional_scale is not None and not (
                isinstance(self.positional_scale, (int, float))
                and not isinstance(self.positional_scale, bool) and self.positional_scale > 0):
            raise ModelError(f"model {self.name!r}: positional_scale must be a number > 0 or "
                             f"null, got {self.positional_scale!r}")
        if not 0.0 <= self.input_dropout < 1.0:
            raise ModelError(f"model {self.name!r}: input_dropout must be in [0, 1), "
                             f"got {self.input_dropout!r}")
        if self.d_hidden % self.n_heads:
            raise ModelError(f"model {self.name!r}: d_hidden {self.d_hidden} is not divisible "
                             f"by n_heads {self.n_heads}")


def canonical_modality(modality: str) -> str:
    """"video" or "audio" ("music" is accepted for "audio")."""
    try:
        return _MODALITY_ALIASES[modality]
    except KeyError:
        raise ModelError(f"modality must be 'video' or 'audio' (or 'music'), "
                         f"got {modality!r}") from None


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of x [B, L, D] counting only positions where mask [B, L] is True."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def pyramid_weights(mask: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """Weights [B, L, sum(levels)] that average the valid clips of each row (mask [B, L]) over
    each of ``n`` equal consecutive parts of the row's valid span, for each n in ``levels``.

    Clip i of n_valid spans [i, i + 1) / n_valid and part k of n spans [k, k + 1) / n; a clip
    weighs in a part by the share of the part it covers, so every column sums to 1 over the valid
    clips (a part inside one clip is that clip) and padded positions weigh nothing."""
    valid = mask.to(torch.float32)
    count = valid.sum(1, keepdim=True).clamp(min=1.0)
    rank = torch.cumsum(valid, 1) - valid  # index of each clip among the valid ones
    lo, hi = (rank / count)[..., None], ((rank + 1) / count)[..., None]
    columns = []
    for n in levels:
        part = torch.arange(n, dtype=valid.dtype, device=valid.device)
        overlap = torch.minimum(hi, (part + 1) / n) - torch.maximum(lo, part / n)
        columns.append(overlap.clamp(min=0) * n * valid[..., None])
    return torch.cat(columns, -1)


class JointEmbedder(nn.Module):
    """Base of every model: ``encode(modality, x, mask) -> [B, d_joint]`` L2-normalised.

    Subclasses set ``self.input_dims`` (modality -> feature dim) and implement ``_encode``.
    Models trained by SGD also own ``self.logit_scale`` (:class:`LogitScale`); others set it None.
    """

    config: ModelConfig
    input_dims: dict[str, int]
    logit_scale: LogitScale | None

    def encode(self, modality: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x float [B, L, D] clip features, mask bool [B, L] True where a clip is valid (every row
        needs at least one valid clip) -> float [B, d_joint], L2-normalised."""
        modality = canonical_modality(modality)
        dim = self.input_dims[modality]
        if x.ndim != 3 or x.shape[-1] != dim:
            raise ModelError(f"{modality} input must be [batch, clips, {dim}], "
                             f"got {list(x.shape)}")
        if mask.shape != x.shape[:2]:
            raise ModelError(f"{modality} mask must be {list(x.shape[:2])}, got {list(mask.shape)}")
        if x.shape[1] > self.config.max_clips:
            raise ModelError(f"{modality} sequence of {x.shape[1]} clips is longer than the "
                             f"model's max_clips={self.config.max_clips}")
        return self._encode(modality, x, mask.bool())

    def _encode(self, modality: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor,
                audio: torch.Tensor, audio_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode("video", video, video_mask), self.encode("audio", audio, audio_mask)


def sinusoids(n_positions: int, dim: int) -> torch.Tensor:
    """The original Transformer's positional encoding [n_positions, dim]: sin and cos of the
    position at geometrically spaced wavelengths from 2 pi to 10000 * 2 pi."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates[: dim // 2])
    return table


class SequenceEncoder(nn.Module):
    """One modality's branch of MVPt: clip features [B, L, D] -> joint embedding [B, d_joint]."""

    def __init__(self, *, input_dim: int, config: MVPtConfig):
        super().__init__()
        c = config
        self.pooling = c.pooling
        self.input_norm = nn.LayerNorm(input_dim) if c.input_norm else nn.Identity()
        self.input_dropout = nn.Dropout(c.input_dropout) if c.input_dropout else nn.Identity()
        self.input_proj = nn.Linear(input_dim, c.d_hidden)
        n_positions = c.max_clips + (1 if c.pooling == "cls" else 0)
        if c.positional == "learned":
            self.pos_embedding = nn.Parameter(torch.randn(n_positions, c.d_hidden) * 0.02)
        else:  # a buffer, not saved: it is the same for every model of this size
            self.register_buffer("pos_embedding", sinusoids(n_positions, c.d_hidden),
                                 persistent=False)
        self.cls_token = (nn.Parameter(torch.randn(1, 1, c.d_hidden) * 0.02)
                          if c.pooling == "cls" else None)
        self.dropout = nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(
            c.d_hidden, c.n_heads, dim_feedforward=c.d_feedforward, dropout=c.dropout,
            activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(c.d_hidden)
        self.pyramid_levels = c.pyramid_levels if c.pooling == "pyramid" else None
        parts = sum(c.pyramid_levels) if self.pyramid_levels else 1
        self.head = nn.Linear(c.d_hidden * parts, c.d_joint)
        self.skip = (nn.Sequential(nn.Linear(c.d_hidden, c.d_hidden), nn.GELU(),
                                   nn.Dropout(c.dropout), nn.Linear(c.d_hidden, c.d_joint))
                     if c.mean_skip else None)
        self.pos_log_scale = (nn.Parameter(torch.tensor(math.log(c.positional_scale)))
                              if c.positional_scale is not None else None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.input_proj(self.input_dropout(self.input_norm(x)))
        skip = self.skip(masked_mean(h, mask)) if self.skip is not None else 0.0
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(len(h), -1, -1), h], dim=1)
            mask = torch.cat([mask.new_ones(len(h), 1), mask], dim=1)
        positions = self.pos_embedding[: h.shape[1]]
        if self.pos_log_scale is not None:
            positions = self.pos_log_scale.exp() * positions
        h = self.dropout(h + positions)
        h = self.transformer(h, src_key_padding_mask=~mask)
        h = self.final_norm(h)
        if self.cls_token is not None:
            pooled = h[:, 0]
        elif self.pyramid_levels:  # [B, parts, d_hidden] -> [B, parts * d_hidden]
            weights = pyramid_weights(mask, self.pyramid_levels).to(h.dtype)
            pooled = torch.einsum("blp,bld->bpd", weights, h).flatten(1)
        else:
            pooled = masked_mean(h, mask)
        return F.normalize(self.head(pooled) + skip, dim=-1)


class MVPt(JointEmbedder):
    """The MVPt model: a :class:`SequenceEncoder` per modality and a learnable temperature."""

    def __init__(self, config: MVPtConfig, *, video_dim: int, audio_dim: int):
        super().__init__()
        self.config = config
        self.input_dims = {"video": video_dim, "audio": audio_dim}
        self.branches = nn.ModuleDict({
            m: SequenceEncoder(input_dim=d, config=config) for m, d in self.input_dims.items()})
        if config.shared_encoder:  # the audio branch uses the video branch's modules
            video, audio = self.branches["video"], self.branches["audio"]
            audio.transformer, audio.final_norm, audio.head = (
                video.transformer, video.final_norm, video.head)
        self.logit_scale = LogitScale(temperature_init=config.temperature_init,
                                      temperature_min=config.temperature_min)

    def _encode(self, modality, x, mask):
        return self.branches[modality](x, mask)
