"""``VideoTextDataModule``: the data side every dataset shares.

A subclass only parses its public annotation files into ``Split`` objects (``load_split``). This base
owns: resolving video files, the missing-video policy, the three datasets (training pairs, evaluation
texts, evaluation videos), collation into typed batches, and the frozen-feature cache switch.

Evaluation uses *two* loaders, texts and videos, so a video with 40 captions (MSVD) is decoded once.
``eval_index(stage)`` tells the model which text belongs to which video, in dataset order.
"""

from __future__ import annotations

import logging
import random
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.batch import PairBatch, TextBatch, VideoBatch
from datamodules.readers import (
    VIDEO_EXTENSIONS,
    ReaderName,
    SamplingMode,
    VideoDecodeError,
    VideoReader,
    build_reader,
    sample_frame_indices,
)

log = logging.getLogger(__name__)

Stage = Literal["fit", "validate", "test", "predict"]


@dataclass
class VideoEntry:
    """One video of a split: its public id and where its file (or frame folder) is."""

    video_id: str
    path: Path


@dataclass
class TextEntry:
    """One text of a split: a stable id, the sentence and the index of its video in ``Split.videos``."""

    text_id: str
    text: str
    video: int


@dataclass
class Split:
    """A split as the protocol defines it: the videos, the texts, and how they map."""

    name: str
    videos: list[VideoEntry]
    texts: list[TextEntry]
    protocol: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def validate(self, source: str) -> None:
        """Empty captions and dangling video references are annotation errors: fail loudly."""
        if not self.videos:
            raise ValueError(f"{source}: split '{self.name}' has no videos")
        ids = [v.video_id for v in self.videos]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"{source}: split '{self.name}' lists videos more than once: {dup}")
        for t in self.texts:
            if not t.text or not t.text.strip():
                raise ValueError(f"{source}: empty caption {t.text_id!r} (video "
                                 f"{self.videos[t.video].video_id}) in split '{self.name}'; fix or remove it")
            if not 0 <= t.video < len(self.videos):
                raise ValueError(f"{source}: text {t.text_id!r} points at video index {t.video} outside the split")
        has_text = np.zeros(len(self.videos), dtype=bool)
        has_text[[t.video for t in self.texts]] = True
        if not has_text.all():
            missing = [self.videos[i].video_id for i in np.flatnonzero(~has_text)[:5]]
            raise ValueError(f"{source}: {int((~has_text).sum())} video(s) of split '{self.name}' have no "
                             f"caption, e.g. {missing}")

    def texts_of_video(self) -> list[list[int]]:
        """For each video, the indices of its texts."""
        groups: list[list[int]] = [[] for _ in self.videos]
        for i, t in enumerate(self.texts):
            groups[t.video].append(i)
        return groups


@dataclass
class EvalIndex:
    """What the model needs to score an evaluation split and write its artifacts."""

    text_ids: list[str]
    texts: list[str]
    text_to_video: list[int]
    video_ids: list[str]


# --------------------------------------------------------------------------------------------- datasets
class _VideoSource:
    """Frames (decoded now) or cached trunk features for one split's videos."""

    def __init__(self, split: Split, reader: ReaderName, image_size: int, num_frames: int) -> None:
        self.split = split
        self.reader_name = reader
        self.image_size = image_size
        self.num_frames = num_frames
        self._reader = None
        self.cache: Any | None = None  # datamodules.feature_cache.CachedFeatures

    def load(self, video: int, mode: SamplingMode) -> dict[str, Any]:
        entry = self.split.videos[video]
        if self.cache is not None:
            feats, mask = self.cache.video(entry.video_id)
            return {"cached_frames": feats, "mask": mask}
        if self._reader is None:  # built lazily inside the worker process
            self._reader = build_reader(self.reader_name, self.image_size)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        frames = self._reader(entry.path, self.num_frames, mode, rng)
        t = frames.shape[0]
        mask = torch.zeros(self.num_frames, dtype=torch.bool)
        mask[:t] = True
        if t < self.num_frames:
            pad = frames.new_zeros((self.num_frames - t, *frames.shape[1:]))
            frames = torch.cat([frames, pad])
        return {"frames": frames, "mask": mask}


class _TextSource:
    def __init__(self) -> None:
        self.cache: Any | None = None

    def load(self, text: str) -> dict[str, Any]:
        if self.cache is None:
            return {}
        tokens, mask = self.cache.text(text)
        return {"cached_tokens": tokens, "cached_mask": mask}


