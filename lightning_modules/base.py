"""``BaseRetrievalModule``: everything text-video retrieval methods share.

A method subclasses this and overrides only what its paper changes:

* ``encode_text(batch) -> dict[str, Tensor]`` and ``encode_video(batch) -> dict[str, Tensor]``:
  per-item features, every tensor with the batch on its first axis;
* ``similarity(text_feats, video_feats) -> [n_texts, n_videos]``: may be query-dependent;
* ``extra_losses(views, text_feats, video_feats, batch) -> dict[str, Tensor]``: terms the method adds to the
  symmetric InfoNCE that the base computes on every similarity view of the all-gathered batch
  (``contrastive_losses``); ``training_loss`` composes the two and is rarely overridden.

The base owns the optimiser (CLIP4Clip's two learning rates, AdamW, linear warmup + cosine), the
contrastive temperature (started from the backbone's pretrained CLIP value and trained with the trunk, as
CLIP4Clip and NarVid do), the evaluation protocol and the artifacts a test run leaves behind:

1. every evaluation text and every evaluation video is encoded once (two loaders);
2. features are gathered across ranks and de-duplicated by dataset index (``DistributedSampler``
   pads the last shard with repeats), and counts are checked against the split;
3. the similarity is scored in (text chunk x video chunk) tiles, so a query-dependent ``similarity``
   never materialises texts x videos x frames x words at once;
4. metrics (``lightning_modules.metrics``) use an index map for multi-caption sets;
5. ``test`` writes ``metrics.json``, ``sim_t2v.npy``, ``text_ids.json``, ``video_ids.json``,
   ``text_to_video.json`` and the resolved ``config.yaml`` into ``<run dir>/test`` (the first logger's ``log_dir``);
6. only when asked (``postprocess: [dsl, qbnorm]``), and only after those plain artifacts, ``test`` re-scores the
   matrix with each test-time post-processing of ``lightning_modules.postprocess`` and writes its numbers to their
   own ``metrics_<flag>.json`` and ``sim_t2v_<flag>.npy`` (never into ``metrics.json``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn

from datamodules.batch import AuxCaptions, PairBatch, TextBatch, VideoBatch, normalize_frames
from datamodules.captions import CaptionKind
from lightning_modules.backbones.base import TextFeatures, VideoTextBackbone
from lightning_modules.components.losses import symmetric_infonce
from lightning_modules.lineage import LineageMixin, test_lineage, verdict_fields
from lightning_modules.metrics import retrieval_metrics
from lightning_modules.optim import SCHEDULES, OptimizerName, ScheduleName, build_optimizer, warmup_cosine
from lightning_modules.postprocess import DSL_TEMPERATURE, QBNORM_BETA, QBNORM_TOPK
from lightning_modules.provenance import run_provenance
from lightning_modules.test_time import check_query_bank, run_test_postprocessing

__all__ = ["BaseRetrievalModule", "Features", "as_float32", "score_tiles", "warmup_cosine"]

log = logging.getLogger(__name__)

Features = dict[str, Tensor]
PostprocessName = Literal["dsl", "qbnorm"]


def as_float32(feats: Features) -> Features:
    """Floating features in float32, others (masks, indices) unchanged.

    Under ``bf16-mixed`` encoders return a mix of bfloat16 (autocast matmuls) and float32 (LayerNorm)
    tensors, while evaluation scoring runs outside autocast: the similarity would then see mixed dtypes,
    and bfloat16 scores (8 bits of mantissa) tie with the ground truth often enough to move R@1. Casting
    once, right after encoding, makes every evaluation score a float32 computation.
    """
    return {k: v.float() if v.is_floating_point() else v for k, v in feats.items()}


def _slice_features(feats: Features, start: int, stop: int) -> Features:
    return {k: v[start:stop] for k, v in feats.items()}


Scores = Tensor | dict[str, Tensor]


@torch.no_grad()
def score_tiles(similarity: Callable[[Features, Features], Scores], text_feats: Features, video_feats: Features,
                text_chunk: int, video_chunk: int, text_order: Tensor | None = None) -> Scores:
    """Evaluate ``similarity`` over (text chunk x video chunk) tiles into CPU float32 matrices.

    Peak memory is that of one tile, so a query-dependent similarity whose intermediate grows with
    texts x videos x frames x words stays bounded by the chunk sizes. A similarity that returns several
    named views (a dict of tiles, e.g. NarVid's query-video and query-narration scores) gets one
    full matrix per view. ``text_order`` (a permutation of the texts) groups texts into tiles in that order,
    e.g. queries of similar length together; the rows of the result stay in the input order.
    """
    n_t = next(iter(text_feats.values())).shape[0]
    n_v = next(iter(video_feats.values())).shape[0]
    if text_order is not None:
        if text_order.shape != (n_t,) or not torch.equal(torch.sort(text_order.cpu()).values, torch.arange(n_t)):
            raise ValueError(f"score_tiles: text_order must be a permutation of the {n_t} texts")
        text_feats = {k: v[text_order.to(v.device)] for k, v in text_feats.items()}
    out: dict[str, Tensor] = {}
    single = False
    for ts in range(0, n_t, text_chunk):
        t_chunk = _slice_features(text_feats, ts, ts + text_chunk)
        for vs in range(0, n_v, video_chunk):
            tile = similarity(t_chunk, _slice_features(video_feats, vs, vs + video_chunk))
            if isinstance(tile, Tensor):
                single, tile = True, {"": tile}
            for name, value in tile.items():
                if name not in out:
                    out[name] = torch.empty(n_t, n_v, dtype=torch.float32)
                out[name][ts:ts + text_chunk, vs:vs + video_chunk] = value.float().cpu()
    if text_order is not None:  # back to the input order
        inverse = torch.empty_like(text_order, device="cpu")
        inverse[text_order.cpu()] = torch.arange(n_t)
        out = {name: value[inverse] for name, value in out.items()}
    return out[""] if single else out


class BaseRetrievalModule(LineageMixin, L.LightningModule, ABC):
    """Shared retrieval core. See the module docstring for the contract.

    Args:
        backbone: the video-text encoder pair (``class_path``/``init_args`` in YAML).
        lr: learning rate of the method's own modules and the backbone heads.
        coef_lr: the pretrained trunks train at ``lr * coef_lr`` (CLIP4Clip: 1e-3).
        weight_decay: decoupled weight decay (see ``weight_decay_rule`` for which parameters get it).
        warmup_ratio: fraction of optimisation steps spent in linear warmup.
        betas: Adam betas (CLIP4Clip/NarVid: 0.9, 0.98).
        eps: Adam epsilon.
        optimizer: ``adamw`` (torch's AdamW) or ``bertadam`` (CLIP4Clip/NarVid's BertAdam: no bias correction,
            decay added to the normalised update, per-tensor gradient clipping at 1; ``lightning_modules.optim``)
            or ``adamax`` (torch's Adamax, ExCae's optimiser).
        lr_schedule: ``warmup_cosine`` (linear warmup, then a cosine over the remaining steps) or
            ``bert_warmup_cosine`` (CLIP4Clip's: the cosine runs over the whole of training, warmup included).
        weight_decay_rule: ``matrices`` exempts biases, norms, embeddings and the temperature from weight
            decay; ``clip4clip`` exempts only parameters named ``*bias*`` (CLIP4Clip's rule, which in practice
            also decays CLIP's LayerNorm weights, embeddings and logit scale).
        logit_scale_init: initial contrastive logit scale ``gamma`` (the inverse temperature; the loss is
            InfoNCE on ``gamma * cos``). ``pretrained`` takes the backbone's pretrained CLIP value (100 for
            OpenAI CLIP), as CLIP4Clip and NarVid do; a number sets it (1/0.07 = 14.29 is CLIP's value before
            pre-training). Backbones without a pretrained scale (the two-tower default) need a number.
        logit_scale_group: optimiser group of the logit scale: ``trunk`` (lr x coef_lr, as CLIP4Clip and
            NarVid, where it sits inside CLIP; at coef_lr 1e-3 it barely moves) or ``head`` (the method's lr).
        learnable_temperature: learn the logit scale or keep it fixed at its initial value.
        max_logit_scale: clamp of the learnt logit scale (CLIP: 100).
        eval_text_chunk: texts per scoring tile at evaluation.
        eval_video_chunk: videos per scoring tile at evaluation.
        write_artifacts: write the test artifacts (metrics, similarity matrix, ids, config).
        postprocess: test-time post-processing to report *besides* the plain numbers (default: none): ``dsl``
            (CAMoE's dual softmax; transductive, it sees every test query at once) and/or ``qbnorm`` (QB-Norm with
            the dynamic inverted softmax, over a bank of training-split texts). Each writes
            ``test/metrics_<flag>.json`` and ``test/sim_t2v_<flag>.npy`` after the plain artifacts; training,
            validation and ``metrics.json`` are unchanged (``lightning_modules.postprocess``).
        dsl_temperature: DSL's inverse temperature on the scores (100: CLIP's logit scale, CAMoE's inference prior).
        qbnorm_beta: QB-Norm's inverse temperature beta (paper: 20).
        qbnorm_topk: QB-Norm's activation set: videos among the top ``k`` of some bank query (paper: 1).
        qbnorm_bank_size: at most this many training-split texts in QB-Norm's bank, drawn deterministically
            (``null``: every training text, as the reference code).
    """

    monitor: str = "val/t2v_R1"

    def __init__(self, backbone: VideoTextBackbone, lr: float = 1e-4, coef_lr: float = 1e-3,
                 weight_decay: float = 0.2, warmup_ratio: float = 0.1, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-6, optimizer: OptimizerName = "adamw", lr_schedule: ScheduleName = "warmup_cosine",
                 weight_decay_rule: Literal["matrices", "clip4clip"] = "matrices",
                 logit_scale_init: float | Literal["pretrained"] = "pretrained",
                 logit_scale_group: Literal["trunk", "head"] = "trunk", learnable_temperature: bool = True,
                 max_logit_scale: float = 100.0, eval_text_chunk: int = 256, eval_video_chunk: int = 1024,
                 write_artifacts: bool = True, postprocess: Sequence[PostprocessName] = (),
                 dsl_temperature: float = DSL_TEMPERATURE, qbnorm_beta: float = QBNORM_BETA,
                 qbnorm_topk: int = QBNORM_TOPK, qbnorm_bank_size: int | None = 10_000) -> None:
        super().__init__()
        unknown = sorted(set(postprocess) - {"dsl", "qbnorm"})
        if unknown:
            raise ValueError(f"model.init_args.postprocess: unknown {unknown}; use a list of 'dsl', 'qbnorm'")
        if dsl_temperature <= 0 or qbnorm_beta <= 0 or qbnorm_topk < 1 or (
                qbnorm_bank_size is not None and qbnorm_bank_size < 1):
            raise ValueError(f"post-processing settings must be positive: dsl_temperature={dsl_temperature}, "
                             f"qbnorm_beta={qbnorm_beta}, qbnorm_topk={qbnorm_topk}, "
                             f"qbnorm_bank_size={qbnorm_bank_size} (null: every training text)")
        # Under LightningCLI the given hyper-parameters are config dicts (backbone included), which lets
        # ``load_from_checkpoint`` rebuild everything; built by hand, the backbone is a module object and
        # must not be pickled into the checkpoint's hyper-parameters.
        self.save_hyperparameters(ignore=[] if _given_hyperparameters.get() else ["backbone"])
        self.backbone = backbone
        self.logit_scale = nn.Parameter(torch.tensor(self._initial_log_scale(logit_scale_init)),
                                        requires_grad=learnable_temperature)
        self._eval_store: dict[str, list[tuple[Tensor, Features]]] = {"text": [], "video": []}
        self._last_metrics: dict[str, Any] = {}
        self._last_postprocess: dict[str, dict[str, Any]] = {}

    def _initial_log_scale(self, logit_scale_init: float | str) -> float:
        """``log(gamma)`` at initialisation; see ``logit_scale_init``."""
        if logit_scale_init == "pretrained":
            pretrained = self.backbone.pretrained_logit_scale()
            if pretrained is None:
                raise ValueError(f"logit_scale_init='pretrained', but backbone {type(self.backbone).__name__} has no "
                                 "pretrained logit scale (only CLIP-style backbones do); set "
                                 "model.init_args.logit_scale_init to a number, e.g. 14.29 (= 1/0.07)")
            return float(pretrained)
        if isinstance(logit_scale_init, str) or not 0 < float(logit_scale_init) <= self.hparams.max_logit_scale:
            raise ValueError(f"logit_scale_init={logit_scale_init!r}: expected 'pretrained' or a number in "
                             f"(0, max_logit_scale={self.hparams.max_logit_scale}]")
        return math.log(float(logit_scale_init))

    # ================================================================== what methods override
    def encode_text(self, batch: TextBatch) -> Features:
        """Per-text features. Default: the backbone's sentence embedding under ``"text"``."""
        return {"text": self.backbone_text(batch).sentence}

    def encode_video(self, batch: VideoBatch) -> Features:
        """Per-video features. Default: the backbone's frame embeddings under ``"frames"`` + ``"mask"``."""
        return {"frames": self.backbone_frames(batch), "mask": batch.mask}

    @abstractmethod
    def similarity(self, text_feats: Features, video_feats: Features) -> Scores:
        """``[n_texts, n_videos]`` similarity of every text with every video of the two feature sets.

        May return several named views (``dict[str, Tensor]``); ``fuse_views`` then combines the full
        evaluation matrices (statistics over the whole test set, e.g. NarVid's z-score fusion).
        """

    def text_tile_order(self, text_feats: Features) -> Tensor | None:
        """The order in which evaluation texts are grouped into scoring tiles (``None``: as they come).

        A method whose cost per tile grows with the longest query of the tile (NarVid's word-frame matching)
        returns the texts sorted by length, so each tile pays only for words its queries have.
        """
        return None

    def fuse_views(self, views: dict[str, Tensor]) -> Tensor:
        """Combine full-matrix views into the final score (only needed when ``similarity`` returns views)."""
        raise TypeError(f"{type(self).__name__}.similarity returned views {sorted(views)}; override fuse_views")

    # ================================================================== search over a video collection
    # ``experiments/search`` puts one vector per video in a FAISS index and one per query beside it. A method whose
    # score is a cosine of two such vectors is searched exactly; a query-dependent one (NarVid's query-aware
    # pooling, conical's per-candidate supplements) gets a query-independent first stage from these two hooks and
    # its full ``similarity`` on the first stage's top N (``rerank``).
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

    def training_loss(self, batch: PairBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Contrastive terms on every similarity view of the all-gathered batch, plus the method's extra terms.

        Every term whose name starts with ``loss_`` is added to the total, in order (contrastive terms first);
        other entries are statistics, logged only. Each is logged as ``train/<name>``.
        """
        text_feats = self.gather_for_loss(self.encode_text(batch.text))
        video_feats = self.gather_for_loss(self.encode_video(batch.video))
        sims = self.similarity(text_feats, video_feats)
        views = sims if isinstance(sims, dict) else {"": sims}
        terms = self.contrastive_losses(views)
        terms.update(self.extra_losses(views, text_feats, video_feats, batch))
        loss = sum(value for name, value in terms.items() if name.startswith("loss_"))
        return loss, {name: value.detach() for name, value in terms.items()}

    def contrastive_losses(self, views: dict[str, Tensor]) -> dict[str, Tensor]:
        """Symmetric InfoNCE on each view, scaled by the learnt logit scale (CLIP4Clip Eqs. 8-10).

        A single similarity matrix gives ``loss_nce``; named views give ``loss_nce_<view>`` each.
        """
        scale = self.logit_scale.exp()
        return {f"loss_nce_{name}" if name else "loss_nce": symmetric_infonce(scale * sim)
                for name, sim in views.items()}

    def extra_losses(self, views: dict[str, Tensor], text_feats: Features, video_feats: Features,
                     batch: PairBatch) -> dict[str, Tensor]:
        """The method's own terms on top of the contrastive ones; none in the base.

        ``views`` are the training similarities (``{"": sim}`` for a single matrix), the features are the
        all-gathered ones. Return weighted ``loss_*`` terms (added to the total) and any statistics to log.
        """
        return {}

    # ================================================================== helpers for methods
    def backbone_text(self, batch: TextBatch) -> TextFeatures:
        """Backbone text features, from cached trunk states when the data module provides them."""
        if batch.cached_tokens is not None:
            return self.backbone.text_head(batch.cached_tokens.to(self.dtype_for_heads()), batch.cached_mask.bool())
        return self.backbone.encode_text(batch.texts)

    def backbone_frames(self, batch: VideoBatch) -> Tensor:
        """Backbone per-frame embeddings ``[B, T, D]``; from the cache when present."""
        if batch.cached_frames is not None:
            return self.backbone.frame_head(batch.cached_frames.to(self.dtype_for_heads()))
        assert batch.frames is not None, "VideoBatch has neither frames nor cached features"
        return self.backbone.encode_frames(batch.frames)

    def backbone_augmented_frames(self, batch: VideoBatch) -> Tensor:
        """Per-frame embeddings ``[B, A, T, D]`` of the A augmented copies of each training clip (data
        ``augmented_views``); from the cache's pool of views when present."""
        if batch.cached_augmented is not None:
            return self.backbone.frame_head(batch.cached_augmented.to(self.dtype_for_heads()))
        if batch.augmented_frames is None:
            raise ValueError(f"{type(self).__name__} trains on augmented video copies, but the batch has none: set "
                             "data.init_args.augmented_views (e.g. 1)")
        b, a = batch.augmented_frames.shape[:2]
        return self.backbone.encode_frames(batch.augmented_frames.flatten(0, 1)).view(b, a, *batch.mask.shape[1:], -1)

    def aux_caption_embeddings(self, batch: VideoBatch, kind: CaptionKind) -> tuple[Tensor, Tensor]:
        """Sentence embedding of each auxiliary caption of ``kind`` through the backbone's text side.

        Returns ``embeddings [B, N, D]`` and ``mask [B, N]`` (slot holds a caption). ``N`` is ``T`` for
        per-frame captions (narration, NarVid §3.2: one caption per sampled frame), else the longest caption
        list of the batch (``MultiCaptions``: K per video). From the cached trunk states when the data module
        provides them (frozen text trunk), else encoded live; an absent slot is the empty string live and a
        zero row cached (masked either way).
        """
        aux = batch.aux.get(kind)
        self.note_aux_read(kind)
        if not isinstance(aux, AuxCaptions):
            raise KeyError(f"{type(self).__name__} needs {kind!r} captions in the batch under aux[{kind!r}]: set "
                           f"data.init_args.aux_captions: {{{kind}: <{kind}.jsonl>}}")
        b, t = batch.mask.shape
        slots = aux.slots(t)
        if aux.tokens is not None:
            assert aux.mask is not None
            sentence = self.backbone.sentence_head(aux.tokens.flatten(0, 1).to(self.dtype_for_heads()),
                                                   aux.mask.flatten(0, 1).bool())
            return sentence.view(b, slots, -1), aux.present(slots, batch.mask.device)
        if aux.per_frame:
            real = batch.mask.sum(1).tolist()
            for i, row in enumerate(aux.captions):
                if len(row) not in (real[i], t):
                    raise ValueError(f"video {batch.video_ids[i]} has {len(row)} {kind} captions for {real[i]} "
                                     f"frames; {kind} must be aligned 1:1 with the sampled frames")
        flat = [caption for row in aux.captions for caption in list(row) + [""] * (slots - len(row))]
        return self.backbone.encode_text(flat).sentence.view(b, slots, -1), aux.present(slots, batch.mask.device)

    def dtype_for_heads(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def gather_for_loss(self, feats: Features) -> Features:
        """All-gather every feature tensor across ranks *with* gradients, batch axes concatenated.

        Each rank then computes the loss of the global batch; the gathered copies route gradients back
        to the rank that produced them, so DDP's gradient averaging reproduces the single-process
        gradient of the global batch.

        Ranks may hold different numbers of rows (``on_decode_error: skip`` drops the videos that failed
        to decode), while ``all_gather`` needs equal shapes on every rank: the row counts are gathered
        first, every rank pads to the largest, and the padding rows are cut out of the gathered tensors
        (they never reach the loss, so they get no gradient).
        """
        if self._trainer is None or self.trainer.world_size == 1:
            return feats
        local_rows = next(iter(feats.values())).shape[0]
        rows = self.all_gather(torch.tensor(local_rows, device=self.device)).flatten()
        largest = int(rows.max())
        real = (torch.arange(largest, device=self.device)[None, :] < rows[:, None]).flatten()
        gathered = {}
        for key, value in feats.items():
            if local_rows < largest:
                value = torch.cat([value, value.new_zeros((largest - local_rows, *value.shape[1:]))])
            gathered[key] = self.all_gather(value, sync_grads=True).flatten(0, 1)[real]
        return gathered

    def _any_rank_without_rows(self, local_rows: int) -> bool:
        """Whether this step's batch is empty on *any* rank (a collective under DDP: every rank asks)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return local_rows == 0
        rows = self.all_gather(torch.tensor(local_rows, device=self.device))
        return bool((rows == 0).any())

    # ================================================================== training
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 frames -> normalised float on the device (workers ship 4x less data as uint8)."""
        video = batch.video if isinstance(batch, PairBatch) else batch
        if isinstance(video, VideoBatch) and video.frames is not None and video.frames.dtype == torch.uint8:
            video.frames = normalize_frames(video.frames, self.backbone.image_mean, self.backbone.image_std).to(
                self.dtype_for_heads())
        if isinstance(video, VideoBatch) and video.augmented_frames is not None and (
                video.augmented_frames.dtype == torch.uint8):
            copies = video.augmented_frames  # [B, A, T, 3, H, W]
            video.augmented_frames = normalize_frames(copies.flatten(0, 1), self.backbone.image_mean,
                                                      self.backbone.image_std).view(copies.shape).to(
                self.dtype_for_heads())
        return batch

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        size = getattr(dm, "image_size", None)
        if size is not None and size != self.backbone.image_size and not getattr(dm, "feature_cache", False):
            log.warning("data image_size=%s differs from the backbone's image_size=%s", size, self.backbone.image_size)
        if "qbnorm" in self.hparams.postprocess and stage in ("fit", "test"):
            check_query_bank(self, dm)  # before training, not hours later at the end of the test

    # whether this method reads cached states of a frozen text trunk; a method that runs that trunk live anyway
    # (CaRe-DPO's role vectors enter at its input) says False, and the cache then builds no text states
    reads_cached_text: bool = True

    def configure_callbacks(self) -> list[L.Callback]:
        """The frozen-feature cache callback (``callbacks/feature_cache.py``) when the data module asks for the cache
        (``data.init_args.feature_cache: true``); it builds the cache before this module's ``setup``."""
        from callbacks.feature_cache import feature_cache_callbacks

        return feature_cache_callbacks(self)

    def training_step(self, batch: PairBatch, batch_idx: int) -> Tensor | None:
        # videos that failed to decode (on_decode_error: skip) were dropped from the batch; the epoch's total
        # over every rank goes to the logs (each rank logs every step, so the epoch-end sum lines up)
        self.log("train/num_videos_failed", float(len(batch.video.failed)), on_step=False, on_epoch=True,
                 reduce_fx="sum", sync_dist=True, batch_size=1)
        # A rank whose whole batch failed has no features to gather, and running the encoders on zero rows is
        # not something every method and tokenizer supports; under DDP its peers would then wait in the
        # all_gather / gradient all-reduce forever. So *every* rank skips such a step together: the surviving
        # items of the other ranks are lost for this one step, which is what a single process does with an
        # all-failed batch too. Uneven non-empty batches do train: gather_for_loss pads and trims.
        if self._any_rank_without_rows(len(batch)):
            if self.trainer.world_size == 1:
                return None
            # Lightning refuses None under DDP. A loss on a fresh leaf backpropagates into no parameter: no
            # rank's DDP reducer sees a gradient hook or starts an all-reduce, and the optimiser finds no
            # gradient to apply, on every rank alike.
            return torch.zeros((), device=self.device, requires_grad=True)
        loss, logs = self.training_loss(batch)
        size = len(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=size)
        self.log("train/logit_scale", self.logit_scale.detach().exp(), batch_size=size)
        return loss

    def logit_scales(self) -> list[nn.Parameter]:
        """Every learnt contrastive scale: ``logit_scale`` and any ``logit_scale_*`` a method adds (one per loss
        term). They share the optimiser group (``logit_scale_group``), no weight decay and the clamp."""
        return [p for name, p in self.named_parameters() if name.startswith("logit_scale")]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # CLIP clamps the learnt scale so logits cannot blow up
            for scale in self.logit_scales():
                scale.clamp_(0, math.log(self.hparams.max_logit_scale))

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        trunk_ids = {id(p) for p in self.backbone.trunk_parameters()}
        if hp.logit_scale_group == "trunk":
            trunk_ids.update(id(p) for p in self.logit_scales())
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if hp.weight_decay_rule == "clip4clip":
                no_decay = "bias" in name
            else:
                no_decay = p.ndim < 2 or "logit_scale" in name or "position" in name or "embedding" in name
            groups.setdefault((id(p) in trunk_ids, no_decay), []).append(p)
        param_groups = [{"params": ps, "lr": hp.lr * (hp.coef_lr if trunk else 1.0),
                         "weight_decay": 0.0 if no_decay else hp.weight_decay}
                        for (trunk, no_decay), ps in sorted(groups.items())]
        optimizer = build_optimizer(hp.optimizer, param_groups, hp.lr, tuple(hp.betas), hp.eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(hp.warmup_ratio * total)
        schedule = SCHEDULES[hp.lr_schedule]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ================================================================== evaluation
    def _eval_step(self, batch: TextBatch | VideoBatch) -> None:
        if len(batch) == 0:  # every video of the batch failed to decode (on_decode_error: skip)
            return
        feats = self.encode_text(batch) if isinstance(batch, TextBatch) else self.encode_video(batch)
        self._eval_store["text" if isinstance(batch, TextBatch) else "video"].append((batch.index, as_float32(feats)))

    def validation_step(self, batch: TextBatch | VideoBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def test_step(self, batch: TextBatch | VideoBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_store = {"text": [], "video": []}

    def on_test_epoch_start(self) -> None:
        self._eval_store = {"text": [], "video": []}
        self.reset_lineage_reads()  # the test's lineage lists the captions the test itself reads

    def _gather_eval(self, kind: str) -> tuple[Tensor, Features]:
        if not self._eval_store[kind]:
            raise RuntimeError(f"no {kind} batches were evaluated")
        return self.gather_eval_store(self._eval_store[kind])

    def gather_eval_store(self, store: list[tuple[Tensor, Features]]) -> tuple[Tensor, Features]:
        """Concatenate local (index, features) batches, all-gather, drop sampler padding by index, sort by index."""
        index = torch.cat([i for i, _ in store]).to(self.device)
        feats = {k: torch.cat([f[k] for _, f in store]) for k in store[0][1]}
        if self.trainer.world_size > 1:
            index = self.all_gather(index).flatten(0, 1)
            feats = {k: self.all_gather(v).flatten(0, 1) for k, v in feats.items()}
        order = torch.argsort(index, stable=True)
        index = index[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        rows = order[keep]
        return index[keep], {k: v[rows] for k, v in feats.items()}

    @torch.no_grad()
    def score(self, text_feats: Features, video_feats: Features) -> tuple[Tensor, dict[str, Tensor]]:
        """Full ``[n_texts, n_videos]`` float32 similarity on CPU, tile by tile, and its raw views (if any)."""
        scores = score_tiles(self.similarity, text_feats, video_feats, self.hparams.eval_text_chunk,
                             self.hparams.eval_video_chunk, self.text_tile_order(text_feats))
        if isinstance(scores, Tensor):
            return scores, {}
        return self.fuse_views(scores), scores

    def _evaluate(self, stage: str) -> dict[str, Any]:
        started = time.perf_counter()
        dm = self.trainer.datamodule
        index = dm.eval_index(stage)
        text_idx, text_feats = self._gather_eval("text")
        video_idx, video_feats = self._gather_eval("video")
        self._eval_store = {"text": [], "video": []}
        text_idx, video_idx = text_idx.cpu(), video_idx.cpu()
        complete = len(text_idx) == len(index.text_ids) and len(video_idx) == len(index.video_ids)
        limited = self.trainer.sanity_checking or bool(self.trainer.fast_dev_run) or (
            (self.trainer.limit_val_batches if stage == "val" else self.trainer.limit_test_batches) != 1.0)
        # videos that failed to decode (data on_decode_error: skip) are reported by the data module; their
        # texts cannot be scored, so they leave the evaluation and metrics.json says how many (never zeros)
        failed = set(dm.eval_failures(stage)) if hasattr(dm, "eval_failures") else set()
        failed -= set(video_idx.tolist())
        covered_rest = len(text_idx) == len(index.text_ids) and len(video_idx) + len(failed) == len(index.video_ids)
        if not complete and not limited and not covered_rest:
            raise RuntimeError(f"{stage} evaluation covered {len(text_idx)}/{len(index.text_ids)} texts and "
                               f"{len(video_idx)}/{len(index.video_ids)} videos after de-duplication")
        # Map each text's ground-truth video (dataset index) to its column among the evaluated videos.
        column = torch.full((len(index.video_ids),), -1, dtype=torch.long)
        column[video_idx] = torch.arange(len(video_idx))
        gt = column[torch.as_tensor(index.text_to_video)[text_idx]]
        if not complete:  # a debugging run on a subset: keep texts whose video was encoded
            has_video = gt >= 0
            text_idx, gt = text_idx[has_video], gt[has_video]
            text_feats = {k: v[has_video.to(v.device)] for k, v in text_feats.items()}
            covered = torch.zeros(len(video_idx), dtype=torch.bool)
            covered[gt] = True
            video_idx, gt = video_idx[covered], torch.cumsum(covered.long(), 0)[gt] - 1
            video_feats = {k: v[covered.to(v.device)] for k, v in video_feats.items()}
        sim, views = self.score(text_feats, video_feats)
        metrics: dict[str, Any] = retrieval_metrics(sim, gt)
        metrics["num_videos_failed"] = len(failed)
        metrics["num_texts_unscored"] = len(index.text_ids) - len(text_idx)
        for name, view in views.items():  # each raw view on its own, for the ablation tables
            metrics.update({f"{name}/{k}": v for k, v in retrieval_metrics(view, gt).items()
                            if k in ("t2v_R1", "t2v_R5", "t2v_R10", "v2t_R1", "rsum")})
        metrics["eval_seconds"] = round(time.perf_counter() - started, 3)
        self._last_eval = {"sim": sim, "views": views, "text_idx": text_idx, "video_idx": video_idx, "gt": gt,
                           "index": index, "complete": complete}
        if stage == "test" and "qbnorm" in self.hparams.postprocess:
            self._last_eval["video_feats"] = video_feats  # QB-Norm scores its query bank against these videos
        return metrics

    def on_validation_epoch_end(self) -> None:
        if not self._eval_store["text"]:
            return
        metrics = self._evaluate("val")
        for k, v in metrics.items():
            self.log(f"val/{k}", float(v), prog_bar=k in ("t2v_R1", "rsum"), sync_dist=False)

    def on_test_epoch_end(self) -> None:
        metrics = self._evaluate("test")
        for k, v in metrics.items():
            self.log(f"test/{k}", float(v), sync_dist=False)
        self._last_metrics = metrics
        out = None
        if self.hparams.write_artifacts:
            out = self.artifact_dir()  # trainer.log_dir broadcasts: every rank must ask
            if self.trainer.is_global_zero:
                self.write_test_artifacts(metrics, out)
        if self.hparams.postprocess:  # after the plain artifacts, which it never changes
            self._last_postprocess = run_test_postprocessing(self, self._last_eval, metrics, out)
            self._last_eval.pop("video_feats", None)

    # ================================================================== artifacts
    def artifact_dir(self) -> Path:
        """``<run dir>/test``: the run dir is the first logger's ``log_dir`` (or ``default_root_dir``)."""
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "test"

    def write_test_artifacts(self, metrics: dict[str, Any], out: Path) -> Path:
        """Write what a test run leaves behind (README "What a run leaves behind").

        The report and re-scoring read these files.
        """
        out.mkdir(parents=True, exist_ok=True)
        ev = self._last_eval
        index = ev["index"]
        np.save(out / "sim_t2v.npy", ev["sim"].numpy().astype(np.float32))
        for name, view in ev["views"].items():  # raw views, so fusion variants can be recomputed offline
            np.save(out / f"sim_t2v_{name}.npy", view.numpy().astype(np.float32))
        (out / "text_ids.json").write_text(json.dumps([index.text_ids[i] for i in ev["text_idx"].tolist()]))
        (out / "video_ids.json").write_text(json.dumps([index.video_ids[i] for i in ev["video_idx"].tolist()]))
        (out / "text_to_video.json").write_text(json.dumps(ev["gt"].tolist()))
        (out / "metrics.json").write_text(json.dumps(self.test_record(metrics), indent=2, default=str))
        (out / "config.yaml").write_text(self._resolved_config())
        log.info("test artifacts written to %s", out)
        return out

    def test_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """metrics.json's content for ``metrics``, with ``postprocess: none`` (a post-processed record sets its own).

        ``lineage`` is what fed the numbers (``lightning_modules/lineage.py``) and ``leakage`` the verdict computed
        from it: every read of test data in a role where that is a leak (never typed by hand).
        """
        ev = self._last_eval
        dm = self.trainer.datamodule
        return {
            "metrics": {k: float(v) for k, v in metrics.items()},
            "num_texts": int(metrics["num_texts"]), "num_videos": int(metrics["num_videos"]),
            "complete": ev["complete"], "method": type(self).__name__,
            "postprocess": "none", "seed": _seed(), **run_provenance(self.trainer),
            "ckpt_path": str(self.trainer.ckpt_path) if self.trainer.ckpt_path else None,
            "data": dm.describe("test") if hasattr(dm, "describe") else {},
            "world_size": self.trainer.world_size, "precision": str(self.trainer.precision),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **verdict_fields(test_lineage(self, dm)),
        }

    def _resolved_config(self) -> str:
        from lightning.pytorch.cli import SaveConfigCallback

        for cb in self.trainer.callbacks:
            if isinstance(cb, SaveConfigCallback):
                return cb.parser.dump(cb.config, skip_none=False)
        import yaml

        return yaml.safe_dump({"model": {"class_path": f"{type(self).__module__}.{type(self).__name__}",
                                         "init_args": dict(self.hparams)}}, sort_keys=False, default_flow_style=False)


def _seed() -> int | None:
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value is not None else None
