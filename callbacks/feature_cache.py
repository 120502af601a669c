"""``FeatureCacheCallback``: builds or loads the frozen-feature cache (``datamodules/feature_cache.py``) and hands
it to the data module (``VideoTextDataModule.use_feature_cache``).

Added by ``BaseRetrievalModule.configure_callbacks`` when the data module sets ``feature_cache: true``, so the
YAML configs stay as they are. Lightning runs the data module's ``setup`` (splits are known), then this
``setup`` (the cache is built on rank 0, the other ranks wait at a barrier and read it), then the model's.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from datamodules.feature_cache import build_or_load_cache
from lightning_modules.attachment import attached_trainer


class FeatureCacheCallback(L.Callback):
    """Serve cached trunk outputs of the model's frozen trunks to the data module (see the module docstring)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm: Any = trainer.datamodule
        if dm is None or not getattr(dm, "feature_cache", False) or not hasattr(dm, "use_feature_cache"):
            return
        backbone = pl_module.backbone
        device = trainer.strategy.root_device
        backbone.to(device)
        # a data module that wraps a video data module (the preference pairs of CaRe-DPO) caches through it
        source = getattr(dm, "feature_source", dm)
        # BaseRetrievalModule.reads_cached_text; a module without it (the captioner's training) reads what is cached
        texts = bool(getattr(pl_module, "reads_cached_text", True))
        if trainer.is_global_zero:
            cache, info = build_or_load_cache(source, backbone, device, build=True, texts=texts)
        trainer.strategy.barrier("vtr_feature_cache")
        if not trainer.is_global_zero:
            cache, info = build_or_load_cache(source, backbone, device, build=False, texts=texts)
        dm.use_feature_cache(cache, info)


def feature_cache_callbacks(module: L.LightningModule) -> list[L.Callback]:
    """What a module's ``configure_callbacks`` returns: the cache callback when its data module asks for the cache."""
    dm = getattr(attached_trainer(module), "datamodule", None)
    return [FeatureCacheCallback()] if getattr(dm, "feature_cache", False) else []
