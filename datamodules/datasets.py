"""Datasets of a split: the video source (decoded frames or cached trunk features, plus the auxiliary
captions of each video), the text source, the training-pair / evaluation-text / evaluation-video datasets,
the captioning (``predict``) dataset, and the alignment of narration to the fed frames.

``datamodules/base.py`` (``VideoTextDataModule``) builds them; ``datamodules/collate.py`` turns their items
into typed batches; ``datamodules/feature_cache.py`` builds the frozen-feature cache through them.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.annotations import Split, VideoEntry
from datamodules.augment import CLIP_TRANSFORMS, apply_clip_transform, draw_transforms
from datamodules.batch import AUX_CAPTION_TYPES
from datamodules.captions import CaptionRecord, CaptionStore
from datamodules.readers import (
    ReaderName,
    SamplingMode,
    VideoDecodeError,
    VideoReader,
    build_reader,
    sample_frame_indices,
)
from datamodules.sampling import SampleKey

log = logging.getLogger(__name__)

DecodeErrorPolicy = Literal["raise", "skip"]
NarrationMatch = Literal["exact", "nearest"]


class VideoSource:
    """Frames (decoded now) or cached trunk features for one split's videos, plus their aux captions.

    With ``on_decode_error="skip"`` a video that fails to decode yields a *failure marker* instead of an
    item; the collate functions drop it from the batch and record it in ``VideoBatch.failed`` (never a
    zero clip). With ``"raise"`` the ``VideoDecodeError`` (naming the file) stops the run.

    ``augmented_views`` > 0 adds that many augmented copies of each *training* clip (``load(augment=True)``):
    decoded frames get one clip-level transform per copy (``datamodules/augment.py``), drawn from the item's
    generator; cached features draw as many views from the cache's fixed pool of augmented views.
    """

    def __init__(self, split: Split, reader: ReaderName, image_size: int, num_frames: int,
                 on_decode_error: DecodeErrorPolicy = "raise", aux: dict[str, CaptionStore] | None = None,
                 narration_match: NarrationMatch = "exact", augmented_views: int = 0,
                 augmentations: tuple[str, ...] = CLIP_TRANSFORMS) -> None:
        self.split = split
        self.reader_name = reader
        self.image_size = image_size
        self.num_frames = num_frames
        self.on_decode_error = on_decode_error
        self.aux = aux or {}
        self.narration_match = narration_match
        self.augmented_views = augmented_views
        self.augmentations = tuple(augmentations)
        self._reader = None
        self.cache: Any | None = None  # datamodules.feature_cache.CachedFeatures
        self.text_cache: Any | None = None  # cached text-trunk states, also used for the aux captions

    def load(self, video: int, mode: SamplingMode, rng: np.random.Generator | None = None,
             augment: bool = False) -> dict[str, Any]:
        """One video's item. ``rng`` (the training sampler's per-item generator) draws the random frame
        offsets and the augmented copies (``augment``); without it they come from the worker's RNG, which a
        resumed run cannot reproduce."""
        entry = self.split.videos[video]
        augment = augment and self.augmented_views > 0
        if augment and rng is None:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        if self.cache is not None:
            feats, mask = self.cache.video(entry.video_id)
            item = {"cached_frames": feats, "mask": mask}
            indices = None
            if augment:
                item.update(self._cached_augmented(entry.video_id, rng))
        else:
            if self._reader is None:  # built lazily inside the worker process
                self._reader = build_reader(self.reader_name, self.image_size)
            if rng is None and mode != "uniform":
                rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
            try:
                frames, indices = self._reader.read_sampled(entry.path, self.num_frames, mode, rng)
            except (VideoDecodeError, FileNotFoundError) as exc:
                if self.on_decode_error == "raise":
                    raise VideoDecodeError(f"{exc} [video {entry.video_id!r} of split '{self.split.name}'; set "
                                           "data.init_args.on_decode_error=skip to count and skip such videos, "
                                           "or re-run the preparation command to list them in the manifest]"
                                           ) from exc
                log.warning("decode failure (skipped, counted): %s", exc)
                return {"failed": f"{type(exc).__name__}: {exc}",
                        "empty_shape": (self.num_frames, 3, self.image_size, self.image_size)}
            t = frames.shape[0]
            mask = torch.zeros(self.num_frames, dtype=torch.bool)
            mask[:t] = True
            if t < self.num_frames:
                pad = frames.new_zeros((self.num_frames - t, *frames.shape[1:]))
                frames = torch.cat([frames, pad])
            item = {"frames": frames, "mask": mask}
            if augment:
                names = draw_transforms(rng, self.augmentations, self.augmented_views)
                item["augmented_frames"] = torch.stack([apply_clip_transform(frames, n) for n in names])
                item["augmentations"] = names
        if self.aux:
            item["aux"] = {name: self._aux_captions(name, store, entry.video_id, indices, int(item["mask"].sum()))
                           for name, store in self.aux.items()}
            item["aux_prompt"] = {name: store[entry.video_id].prompt for name, store in self.aux.items()}
            if self.text_cache is not None:  # frozen text trunk: every kind's caption states from the cache
                item["aux_cached"] = {name: self._cached_rows(captions, AUX_CAPTION_TYPES[name].per_frame)
                                      for name, captions in item["aux"].items()}
        return item

    def _cached_augmented(self, video_id: str, rng: np.random.Generator) -> dict[str, Any]:
        """``augmented_views`` distinct views of the cache's pool for this video (``[A, T, F]``) and their names."""
        if not self.cache.has_augmented:
            raise RuntimeError(f"augmented_views={self.augmented_views} but the feature cache holds no augmented "
                               f"views of split '{self.split.name}'; it is built with them when the data module's "
                               "augmented_views > 0 (rebuild: delete the cache folder)")
        feats, names = self.cache.augmented(video_id)
        if self.augmented_views > feats.shape[0]:
            raise ValueError(f"augmented_views={self.augmented_views} exceeds the cached pool of {feats.shape[0]} "
                             "views per video; raise data.init_args.augmentation_pool")
        chosen = rng.permutation(feats.shape[0])[:self.augmented_views].tolist()
        return {"cached_augmented": feats[chosen], "augmentations": [names[i] for i in chosen]}

    def _cached_rows(self, captions: list[str], per_frame: bool) -> tuple[Tensor, Tensor]:
        """Cached text-trunk states of the captions, ``[N, L, H]`` and mask ``[N, L]``; per-frame captions are
        padded with zero rows to ``num_frames``."""
        rows = [self.text_cache.text(c) for c in captions]
        tokens, masks = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
        pad = self.num_frames - len(rows) if per_frame else 0
        if pad > 0:
            tokens = torch.cat([tokens, tokens.new_zeros((pad, *tokens.shape[1:]))])
            masks = torch.cat([masks, masks.new_zeros((pad, *masks.shape[1:]))])
        return tokens, masks

    def _aux_captions(self, name: str, store: CaptionStore, video_id: str, indices: np.ndarray | None,
                      num_real: int) -> list[str]:
        record = store.get(video_id)
        if record is None:  # setup() checked every id; this is a store swapped under us
            store.require([video_id])
        assert record is not None
        if not AUX_CAPTION_TYPES[name].per_frame:
            return list(record.captions)
        return align_narration(record, indices, num_real, self.narration_match, store.path)


