"""Search hooks of a retrieval method: the query-independent embeddings ``experiments/search`` indexes, and the
re-ranking of a candidate set with the method's full similarity.

``experiments/search`` puts one vector per video in a FAISS index and one per query beside it. A method whose score
is a cosine of two such vectors is searched exactly; a query-dependent one (NarVid's query-aware pooling, conical's
per-candidate supplements) gets a query-independent first stage from ``query_embedding``/``index_embedding`` and its
full ``similarity`` on the first stage's top N (``rerank``). A mixin of ``BaseRetrievalModule``, which provides
``similarity``, ``text_tile_order``, ``fuse_views`` and the ``eval_text_chunk``/``eval_video_chunk`` hyper-parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.scoring import Features, as_float32, score_tiles

__all__ = ["SearchHooksMixin"]


class SearchHooksMixin:
    """The search embeddings of a method (``search_keys`` or overridden hooks) and ``rerank``."""

    search_keys: tuple[str, str] | None = None  # (text feature, video feature) whose cosine is the first stage

    def query_embedding(self, text_feats: Features) -> Tensor:
        """``[B, D]`` unit vectors of the queries for the index's inner-product search."""
        return F.normalize(self._search_feature(text_feats, 0), dim=-1)

    def index_embedding(self, video_feats: Features) -> Tensor:
        """``[B, D]`` vectors of the videos, independent of any query (what the FAISS index holds); the first-stage
        score is their inner product with ``query_embedding``."""
        return F.normalize(self._search_feature(video_feats, 1), dim=-1)

    def search_is_exact(self) -> bool:
        """True when ``query_embedding · index_embedding`` ranks videos as the evaluated score does, so no
        second stage is needed."""
        return False

    def _search_feature(self, feats: Features, side: int) -> Tensor:
        if self.search_keys is None:
            raise NotImplementedError(f"{type(self).__name__} defines no search embedding: set search_keys to the "
                                      "(text, video) feature names whose cosine is its score, or override "
                                      "query_embedding and index_embedding")
        return feats[self.search_keys[side]]

    @torch.no_grad()
    def rerank(self, text_feats: Features, video_feats: Features) -> Tensor:
        """The evaluated score of one query batch against a candidate set, ``[n_texts, n_candidates]`` float32.

        Views are fused over this block, so a fusion with matrix-wide statistics (NarVid's Eq. 11 z-scores) uses
        the candidates' statistics instead of the whole collection's; ``experiments/search`` measures the effect.
        """
        text_feats = as_float32(text_feats)
        scores = score_tiles(self.similarity, text_feats, as_float32(video_feats), self.hparams.eval_text_chunk,
                             self.hparams.eval_video_chunk, self.text_tile_order(text_feats))
        return scores if isinstance(scores, Tensor) else self.fuse_views(scores)
