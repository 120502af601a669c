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
CLIP4Clip and NarVid do) and training; the rest of what every method shares lives beside it, mixed in:

* ``lightning_modules.evaluation``: the evaluation protocol (encode every text and video once, gather and
  de-duplicate across ranks, tiled scoring, metrics with index maps for multi-caption sets);
* ``lightning_modules.artifacts``: what a test leaves in ``<run dir>/test`` (``metrics.json``, ``sim_t2v.npy``, ids,
  the resolved ``config.yaml``) and the record's provenance;
* ``lightning_modules.distributed``: gathering features across DDP ranks (with gradients for the loss);
* ``lightning_modules.search_hooks``: the embeddings ``experiments/search`` indexes and ``rerank``;
* ``lightning_modules.scoring``: ``Features``, ``as_float32``, ``score_tiles`` (re-exported here);
* ``callbacks.test_time_postprocessing``: only when asked (``postprocess: [dsl, qbnorm]``), and only after the plain
  artifacts, re-scores the test matrix with each post-processing of ``lightning_modules.postprocess`` into its own
  ``metrics_<flag>.json`` and ``sim_t2v_<flag>.npy`` (never into ``metrics.json``); ``configure_callbacks`` adds it.

A method's test-time arguments (``test_time_args``: they only steer what a test reports) come from the command line
of ``vtr test --ckpt_path ...`` rather than from the checkpoint; a method adds its own to the base's.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from torch import Tensor, nn

from datamodules.batch import AuxCaptions, PairBatch, TextBatch, VideoBatch, normalize_frames
from datamodules.captions import CaptionKind
from lightning_modules.artifacts import TestArtifactsMixin
from lightning_modules.attachment import attached_trainer
from lightning_modules.backbones.base import TextFeatures, VideoTextBackbone
from lightning_modules.cli_hyperparameters import object_args_to_ignore
from lightning_modules.components.losses import symmetric_infonce
from lightning_modules.distributed import DistributedGatherMixin
from lightning_modules.evaluation import EvaluationMixin
from lightning_modules.lineage import LineageMixin
from lightning_modules.optim import SCHEDULES, OptimizerName, ScheduleName, build_optimizer, warmup_cosine
from lightning_modules.postprocess import DSL_TEMPERATURE, QBNORM_BETA, QBNORM_TOPK
from lightning_modules.scoring import Features, Scores, as_float32, score_tiles
from lightning_modules.search_hooks import SearchHooksMixin

# Features, Scores, as_float32, score_tiles and warmup_cosine are re-exported: methods, experiments and benchmarks
# import them from here
__all__ = ["BaseRetrievalModule", "Features", "Scores", "as_float32", "score_tiles", "warmup_cosine"]

log = logging.getLogger(__name__)

PostprocessName = Literal["dsl", "qbnorm"]


class BaseRetrievalModule(LineageMixin, EvaluationMixin, TestArtifactsMixin, SearchHooksMixin, DistributedGatherMixin,
                          L.LightningModule, ABC):
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
    # model arguments that only steer what a test reports: ``vtr test --ckpt_path ...`` takes them from its own
    # command line, not from the checkpoint (vtr/lightning_cli.py); a method extends the tuple with its own
    test_time_args: ClassVar[tuple[str, ...]] = ("postprocess", "dsl_temperature", "qbnorm_beta", "qbnorm_topk",
                                                 "qbnorm_bank_size")

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
        # Under LightningCLI the hyper-parameters are config dicts (backbone included), which lets
        # ``load_from_checkpoint`` rebuild everything; built by hand, the backbone is a module object and
        # must not be pickled into the checkpoint's hyper-parameters (lightning_modules/cli_hyperparameters.py).
        self.save_hyperparameters(ignore=object_args_to_ignore("backbone"))
        self.backbone = backbone
        self.logit_scale = nn.Parameter(torch.tensor(self._initial_log_scale(logit_scale_init)),
                                        requires_grad=learnable_temperature)
        self._reset_eval_store()
        self.last_eval: dict[str, Any] = {}
        self.last_metrics: dict[str, Any] = {}

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
        dm = getattr(attached_trainer(self), "datamodule", None)
        if dm is None:
            return
        size = getattr(dm, "image_size", None)
        if size is not None and size != self.backbone.image_size and not getattr(dm, "feature_cache", False):
            log.warning("data image_size=%s differs from the backbone's image_size=%s", size, self.backbone.image_size)

    # whether this method reads cached states of a frozen text trunk; a method that runs that trunk live anyway
    # (CaRe-DPO's role vectors enter at its input) says False, and the cache then builds no text states
    reads_cached_text: bool = True

    def configure_callbacks(self) -> list[L.Callback]:
        """The frozen-feature cache callback (``callbacks/feature_cache.py``) when the data module asks for the cache
        (``data.init_args.feature_cache: true``; it builds the cache before this module's ``setup``), and the test-time
        post-processing (``callbacks/test_time_postprocessing.py``) when ``postprocess`` asks for any.

        Imported here, not at the top: callbacks build on the module's public interface, the module only names them.
        """
        from callbacks.feature_cache import feature_cache_callbacks
        from callbacks.test_time_postprocessing import TestTimePostprocessing

        callbacks = feature_cache_callbacks(self)
        if self.hparams.postprocess:
            callbacks.append(TestTimePostprocessing())
        return callbacks

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
        if self.any_rank_without_rows(len(batch)):
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
