"""CLIP4Clip (Luo et al., 2022): the baseline every caption-augmented method compares against.

Per-frame image embeddings are aggregated into one video vector by a *similarity header*:

* ``meanP``: mean pooling over the valid frames (parameter-free, CLIP4Clip Eq. 4);
* ``seqTransf``: a 4-layer temporal transformer (CLIP's block) with learned position embeddings and a
  residual around it, then mean pooling (CLIP4Clip Eq. 5); initialised, as CLIP4Clip does, from the first
  blocks and the positional embedding of CLIP's text transformer (``temporal_init: clip_text``).

The similarity is the cosine between the sentence embedding and the video vector (Eq. 3); training
uses the base module's symmetric InfoNCE with CLIP's learnt temperature (Eqs. 8-10).
"""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from datamodules.batch import TextBatch, VideoBatch
from lightning_modules.base import BaseRetrievalModule, Features
from lightning_modules.components import cosine_matrix, masked_mean_pool
from lightning_modules.components.temporal import TemporalInit, build_temporal_transformer


class CLIP4Clip(BaseRetrievalModule):
    """CLIP4Clip with the parameter-free (``meanP``) or sequential-transformer (``seqTransf``) header.

    Args:
        sim_header: ``meanP`` or ``seqTransf``.
        temporal_layers: transformer layers of ``seqTransf`` (CLIP4Clip: 4).
        temporal_heads: attention heads of ``seqTransf`` (CLIP4Clip: 8 at width 512).
        max_frames: longest frame sequence ``seqTransf`` accepts (size of its position table).
        temporal_init: ``clip_text`` copies the first ``temporal_layers`` blocks and the positional embedding
            of the backbone's CLIP text transformer (CLIP4Clip); ``random`` (any backbone) starts from
            CLIP4Clip's normal(0, 0.02) init.
        **kwargs: ``BaseRetrievalModule`` arguments (backbone, lr, coef_lr, ...).
    """

    def __init__(self, sim_header: Literal["meanP", "seqTransf"] = "meanP", temporal_layers: int = 4,
                 temporal_heads: int = 8, max_frames: int = 64, temporal_init: TemporalInit = "clip_text",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sim_header = sim_header
        self.temporal = (build_temporal_transformer(self.backbone, temporal_init, temporal_layers, temporal_heads,
                                                    max_frames) if sim_header == "seqTransf" else None)

    def encode_text(self, batch: TextBatch) -> Features:
        return {"text": self.backbone_text(batch).sentence}

    def encode_video(self, batch: VideoBatch) -> Features:
        frames = self.backbone_frames(batch)
        if self.temporal is not None:
            frames = self.temporal(frames, batch.mask)
        return {"video": masked_mean_pool(F.normalize(frames, dim=-1), batch.mask)}

    search_keys = ("text", "video")

    def search_is_exact(self) -> bool:
        """The score is the cosine of the two search vectors."""
        return True

    def similarity(self, text_feats: Features, video_feats: Features) -> Tensor:
        """Cosine similarity of sentence and pooled video embeddings (CLIP4Clip Eq. 3)."""
        return cosine_matrix(text_feats["text"], video_feats["video"])
