"""The model library: MVPt, its baselines, the contrastive loss and run checkpoints.

It imports nothing from the trainer. Every model has
``encode(modality, x [B, L, D], mask [B, L]) -> [B, d_joint]`` (L2-normalised).
"""

from mvpt.models.baselines import LinearBaseline, LinearConfig, MLPBaseline, MLPConfig
from mvpt.models.factory import (
    build_model,
    config_from_dict,
    count_parameters,
    describe_models,
    list_models,
    load_config,
)
from mvpt.models.loss import LogitScale, info_nce
from mvpt.models.mvpt import JointEmbedder, ModelConfig, MVPt, MVPtConfig, masked_mean

__all__ = [
    "JointEmbedder", "LinearBaseline", "LinearConfig", "LogitScale", "MLPBaseline", "MLPConfig",
    "MVPt", "MVPtConfig", "ModelConfig", "build_model", "config_from_dict", "count_parameters",
    "describe_models", "info_nce", "list_models", "load_config", "masked_mean",
]
