"""Tiled scoring (``score_tiles``, imported from lightning_modules.base): the tiles assemble the full matrix."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.base import score_tiles
from lightning_modules.components import token_frame_similarity


def test_score_tiles_equals_full_matrix_and_permutes_with_queries() -> None:
    """Leakage guard: #texts != #videos in every tile, shuffled queries give permuted rows."""
    torch.manual_seed(0)
    text = {"words": torch.randn(11, 5, 8), "word_mask": torch.ones(11, 5, dtype=torch.bool)}
    video = {"frames": torch.randn(7, 4, 8), "frame_mask": torch.ones(7, 4, dtype=torch.bool)}

    def sim(t, v):
        return token_frame_similarity(t["words"], t["word_mask"], v["frames"], v["frame_mask"])

    full = sim(text, video)
    for tc, vc in [(1, 1), (3, 2), (4, 7), (20, 20)]:
        torch.testing.assert_close(score_tiles(sim, text, video, tc, vc), full)
    perm = torch.randperm(11)
    shuffled = {k: v[perm] for k, v in text.items()}
    torch.testing.assert_close(score_tiles(sim, shuffled, video, 3, 2), full[perm])


def test_score_tiles_text_order_groups_tiles_and_keeps_row_order() -> None:
    torch.manual_seed(0)
    text = {"words": torch.randn(11, 5, 8), "word_mask": torch.rand(11, 5) > 0.3}
    video = {"frames": torch.randn(7, 4, 8), "frame_mask": torch.ones(7, 4, dtype=torch.bool)}
    seen: list[list[float]] = []

    def sim(t, v):
        seen.append(t["words"][:, 0, 0].tolist())
        return token_frame_similarity(t["words"], t["word_mask"], v["frames"], v["frame_mask"])

    order = torch.randperm(11)
    plain = score_tiles(sim, text, video, 3, 4)
    seen.clear()
    ordered = score_tiles(sim, text, video, 3, 4, text_order=order)
    torch.testing.assert_close(ordered, plain, atol=0, rtol=0)
    assert seen[0] == text["words"][order[:3], 0, 0].tolist()  # the first tile holds the first texts of the order
    with pytest.raises(ValueError, match="permutation of the 11 texts"):
        score_tiles(sim, text, video, 3, 4, text_order=torch.zeros(11, dtype=torch.long))
