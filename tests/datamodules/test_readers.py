"""datamodules.readers: frame sampling and resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules import MSVD
from datamodules.readers import VideoDecodeError, resize_center_crop, sample_frame_indices
from tests.datamodule_helpers import SMALL, CopyOf


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


def test_undecodable_video_raises_naming_file_and_id(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    victim = (root / "test_list.txt").read_text().split()[0]
    (root / "YouTubeClips" / f"{victim}.avi").write_bytes(b"\x00not a video" * 50)
    dm = MSVD(root=str(root), **SMALL)
    dm.setup("test")
    with pytest.raises(VideoDecodeError, match=rf"could not decode .*{victim}\.avi.*\[video '{victim}' of split "
                                               r"'test'; set data\.init_args\.on_decode_error=skip"):
        next(iter(dm.test_dataloader()[1]))


def test_wrong_frame_folder_layout(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    frames = root / "frames"
    frames.mkdir()
    for vid in (root / "test_list.txt").read_text().split():  # flat: <video>_<n>.jpg instead of <video>/<n>.jpg
        for n in range(3):
            (frames / f"{vid}_{n:04d}.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"Wrong frame-folder layout: reader 'frames' expects "
                                                r"<video_dir>/<video_id>/<n>\.jpg, but .*frames holds 9 image files"):
        MSVD(root=str(root), video_dir="frames", reader="frames", **SMALL).setup("test")
    with pytest.raises(FileNotFoundError, match="holds video files: use reader 'decord' or 'pyav', not 'frames'"):
        MSVD(root=str(root), reader="frames", **SMALL).setup("test")
