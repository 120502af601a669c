"""lightning_modules.components.pooling: the masked mean over frames (CLIP4Clip meanP)."""

from __future__ import annotations

import torch

from lightning_modules.components.pooling import masked_mean_pool


def test_masked_mean_pool_averages_only_the_valid_positions() -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                      [[5.0, 6.0], [-7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(masked_mean_pool(x, mask), torch.tensor([[2.0, 3.0], [7.0 / 3, 8.0]]))


def test_a_row_without_valid_positions_pools_to_zero_not_nan() -> None:
    x = torch.randn(2, 4, 3)
    out = masked_mean_pool(x, torch.tensor([[False] * 4, [True] * 4]))
    assert torch.equal(out[0], torch.zeros(3)) and torch.allclose(out[1], x[1].mean(0))
