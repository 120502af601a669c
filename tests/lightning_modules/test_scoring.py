"""``lightning_modules.scoring``: tiled scoring equals the whole matrix for any tile size and text order, per named
view; features are cast to float32 for scoring, masks kept as they are."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.scoring import as_float32, score_tiles, slice_features


def _views(t: dict[str, torch.Tensor], v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"cos": t["x"] @ v["y"].T, "neg": -(t["x"] @ v["y"].T)}


def test_tiles_equal_the_whole_matrix_for_every_view_and_tile_size() -> None:
    torch.manual_seed(0)
    text, video = {"x": torch.randn(9, 4)}, {"y": torch.randn(5, 4)}
    full = _views(text, video)
    for tc, vc in [(1, 1), (2, 3), (4, 5), (20, 20)]:
        tiles = score_tiles(_views, text, video, tc, vc)
        assert set(tiles) == {"cos", "neg"}
        for name in full:
            torch.testing.assert_close(tiles[name], full[name])
            assert tiles[name].dtype == torch.float32 and tiles[name].device.type == "cpu"


def test_a_text_order_groups_tiles_but_keeps_rows_in_input_order() -> None:
    torch.manual_seed(1)
    text, video = {"x": torch.randn(7, 3)}, {"y": torch.randn(4, 3)}
    seen: list[torch.Tensor] = []

    def sim(t: dict[str, torch.Tensor], v: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(t["x"])
        return t["x"] @ v["y"].T

    order = torch.tensor([6, 0, 5, 1, 4, 2, 3])
    out = score_tiles(sim, text, video, 2, 4, text_order=order)
    torch.testing.assert_close(out, text["x"] @ video["y"].T)
    torch.testing.assert_close(seen[0], text["x"][order[:2]])  # the first tile held texts 6 and 0
    with pytest.raises(ValueError, match="permutation of the 7 texts"):
        score_tiles(sim, text, video, 2, 4, text_order=torch.tensor([0, 0, 1, 2, 3, 4, 5]))


def test_as_float32_casts_floating_features_only() -> None:
    feats = {"x": torch.ones(2, 3, dtype=torch.bfloat16), "mask": torch.ones(2, 3, dtype=torch.bool),
             "idx": torch.arange(2)}
    out = as_float32(feats)
    assert out["x"].dtype == torch.float32 and out["mask"].dtype == torch.bool and out["idx"].dtype == torch.int64


def test_slice_features_cuts_every_tensor_alike() -> None:
    feats = {"a": torch.arange(6), "b": torch.arange(12).view(6, 2)}
    out = slice_features(feats, 1, 3)
    assert out["a"].tolist() == [1, 2] and out["b"].tolist() == [[2, 3], [4, 5]]
