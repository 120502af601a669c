"""The evaluation protocol every retrieval method shares (validation and test), as a mixin of ``BaseRetrievalModule``.

1. every evaluation text and every evaluation video is encoded once (two loaders), features cast to float32;
2. features are gathered across ranks and de-duplicated by dataset index (``gather_eval_store``; ``DistributedSampler``
   pads the last shard with repeats), and counts are checked against the split;
3. the similarity is scored in (text chunk x video chunk) tiles (``lightning_modules.scoring``), so a
   query-dependent ``similarity`` never materialises texts x videos x frames x words at once;
4. metrics (``lightning_modules.metrics``) use an index map for multi-caption sets;
5. ``test`` then writes its artifacts (``lightning_modules.artifacts``); test-time post-processing, when asked,
   runs afterwards from its callback (``callbacks.test_time_postprocessing``) on ``last_eval``.

The host class provides ``encode_text``, ``encode_video``, ``similarity``, ``text_tile_order``, ``fuse_views``,
``gather_eval_store`` (``lightning_modules.distributed``), ``write_test_artifacts``/``artifact_dir``
(``lightning_modules.artifacts``), ``reset_lineage_reads`` (``lightning_modules.lineage``) and the LightningModule.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from datamodules.batch import TextBatch, VideoBatch
from lightning_modules.metrics import retrieval_metrics
from lightning_modules.scoring import Features, as_float32, score_tiles

__all__ = ["EvaluationMixin"]


class EvaluationMixin:
    """Validation and test steps and epoch ends: encode, gather, score, metrics; ``test`` writes its artifacts.

    After an evaluation, ``last_eval`` holds what it scored: ``sim`` (texts x videos, CPU float32), ``views``
    (raw named views, if any), ``text_idx``/``video_idx`` (dataset indices of the rows/columns), ``gt`` (each
    text's column), ``index`` (the split's eval index), ``complete``, and for a test with QB-Norm ``video_feats``.
    """

    def _reset_eval_store(self) -> None:
        self._eval_store: dict[str, list[tuple[Tensor, Features]]] = {"text": [], "video": []}

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
        self._reset_eval_store()

    def on_test_epoch_start(self) -> None:
        self._reset_eval_store()
        self.reset_lineage_reads()  # the test's lineage lists the captions the test itself reads

    def _gather_eval(self, kind: str) -> tuple[Tensor, Features]:
        if not self._eval_store[kind]:
            raise RuntimeError(f"no {kind} batches were evaluated")
        return self.gather_eval_store(self._eval_store[kind])

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
        self._reset_eval_store()
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
        self.last_eval = {"sim": sim, "views": views, "text_idx": text_idx, "video_idx": video_idx, "gt": gt,
                          "index": index, "complete": complete}
        if stage == "test" and "qbnorm" in self.hparams.postprocess:
            self.last_eval["video_feats"] = video_feats  # QB-Norm scores its query bank against these videos
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
        self.last_metrics = metrics
        if self.hparams.write_artifacts:
            out = self.artifact_dir()  # trainer.log_dir broadcasts: every rank must ask
            if self.trainer.is_global_zero:
                self.write_test_artifacts(metrics, out)
