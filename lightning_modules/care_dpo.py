"""CaRe-DPO's retriever (Lee et al., EMNLP 2025 Findings, arXiv 2509.16560): video plus auxiliary caption, with
role embeddings on the text side.

The paper's retriever is a 7.6B MLLM whose video input carries the video's auxiliary caption, and it adds "role
embeddings to better distinguish between textual inputs with different functional roles, such as an auxiliary
caption and a text query" (abstract). Its equations are not public. This file is the reconstruction of
``research/methods.md`` §4.3 on the suite's two-tower core:

* query side: ``q = f_text(query + e_query)``;
* video side: ``v = normalize(normalize(meanP(frames)) + w · normalize(f_text(caption + e_caption)))``, the
  CLIP4Clip mean-pooled video (Eq. 4 of CLIP4Clip) and its caption through the *same* text tower, added with a
  learnt weight ``w`` (``caption_weight_init``);
* ``e_query``, ``e_caption``: learnt role vectors added to every input token embedding of a text of that role
  (``lightning_modules/components/roles.py``); ``role_embeddings: false`` encodes both roles identically;
* score ``cos(q, v)``, trained with the base module's symmetric InfoNCE.

The video side does not depend on the query, so the whole test set is scored by one matrix product (and a vector
index can serve it). The captions come from the captioner that CaRe-DPO trains
(``lightning_modules/captioning/training.py``: SFT, then Dual-Group DPO); ``python -m experiments.care_dpo`` runs
the whole pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.batch import AuxCaptions, TextBatch, VideoBatch
from datamodules.captions import CaptionKind
from lightning_modules.base import BaseRetrievalModule, Features
from lightning_modules.components import RoleEmbeddings, cosine_matrix, masked_mean_pool

ROLES = ("query", "caption")


class CaReRetriever(BaseRetrievalModule):
    """Video + auxiliary-caption retriever with role embeddings (see the module docstring).

    Args:
        caption_kind: the aux caption kind holding each video's caption (``supplement``: one caption per video;
            data ``aux_captions: {supplement: <captions.jsonl>}``).
        use_caption: false drops the caption (the video side is CLIP4Clip meanP alone).
        role_embeddings: add the learnt role vectors to the token embeddings of queries and captions.
        role_init_std: standard deviation of the role vectors at initialisation (0: both start at the plain text
            encoder).
        caption_weight_init: initial ``w`` of the caption term on the video side (learnt).
        **kwargs: ``BaseRetrievalModule`` arguments (backbone, lr, ...).
    """

    def __init__(self, caption_kind: CaptionKind = "supplement", use_caption: bool = True,
                 role_embeddings: bool = True, role_init_std: float = 0.02, caption_weight_init: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.caption_kind = caption_kind
        self.use_caption = use_caption
        self.roles: RoleEmbeddings | None = None
        if role_embeddings:
            width = self.backbone.token_embedding_layer().weight.shape[1]
            self.roles = RoleEmbeddings(ROLES, width, role_init_std)
        self.caption_weight = nn.Parameter(torch.tensor(float(caption_weight_init)))

    # ------------------------------------------------------------------ the two sides
    def query_embeddings(self, texts: list[str]) -> Tensor:
        """``[N, D]`` normalised query embeddings (role ``query``)."""
        return F.normalize(self._encode_texts(texts, "query"), dim=-1)

    def caption_embeddings(self, captions: list[str]) -> Tensor:
        """``[N, D]`` normalised caption embeddings (role ``caption``)."""
        return F.normalize(self._encode_texts(captions, "caption"), dim=-1)

    def _encode_texts(self, texts: list[str], role: str) -> Tensor:
        if self.roles is None:
            return self.backbone.encode_text(texts).sentence
        return self.roles.encode_text(self.backbone, texts, role).sentence

    def pooled_video(self, frames: Tensor, mask: Tensor) -> Tensor:
        """``[B, D]`` normalised meanP of per-frame embeddings ``[B, T, D]``."""
        return F.normalize(masked_mean_pool(F.normalize(frames, dim=-1), mask), dim=-1)

    def fuse(self, video: Tensor, captions: Tensor) -> Tensor:
        """The video side: ``normalize(v + w · c)`` for normalised ``v`` and ``c``."""
        return F.normalize(video + self.caption_weight.to(video.dtype) * captions, dim=-1)

    def carrying(self, video: Tensor, captions: list[str] | None) -> Tensor:
        """``[B, D]`` video side of pooled videos ``[B, D]`` (:meth:`pooled_video`) each carrying its caption (what the
        preference scorer calls for a video with any caption; the training and test loops go through
        :meth:`encode_video`); the video alone when ``use_caption`` is off or no captions are given."""
        if not self.use_caption or captions is None:
            return video
        return self.fuse(video, self.caption_embeddings(captions))

    # ------------------------------------------------------------------ BaseRetrievalModule
    def encode_text(self, batch: TextBatch) -> Features:
        if self.roles is None:
            return {"text": self.backbone_text(batch).sentence}  # cached trunk states when frozen
        return {"text": self._encode_texts(batch.texts, "query")}

    def encode_video(self, batch: VideoBatch) -> Features:
        video = self.pooled_video(self.backbone_frames(batch), batch.mask)
        if not self.use_caption:
            return {"video": video}
        if self.roles is None:
            captions, present = self.aux_caption_embeddings(batch, self.caption_kind)
            caption = captions[:, 0]
        else:
            self.note_aux_read(self.caption_kind)
            aux = batch.aux.get(self.caption_kind)
            if not isinstance(aux, AuxCaptions):
                raise KeyError(f"CaReRetriever needs one caption per video under aux[{self.caption_kind!r}]: set "
                               f"data.init_args.aux_captions: {{{self.caption_kind}: <captions.jsonl>}}")
            present = aux.present(1, batch.mask.device)
            caption = self._encode_texts([row[0] if row else "" for row in aux.captions], "caption")
        missing = [vid for vid, ok in zip(batch.video_ids, present[:, 0].tolist(), strict=True) if not ok]
        if missing:
            raise ValueError(f"videos {missing[:5]} have no {self.caption_kind!r} caption; every video needs one "
                             "(regenerate the caption file for all splits)")
        return {"video": self.fuse(video, F.normalize(caption, dim=-1))}

    @property
    def reads_cached_text(self) -> bool:
        """With role embeddings the (frozen) text trunk runs live on every query and caption, since the role vectors
        enter at its input; the feature cache then skips the text states nothing would read."""
        return self.roles is None

    search_keys = ("text", "video")

    def search_is_exact(self) -> bool:
        """The score is the cosine of the two search vectors."""
        return True

    def similarity(self, text_feats: Features, video_feats: Features) -> Tensor:
        """Cosine of the query and the video side."""
        return cosine_matrix(text_feats["text"], video_feats["video"])
