"""Frozen-feature cache: same features as the live trunks, reused across runs, served to training."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from datamodules.collate import collate_texts, collate_videos
from datamodules.feature_cache import build_or_load_cache
from datamodules.msrvtt import MSRVTT
from lightning_modules.backbones import OpenCLIPBackbone
from main import main
from tests.run_helpers import TINY_CLIP4CLIP as CONF


def make_dm(root: Path, cache_dir: Path) -> MSRVTT:
    dm = MSRVTT(root=str(root), video_dir="videos/all", val_videos=4, num_frames=4, image_size=64, num_workers=0,
                eval_batch_size=4, feature_cache=True, cache_dir=str(cache_dir))
    dm.setup("test")
    return dm


def test_cached_features_equal_live_trunks(fake_msrvtt: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16, freeze_video=True,
                                freeze_text=True).eval()
    dm = make_dm(fake_msrvtt, tmp_path)
    cache, info = build_or_load_cache(dm, backbone, torch.device("cpu"))
    assert cache.has_video and cache.has_text and Path(info["dir"]).is_dir()
    # live path: decode, normalise, run the trunk
    live_videos = collate_videos([dm.test_dataloader()[1].dataset[i] for i in range(3)])
    mean = torch.tensor(backbone.image_mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(backbone.image_std).view(1, 1, 3, 1, 1)
    frames = (live_videos.frames.float() / 255 - mean) / std
    with torch.no_grad():
        live = backbone.encode_frames(frames)
    dm.use_feature_cache(cache, info)
    cached_videos = collate_videos([dm.test_dataloader()[1].dataset[i] for i in range(3)])
    assert cached_videos.frames is None and cached_videos.cached_frames is not None
    with torch.no_grad():
        from_cache = backbone.frame_head(cached_videos.cached_frames)
    torch.testing.assert_close(from_cache, live, atol=2e-3, rtol=2e-3)  # fp16 storage
    texts = collate_texts([dm.test_dataloader()[0].dataset[i] for i in range(3)])
    with torch.no_grad():
        live_text = backbone.encode_text(texts.texts)
        cached_text = backbone.text_head(texts.cached_tokens, texts.cached_mask)
    torch.testing.assert_close(cached_text.sentence, live_text.sentence, atol=2e-3, rtol=2e-3)
    # a second build with the same fingerprint reuses the files
    files = {p: p.stat().st_mtime_ns for p in Path(info["dir"]).glob("*.npy")}
    build_or_load_cache(make_dm(fake_msrvtt, tmp_path), backbone, torch.device("cpu"))
    assert {p: p.stat().st_mtime_ns for p in Path(info["dir"]).glob("*.npy")} == files


def test_texts_false_caches_videos_only_and_the_data_serves_live_texts(fake_msrvtt: Path, tmp_path: Path) -> None:
    """What the cache callback does for a module with ``reads_cached_text = False`` (CaRe's retriever with roles)."""
    from tests.lightning_modules.test_care_dpo import tiny_retriever

    # role vectors enter at the text trunk's input, so that trunk runs live; without them the cache serves it
    assert not tiny_retriever(role_embeddings=True).reads_cached_text
    assert tiny_retriever(role_embeddings=False).reads_cached_text
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16, freeze_video=True,
                                freeze_text=True).eval()
    dm = make_dm(fake_msrvtt, tmp_path)
    cache, info = build_or_load_cache(dm, backbone, torch.device("cpu"), texts=False)
    assert cache.has_video and not cache.has_text and info["text"] is False
    assert not list(Path(info["dir"]).glob("text_*.npy"))
    dm.use_feature_cache(cache, info)
    texts = collate_texts([dm.test_dataloader()[0].dataset[i] for i in range(3)])
    assert texts.cached_tokens is None and len(texts.texts) == 3

def test_fit_on_cached_features(fake_msrvtt: Path, tmp_path: Path) -> None:
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                          "init_args": {"save_dir": str(tmp_path), "name": "cached"}}])
    cli = main(["fit", "--config", str(CONF), "--data.init_args.root", str(fake_msrvtt),
                "--data.init_args.feature_cache", "true", "--data.init_args.cache_dir", str(tmp_path / "cache"),
                "--model.init_args.backbone.init_args.freeze_video", "true",
                "--model.init_args.backbone.init_args.freeze_text", "true",
                "--trainer.max_epochs", "1", "--trainer.logger", logger])
    record = json.loads((Path(cli.trainer.log_dir) / "test" / "metrics.json").read_text())
    assert record["data"]["feature_cache"]["video"] and record["data"]["feature_cache"]["text"]
    assert record["num_videos"] == 6
    assert any((tmp_path / "cache").rglob("video_train_*.npy"))
