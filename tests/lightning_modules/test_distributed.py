"""``lightning_modules.distributed`` on one process: evaluation features de-duplicated by dataset index and sorted,
loss features passed through, an empty batch seen. The collectives under DDP: ``tests/test_ddp.py`` (slow tier)."""

from __future__ import annotations

import torch

from lightning_modules.distributed import DistributedGatherMixin
from tests.lightning_modules.mixin_hosts import FakeEvalData, Host


def test_gather_eval_store_drops_sampler_padding_and_sorts_by_index() -> None:
    host = Host(FakeEvalData([0, 1, 2], 3))
    store = [(torch.tensor([2, 0]), {"f": torch.tensor([[2.0], [0.0]])}),
             (torch.tensor([1, 2]), {"f": torch.tensor([[1.0], [2.5]])})]  # index 2 again: padding
    index, feats = host.gather_eval_store(store)
    assert index.tolist() == [0, 1, 2]
    assert feats["f"].flatten().tolist() == [0.0, 1.0, 2.0]  # the first occurrence of a repeated index is kept


def test_on_one_process_loss_features_pass_through_and_empty_batches_are_seen() -> None:
    host = Host(FakeEvalData([0], 1))
    feats = {"text": torch.randn(3, 2, requires_grad=True)}
    assert host.gather_for_loss(feats) is feats
    assert host.any_rank_without_rows(0) is True and host.any_rank_without_rows(3) is False


def test_a_module_outside_a_trainer_gathers_nothing() -> None:
    class Alone(DistributedGatherMixin):
        @property
        def trainer(self) -> None:  # as LightningModule.trainer does when no Trainer holds the module
            raise RuntimeError("Alone is not attached to a `Trainer`.")

    feats = {"x": torch.ones(2, 2)}
    assert Alone().gather_for_loss(feats) is feats and Alone().any_rank_without_rows(0) is True
