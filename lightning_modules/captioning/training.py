"""Training a captioner for retrieval: supervised fine-tuning, then CaRe-DPO's Dual-Group DPO.

CaRe-DPO (Lee et al., EMNLP 2025 Findings, arXiv 2509.16560) "optimises the captioner directly with retrieval
relevance scores": captions that make their video retrievable are preferred, within one video's captions and
across visually similar videos (DG-DPO). Only the abstract is public; the objective here is the reconstruction of
``research/methods.md`` §4.2-4.3, every unknown a switch:

* ``objective: sft`` - teacher-forced caption likelihood of the ground-truth texts of the training videos,
  ``L_SFT = -(1/|y|) log pi(y | v, x)`` (per-token mean over the batch's targets).
* ``objective: dgdpo`` - on pairs of the preference store (``datamodules/preferences.py``)
  ``L = mean_intra l + ω · mean_inter l (+ γ · L_SFT(y_w))`` with the sigmoid DPO term
  ``l = -log σ(β[(log π_θ - log π_ref)(y_w | x_w) - (log π_θ - log π_ref)(y_l | x_l)])`` (Rafailov et al., 2023,
  Eq. 7; ``components.losses.dpo_loss``). π_ref is the frozen SFT captioner: its log-probabilities are computed
  once, when the captions are sampled (``experiments/care_dpo/preferences.py``), and travel in the store - the same
  value a second frozen copy would give at every step, for a quarter of the LM passes.

The captioner is a :class:`~lightning_modules.captioning.trainable.PrefixCaptioner` (frozen video tower ->
projector -> causal LM with LoRA); its video tower's frozen outputs come from the feature cache, so training never
decodes a video. Validation and test read the ground-truth texts of the split: caption NLL per token, and for
greedy captions of the split's videos their length, the share of distinct captions and, on SynthVTR, the
attribute precision and recall against the generator's ground truth (``datamodules/synthvtr/attributes.py``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from datamodules.batch import PairBatch, TextBatch, VideoBatch, normalize_frames
from datamodules.preferences import PreferenceBatch
from lightning_modules.attachment import attached_trainer
from lightning_modules.captioning.trainable import PrefixCaptioner
from lightning_modules.cli_hyperparameters import object_args_to_ignore
from lightning_modules.components.losses import dpo_loss
from lightning_modules.lineage import LineageMixin, checkpoint_lineage
from lightning_modules.optim import warmup_cosine
from lightning_modules.safe_load import load_tensors

log = logging.getLogger(__name__)

Objective = Literal["sft", "dgdpo"]


class CaptionerTraining(LineageMixin, L.LightningModule):
    """SFT or DG-DPO training of a :class:`PrefixCaptioner` (see the module docstring).

    Args:
        captioner: the captioner (``class_path: PrefixCaptioner``) with its frozen ``video_tower``.
        objective: ``sft`` (ground-truth captions of a ``VideoTextDataModule``) or ``dgdpo`` (pairs of a
            ``PreferenceDataModule``).
        prompt: the instruction after the visual prefix (the same at training, sampling and captioning).
        init_checkpoint: a ``CaptionerTraining`` checkpoint whose weights start this run (DG-DPO starts from the
            SFT checkpoint, which is also its reference policy); loaded before a resume restores its own state.
        beta: β of the DPO term (KL strength; methods.md: 0.1-0.5, the paper's value unknown).
        inter_weight: ω, the weight of the inter-video group.
        sft_weight: γ, an optional SFT term on the chosen captions (keeps the policy fluent).
        lr: learning rate of the projector and the adapters.
        weight_decay: AdamW weight decay.
        warmup_ratio: linear warm-up share of the steps, then cosine decay.
        eval_generate: greedy-caption the split's videos at validation/test (attribute scores, distinct share).
        eval_max_videos: caption at most this many videos per evaluation (None: all).
    """

    def __init__(self, captioner: PrefixCaptioner, objective: Objective = "sft",
                 prompt: str = "Describe this video.", init_checkpoint: str | None = None, beta: float = 0.5,
                 inter_weight: float = 1.0, sft_weight: float = 0.0, lr: float = 1.0e-3, weight_decay: float = 0.0,
                 warmup_ratio: float = 0.1, eval_generate: bool = True, eval_max_videos: int | None = None) -> None:
        super().__init__()
        if objective not in ("sft", "dgdpo"):
            raise ValueError(f"objective must be sft or dgdpo, got {objective!r}")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.save_hyperparameters(ignore=object_args_to_ignore("captioner"))
        self.captioner = captioner
        self.objective = objective
        self.prompt = prompt
        self._eval: dict[str, Any] = {}

    # ------------------------------------------------------------------ the video tower, for the feature cache
    @property
    def backbone(self) -> Any:
        if self.captioner.video_tower is None:
            raise ValueError("CaptionerTraining needs captioner.init_args.video_tower (its frozen outputs are cached)")
        return self.captioner.video_tower

    def configure_callbacks(self) -> list[L.Callback]:
        from callbacks.feature_cache import feature_cache_callbacks

        return feature_cache_callbacks(self)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.init_checkpoint:
            self.load_weights(self.hparams.init_checkpoint)

    def load_weights(self, path: str | Path) -> None:
        """Load a ``CaptionerTraining`` checkpoint's trained weights (projector, adapters) into this module."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model.init_args.init_checkpoint: {path} does not exist (run the SFT stage first)")
        # a checkpoint may come from someone else: weights only, never pickled code (lightning_modules.safe_load)
        raw = load_tensors(path, "cpu", "model.init_args.init_checkpoint")
        state = raw.get("state_dict") if isinstance(raw, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"model.init_args.init_checkpoint: {path} has no state_dict (a CaptionerTraining "
                             "checkpoint written by python main.py fit is expected)")
        # the starting weights' own lineage (the SFT fit a DG-DPO run starts from) joins this fit's upstream
        self.add_lineage_upstream(*checkpoint_lineage(raw, path))
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{path} holds weights this captioner does not have: {unexpected[:5]} (another LM, "
                             "projector or adapter configuration?)")
        trained = [k for k in missing if k.split(".")[1] in ("projector",) or "lora_" in k]
        if trained:
            raise ValueError(f"{path} lacks trained weights {trained[:5]}")
        log.info("loaded captioner weights from %s", path)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        video = batch.video if isinstance(batch, PairBatch) else batch
        if isinstance(video, VideoBatch) and video.frames is not None and video.frames.dtype == torch.uint8:
            tower = self.backbone
            video.frames = normalize_frames(video.frames, tower.image_mean, tower.image_std)
        return batch

    @staticmethod
    def visual(video: VideoBatch) -> Tensor:
        """Cached trunk features ``[B, T, F]`` when present, else the normalised frames."""
        visual = video.cached_frames if video.cached_frames is not None else video.frames
        assert visual is not None, "VideoBatch has neither frames nor cached features"
        return visual

    # ------------------------------------------------------------------ objectives
    def sft_loss(self, visual: Tensor, mask: Tensor, targets: list[str]) -> Tensor:
        """Per-token NLL of ``targets`` (mean over the batch's tokens)."""
        logprob = self.captioner.sequence_logprob(visual, [self.prompt] * len(targets), targets, frame_mask=mask)
        tokens = torch.tensor(self.captioner.target_token_counts(targets), device=logprob.device, dtype=logprob.dtype)
        return -logprob.sum() / tokens.sum()

    def dgdpo_terms(self, batch: PreferenceBatch) -> dict[str, Tensor]:
        """``loss`` and the statistics of both groups (reward accuracy and margin per group)."""
        n = len(batch)
        prompts = [self.prompt] * n
        chosen = self.captioner.sequence_logprob(batch.chosen_features, prompts, batch.chosen,
                                                 frame_mask=batch.chosen_mask)
        rejected = self.captioner.sequence_logprob(batch.rejected_features, prompts, batch.rejected,
                                                   frame_mask=batch.rejected_mask)
        losses, chosen_reward, rejected_reward = dpo_loss(chosen, batch.chosen_ref, rejected, batch.rejected_ref,
                                                          self.hparams.beta)
        terms: dict[str, Tensor] = {}
        total = losses.new_zeros(())
        for group, weight in (("intra", 1.0), ("inter", self.hparams.inter_weight)):
            rows = torch.tensor([g == group for g in batch.group], device=losses.device)
            if not bool(rows.any()):
                continue
            group_loss = losses[rows].mean()
            total = total + weight * group_loss
            margin = (chosen_reward - rejected_reward)[rows]
            terms[f"loss_{group}"] = group_loss.detach()
            terms[f"reward_accuracy_{group}"] = (margin > 0).float().mean()
            terms[f"reward_margin_{group}"] = margin.mean().detach()
        if self.hparams.sft_weight > 0:
            tokens = torch.tensor(self.captioner.target_token_counts(batch.chosen), device=chosen.device)
            sft = -chosen.sum() / tokens.sum()
            terms["loss_sft"] = sft.detach()
            total = total + self.hparams.sft_weight * sft
        terms["loss"] = total
        return terms

    def training_step(self, batch: PairBatch | PreferenceBatch, batch_idx: int) -> Tensor:
        if self.objective == "sft":
            if not isinstance(batch, PairBatch):
                raise TypeError("objective sft trains on a VideoTextDataModule's pairs (data: SynthVTR, MSRVTT, ...)")
            loss = self.sft_loss(self.visual(batch.video), batch.video.mask, batch.text.texts)
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(batch))
            return loss
        if not isinstance(batch, PreferenceBatch):
            raise TypeError("objective dgdpo trains on preference pairs (data: PreferenceDataModule)")
        terms = self.dgdpo_terms(batch)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", batch_size=len(batch))
        return terms["loss"]

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def _reset_eval(self) -> None:
        self._eval = {"texts": [], "videos": {}}

    def on_validation_epoch_start(self) -> None:
        self._reset_eval()

    def on_test_epoch_start(self) -> None:
        self._reset_eval()

    def _eval_step(self, batch: TextBatch | VideoBatch) -> None:
        if isinstance(batch, TextBatch):
            self._eval["texts"].extend(zip(batch.video_index.tolist(), batch.texts, strict=True))
        else:
            for row, index in enumerate(batch.index.tolist()):
                self._eval["videos"][index] = (batch.video_ids[row], self.visual(batch)[row], batch.mask[row])

    def validation_step(self, batch: TextBatch | VideoBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def test_step(self, batch: TextBatch | VideoBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    @torch.no_grad()
    def evaluate_split(self, texts: list[tuple[int, str]], videos: dict[int, tuple[str, Tensor, Tensor]],
                       batch_size: int = 32) -> dict[str, float]:
        """Caption NLL per token of the ground-truth texts, and statistics of greedy captions of the videos."""
        out: dict[str, float] = {}
        texts = [(i, t) for i, t in texts if i in videos]
        nll, tokens = 0.0, 0
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            visual = torch.stack([videos[i][1] for i, _ in chunk])
            mask = torch.stack([videos[i][2] for i, _ in chunk])
            targets = [t for _, t in chunk]
            logprob = self.captioner.sequence_logprob(visual, [self.prompt] * len(chunk), targets, frame_mask=mask)
            nll -= float(logprob.sum())
            tokens += sum(self.captioner.target_token_counts(targets))
        if tokens:
            out["caption_nll"] = nll / tokens
        if not self.hparams.eval_generate:
            return out
        order = sorted(videos)[: self.hparams.eval_max_videos]
        captions: dict[str, str] = {}
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            visual = torch.stack([videos[i][1] for i in chunk])
            mask = torch.stack([videos[i][2] for i in chunk])
            generated = self.captioner.generate(visual, [self.prompt] * len(chunk), temperature=0.0, frame_mask=mask)
            captions.update({videos[i][0]: c for i, c in zip(chunk, generated, strict=True)})
        out["caption_words"] = sum(len(c.split()) for c in captions.values()) / max(1, len(captions))
        out["distinct_captions"] = len(set(captions.values())) / max(1, len(captions))
        out.update(self._attribute_scores(captions))
        return out

    def _attribute_scores(self, captions: dict[str, str]) -> dict[str, float]:
        dm = getattr(attached_trainer(self), "datamodule", None)
        dm = getattr(dm, "feature_source", dm)
        root = getattr(dm, "root", None)
        if root is None or not (Path(root) / "synthvtr" / "video_facts.jsonl").is_file():
            return {}
        from datamodules.synthvtr import load_video_facts
        from datamodules.synthvtr.attributes import attribute_scores

        scores = attribute_scores(captions, load_video_facts(root))
        return {name: math.nan if value is None else value for name, value in scores.items()}

    def _log_eval(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            return
        scores = self.evaluate_split(self._eval["texts"], self._eval["videos"])
        for name, value in scores.items():  # under DDP each rank scored its shard: the mean over ranks is logged
            self.log(f"{stage}/{name}", value, batch_size=1, sync_dist=True)
        log.info("%s: %s", stage, {k: round(v, 4) for k, v in scores.items()})
        self._reset_eval()
