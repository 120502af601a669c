"""NarVid: Narrating the Video (Hur et al., CVPR 2025), following the released code (invhun/NarVid).

Frame-level captions ("narration", one per sampled frame) are used four ways, each switchable for the
paper's Table 3 ablation:

* **CMI** — video-narration co-attention (§3.3, Eq. 2), then separate temporal transformers (Eq. 3);
* **QAF** — query-aware adaptive filtering of frames and narration (§3.4, Eq. 4): nucleus, top-k or off;
* **NM**  — query-narration matching next to query-video matching (§3.5), each the mean of a coarse
  score (filtering-weighted pooling) and a fine score (word-frame max matching);
* **CVH** — the cross-view hard-negative hinge loss (§3.6.1, Eqs. 6-9) added to the two InfoNCE terms
  (Eq. 5) with weight lambda (Eq. 10).

At inference the two similarity matrices are standardised over the whole test matrix and summed
(§3.6.2, Eq. 11); both raw matrices are saved next to the fused one.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.batch import PairBatch, TextBatch, VideoBatch
from datamodules.captions import CaptionKind
from lightning_modules.backbones.base import TextFeatures
from lightning_modules.base import BaseRetrievalModule, Features
from lightning_modules.components import (
    CoAttention,
    cross_view_hard_negatives,
    hard_negative_hinge,
    masked_mean_pool,
    nucleus_filter,
    token_frame_similarity,
    topk_filter,
    uniform_weights,
)
from lightning_modules.components.co_attention import MaskMode
from lightning_modules.components.temporal import TemporalInit, build_temporal_transformer

FilterMode = Literal["nucleus", "topk", "none"]
Fusion = Literal["zscore", "sum", "video_only", "narration_only"]


def zscore(sim: Tensor) -> Tensor:
    """Eq. 11 term: standardise with the mean and population std of the *whole* matrix."""
    return (sim - sim.mean()) / sim.std(unbiased=False).clamp_min(1e-12)


class NarVid(BaseRetrievalModule):
    """NarVid on any ``VideoTextBackbone``.

    Args:
        narration_key: kind of the per-frame captions in ``VideoBatch.aux`` (the data module's aux store).
        filter_mode: ``nucleus`` (the paper), ``topk`` (Table 4 comparison) or ``none`` (QAF off).
        filter_temperature: softmax temperature tau of the filtering scores (0.1).
        nucleus_p: cumulative-mass threshold p (MSR-VTT B/32: 0.4; B/16 runs: 0.5).
        topk: frames kept by ``topk`` filtering.
        alpha: hard-negative selection width (threshold ``S_ii - alpha * std_i``).
        beta: hinge margin scale (margin ``beta * alpha * std_i``).
        hn_weight: lambda, weight of the cross-view hard-negative loss.
        use_co_attention: CMI switch.
        use_narration_matching: NM switch (off: only the query-video view is trained and scored).
        use_hard_negatives: CVH switch.
        fusion: ``zscore`` (Eq. 11), ``sum`` of raw matrices, ``video_only`` or ``narration_only``.
        mask_mode: ``code`` reproduces the released code's masking (multiplicative score masks in
            co-attention; masked entries as 0 in fine matching; a word whose weight underflows to exactly 0
            leaves the word mask, ``adjust_weights_and_mask``); ``clean`` uses -inf masking and keeps words.
        temporal_layers: layers of each temporal transformer (NarVid: 4).
        temporal_init: ``clip_text`` initialises both temporal transformers (frames and narration) from the
            first blocks and the positional embedding of the CLIP text transformer, as the released code;
            ``random`` for backbones without CLIP.
        temporal_heads: heads of each temporal transformer and of the co-attention (NarVid: 8 at D=512).
        max_frames: longest frame sequence accepted.
        dropout: co-attention dropout (NarVid: 0.1).
        pack_queries: score without the padded word slots, bit for bit the same scores: evaluation tiles hold
            queries of similar length (sorted by their last real word) and the fine matching of a tile or a
            training batch computes cosines only up to its longest query (``token_frame_similarity``'s
            ``skip_padded_words``). ``false`` computes every slot of ``max_words`` for every query, as before.
        **kwargs: ``BaseRetrievalModule`` arguments (backbone, lr, coef_lr, ...).
    """

    def __init__(self, narration_key: CaptionKind = "narration", filter_mode: FilterMode = "nucleus",
                 filter_temperature: float = 0.1, nucleus_p: float = 0.4, topk: int = 3, alpha: float = 0.7,
                 beta: float = 1.8, hn_weight: float = 1.0, use_co_attention: bool = True,
                 use_narration_matching: bool = True, use_hard_negatives: bool = True, fusion: Fusion = "zscore",
                 mask_mode: MaskMode = "code", temporal_layers: int = 4, temporal_heads: int = 8,
                 max_frames: int = 64, dropout: float = 0.1, temporal_init: TemporalInit = "clip_text",
                 pack_queries: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if fusion == "narration_only" and not use_narration_matching:
            raise ValueError("fusion='narration_only' needs use_narration_matching=true")
        d = self.backbone.embed_dim
        self.narration_key = narration_key
        self.co_attention = CoAttention(d, temporal_heads, dropout, mask_mode) if use_co_attention else None
        self.temporal_frames = build_temporal_transformer(self.backbone, temporal_init, temporal_layers,
                                                          temporal_heads, max_frames)
        self.temporal_narration = build_temporal_transformer(self.backbone, temporal_init, temporal_layers,
                                                             temporal_heads, max_frames)
        # word weights a_t = softmax(FC(w_t) / tau): Cap4Video's "wti" text weighting
        self.word_weight_fc = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, 1))

    # ------------------------------------------------------------------ encoders
    def encode_text(self, batch: TextBatch) -> Features:
        return self.text_features(self.backbone_text(batch))

    def text_features(self, feats: TextFeatures) -> Features:
        """The query side on top of the backbone's sentence and token embeddings: the word weights."""
        logits = self.word_weight_fc(feats.tokens).squeeze(-1) / self.hparams.filter_temperature
        weights = torch.softmax(logits.masked_fill(~feats.mask, float("-inf")), dim=-1).nan_to_num(0.0)
        return {"sentence": feats.sentence, "words": feats.tokens, "word_mask": feats.mask, "word_weights": weights}

    def narration_embeddings(self, batch: VideoBatch) -> Tensor:
        """Sentence embedding of each frame's caption: ``[B, T, D]`` (EOT/pooled, as NarVid's narration, §3.2).

        Padded frame slots get an empty caption (a zero row when cached); the frame mask keeps them out of
        every score.
        """
        embeddings, _ = self.aux_caption_embeddings(batch, self.narration_key)
        return embeddings

    def encode_video(self, batch: VideoBatch) -> Features:
        frames = self.backbone_frames(batch)
        needs_narration = self.co_attention is not None or self.hparams.use_narration_matching
        narration = self.narration_embeddings(batch) if needs_narration else None
        return self.video_features(frames, narration, batch.mask.bool())

    def video_features(self, frames: Tensor, narration: Tensor | None, mask: Tensor) -> Features:
        """The video side on top of the backbone's frame and narration embeddings ``[B, T, D]``: co-attention (CMI)
        and the two temporal transformers. ``narration`` may be None when neither CMI nor NM reads it."""
        if self.co_attention is not None:
            frames, narration = self.co_attention(frames, narration, mask)
        out = {"frames": self.temporal_frames(frames, mask), "mask": mask}
        if self.hparams.use_narration_matching:
            out["narration"] = self.temporal_narration(narration, mask)
        return out

    # ------------------------------------------------------------------ matching
    def filtering_scores(self, sims: Tensor, mask: Tensor) -> Tensor:
        """Eq. 4 weights ``[n_t, n_v, T]`` from query-frame cosines ``sims`` (QAF)."""
        hp = self.hparams
        if hp.filter_mode == "nucleus":
            return nucleus_filter(sims, mask, hp.filter_temperature, hp.nucleus_p)
        if hp.filter_mode == "topk":
            return topk_filter(sims, mask, hp.filter_temperature, hp.topk)
        return uniform_weights(sims, mask)

    def matched_words(self, text: Features) -> Tensor:
        """``[n_t, L]``: the word slots the fine matching compares with frames."""
        if self.hparams.mask_mode == "code":
            # released code (adjust_weights_and_mask): a word whose softmax weight underflowed to exactly 0
            # leaves the word mask, so its cosines become the masked value 0 in the frame->word maximum too
            return text["word_mask"] & (text["word_weights"] > 0)
        return text["word_mask"]

    def text_tile_order(self, text_feats: Features) -> Tensor | None:
        """Queries sorted by their last matched word slot, so each scoring tile computes only the word slots its
        longest query uses (``pack_queries``)."""
        if not self.hparams.pack_queries:
            return None
        words = self.matched_words(text_feats)
        slots = torch.arange(1, words.shape[1] + 1, device=words.device)
        length = (words * slots).amax(-1)  # 1 + index of the last matched slot, 0 for none
        return torch.argsort(length, stable=True)

    def view_similarity(self, text: Features, sequence: Tensor, mask: Tensor) -> Tensor:
        """One view (query-video or query-narration): mean of coarse and fine scores, ``[n_t, n_v]``."""
        q = F.normalize(text["sentence"], dim=-1)
        x = F.normalize(sequence, dim=-1)
        sims = torch.einsum("id,jfd->ijf", q, x)  # query-frame cosines
        weights = self.filtering_scores(sims, mask[None])
        # coarse: cos(q, sum_f w_f x_f) without materialising the [n_t, n_v, D] pooled vectors:
        # numerator sum_f w_f (q . x_f); squared norm w^T G w with the per-video Gram matrix G = x x^T
        gram = torch.einsum("jfd,jgd->jfg", x, x)
        norm = torch.einsum("ijf,jfg,ijg->ij", weights, gram, weights).clamp_min(1e-12).sqrt()
        coarse = (weights * sims).sum(-1) / norm
        fine = token_frame_similarity(text["words"], self.matched_words(text), x, weights > 0,
                                      word_weights=text["word_weights"], frame_weights=weights,
                                      masked_value="zero" if self.hparams.mask_mode == "code" else "neginf",
                                      skip_padded_words=self.hparams.pack_queries, frames_normalized=True)
        return 0.5 * (coarse + fine)

    def similarity(self, text_feats: Features, video_feats: Features) -> dict[str, Tensor]:
        views = {"video": self.view_similarity(text_feats, video_feats["frames"], video_feats["mask"])}
        if "narration" in video_feats:
            views["narration"] = self.view_similarity(text_feats, video_feats["narration"], video_feats["mask"])
        return views

    def fuse_views(self, views: dict[str, Tensor]) -> Tensor:
        """Eq. 11 (``zscore``) or the fusion ablations."""
        fusion = self.hparams.fusion
        if "narration" not in views or fusion == "video_only":
            return views["video"]
        if fusion == "narration_only":
            return views["narration"]
        if fusion == "sum":
            return views["video"] + views["narration"]
        return zscore(views["video"]) + zscore(views["narration"])

    # ------------------------------------------------------------------ search (experiments/search)
    def query_embedding(self, text_feats: Features) -> Tensor:
        return F.normalize(text_feats["sentence"], dim=-1)

    def index_embedding(self, video_feats: Features) -> Tensor:
        """First stage of a two-stage search: each view's coarse score with QAF off (uniform frame weights, one
        vector per video), summed over the views. The sum of two unit vectors is kept unnormalised, so its inner
        product with the query is ``cos(q, frames) + cos(q, narration)``; the filtering, the fine matching and the
        z-score fusion are the second stage's (``rerank``)."""
        mask = video_feats["mask"].bool()
        out = 0
        for key in ("frames", "narration"):
            if key in video_feats:
                out = out + F.normalize(masked_mean_pool(F.normalize(video_feats[key], dim=-1), mask), dim=-1)
        return out

    # ------------------------------------------------------------------ training
    def extra_losses(self, views: dict[str, Tensor], text_feats: Features, video_feats: Features,
                     batch: PairBatch) -> dict[str, Tensor]:
        """Eq. 10's last term: lambda x the cross-view hard-negative hinge (Eqs. 6-9) of both views.

        The base adds it to the InfoNCE of each view (Eq. 5): ``L = L_NCE(TV) + L_NCE(TN) + lambda (L_HN^TV +
        L_HN^TN)``.
        """
        hp = self.hparams
        if not hp.use_hard_negatives or hp.hn_weight <= 0:
            return {}
        sim_v = views["video"]
        sim_n = views.get("narration", sim_v)
        rows, cols = cross_view_hard_negatives(sim_v, sim_n, hp.alpha)
        hinge = sum(0.5 * (hard_negative_hinge(s, rows, hp.alpha, hp.beta)
                           + hard_negative_hinge(s.t(), cols, hp.alpha, hp.beta)) for s in views.values())
        return {"loss_hard_negative": hp.hn_weight * hinge, "hard_negative_hinge": hinge,
                "hard_negatives_per_query": rows.float().sum(1).mean()}
