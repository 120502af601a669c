"""Reusable blocks shared by the methods (never copied between method files)."""

from lightning_modules.components.losses import symmetric_infonce
from lightning_modules.components.pooling import masked_mean_pool
from lightning_modules.components.similarity import cosine_matrix, token_frame_similarity
from lightning_modules.components.temporal import TemporalTransformer

__all__ = ["TemporalTransformer", "cosine_matrix", "masked_mean_pool", "symmetric_infonce", "token_frame_similarity"]