def align_narration(record: CaptionRecord, indices: np.ndarray | None, num_real: int, match: NarrationMatch,
                    path: Path) -> list[str]:
    """Per-frame narration aligned to the frames fed to the model (one caption per real frame).

    With ``frame_indices`` in the record, each fed frame index must be one of them (``exact``), or takes
    the caption of the nearest narrated frame (``nearest``, for random-offset training). Without them, the
    record must hold exactly one caption per fed frame, used in order.
    """
    if record.frame_indices is None or indices is None:
        if len(record.captions) != num_real:
            raise ValueError(f"{path}: narration of video {record.video_id!r} has {len(record.captions)} captions "
                             f"but {num_real} frames are fed and the record has no frame_indices to align them; "
                             "regenerate the narration with the data's num_frames")
        return list(record.captions)
    narrated = np.asarray(record.frame_indices)
    fed = np.asarray(indices)
    if match == "exact":
        position = {int(f): k for k, f in enumerate(narrated)}
        absent = [int(i) for i in fed if int(i) not in position]
        if absent:
            raise ValueError(f"{path}: narration of video {record.video_id!r} covers frames {narrated.tolist()} "
                             f"but frames {fed.tolist()} are fed ({absent[:5]} not narrated). Use the narration's "
                             "sampling (num_frames, train_sampling: uniform) or narration_match: nearest")
        return [record.captions[position[int(i)]] for i in fed]
    nearest = np.abs(fed[:, None] - narrated[None, :]).argmin(1)
    return [record.captions[int(k)] for k in nearest]


