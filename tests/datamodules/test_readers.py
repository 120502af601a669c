"""datamodules.readers: frame sampling and resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.readers import resize_center_crop, sample_frame_indices


@pytest.mark.parametrize("available,wanted", [(32, 8), (8, 8), (5, 8), (100, 12), (13, 12)])
def test_frame_sampling(available: int, wanted: int) -> None:
    uniform = sample_frame_indices(available, wanted, "uniform")
    assert len(uniform) == min(available, wanted)
    assert np.all(np.diff(uniform) > 0) and uniform.min() >= 0 and uniform.max() < available
    np.testing.assert_array_equal(uniform, sample_frame_indices(available, wanted, "uniform"))
    rng = np.random.default_rng(0)
    for _ in range(20):
        rand = sample_frame_indices(available, wanted, "random_offset", rng)
        assert len(rand) == len(uniform) and np.all(np.diff(rand) > 0) and rand.max() < available
    if available >= 2 * wanted:  # each random pick stays inside its segment
        edges = np.linspace(0, available, wanted + 1)
        assert np.all((rand >= np.floor(edges[:-1])) & (rand < np.ceil(edges[1:])))
    with pytest.raises(ValueError, match="0 frames"):
        sample_frame_indices(0, 4, "uniform")


def test_resize_center_crop() -> None:
    frames = torch.zeros(2, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle of a wide frame
    out = resize_center_crop(frames, 20)
    assert out.shape == (2, 3, 20, 20) and out.dtype == torch.uint8
    assert out[0, :, 10, 10].min() > 200 and out[0, :, 10, 0].max() < 60
