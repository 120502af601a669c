"""Reusable blocks shared by the methods (never copied between method files)."""

from lightning_modules.components.losses import symmetric_infonce
from lightning_modules.components.pooling import masked_mean_pool
from lightning_modules.components.temporal import TemporalTransformer

__all__ = ["TemporalTransformer", "masked_mean_pool", "symmetric_infonce"]
