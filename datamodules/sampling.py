"""Training data order that a resumed run can reproduce exactly.

An uninterrupted run and a run killed and resumed from a checkpoint must see the same items, in the same
order, with the same augmentation. Three things break that with a stock ``DataLoader(shuffle=True)``:

* ``RandomSampler`` draws its permutation from the global torch RNG when the epoch's iterator is created,
  so a resumed run (whose RNG went through model construction instead of N epochs) shuffles differently;
* augmentation (random frame offsets, the random caption of ``one_caption_per_video``) drew from the
  worker's RNG; persistent workers carry that state from epoch to epoch, which a resumed run cannot have;
* Lightning restarts a mid-epoch checkpoint at the right ``batch_idx`` but iterates the loader from the
  start (it only fast-forwards loaders that are stateful).

``ResumableSampler`` fixes the order: the permutation is a function of (seed, epoch), each rank takes its
shard exactly like ``DistributedSampler`` (it *is* one, so Lightning does not wrap it again), and every item
comes with a ``SampleKey`` whose (seed, epoch, position) seeds that item's augmentation. The position is
the item's place in the epoch's global permutation, so the same global batch gets the same augmentation
whatever the number of ranks, workers or restarts. ``ResumableDataLoader`` exposes ``state_dict`` /
``load_state_dict``; the data module stores that state in the checkpoint and applies it to the resumed run's
loader as soon as it builds it, before any iterator exists (Lightning's own loader-state restore is skipped
for some restart points, e.g. a checkpoint written at the end of an epoch, and comes too late for workers
that prefetch). The sampler then skips the samples the interrupted epoch had already trained on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class SampleKey(NamedTuple):
    """What the training dataset is indexed with: the item and the entropy of its augmentation RNG."""

    index: int
    seed: int
    epoch: int
    position: int

    def rng(self) -> np.random.Generator:
        """The item's own generator; a function of (seed, epoch, position) only."""
        return np.random.default_rng([self.seed, self.epoch, self.position])


class TrainProgress(NamedTuple):
    """How far the training loop got in the current epoch when a checkpoint was written."""

    batches_done: int
    epoch_done: bool


def default_seed() -> int:
    """The run's seed (``seed_everything`` exports it), as Lightning's own ``DistributedSampler`` uses it."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0)) % 2**32


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``SampleKey`` items and can start an epoch part-way through.

    With ``num_replicas=1`` it needs no process group. ``skip_samples`` (set by ``resume``) applies only to
    the epoch it was recorded in: ``set_epoch`` to any other epoch and the full shard is yielded again.
    ``len`` stays the full shard length, so Lightning's batch count and LR schedule are those of the
    uninterrupted run (Lightning itself restarts ``batch_idx`` at the number of batches already done).
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int | None = None, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=default_seed() if seed is None else seed, drop_last=drop_last)
        self._resume_epoch: int | None = None
        self._skip_samples = 0

    def epoch_order(self) -> list[int]:
        """This epoch's global order (before sharding), padded or trimmed like ``DistributedSampler``."""
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        if self.drop_last:
            return order[:self.total_size]
        padding = self.total_size - len(order)
        return order + (order * math.ceil(padding / max(1, len(order))))[:padding]

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        epoch = self.epoch  # workers prefetch: a set_epoch during this iteration must not mix two epochs
        order = self.epoch_order()
        positions = range(self.rank, self.total_size, self.num_replicas)
        start = self._skip_samples if self._resume_epoch == epoch else 0
        for position in positions[start:]:
            yield SampleKey(order[position], self.seed, epoch, position)

    def resume(self, epoch: int, skip_samples: int) -> None:
        """Continue at ``epoch``, leaving out the first ``skip_samples`` of this rank's shard."""
        self.set_epoch(epoch)
        self._resume_epoch, self._skip_samples = epoch, skip_samples


class ResumableDataLoader(DataLoader):
    """``DataLoader`` over a ``ResumableSampler`` whose position can be checkpointed and restored.

    The data module applies a restored state as soon as it builds the loader. The loader is also
    ``Stateful`` in Lightning's sense, so Lightning keeps a copy in the fit loop's state and does not warn
    that a mid-epoch checkpoint cannot be resumed; its own (later, conditional) restore sets the same position.

    ``progress`` reports how many batches of the current epoch the training loop has *trained on* (not
    how many the workers prefetched) at the moment a checkpoint is written; the data module reads it
    from the trainer's loop. Without it (no trainer), ``state_dict`` records the start of the epoch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, sampler: ResumableSampler,
                 progress: Callable[[], TrainProgress] | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):  # Lightning swapped it (overfit_batches): nothing to resume
            return {}
        done = self.progress() if self.progress is not None else TrainProgress(0, False)
        return {"seed": sampler.seed, "epoch": sampler.epoch, "batches_done": done.batches_done,
                "epoch_done": done.epoch_done, "batch_size": self.batch_size,
                "num_replicas": sampler.num_replicas, "dataset_size": len(self.dataset)}  # type: ignore[arg-type]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler) or not state:
            return
        current = {"seed": sampler.seed, "batch_size": self.batch_size, "num_replicas": sampler.num_replicas,
                   "dataset_size": len(self.dataset)}  # type: ignore[arg-type]
        changed = {k: (state.get(k), v) for k, v in current.items() if state.get(k) != v}
        if changed:
            # a different seed, batch or world size gives another order: no position in it matches the
            # checkpoint's, so the next epoch starts from scratch (the run is no longer an exact replay)
            from lightning.pytorch.utilities.rank_zero import rank_zero_warn

            rank_zero_warn(f"resuming with a different data setup {changed} (checkpoint, now): the training order "
                           "is not the interrupted run's")
        if state["epoch_done"]:
            sampler.resume(state["epoch"] + 1, 0)
        else:
            sampler.resume(state["epoch"], 0 if changed else state["batches_done"] * self.batch_size)