class TextSource:
    def __init__(self) -> None:
        self.cache: Any | None = None

    def load(self, text: str) -> dict[str, Any]:
        if self.cache is None:
            return {}
        tokens, mask = self.cache.text(text)
        return {"cached_tokens": tokens, "cached_mask": mask}


class PairDataset(Dataset):
    """Training pairs: one sample per caption, or one sample per video with a random caption."""

    def __init__(self, split: Split, videos: VideoSource, texts: TextSource, one_caption_per_video: bool,
                 sampling: SamplingMode) -> None:
        self.split, self.videos, self.texts = split, videos, texts
        self.one_caption_per_video = one_caption_per_video
        self.sampling = sampling
        self.groups = split.texts_of_video()

    def __len__(self) -> int:
        return len(self.split.videos) if self.one_caption_per_video else len(self.split.texts)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        # a SampleKey (ResumableSampler) carries the item's own RNG: the caption choice and the frame offsets
        # are then a function of (seed, epoch, position), identical in an uninterrupted and a resumed run
        rng = key.rng() if isinstance(key, SampleKey) else None
        i = int(key.index) if isinstance(key, SampleKey) else int(key)
        if not self.one_caption_per_video:
            text_index = i
        elif rng is not None:
            text_index = self.groups[i][int(rng.integers(len(self.groups[i])))]
        else:
            text_index = random.choice(self.groups[i])
        entry = self.split.texts[text_index]
        return {"text_index": text_index, "video_index": entry.video, "text": entry.text,
                "video_id": self.split.videos[entry.video].video_id,
                **self.videos.load(entry.video, self.sampling, rng, augment=True), **self.texts.load(entry.text)}


class TextDataset(Dataset):
    """Evaluation texts, in split order."""

    def __init__(self, split: Split, texts: TextSource) -> None:
        self.split, self.texts = split, texts

    def __len__(self) -> int:
        return len(self.split.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.split.texts[i]
        return {"text_index": i, "video_index": entry.video, "text": entry.text, **self.texts.load(entry.text)}


class VideoDataset(Dataset):
    """Evaluation videos, in split order, uniformly sampled."""

    def __init__(self, split: Split, videos: VideoSource) -> None:
        self.split, self.videos = split, videos

    def __len__(self) -> int:
        return len(self.split.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"video_index": i, "video_id": self.split.videos[i].video_id, **self.videos.load(i, "uniform")}



def read_with_indices(reader: VideoReader, path: Path, num_frames: int) -> tuple[Tensor, np.ndarray]:
    """Uniformly sampled ``uint8 [T, 3, S, S]`` frames *and* the indices they were taken at (one decode)."""
    chosen: dict[str, np.ndarray] = {}

    def choose(n: int) -> np.ndarray:
        chosen["idx"] = sample_frame_indices(n, num_frames, "uniform")
        return chosen["idx"]

    try:
        frames = reader.read(path, choose)
    except (VideoDecodeError, FileNotFoundError):
        raise
    except Exception as exc:  # decoder libraries raise many types; name the file either way
        raise VideoDecodeError(f"could not decode {path}: {type(exc).__name__}: {exc}") from exc
    return frames, chosen["idx"]


class PredictVideoDataset(Dataset):
    """Videos to caption (``predict``): uniformly sampled frames and the frame index of each.

    With ``decode=False`` only the frame count is read (the simulated captioner needs indices, not pixels).
    """

    def __init__(self, videos: list[VideoEntry], reader: ReaderName, image_size: int, num_frames: int,
                 decode: bool = True) -> None:
        self.videos, self.reader_name, self.image_size = videos, reader, image_size
        self.num_frames, self.decode = num_frames, decode
        self._reader: VideoReader | None = None

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.videos[i]
        if self._reader is None:  # built lazily inside the worker process
            self._reader = build_reader(self.reader_name, self.image_size)
        item: dict[str, Any] = {"video_index": i, "video_id": entry.video_id}
        if self.decode:
            frames, idx = read_with_indices(self._reader, entry.path, self.num_frames)
            item["frames"] = frames
        else:
            if not entry.path.exists():
                raise FileNotFoundError(f"video file not found: {entry.path}")
            idx = sample_frame_indices(self._reader.num_frames(entry.path), self.num_frames, "uniform")
        item["frame_indices"] = [int(k) for k in idx]
        return item

