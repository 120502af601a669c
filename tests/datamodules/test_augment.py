"""Augmented video copies (conical embedding optimisation): one transform per clip, reproducible draws, and the
cached pool of views equal to the trunk on the transformed frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.augment import CLIP_TRANSFORMS, apply_clip_transform, check_transforms, draw_transforms
from datamodules.collate import collate_pairs
from datamodules.feature_cache import build_or_load_cache
from datamodules.msrvtt import MSRVTT
from datamodules.sampling import SampleKey
from lightning_modules.backbones import OpenCLIPBackbone


def make_dm(root: Path, **kwargs) -> MSRVTT:
    dm = MSRVTT(root=str(root), video_dir="videos/all", val_videos=4, num_frames=4, image_size=64, num_workers=0,
                eval_batch_size=4, **kwargs)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("name", CLIP_TRANSFORMS)
def test_one_transform_is_applied_to_every_frame_of_the_clip(name: str) -> None:
    clip = torch.arange(3 * 3 * 4 * 4, dtype=torch.uint8).view(3, 3, 4, 4)  # T=3 frames, distinct pixels
    out = apply_clip_transform(clip, name)
    expected = {"hflip": lambda f: f.flip(-1), "vflip": lambda f: f.flip(-2),
                "rot90": lambda f: f.rot90(1, (-2, -1)), "rot180": lambda f: f.rot90(2, (-2, -1)),
                "rot270": lambda f: f.rot90(3, (-2, -1))}[name]
    for t in range(3):  # the same transform on each frame, so the copy is the clip seen through one rotation/flip
        assert torch.equal(out[t], expected(clip[t]))
    assert not torch.equal(out, clip)


def test_draws_are_distinct_reproducible_and_checked() -> None:
    a = draw_transforms(np.random.default_rng(3), CLIP_TRANSFORMS, 4)
    assert a == draw_transforms(np.random.default_rng(3), CLIP_TRANSFORMS, 4) and len(set(a)) == 4
    assert len(draw_transforms(np.random.default_rng(0), ("hflip", "vflip"), 3)) == 3
    with pytest.raises(ValueError, match="augmentations"):
        check_transforms(["hflip", "shear"])
    with pytest.raises(ValueError, match="square"):
        apply_clip_transform(torch.zeros(2, 3, 4, 6), "rot90")


def test_training_items_carry_copies_of_their_own_clip(fake_msrvtt: Path) -> None:
    dm = make_dm(fake_msrvtt, augmented_views=2, train_sampling="uniform")
    dataset = dm.train_dataloader().dataset
    key = SampleKey(0, 12345, 0, 0)
    item = dataset[key]
    assert item["augmented_frames"].shape == (2, *item["frames"].shape)
    for copy, name in zip(item["augmented_frames"], item["augmentations"], strict=True):
        assert torch.equal(copy, apply_clip_transform(item["frames"], name))  # the same sampled frames
    again = dataset[key]
    assert again["augmentations"] == item["augmentations"]  # a function of the sampler's key: resumable
    batch = collate_pairs([dataset[SampleKey(i, 7, 0, i)] for i in range(2)])
    assert batch.video.augmented_frames.shape[:2] == (2, 2) and len(batch.video.augmentations) == 2
    # evaluation videos are never augmented
    assert "augmented_frames" not in dm.val_dataloader()[1].dataset[0]


def test_cached_pool_equals_the_trunk_on_transformed_frames(fake_msrvtt: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16, freeze_video=True,
                                freeze_text=True).eval()
    dm = make_dm(fake_msrvtt, augmented_views=1, augmentation_pool=3, feature_cache=True,
                 cache_dir=str(tmp_path))
    cache, info = build_or_load_cache(dm, backbone, torch.device("cpu"))
    assert cache.has_augmented
    video = dm.splits["train"].videos[0]
    pool, names = cache.augmented(video.video_id)
    assert pool.shape[0] == 3 and len(set(names)) == 3
    live = dm.train_dataloader().dataset.videos.load(0, "uniform")  # decoded, uniformly sampled (as cached)
    mean = torch.tensor(backbone.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.image_std).view(1, 3, 1, 1)
    for p, name in enumerate(names):
        frames = (apply_clip_transform(live["frames"], name).float() / 255 - mean) / std
        with torch.no_grad():
            expected = backbone.frame_trunk(frames) * live["mask"][:, None]
        torch.testing.assert_close(pool[p], expected, atol=2e-3, rtol=2e-3)  # fp16 storage
    dm.use_feature_cache(cache, info)
    item = dm.train_dataloader().dataset[SampleKey(0, 1, 0, 0)]
    assert item["cached_augmented"].shape == (1, *item["cached_frames"].shape)
    assert item["augmentations"][0] in names
    # a pool smaller than the requested copies is a clear error
    dm.train_dataloader().dataset.videos.augmented_views = 4
    with pytest.raises(ValueError, match="augmentation_pool"):
        dm.train_dataloader().dataset[SampleKey(0, 1, 0, 0)]
