"""Reusable blocks shared by the methods (never copied between method files)."""

from lightning_modules.components.co_attention import CoAttention
from lightning_modules.components.filtering import nucleus_filter, topk_filter, uniform_weights
from lightning_modules.components.losses import (
    cross_view_hard_negatives,
    dpo_loss,
    hard_negative_hinge,
    hard_negative_sets,
    infonce,
    symmetric_infonce,
)
from lightning_modules.components.pooling import masked_mean_pool
from lightning_modules.components.roles import RoleEmbeddings
from lightning_modules.components.similarity import cosine_matrix, token_frame_similarity
from lightning_modules.components.temporal import TemporalTransformer

__all__ = [
    "CoAttention",
    "RoleEmbeddings",
    "TemporalTransformer",
    "cosine_matrix",
    "cross_view_hard_negatives",
    "dpo_loss",
    "hard_negative_hinge",
    "hard_negative_sets",
    "infonce",
    "masked_mean_pool",
    "nucleus_filter",
    "symmetric_infonce",
    "token_frame_similarity",
    "topk_filter",
    "uniform_weights",
]
