"""lightning_modules.components.co_attention: NarVid's co-attention between frames and narration, and its padding."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.components import (
    CoAttention,
)


# ----------------------------------------------------------------------------- co-attention masking
@pytest.mark.parametrize("mode,invariant", [("clean", True), ("code", False)])
def test_co_attention_padding(mode: str, invariant: bool) -> None:
    torch.manual_seed(0)
    block = CoAttention(16, heads=2, dropout=0.0, mask_mode=mode).eval()
    frames, narration = torch.randn(1, 5, 16), torch.randn(1, 5, 16)
    mask = torch.tensor([[True, True, True, False, False]])
    f1, n1 = block(frames, narration, mask)
    frames2, narration2 = frames.clone(), narration.clone()
    frames2[:, 3:] += 5.0
    narration2[:, 3:] += 5.0
    f2, n2 = block(frames2, narration2, mask)
    same = torch.allclose(f1[:, :3], f2[:, :3], atol=1e-5) and torch.allclose(n1[:, :3], n2[:, :3], atol=1e-5)
    assert same == invariant  # the released code lets padded slots leak attention; clean does not
