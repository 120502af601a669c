"""A folder of one's own videos as a collection to index (listed by ``datamodules.folder.list_videos``): decoding
with the checkpoint's frame sampling, a thumbnail strip and the duration of each video, and the collate that keeps
failures listed."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.annotations import Split, VideoEntry
from datamodules.captions import CaptionStore
from datamodules.collate import collate_videos
from datamodules.datasets import VideoSource
from datamodules.readers import ReaderName

THUMBNAIL_FRAMES = 4
THUMBNAIL_HEIGHT = 96


def thumbnail_strip(frames: torch.Tensor, mask: torch.Tensor, count: int = THUMBNAIL_FRAMES,
                    height: int = THUMBNAIL_HEIGHT) -> bytes:
    """JPEG of ``count`` evenly spaced real frames side by side (``frames``: uint8 ``[T, 3, S, S]``)."""
    from PIL import Image

    real = frames[mask.bool()]
    picks = np.linspace(0, len(real) - 1, num=min(count, len(real))).round().astype(int)
    strip = torch.cat(list(real[picks]), dim=-1).float()[None]  # [1, 3, S, count * S]
    width = max(1, round(strip.shape[-1] * height / strip.shape[-2]))
    strip = F.interpolate(strip, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    array = strip[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=80)
    return out.getvalue()


def video_duration(path: Path) -> float | None:
    """Seconds, from the container (None when it does not say)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except Exception:  # the decode itself reports unreadable files; a missing duration is not an error
        return None
    return None


class CollectionDataset(Dataset):
    """The videos of a collection, uniformly sampled as the checkpoint's evaluation does, with their auxiliary
    captions (when the method reads some), a thumbnail strip and the duration. A video that fails to decode is
    an item marked ``failed`` (kept, listed in the index's manifest), never a zero clip."""

    def __init__(self, videos: list[VideoEntry], reader: ReaderName, image_size: int, num_frames: int,
                 captions: dict[str, CaptionStore] | None = None, narration_match: str = "exact") -> None:
        self.videos = videos
        # a split without texts: VideoSource only reads its videos
        split = Split("search", videos, [])
        self.source = VideoSource(split, reader, image_size, num_frames, on_decode_error="skip", aux=captions or {},
                                  narration_match=narration_match)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.videos[i]
        item = {"video_index": i, "video_id": entry.video_id, **self.source.load(i, "uniform")}
        if "failed" not in item:
            item["thumbnail"] = thumbnail_strip(item["frames"], item["mask"])
            item["duration"] = video_duration(entry.path)
        return item


def collate_collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"video": VideoBatch, "meta": {video id: {"thumbnail", "duration"}}}``; failures stay in
    ``VideoBatch.failed``."""
    meta = {it["video_id"]: {"thumbnail": it["thumbnail"], "duration": it["duration"]}
            for it in items if "failed" not in it}
    return {"video": collate_videos(items), "meta": meta}
