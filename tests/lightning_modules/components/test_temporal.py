"""lightning_modules.components.temporal: the temporal transformer over frame features."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.components import TemporalTransformer


def test_temporal_transformer_ignores_padded_frames() -> None:
    torch.manual_seed(0)
    block = TemporalTransformer(16, layers=2, heads=2, max_frames=8).eval()
    x = torch.randn(1, 6, 16)
    mask = torch.tensor([[True, True, True, True, False, False]])
    y = block(x, mask)
    x2 = x.clone()
    x2[:, 4:] = 100.0  # garbage in padded slots must not change real outputs
    y2 = block(x2, mask)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    with pytest.raises(ValueError, match="max_frames"):
        block(torch.randn(1, 9, 16), torch.ones(1, 9, dtype=torch.bool))
