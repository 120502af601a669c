"""ExCae's retriever: Expertized Caption Selection (ECS, arXiv 2502.02885 §4.2) on the shared core.

Each video arrives with ``K`` generated captions (the ``multi`` aux captions, written by the captioner with the
prompt that caption self-improvement found, ``experiments/csi.py``) and ``T`` frames. Following the released
module (CaryXiang/ECA4VTR ``code/moe_fusion.py``):

* ``C [B, K, D]``: each caption's sentence embedding through the backbone's text side (pooled, projected);
  ``F [B, T, D]``: the frame embeddings; the query is its sentence embedding ``t [D]`` (no token interaction).
* Experts read one input group each, in the order captions (C), frames (F), both (C ⊕ F, captions first),
  ``experts_per_group`` per group until ``num_experts`` (16 -> 6 / 6 / 4).
* The router, an MLP(2D -> 256 -> E), sees only the video side, ``[C_0; F_0]`` (first caption, first frame), so
  video embeddings are query-independent: the gallery is encoded once and scoring is a matrix product.
  Training keeps the top ``active_experts`` (2) logits, softmax over them. Evaluation: the paper says top-2 and
  the released code a dense softmax; ``eval_routing`` picks the reported one, and only its experts run (under
  top-2, two per video); ``other_routing_view`` adds the other routing as a second view (``topk/…`` and
  ``dense/…`` in ``metrics.json``), at test or always.
* Paper Eq. 2: ``v = Σ_e g_e · expert_e + mean([C; F])``, L2-normalised; ``s(t, v) = cos(t, v)``; the base's
  symmetric InfoNCE with the learnt temperature.

Switches for the paper's ablations: ``video_inputs`` (Table 4: frames / captions / both), ``use_ecs`` (off:
the mean of the same tokens, the "no ECS" row), ``num_captions`` (Fig. 6: first K captions),
``active_experts`` (Fig. 7; 0 = no expert), plus a load-balancing term (``balance_weight``, off by default, not
in the released code). Test runs write ``test/expert_usage.json`` (how often each expert is routed to).
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.batch import PairBatch, TextBatch, VideoBatch
from datamodules.captions import CaptionKind
from lightning_modules.attachment import attached_trainer
from lightning_modules.base import BaseRetrievalModule, Features
from lightning_modules.components import cosine_matrix, masked_mean_pool
from lightning_modules.components.experts import (
    ExpertCompute,
    MixtureOfTokenExperts,
    Routing,
    assign_expert_groups,
    expert_usage,
    load_balance_loss,
)

VideoInputs = Literal["both", "frames", "captions"]
TokenGroups = dict[str, tuple[Tensor, Tensor]]
GROUPS: dict[str, tuple[str, ...]] = {"both": ("captions", "frames", "both"), "frames": ("frames",),
                                      "captions": ("captions",)}


def with_joint_group(groups: TokenGroups) -> TokenGroups:
    """Add ``both`` (captions then frames, one token sequence) when a video has both groups."""
    if "captions" in groups and "frames" in groups:
        (c, cv), (f, fv) = groups["captions"], groups["frames"]
        groups = {**groups, "both": (torch.cat([c, f.to(c.dtype)], 1), torch.cat([cv, fv], 1))}
    return groups


def expert_inputs(groups: TokenGroups) -> Features:
    """The token groups as features the evaluation loop can gather (``both`` is rebuilt, not stored twice)."""
    out = {}
    for name in ("captions", "frames"):
        if name in groups:
            out[f"{name}_tokens"], out[f"{name}_valid"] = groups[name]
    return out


class ExCae(BaseRetrievalModule):
    """ExCae's ECS retriever on any ``VideoTextBackbone``.

    Args:
        caption_key: kind of the per-video captions in ``VideoBatch.aux`` (``multi``: K per video).
        video_inputs: what represents a video (paper Table 4 rows): ``both`` captions and frames, ``frames``
            only (no captions read) or ``captions`` only.
        use_ecs: the mixture of experts; off = the mean of the input tokens alone (Table 4's "no ECS").
        num_experts: E (paper: 16).
        experts_per_group: experts per input group, filled in order; ``None`` (default) takes
            ``ceil(num_experts / groups)``: 6 for 16 over the three groups (6 / 6 / 4, as the released module), all
            16 on the one group of ``frames`` or ``captions``.
        active_experts: k of the top-k routing (paper: 2; 0 = no expert, Fig. 7).
        eval_routing: routing at validation/test: ``topk`` (the paper's text) or ``dense`` (released code).
        other_routing_view: when the other routing is scored too, as a second view next to ``eval_routing``'s:
            ``never`` (only the headline's experts run: under top-k each video runs its ``active_experts``
            experts, not all of them), ``test`` (the test writes both views, validation only the headline) or
            ``always``. The dense view runs every expert on every video.
        expert_layers: transformer layers per expert (not stated in the paper or the released code; 1).
        expert_heads: attention heads per expert.
        expert_ffn: FFN width of each expert (PyTorch's default 2048, as released).
        expert_dropout: dropout inside the experts (0.1, as released).
        router_hidden: hidden width of the router MLP (256).
        num_captions: use the first K captions of each video (Fig. 6); ``None`` = all the store holds.
        expert_compute: ``routed`` runs an expert only on the samples routed to it; ``all`` runs every expert
            on every sample, as the released module. Same scores up to float rounding, and the same optimiser
            updates (an expert no sample is routed to gets zero gradients under both).
        balance_weight: weight of the Switch load-balancing term (0 = off, as released).
        **kwargs: ``BaseRetrievalModule`` arguments (backbone, lr, optimizer, ...).
    """

    # the reported routing is a test-time choice: ``vtr test --ckpt_path`` takes it from its command line
    test_time_args: ClassVar[tuple[str, ...]] = (*BaseRetrievalModule.test_time_args, "eval_routing")

    def __init__(self, caption_key: CaptionKind = "multi", video_inputs: VideoInputs = "both",
                 use_ecs: bool = True, num_experts: int = 16, experts_per_group: int | None = None,
                 active_experts: int = 2,
                 eval_routing: Routing = "topk", other_routing_view: Literal["never", "test", "always"] = "never",
                 expert_layers: int = 1, expert_heads: int = 8,
                 expert_ffn: int = 2048, expert_dropout: float = 0.1, router_hidden: int = 256,
                 num_captions: int | None = None, expert_compute: ExpertCompute = "routed",
                 balance_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if video_inputs not in GROUPS:
            raise ValueError(f"video_inputs must be one of {sorted(GROUPS)}, got {video_inputs!r}")
        if other_routing_view not in ("never", "test", "always"):
            raise ValueError(f"other_routing_view must be never, test or always, got {other_routing_view!r}")
        if num_captions is not None and num_captions < 1:
            raise ValueError(f"num_captions must be >= 1 or null, got {num_captions}")
        self.caption_key = caption_key
        self.moe: MixtureOfTokenExperts | None = None
        if use_ecs:
            groups = assign_expert_groups(GROUPS[video_inputs], num_experts, experts_per_group)
            if not 0 <= active_experts <= len(groups):
                raise ValueError(f"active_experts must be in 0..{len(groups)}, got {active_experts}")
            d = self.backbone.embed_dim
            router_in = 2 * d if video_inputs == "both" else d
            self.moe = MixtureOfTokenExperts(d, groups, router_in, router_hidden, expert_heads, expert_layers,
                                             expert_ffn, expert_dropout, expert_compute)
        self._expert_usage: dict[str, Any] | None = None

    # ------------------------------------------------------------------ encoders
    def encode_text(self, batch: TextBatch) -> Features:
        return {"text": self.backbone_text(batch).sentence}

    def video_tokens(self, batch: VideoBatch) -> dict[str, tuple[Tensor, Tensor]]:
        """The input groups: ``captions`` (C, valid), ``frames`` (F, valid) and ``both`` (C ⊕ F)."""
        inputs = self.hparams.video_inputs
        groups: dict[str, tuple[Tensor, Tensor]] = {}
        if inputs in ("both", "captions"):
            captions, valid = self.aux_caption_embeddings(batch, self.caption_key)
            if self.hparams.num_captions is not None:
                captions, valid = captions[:, :self.hparams.num_captions], valid[:, :self.hparams.num_captions]
            empty = ~valid.any(1)
            if empty.any():
                raise ValueError(f"videos {[batch.video_ids[i] for i in empty.nonzero().flatten().tolist()]} have no "
                                 f"{self.caption_key!r} captions; caption every video (main.py predict) first")
            groups["captions"] = (captions, valid)
        if inputs in ("both", "frames"):
            groups["frames"] = (self.backbone_frames(batch), batch.mask.bool())
        return with_joint_group(groups)

    def encode_video(self, batch: VideoBatch) -> Features:
        """Eq. 2: the routed experts' mixture plus the mean of every input token, L2-normalised.

        Outside training: ``video`` under ``eval_routing`` with its gates (``gates``, for the expert-usage
        histogram), and ``video_other`` under the other routing when ``other_routing_view`` asks for it. In the
        validation and test loops the experts wait for the whole gallery (``expert_inputs``, finished in ``score``).
        """
        groups = self.video_tokens(batch)
        if self.moe is not None and self._experts_over_gallery():
            return expert_inputs(groups)
        return self.video_features(groups)

    def _experts_over_gallery(self) -> bool:
        """Whether this evaluation runs the experts once over the gathered gallery rather than per loader batch.

        Under top-2 routing an expert gets ~2/E of a batch's videos (8 of 64 with 16 experts): row counts so
        small that a pass costs about what a full batch does. Over the gallery each expert runs on all its
        videos at once. Only inside the Lightning evaluation loops, which gather every batch before ``score``;
        ``encode_video`` called directly (search indexing, tests) keeps returning finished embeddings.
        """
        trainer = attached_trainer(self)
        return not self.training and trainer is not None and bool(
            trainer.validating or trainer.testing or trainer.sanity_checking)

    def gallery_features(self, feats: Features) -> Features:
        """``video_features`` of ``expert_inputs`` gathered over a gallery, ``eval_video_chunk`` videos per expert
        pass, under the trainer's precision (the loop's batches ran under it)."""
        rows = next(iter(feats.values())).shape[0]
        step = self.hparams.eval_video_chunk
        trainer = attached_trainer(self)
        context = trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()
        parts = []
        with context:
            for start in range(0, rows, step):
                stop = start + step
                groups = {name: (feats[f"{name}_tokens"][start:stop], feats[f"{name}_valid"][start:stop])
                          for name in ("captions", "frames") if f"{name}_tokens" in feats}
                parts.append(self.video_features(with_joint_group(groups)))
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def wants_other_routing(self) -> bool:
        """Whether this evaluation scores the other routing as well (``other_routing_view``)."""
        when = self.hparams.other_routing_view
        testing = bool(getattr(attached_trainer(self), "testing", False))
        return when == "always" or (when == "test" and testing)

    def video_features(self, groups: dict[str, tuple[Tensor, Tensor]]) -> Features:
        """The video side on top of the backbone's token groups (``video_tokens``): router, experts, token mean."""
        tokens, valid = groups["both" if "both" in groups else next(iter(groups))]
        base = masked_mean_pool(tokens.float(), valid)
        if self.moe is None:
            return {"video": F.normalize(base, dim=-1)}
        router_input = torch.cat([groups[g][0][:, 0] for g in ("captions", "frames") if g in groups], -1)
        hp = self.hparams
        if self.training:
            mixture, gates, logits = self.moe(groups, router_input, hp.active_experts, "topk")
            return {"video": F.normalize(mixture + base, dim=-1), "router_logits": logits, "gates": gates}
        other: Routing = "dense" if hp.eval_routing == "topk" else "topk"
        routings: tuple[Routing, ...] = (hp.eval_routing, other) if self.wants_other_routing() else (hp.eval_routing,)
        mixtures, gates, _ = self.moe.mixtures(groups, router_input, hp.active_experts, routings)
        out = {"video": F.normalize(mixtures[hp.eval_routing] + base, dim=-1), "gates": gates[hp.eval_routing]}
        if other in mixtures:
            out["video_other"] = F.normalize(mixtures[other] + base, dim=-1)
        return out

    # ------------------------------------------------------------------ scoring
    search_keys = ("text", "video")

    def search_is_exact(self) -> bool:
        """The score is the cosine of the two search vectors."""
        return True

    def similarity(self, text_feats: Features, video_feats: Features) -> Tensor | dict[str, Tensor]:
        """Cosine of the query and video embeddings; at evaluation the ``topk`` and ``dense`` views."""
        sim = cosine_matrix(text_feats["text"], video_feats["video"])
        if "video_other" not in video_feats:
            return sim
        other = cosine_matrix(text_feats["text"], video_feats["video_other"])
        return {"topk": sim, "dense": other} if self.hparams.eval_routing == "topk" else {"dense": sim, "topk": other}

    def fuse_views(self, views: dict[str, Tensor]) -> Tensor:
        """The reported score is the ``eval_routing`` view (the other is written next to it)."""
        return views[self.hparams.eval_routing]

    @torch.no_grad()
    def score(self, text_feats: Features, video_feats: Features) -> tuple[Tensor, dict[str, Tensor]]:
        if any(key.endswith("_tokens") for key in video_feats):  # the evaluation loop's gathered expert inputs
            video_feats = self.gallery_features(video_feats)
        if "gates" in video_feats and self.moe is not None:  # the de-duplicated, all-gathered evaluation videos
            self._expert_usage = expert_usage(video_feats["gates"], self.hparams.active_experts,
                                              self.moe.expert_groups)
        return super().score(text_feats, video_feats)

    # ------------------------------------------------------------------ training
    def extra_losses(self, views: dict[str, Tensor], text_feats: Features, video_feats: Features,
                     batch: PairBatch) -> dict[str, Tensor]:
        """The optional load-balancing term, and the routing statistics (always logged)."""
        if "router_logits" not in video_feats:
            return {}
        logits, gates = video_feats["router_logits"], video_feats["gates"]
        balance = load_balance_loss(logits, gates)
        used = (gates > 0).float().mean(0)
        out = {"expert_balance": balance.detach(), "experts_unused": (used == 0).float().sum()}
        if self.hparams.balance_weight > 0:
            out["loss_balance"] = self.hparams.balance_weight * balance
        return out

    # ------------------------------------------------------------------ artifacts
    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._expert_usage is not None:
            self.log("val/expert_usage_entropy", self._expert_usage["entropy_bits"], sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self._expert_usage = None
        super().on_test_epoch_end()
        usage = self._expert_usage
        if usage is None:
            return
        self.log("test/expert_usage_entropy", usage["entropy_bits"], sync_dist=False)
        if not self.hparams.write_artifacts:
            return
        out = self.artifact_dir()  # trainer.log_dir broadcasts: every rank must ask, not rank 0 alone
        if self.trainer.is_global_zero:
            usage = {**usage, "routing": self.hparams.eval_routing,
                     "uniform_entropy_bits": round(math.log2(len(usage["experts"])), 4)}
            out.mkdir(parents=True, exist_ok=True)
            (out / "expert_usage.json").write_text(json.dumps(usage, indent=2))
