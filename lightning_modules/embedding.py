"""``EmbeddingRetrievalModule``: the base of a method whose score is the cosine of one text and one video vector.

Such a method implements two functions and nothing else::

    embed_text(batch: TextBatch) -> Tensor    # [B, D], one vector per query
    embed_video(batch: VideoBatch) -> Tensor  # [B, D], one vector per video, independent of any query

and gets from this class what ``BaseRetrievalModule`` asks of every method: ``encode_text`` / ``encode_video``
(the features ``{"text": [B, D]}`` / ``{"video": [B, D]}``), ``similarity`` (their cosine; training scales it by the
base's learnt temperature, ``logit_scale``), and the search hooks of ``experiments/search``: ``search_keys``, hence
``query_embedding`` / ``index_embedding`` (the two vectors, unit length), and ``search_is_exact() = True`` (a FAISS
inner product over those vectors ranks videos exactly as the evaluated score does, so no second stage is needed).

CLIP4Clip fits it as it stands (``embed_text``: the sentence embedding; ``embed_video``: the pooled, optionally
temporally transformed frames), as would any late-interaction-free dual encoder. A method whose score depends on the
query and the video together (NarVid's query-aware pooling, word-frame matching) subclasses ``BaseRetrievalModule``
and declares its own first-stage search embedding (``search_keys`` or ``query_embedding`` / ``index_embedding``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from torch import Tensor

from datamodules.batch import TextBatch, VideoBatch
from lightning_modules.base import BaseRetrievalModule, Features
from lightning_modules.components import cosine_matrix

__all__ = ["EmbeddingRetrievalModule"]


class EmbeddingRetrievalModule(BaseRetrievalModule):
    """A retrieval method defined by ``embed_text`` and ``embed_video``; the score is their cosine.

    Subclasses must not override ``similarity``: the cosine is what makes ``search_is_exact`` true (a method with
    another score subclasses ``BaseRetrievalModule``). Constructor arguments are ``BaseRetrievalModule``'s.
    """

    search_keys = ("text", "video")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # refused when the class is defined, not at the first search: a second score would make the FAISS index
        # rank by one score and the evaluation by another
        if "similarity" in vars(cls):
            raise TypeError(f"{cls.__module__}.{cls.__qualname__} overrides similarity, but an "
                            "EmbeddingRetrievalModule's score is the cosine of embed_text and embed_video (that is "
                            "what makes its search exact): subclass lightning_modules.base.BaseRetrievalModule "
                            "instead and declare its search embedding (search_keys, or query_embedding and "
                            "index_embedding)")

    @abstractmethod
    def embed_text(self, batch: TextBatch) -> Tensor:
        """``[B, D]``: one vector per query of the batch."""

    @abstractmethod
    def embed_video(self, batch: VideoBatch) -> Tensor:
        """``[B, D]``: one vector per video of the batch, independent of any query."""

    def encode_text(self, batch: TextBatch) -> Features:
        return {"text": self._checked(self.embed_text(batch), len(batch), "embed_text")}

    def encode_video(self, batch: VideoBatch) -> Features:
        return {"video": self._checked(self.embed_video(batch), len(batch), "embed_video")}

    def similarity(self, text_feats: Features, video_feats: Features) -> Tensor:
        """``[n_texts, n_videos]`` cosine of the text and video vectors."""
        return cosine_matrix(text_feats["text"], video_feats["video"])

    def search_is_exact(self) -> bool:
        """The score is the cosine of the two search vectors."""
        return True

    def _checked(self, embedding: Tensor, rows: int, hook: str) -> Tensor:
        """``embedding`` when it is ``[rows, D]``; otherwise an error naming the method and the shape it returned
        (a frame sequence ``[B, T, D]`` that was meant to be pooled is the usual slip)."""
        if not isinstance(embedding, Tensor) or embedding.ndim != 2 or embedding.shape[0] != rows:
            shape = list(embedding.shape) if isinstance(embedding, Tensor) else type(embedding).__name__
            raise ValueError(f"{type(self).__name__}.{hook} returned {shape}; expected a [batch, dim] tensor with "
                             f"batch = {rows} (one vector per item: pool frames or tokens before returning)")
        return embedding
