"""Gathering features across DDP ranks: with gradients for the training loss, and de-duplicated for evaluation.

A mixin of ``BaseRetrievalModule`` (it needs a LightningModule's ``trainer``, ``device`` and ``all_gather``). On a
single process every method returns its input (the collectives are skipped).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_modules.attachment import attached_trainer
from lightning_modules.scoring import Features

__all__ = ["DistributedGatherMixin"]


class DistributedGatherMixin:
    """``gather_for_loss``, ``gather_eval_store`` and the collective empty-batch check; mixed into a LightningModule
    (``trainer``, ``device``, ``all_gather`` are its)."""

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
        trainer = attached_trainer(self)
        if trainer is None or trainer.world_size == 1:
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

    def any_rank_without_rows(self, local_rows: int) -> bool:
        """Whether this step's batch is empty on *any* rank (a collective under DDP: every rank asks)."""
        trainer = attached_trainer(self)
        if trainer is None or trainer.world_size == 1:
            return local_rows == 0
        rows = self.all_gather(torch.tensor(local_rows, device=self.device))
        return bool((rows == 0).any())

    def gather_eval_store(self, store: list[tuple[Tensor, Features]]) -> tuple[Tensor, Features]:
        """Concatenate local (index, features) batches, all-gather, drop sampler padding by index, sort by index.

        ``DistributedSampler`` pads the last shard with repeats of earlier items: each dataset index is kept once.
        """
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