class PairDataset(Dataset):
    """Training pairs: one sample per caption, or one sample per video with a random caption."""

    def __init__(self, split: Split, videos: _VideoSource, texts: _TextSource, one_caption_per_video: bool,
                 sampling: SamplingMode) -> None:
        self.split, self.videos, self.texts = split, videos, texts
        self.one_caption_per_video = one_caption_per_video
        self.sampling = sampling
        self.groups = split.texts_of_video()

    def __len__(self) -> int:
        return len(self.split.videos) if self.one_caption_per_video else len(self.split.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.one_caption_per_video:
            text_index = random.choice(self.groups[i])
        else:
            text_index = i
        entry = self.split.texts[text_index]
        return {"text_index": text_index, "video_index": entry.video, "text": entry.text,
                "video_id": self.split.videos[entry.video].video_id,
                **self.texts.load(entry.text), **self.videos.load(entry.video, self.sampling)}


class TextDataset(Dataset):
    """Evaluation texts, in split order."""

    def __init__(self, split: Split, texts: _TextSource) -> None:
        self.split, self.texts = split, texts

    def __len__(self) -> int:
        return len(self.split.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        entry = self.split.texts[i]
        return {"text_index": i, "video_index": entry.video, "text": entry.text, **self.texts.load(entry.text)}


class VideoDataset(Dataset):
    """Evaluation videos, in split order, uniformly sampled."""

    def __init__(self, split: Split, videos: _VideoSource) -> None:
        self.split, self.videos = split, videos

    def __len__(self) -> int:
        return len(self.split.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"video_index": i, "video_id": self.split.videos[i].video_id, **self.videos.load(i, "uniform")}


def _stack(items: list[dict[str, Any]], key: str) -> Tensor | None:
    if key not in items[0]:
        return None
    return torch.stack([it[key] for it in items])


def collate_texts(items: list[dict[str, Any]]) -> TextBatch:
    """List of text items -> ``TextBatch``."""
    return TextBatch(index=torch.tensor([it["text_index"] for it in items]),
                     video_index=torch.tensor([it["video_index"] for it in items]),
                     texts=[it["text"] for it in items],
                     cached_tokens=_stack(items, "cached_tokens"), cached_mask=_stack(items, "cached_mask"))


def collate_videos(items: list[dict[str, Any]]) -> VideoBatch:
    """List of video items -> ``VideoBatch``."""
    return VideoBatch(index=torch.tensor([it["video_index"] for it in items]), mask=_stack(items, "mask"),
                      video_ids=[it["video_id"] for it in items], frames=_stack(items, "frames"),
                      cached_frames=_stack(items, "cached_frames"))


def collate_pairs(items: list[dict[str, Any]]) -> PairBatch:
    """List of pair items -> ``PairBatch``."""
    return PairBatch(text=collate_texts(items), video=collate_videos(items))


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


def collate_predict(items: list[dict[str, Any]]) -> VideoBatch:
    """Predict items -> ``VideoBatch`` (frames padded + masked; ``aux["frame_indices"]`` per video)."""
    lengths = [len(it["frame_indices"]) for it in items]
    t_max = max(lengths)
    mask = torch.zeros(len(items), t_max, dtype=torch.bool)
    for row, n in enumerate(lengths):
        mask[row, :n] = True
    frames = None
    if "frames" in items[0]:
        first = items[0]["frames"]
        frames = first.new_zeros((len(items), t_max, *first.shape[1:]))
        for row, it in enumerate(items):
            frames[row, :it["frames"].shape[0]] = it["frames"]
    return VideoBatch(index=torch.tensor([it["video_index"] for it in items]), mask=mask,
                      video_ids=[it["video_id"] for it in items], frames=frames,
                      aux={"frame_indices": [it["frame_indices"] for it in items]})


# --------------------------------------------------------------------------------------------- datamodule
class VideoTextDataModule(L.LightningDataModule):
    """Base data module for text-video retrieval.

    Args:
        root: dataset root (annotation files live here; see the README's data preparation section).
        video_dir: folder of videos (or frame folders), relative to ``root`` unless absolute.
        num_frames: frames per video fed to the model.
        image_size: square side of the frames after short-side resize and centre crop.
        reader: ``decord`` (default), ``pyav`` or ``frames`` (pre-extracted jpg folders).
        batch_size: training batch size per device.
        eval_batch_size: evaluation batch size per device (texts and videos).
        num_workers: DataLoader workers per device.
        train_sampling: ``random_offset`` (one random frame per temporal segment) or ``uniform``.
        one_caption_per_video: training epoch = one random caption per video, instead of every caption.
        max_missing_fraction: fraction of a split's videos allowed to be absent on disk; the rest of
            the split is used and the count is recorded in metrics. Above it, setup fails.
        feature_cache: when the model's trunks are frozen, compute their outputs once and train on them
            (no decoding). Frame sampling is then uniform at train time too.
        cache_dir: where cached features live (default ``<root>/.vtr_cache``).
        predict_split: videos ``predict`` (captioning) runs over: ``train``, ``val``, ``test`` or ``all``
            (every video of the three splits, once).
        predict_num_frames: frames per video sampled uniformly for captioning (default ``num_frames``;
            NarVid narrates 12 per video on MSR-VTT/MSVD/VATEX, 32 on DiDeMo).
        predict_image_size: frame side for captioning (default ``image_size``; the VLM's processor
            resizes again to its own input size).
        predict_batch_size: videos per ``predict`` step (the caption writer appends after each step).
    """

    name: str = "dataset"

    def __init__(self, root: str, video_dir: str = "videos", num_frames: int = 12, image_size: int = 224,
                 reader: ReaderName = "decord", batch_size: int = 64, eval_batch_size: int = 64,
                 num_workers: int = 4, train_sampling: SamplingMode = "random_offset",
                 one_caption_per_video: bool = False, max_missing_fraction: float = 0.0,
                 feature_cache: bool = False, cache_dir: str | None = None,
                 predict_split: Literal["train", "val", "test", "all"] = "test",
                 predict_num_frames: int | None = None, predict_image_size: int | None = None,
                 predict_batch_size: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        self.video_dir = Path(video_dir) if Path(video_dir).is_absolute() else self.root / video_dir
        self.num_frames = num_frames
        self.image_size = image_size
        self.reader = reader
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.train_sampling = train_sampling
        self.one_caption_per_video = one_caption_per_video
        self.max_missing_fraction = max_missing_fraction
        self.feature_cache = feature_cache
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".vtr_cache"
        self.splits: dict[str, Split] = {}
        self._video_sources: dict[str, _VideoSource] = {}
        self._text_sources: dict[str, _TextSource] = {}
        self.cache_info: dict[str, Any] = {}
        self.predict_split = predict_split
        self.predict_num_frames = predict_num_frames or num_frames
        self.predict_image_size = predict_image_size or image_size
        self.predict_batch_size = predict_batch_size
        self.predict_videos: list[VideoEntry] = []
        # set by the captioner / caption writer before the predict loader is built (see Captioner.setup)
        self.predict_exclude: set[str] = set()
        self.predict_decode: bool = True

    # ---------------------------------------------------------------- for subclasses
    @abstractmethod
    def load_split(self, split: str) -> Split:
        """Parse the public annotation files for ``split`` in ``{"train", "val", "test"}``."""

    def split_for_stage(self, stage: str) -> str:
        """Which split a Lightning stage evaluates on (``val`` may be the test split, see subclasses)."""
        return {"fit": "train", "validate": "val", "test": "test", "predict": "test"}[stage]

    def video_path(self, video_id: str) -> Path:
        """File (or frame folder) of a video id: ``<video_dir>/<id>`` with a known extension."""
        if self.reader == "frames":
            return self.video_dir / video_id
        direct = self.video_dir / video_id
        if direct.suffix.lower() in VIDEO_EXTENSIONS:
            return direct
        for ext in VIDEO_EXTENSIONS:
            candidate = self.video_dir / f"{video_id}{ext}"
            if candidate.exists():
                return candidate
        return self.video_dir / f"{video_id}.mp4"

    # ---------------------------------------------------------------- lightning hooks
    def setup(self, stage: str) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{type(self).__name__}: data root {self.root} does not exist; set "
                                    "data.init_args.root (see the README's data preparation section)")
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"],
                  "predict": self._predict_splits()}[stage]
        for name in wanted:
            if name not in self.splits:
                split = self._drop_missing(self.load_split(name))
                self.splits[name] = split
                self._video_sources[name] = _VideoSource(split, self.reader, self.image_size, self.num_frames)
                self._text_sources[name] = _TextSource()
        if stage == "predict":
            seen: set[str] = set()
            self.predict_videos = []
            for name in self._predict_splits():
                for v in self.splits[name].videos:
                    if v.video_id not in seen:
                        seen.add(v.video_id)
                        self.predict_videos.append(v)

    def _predict_splits(self) -> list[str]:
        return ["train", "val", "test"] if self.predict_split == "all" else [self.predict_split]

    def _drop_missing(self, split: Split) -> Split:
        """Apply the missing-video policy: fail past the threshold, else drop and record the ids."""
        present = [v.path.exists() for v in split.videos]
        missing = [v.video_id for v, ok in zip(split.videos, present, strict=True) if not ok]
        split.info["num_videos_listed"] = len(split.videos)
        split.info["num_videos_missing"] = len(missing)
        if not missing:
            return split
        fraction = len(missing) / len(split.videos)
        if fraction > self.max_missing_fraction:
            raise FileNotFoundError(
                f"{type(self).__name__}: {len(missing)} of {len(split.videos)} videos of split '{split.name}' "
                f"are missing under {self.video_dir} (first: {missing[:5]}); allowed fraction is "
                f"{self.max_missing_fraction} (data.init_args.max_missing_fraction). Check video_dir/reader "
                "or run the dataset's preparation command to list what is absent.")
        log.warning("%s: %d videos of split '%s' missing; evaluating on the remaining %d (ids recorded in "
                    "metrics.json)", type(self).__name__, len(missing), split.name, len(split.videos) - len(missing))
        keep = [i for i, ok in enumerate(present) if ok]
        remap = {old: new for new, old in enumerate(keep)}
        texts = [TextEntry(t.text_id, t.text, remap[t.video]) for t in split.texts if t.video in remap]
        split.info["missing_video_ids"] = missing
        split.info["num_texts_dropped_with_missing_videos"] = len(split.texts) - len(texts)
        return Split(split.name, [split.videos[i] for i in keep], texts, split.protocol, split.info)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, collate: Any,
                drop_last: bool = False) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=collate, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        split = self.splits["train"]
        dataset = PairDataset(split, self._video_sources["train"], self._text_sources["train"],
                              self.one_caption_per_video,
                              "uniform" if self._video_sources["train"].cache is not None else self.train_sampling)
        # drop_last keeps every contrastive batch full (a 3-sample last batch is a much easier task)
        return self._loader(dataset, self.batch_size, True, collate_pairs, drop_last=len(dataset) > self.batch_size)

    def _eval_loaders(self, split_name: str) -> list[DataLoader]:
        split = self.splits[split_name]
        return [self._loader(TextDataset(split, self._text_sources[split_name]), self.eval_batch_size, False,
                             collate_texts),
                self._loader(VideoDataset(split, self._video_sources[split_name]), self.eval_batch_size, False,
                             collate_videos)]

    def predict_dataloader(self) -> DataLoader:
        """Videos of ``predict_split`` not in ``predict_exclude`` (already captioned), in split order."""
        todo = [v for v in self.predict_videos if v.video_id not in self.predict_exclude]
        dataset = PredictVideoDataset(todo, self.reader, self.predict_image_size, self.predict_num_frames,
                                      decode=self.predict_decode)
        return DataLoader(dataset, batch_size=self.predict_batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate_predict, persistent_workers=False)

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    # ---------------------------------------------------------------- for the model
    def eval_index(self, stage: str) -> EvalIndex:
        """Ids and the text->video map of the split evaluated in ``stage`` (``val`` or ``test``)."""
        split = self.splits["val" if stage in ("val", "validate") else "test"]
        return EvalIndex(text_ids=[t.text_id for t in split.texts], texts=[t.text for t in split.texts],
                         text_to_video=[t.video for t in split.texts],
                         video_ids=[v.video_id for v in split.videos])

    def describe(self, stage: str) -> dict[str, Any]:
        """Facts recorded in metrics.json next to the numbers (protocol, split sizes, missing videos)."""
        split = self.splits["val" if stage in ("val", "validate") else "test"]
        val = self.splits.get("val")
        if val is not None:
            selection = val.info.get("model_selection", f"split '{val.name}'")
        else:
            selection = "unknown (this run had no validation split; see the fit run)"
        return {"dataset": self.name, "model_selection": selection, "split": split.name, "protocol": split.protocol,
                "num_frames": self.num_frames, "image_size": self.image_size, "reader": self.reader,
                "feature_cache": self.cache_info or None, **split.info}

    def use_feature_cache(self, cache: Any, info: dict[str, Any]) -> None:
        """Serve cached trunk outputs (``datamodules.feature_cache``) instead of frames/texts.

        The model builds the cache in its ``setup`` (it owns the backbone, and under DDP only rank 0
        builds); only trunks that are frozen are cached, a trainable trunk keeps reading frames/texts.
        """
        self.cache_info = info
        for name in self.splits:
            if cache.has_video:
                self._video_sources[name].cache = cache
            if cache.has_text:
                self._text_sources[name].cache = cache
