"""lightning_modules.components.filtering: NarVid's query-aware nucleus filter and its top-k counterpart."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.components import (
    nucleus_filter,
    topk_filter,
)


# ----------------------------------------------------------------------------- nucleus filter
def test_nucleus_keeps_entries_within_mass_and_always_top1() -> None:
    # temperature 1 on log-probabilities gives the probabilities back exactly
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    scores = probs.log()
    mask = torch.ones(1, 4, dtype=torch.bool)
    # cumulative: 0.5, 0.8, 0.95, 1.0 -> p=0.8 keeps the first two (0.8 <= 0.8), drops the crossing third
    w = nucleus_filter(scores, mask, temperature=1.0, p=0.8)
    torch.testing.assert_close(w, torch.tensor([[0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]]))
    # p below the top mass still keeps the top-1, renormalised to 1
    w = nucleus_filter(scores, mask, temperature=1.0, p=0.1)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    # p=1 keeps everything
    torch.testing.assert_close(nucleus_filter(scores, mask, 1.0, 1.0), probs, rtol=1e-5, atol=1e-6)


def test_nucleus_boundary_is_inclusive_and_order_independent() -> None:
    probs = torch.tensor([[0.25, 0.25, 0.5]])
    w = nucleus_filter(probs.log(), torch.ones(1, 3, dtype=torch.bool), temperature=1.0, p=0.75)
    assert (w > 0).tolist() == [[True, False, True]] or (w > 0).tolist() == [[False, True, True]]
    assert w.sum().item() == pytest.approx(1.0)


def test_masked_frames_never_selected() -> None:
    torch.manual_seed(0)
    scores = torch.randn(5, 7, 6)
    mask = torch.rand(7, 6) > 0.4
    mask[:, 0] = True
    scores[..., ~mask[0]] = 10.0  # masked frames with huge scores must still get no weight
    for w in (nucleus_filter(scores, mask[None], 0.1, 0.6), topk_filter(scores, mask[None], 0.1, 3)):
        assert torch.all(w[:, ~mask] == 0)
        torch.testing.assert_close(w.sum(-1), torch.ones(5, 7))
