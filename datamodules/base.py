"""``VideoTextDataModule``: the data side every dataset shares.

A subclass only parses its public annotation files into ``Split`` objects (``load_split``). This base
owns: resolving video files, the missing-video policy, the three datasets (training pairs, evaluation
texts, evaluation videos), collation into typed batches, and the frozen-feature cache switch.

Evaluation uses *two* loaders, texts and videos, so a video with 40 captions (MSVD) is decoded once.
``eval_index(stage)`` tells the model which text belongs to which video, in dataset order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.annotations import EvalIndex, Split, TextEntry, VideoEntry, eval_split, read_id_list, stage_split
from datamodules.augment import CLIP_TRANSFORMS, ClipTransform, check_transforms
from datamodules.batch import PairBatch, VideoBatch
from datamodules.batching import TrainBatch, check_batch_settings, resolve_train_batch
from datamodules.captions import KINDS, CaptionStore
from datamodules.collate import collate_pairs, collate_predict, collate_texts, collate_videos
from datamodules.datasets import (
    DecodeErrorPolicy,
    NarrationMatch,
    PairDataset,
    PredictVideoDataset,
    TextDataset,
    TextSource,
    VideoDataset,
    VideoSource,
)
from datamodules.jsonl import MalformedFileError, read_json_file
from datamodules.readers import VIDEO_EXTENSIONS, ReaderName, SamplingMode
from datamodules.sampling import ResumableDataLoader, ResumableSampler, TrainProgress, default_seed

log = logging.getLogger(__name__)

MANIFEST_NAME = "vtr_manifest.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class UnsafeVideoIdError(MalformedFileError):
    """A video id that would make a path outside the video folder (absolute, ``..``, a symlink leading out)."""


def read_manifest(path: Path) -> dict[str, Any]:
    """A preparation manifest (``python -m experiments.prepare``), with the types the loaders rely on checked: an
    object whose ``video_dir``/``frames_dir`` are strings (or null) and whose ``videos`` maps ids to objects."""
    data = read_json_file(path, "manifest")
    if not isinstance(data, dict):
        raise MalformedFileError(f"{path}: a manifest is a JSON object, got {type(data).__name__}; rewrite it with "
                                 "python -m experiments.prepare")
    for key in ("video_dir", "frames_dir"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise MalformedFileError(f"{path}: {key!r} must be a path string, got {type(data[key]).__name__}")
    videos = data.get("videos", {})
    if not isinstance(videos, dict) or not all(isinstance(v, dict) for v in videos.values()):
        raise MalformedFileError(f"{path}: 'videos' must map each video id to an object ({{'status': ...}})")
    return data


class VideoTextDataModule(L.LightningDataModule):
    """Base data module for text-video retrieval.

    Args:
        root: dataset root (annotation files live here; see the README's data preparation section).
        video_dir: folder of videos (or frame folders), relative to ``root`` unless absolute.
        num_frames: frames per video fed to the model.
        image_size: square side of the frames after short-side resize and centre crop.
        max_words: text length budget, recorded with the data facts (the backbone's ``max_words`` is
            what tokenises; the per-dataset configs keep the two equal).
        reader: ``decord`` (default), ``pyav`` or ``frames`` (pre-extracted jpg folders).
        batch_size: training batch per device (``global_batch_size`` unset; 64 when neither is set). The global
            batch, on which the contrastive loss is computed, is then this times devices x nodes.
        eval_batch_size: evaluation batch size per device (texts and videos).
        num_workers: DataLoader workers per device.
        train_sampling: ``random_offset`` (one random frame per temporal segment) or ``uniform``. Narration
            that records its ``frame_indices`` needs ``uniform`` under ``narration_match: exact`` (``setup``
            refuses ``random_offset`` with it).
        one_caption_per_video: training epoch = one random caption per video, instead of every caption.
        max_missing_fraction: fraction of a split's videos allowed to be absent on disk (or marked
            unreadable by the manifest); the rest of the split is used and the count is recorded in
            metrics. Above it, setup fails naming the first ids and the manifest.
        manifest: the preparation manifest (``python -m experiments.prepare``), relative to ``root`` unless
            absolute. Used when it exists and describes this ``video_dir``: videos it marks unreadable are
            treated as missing, and its encoding spec is recorded in metrics.json.
        on_decode_error: a video that fails to decode at run time either stops the run (``raise``) or is
            dropped from its batch and counted (``skip``); at evaluation its texts are then not scored and
            metrics.json records ``num_videos_failed`` and the ids. Never replaced by a zero clip.
        aux_captions: auxiliary caption JSONL files by aux name (``narration``, ``multi``,
            ``supplement``), relative to ``root`` unless absolute; attached to ``VideoBatch.aux``. Every
            video of a split must have a record (the error names the file, the ids and the command).
        narration_match: how narration ``frame_indices`` are aligned to the sampled frames: ``exact``
            (every fed frame must be narrated) or ``nearest``.
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
        augmented_views: augmented copies of each training clip in a training batch (``VideoBatch.augmented_frames``
            or ``cached_augmented``; 0 = none). Conical embedding optimisation trains on them.
        augmentations: the clip-level transforms a copy draws from (one per copy, applied to every frame:
            ``hflip``, ``vflip``, ``rot90``, ``rot180``, ``rot270``; ``datamodules/augment.py``).
        augmentation_pool: with the feature cache (frozen video trunk), this many augmented views of every training
            video are encoded once, and each training item draws ``augmented_views`` of them; decoded frames draw
            a fresh transform per item instead.
        augmentation_seed: seed of the cached pool's transforms (per video id).
        global_batch_size: training batch over all processes (``batch_size`` unset): each process takes
            global / (devices x nodes) when the run starts, and a world size that does not divide it is an error.
            The real experiment configs state their paper's global batch here, so a run is the same experiment on 1
            and on N GPUs (``datamodules/batching.py``). ``describe`` records the global batch, the world size and
            the per-device batch (``train_batch``).
    """

    name: str = "dataset"
    title: str = "dataset"  # how the dataset is named in metrics.json (``model_selection``)
    # split -> video-id list file (relative to ``root``), for data modules whose splits are id lists
    lists: dict[str, str]

    def __init__(self, root: str, video_dir: str = "videos", num_frames: int = 12, image_size: int = 224,
                 max_words: int = 32, reader: ReaderName = "decord", batch_size: int | None = None,
                 eval_batch_size: int = 64, num_workers: int = 4, train_sampling: SamplingMode = "random_offset",
                 one_caption_per_video: bool = False, max_missing_fraction: float = 0.0,
                 manifest: str | None = MANIFEST_NAME, on_decode_error: DecodeErrorPolicy = "raise",
                 aux_captions: dict[str, str] | None = None, narration_match: NarrationMatch = "exact",
                 feature_cache: bool = False, cache_dir: str | None = None,
                 predict_split: Literal["train", "val", "test", "all"] = "test",
                 predict_num_frames: int | None = None, predict_image_size: int | None = None,
                 predict_batch_size: int = 8, augmented_views: int = 0,
                 augmentations: Sequence[ClipTransform] = CLIP_TRANSFORMS, augmentation_pool: int = 4,
                 augmentation_seed: int = 0, global_batch_size: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_batch_settings(batch_size, global_batch_size, "data.init_args")
        self.root = Path(root).expanduser()
        self.video_dir = Path(video_dir) if Path(video_dir).is_absolute() else self.root / video_dir
        self.num_frames = num_frames
        self.image_size = image_size
        self.max_words = max_words
        self.reader = reader
        self.batch_size = batch_size  # as configured (per device, or None); the run's batch is ``train_batch``
        self.global_batch_size = global_batch_size
        # resolved against the world size when training starts (``resolve_train_batch``); a test-only run reports the
        # tested checkpoint's record instead (``load_state_dict``)
        self.train_batch: TrainBatch | None = None
        self._checkpoint_train_batch: dict[str, Any] | None = None
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.train_sampling = train_sampling
        self.one_caption_per_video = one_caption_per_video
        self.max_missing_fraction = max_missing_fraction
        self.manifest_path = self._resolve(manifest) if manifest else None
        self.on_decode_error = on_decode_error
        self.aux_captions = {k: str(self._resolve(v)) for k, v in (aux_captions or {}).items()}
        unknown = sorted(set(self.aux_captions) - set(KINDS))
        if unknown:
            raise ValueError(f"aux_captions: unknown name(s) {unknown}; use {list(KINDS)}")
        self.narration_match = narration_match
        self.feature_cache = feature_cache
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".vtr_cache"
        self.splits: dict[str, Split] = {}
        self._video_sources: dict[str, VideoSource] = {}
        self._text_sources: dict[str, TextSource] = {}
        self._aux_stores: dict[str, CaptionStore] = {}
        self._manifest: dict[str, Any] | None = None
        self.cache_info: dict[str, Any] = {}
        self.predict_split = predict_split
        self.predict_num_frames = predict_num_frames or num_frames
        self.predict_image_size = predict_image_size or image_size
        self.predict_batch_size = predict_batch_size
        if augmented_views < 0 or augmentation_pool < 1:
            raise ValueError(f"data.init_args.augmented_views={augmented_views} must be >= 0 and augmentation_pool="
                             f"{augmentation_pool} >= 1")
        self.augmented_views = augmented_views
        self.augmentations = check_transforms(augmentations)
        self.augmentation_pool = augmentation_pool
        self.augmentation_seed = augmentation_seed
        self.predict_videos: list[VideoEntry] = []
        # set by the captioner / caption writer before the predict loader is built (see Captioner.setup)
        self.predict_exclude: set[str] = set()
        self.predict_decode: bool = True
        # run-time decode failures seen by this process: split -> {dataset video index: (video id, error)}
        self.decode_failures: dict[str, dict[int, tuple[str, str]]] = {}
        self._eval_failed: dict[str, list[int]] = {}
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, Any] | None = None  # from a checkpoint, until the loader exists
        self._bank_source: Split | None = None  # the training split's texts, for QB-Norm's query bank
        self._texts_by_video: tuple[tuple[str, ...], dict[str, list[tuple[str, str, str]]]] | None = None

    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p

    # ---------------------------------------------------------------- for subclasses
    def load_split(self, split: str) -> Split:
        """Parse the public annotation files for ``split`` in ``{"train", "val", "test"}``.

        The default is a template for data modules whose splits are video-id lists (``self.lists``, e.g.
        ``datamodules/msvd.py``): it checks the name, reads the list and hands it to ``parse_listed_split``,
        then records the validation split as the model-selection split. Others override it
        (``datamodules/msrvtt.py``).
        """
        lists = getattr(self, "lists", {})
        if split not in lists:
            raise ValueError(f"unknown split {split!r}")
        list_file = self.root / lists[split]
        result = self.parse_listed_split(split, read_id_list(list_file), list_file)
        if split == "val":
            result.info["model_selection"] = f"{self.title} validation split ({lists['val']})"
        return result

    def parse_listed_split(self, split: str, video_ids: list[str], list_file: Path) -> Split:
        """The split of the ids listed in ``list_file`` (see ``load_split``); subclasses with ``lists`` define it."""
        raise NotImplementedError(f"{type(self).__name__} defines neither load_split nor parse_listed_split")

    def video_path(self, video_id: str) -> Path:
        """File (or frame folder) of a video id: ``<video_dir>/<id>`` with a known extension.

        An id that would lead outside ``video_dir`` (absolute, with a ``..`` part, or through a symlink that resolves
        elsewhere) is refused with an ``UnsafeVideoIdError``: annotation files come from others, and a video id is
        the one part of them that becomes a path.
        """
        self._check_relative_id(video_id)
        path = self._candidate_path(video_id)
        if path.exists():  # a symlink (of the file, or of a folder on the way) must stay inside the video folder
            inside = self.video_dir.resolve()
            if not path.resolve().is_relative_to(inside):
                raise UnsafeVideoIdError(f"video id {video_id!r} resolves to {path.resolve()}, outside the video "
                                         f"folder {inside} (a symlink leads out of it); refused. If the files really "
                                         "live there, point data.init_args.video_dir at their folder (video_dir "
                                         "itself may be a symlink)")
        return path

    def _check_relative_id(self, video_id: str) -> None:
        if not isinstance(video_id, str) or not video_id.strip() or "\0" in video_id:
            raise UnsafeVideoIdError(f"video id {video_id!r} is not a usable file name (empty, not a string or with "
                                     "a NUL byte)")
        parts = Path(video_id).parts
        if Path(video_id).is_absolute() or ".." in parts:
            raise UnsafeVideoIdError(f"video id {video_id!r} would lead outside the video folder {self.video_dir} "
                                     "(an absolute path or a '..' part); refused: video ids are names relative to "
                                     "video_dir")

    def _candidate_path(self, video_id: str) -> Path:
        if self.reader == "frames":
            return self.video_dir / Path(video_id).stem if Path(video_id).suffix.lower() in VIDEO_EXTENSIONS \
                else self.video_dir / video_id
        direct = self.video_dir / video_id
        stem = video_id
        if direct.suffix.lower() in VIDEO_EXTENSIONS:  # DiDeMo ids carry their extension
            if direct.exists():
                return direct
            stem = direct.stem  # a re-encoded copy may have another container (.avi -> .mp4)
        for ext in VIDEO_EXTENSIONS:
            candidate = self.video_dir / f"{stem}{ext}"
            if candidate.exists():
                return candidate
        return direct if direct.suffix.lower() in VIDEO_EXTENSIONS else self.video_dir / f"{video_id}.mp4"

    def video_entry(self, video_id: str, source: Path | str) -> VideoEntry:
        """The ``VideoEntry`` of an id read from ``source``; an unsafe id (see ``video_path``) is an error naming it."""
        try:
            return VideoEntry(video_id, self.video_path(video_id))
        except UnsafeVideoIdError as exc:
            raise UnsafeVideoIdError(f"{source}: {exc}") from None

    def caption_split(self, name: str, video_ids: list[str], captions: dict[str, list[str]], source: Path | str,
                      list_file: Path, protocol: str, paragraph: bool = False,
                      video_sources: dict[str, Path] | None = None) -> Split:
        """A split from a video-id list and ``video_id -> captions``: one text per caption, or one paragraph
        (the captions joined with a space) per video. An id of the list absent from the annotations is an
        error naming both files; so is a video without captions or a caption that is not a non-empty string, naming
        the file that holds the video (``video_sources``, when the annotations span several files, else ``source``)."""
        absent = [v for v in video_ids if v not in captions]
        if absent:
            raise ValueError(f"{source}: {len(absent)} video(s) of split '{name}' ({list_file}) are absent from "
                             f"the annotations (first: {absent[:5]})")
        videos, texts = [], []
        for vid in video_ids:
            caps = captions[vid]
            where = (video_sources or {}).get(vid, source)
            if not caps:
                raise MalformedFileError(f"{where}: video {vid!r} of split '{name}' has no caption")
            for k, caption in enumerate(caps):
                if not isinstance(caption, str):
                    raise MalformedFileError(f"{where}: caption #{k} of video {vid!r} (split '{name}') is a "
                                             f"{type(caption).__name__}, not a string")
                if not caption.strip():
                    raise ValueError(f"{where}: empty caption #{k} of video {vid!r} (split '{name}'); fix or "
                                     "remove it")
            if paragraph:
                texts.append(TextEntry(vid, " ".join(c.strip() for c in caps), len(videos)))
            else:
                texts.extend(TextEntry(f"{vid}#{k}", c, len(videos)) for k, c in enumerate(caps))
            videos.append(self.video_entry(vid, list_file))
        split = Split(name, videos, texts, protocol)
        split.validate(str(source))
        return split

    # ---------------------------------------------------------------- lightning hooks
    def setup(self, stage: str) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{type(self).__name__}: data root {self.root} does not exist; set "
                                    "data.init_args.root (see the README's data preparation section)")
        if not self.video_dir.is_dir():
            raise FileNotFoundError(f"{type(self).__name__}: video_dir {self.video_dir} does not exist; set "
                                    "data.init_args.video_dir (relative to root unless absolute)")
        if stage == "fit" and self._feeds_training():
            self.resolve_train_batch()  # a world size that does not divide the global batch fails before any decoding
        self._load_manifest()
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"],
                  "predict": self._predict_splits()}[stage]
        for name in wanted:
            if name not in self.splits:
                split = self._drop_missing(self.load_split(name))
                aux = self._aux_for(split)
                self.splits[name] = split
                self._video_sources[name] = VideoSource(split, self.reader, self.image_size, self.num_frames,
                                                         self.on_decode_error, aux, self.narration_match,
                                                         self.augmented_views if name == "train" else 0,
                                                         self.augmentations)
                self._text_sources[name] = TextSource()
        if stage == "fit" and not self.feature_cache:
            # with the feature cache the model may serve uniformly sampled cached frames instead; decided in
            # the cache callback's setup, so that case is checked in train_dataloader (still before the first item)
            self._check_narration_sampling()
        if stage == "predict":
            seen: set[str] = set()
            self.predict_videos = []
            for name in self._predict_splits():
                for v in self.splits[name].videos:
                    if v.video_id not in seen:
                        seen.add(v.video_id)
                        self.predict_videos.append(v)

    def _feeds_training(self) -> bool:
        """Whether this module's training loader is the run's: not when another data module wraps it (DG-DPO's
        ``PreferenceDataModule`` trains on its own pairs, so a global batch inherited from the wrapped dataset's config
        must not fail the run)."""
        trainer = self._trainer_or_none()
        return trainer is None or getattr(trainer, "datamodule", self) is self

    def resolve_train_batch(self) -> TrainBatch:
        """The training batch on this run's processes (``datamodules/batching.py``), kept in ``train_batch``."""
        trainer = self._trainer_or_none()
        devices, nodes = (trainer.num_devices, trainer.num_nodes) if trainer is not None else (1, 1)
        self.train_batch = resolve_train_batch(self.batch_size, self.global_batch_size, devices, nodes,
                                               "data.init_args")
        return self.train_batch

    def _predict_splits(self) -> list[str]:
        return ["train", "val", "test"] if self.predict_split == "all" else [self.predict_split]

    def _load_manifest(self) -> None:
        if self._manifest is not None or self.manifest_path is None:
            return
        if not self.manifest_path.is_file():
            if self.hparams.get("manifest") not in (None, MANIFEST_NAME):
                raise FileNotFoundError(f"{type(self).__name__}: manifest {self.manifest_path} not found; run "
                                        f"python -m experiments.prepare {self.name} --videos ... --annotations "
                                        f"{self.root} or set data.init_args.manifest: null")
            return
        data = read_manifest(self.manifest_path)
        described = [Path(d).resolve() for d in (data.get("video_dir"), data.get("frames_dir")) if d]
        if self.video_dir.resolve() not in described:
            log.warning("manifest %s describes %s, not this video_dir %s: ignored", self.manifest_path,
                        [str(d) for d in described], self.video_dir)
            return
        self._manifest = data

    def _aux_for(self, split: Split) -> dict[str, CaptionStore]:
        """Load the configured aux-caption stores and require a record for every video of the split."""
        stores = {}
        for name, path in self.aux_captions.items():
            if name not in self._aux_stores:
                self._aux_stores[name] = CaptionStore.load(path, name)
            store = self._aux_stores[name]
            store.require(v.video_id for v in split.videos)
            stores[name] = store
        return stores

    def _drop_missing(self, split: Split) -> Split:
        """Apply the missing-video policy: fail past the threshold, else drop and record the ids.

        A video is missing when its file (frame folder) is absent, or when the manifest marks it unreadable.
        """
        statuses = (self._manifest or {}).get("videos", {})
        unreadable = {v.video_id for v in split.videos if statuses.get(v.video_id, {}).get("status") == "unreadable"}
        present = [v.path.exists() and v.video_id not in unreadable for v in split.videos]
        missing = [v.video_id for v, ok in zip(split.videos, present, strict=True) if not ok]
        split.info["num_videos_listed"] = len(split.videos)
        split.info["num_videos_missing"] = len(missing)
        if unreadable:
            split.info["num_videos_unreadable"] = len(unreadable)
        if not missing:
            return split
        fraction = len(missing) / len(split.videos)
        if fraction > self.max_missing_fraction:
            hint = self._layout_hint()
            manifest = (f"manifest: {self.manifest_path}" if self._manifest is not None else
                        f"no manifest; write one with: python -m experiments.prepare {self.name} --videos "
                        f"{self.video_dir} --annotations {self.root}")
            raise FileNotFoundError(
                f"{type(self).__name__}: {len(missing)} of {len(split.videos)} videos of split '{split.name}' "
                f"are missing or unreadable under {self.video_dir} (first: {missing[:5]}); allowed fraction is "
                f"{self.max_missing_fraction} (data.init_args.max_missing_fraction). {manifest}.{hint}")
        log.warning("%s: %d videos of split '%s' missing; evaluating on the remaining %d (ids recorded in "
                    "metrics.json)", type(self).__name__, len(missing), split.name, len(split.videos) - len(missing))
        keep = [i for i, ok in enumerate(present) if ok]
        remap = {old: new for new, old in enumerate(keep)}
        texts = [TextEntry(t.text_id, t.text, remap[t.video]) for t in split.texts if t.video in remap]
        split.info["missing_video_ids"] = missing
        split.info["num_texts_dropped_with_missing_videos"] = len(split.texts) - len(texts)
        return Split(split.name, [split.videos[i] for i in keep], texts, split.protocol, split.info)

    def _layout_hint(self) -> str:
        """When nothing matches, say what *is* in ``video_dir`` (flat frames, videos under reader 'frames')."""
        if not self.video_dir.is_dir():
            return ""
        children = list(self.video_dir.iterdir())[:2000]
        images = sum(p.suffix.lower() in IMAGE_EXTENSIONS for p in children)
        videos = sum(p.suffix.lower() in VIDEO_EXTENSIONS for p in children)
        if self.reader == "frames":
            if images:
                return (f" Wrong frame-folder layout: reader 'frames' expects <video_dir>/<video_id>/<n>.jpg, but "
                        f"{self.video_dir} holds {images} image files directly")
            if videos:
                return f" {self.video_dir} holds video files: use reader 'decord' or 'pyav', not 'frames'"
        elif not videos and any(p.is_dir() for p in children):
            return f" {self.video_dir} holds folders, not video files: frame folders need reader 'frames'"
        return ""

    def _loader_options(self) -> dict[str, Any]:
        # A private generator: creating a loader's iterator draws the workers' base seed from it, never from
        # the global torch RNG, so how often iterators are created (persistent workers, a resumed run) does
        # not shift the model's dropout stream.
        return {"num_workers": self.num_workers, "pin_memory": torch.cuda.is_available(),
                "persistent_workers": self.num_workers > 0, "generator": torch.Generator().manual_seed(default_seed())}

    def _loader(self, dataset: Dataset, batch_size: int, collate: Any) -> DataLoader:
        """An evaluation loader, in dataset order (Lightning shards it with a ``DistributedSampler``)."""
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, **self._loader_options())

    def _check_narration_sampling(self) -> None:
        """Refuse a training set-up whose first item could not be aligned with the narration.

        A captioner's narration names the frames it captioned (``frame_indices``, sampled uniformly at
        ``predict_num_frames``). Random-offset training picks other frames, and ``exact`` matching then fails on
        the first training item, minutes into a run; this says so before any item is loaded.
        """
        store = self._aux_stores.get("narration")
        if store is None or self.train_sampling != "random_offset" or self.narration_match != "exact":
            return
        if not any(record.frame_indices is not None for record in store.values()):
            return  # captions used in order, one per fed frame: any sampling aligns
        raise ValueError(
            f"{type(self).__name__}: the narration {store.path} (data.init_args.aux_captions.narration) records the "
            "frame_indices it captioned, but training samples frames at random offsets "
            "(data.init_args.train_sampling: random_offset) and data.init_args.narration_match: exact requires "
            "every fed frame to be narrated, so the first training item would fail. Either set "
            "data.init_args.train_sampling: uniform (NarVid's own training sampling, as in "
            "configs/experiments/narvid_*.yaml), or set data.init_args.narration_match: nearest (each randomly "
            "offset frame takes the caption of the nearest narrated frame)")

    def train_dataloader(self) -> DataLoader:
        """Training pairs in a (seed, epoch)-determined order that a resumed run replays exactly.

        See ``datamodules.sampling``: each rank takes its ``DistributedSampler`` shard, each item carries its
        own augmentation seed, and the data module checkpoints the loader's position (``state_dict``) so a
        mid-epoch resume skips the batches the interrupted epoch had trained on.
        """
        split = self.splits["train"]
        cached_frames = self._video_sources["train"].cache is not None
        if not cached_frames:
            self._check_narration_sampling()
        dataset = PairDataset(split, self._video_sources["train"], self._text_sources["train"],
                              self.one_caption_per_video, "uniform" if cached_frames else self.train_sampling)
        trainer = self._trainer_or_none()
        per_device = self.resolve_train_batch().per_device_batch_size
        sampler = ResumableSampler(dataset, num_replicas=trainer.world_size if trainer is not None else 1,
                                   rank=trainer.global_rank if trainer is not None else 0, shuffle=True)
        # drop_last keeps every contrastive batch full (a 3-sample last batch is a much easier task)
        loader = ResumableDataLoader(dataset, per_device, sampler, progress=self._train_progress,
                                     collate_fn=collate_pairs, drop_last=len(sampler) > per_device,
                                     **self._loader_options())
        if self._train_loader_state is not None:  # a resumed run: continue where the checkpoint was written
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """Checkpointed with the run: the training data position and the training videos that failed to decode
        so far (a resumed run reports the whole run's; evaluation failures are recounted at every evaluation)."""
        train_failed = self.decode_failures.get("train", {})
        state: dict[str, Any] = {"train_decode_failures": {int(i): list(v) for i, v in train_failed.items()}}
        if self._train_loader is not None:
            state["train_loader"] = self._train_loader.state_dict()
        if self.train_batch is not None:
            state["train_batch"] = self.train_batch.facts()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # restored before the fit loop builds the train loader, which then starts at the recorded position
        self._train_loader_state = state_dict.get("train_loader")
        # the batch the checkpoint was trained with: what a test-only run of it reports (a resumed fit resolves its own)
        self._checkpoint_train_batch = state_dict.get("train_batch")
        failed = state_dict.get("train_decode_failures", {})
        self.decode_failures.setdefault("train", {}).update({int(i): (v[0], v[1]) for i, v in failed.items()})

    def _train_progress(self) -> TrainProgress:
        """Batches of the current epoch the training loop has trained on: the counter Lightning itself
        resumes ``batch_idx`` from (not the loader's, which runs ahead by the prefetched batches)."""
        trainer = self._trainer_or_none()
        if trainer is None:
            return TrainProgress(0, False)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return TrainProgress(done, done >= trainer.num_training_batches)

    def _eval_loaders(self, split_name: str) -> list[DataLoader]:
        split = self.splits[split_name]
        return [self._loader(TextDataset(split, self._text_sources[split_name]), self.eval_batch_size, collate_texts),
                self._loader(VideoDataset(split, self._video_sources[split_name]), self.eval_batch_size,
                             collate_videos)]

    def video_dataset(self, split_name: str) -> VideoDataset:
        """A set-up split's videos in split order, uniformly sampled as evaluation reads them: cached trunk features
        when the feature cache serves them (a frozen video trunk), decoded frames otherwise."""
        source = self._video_sources.get(split_name)
        if source is None:
            raise RuntimeError(f"split '{split_name}' is not set up (setup stages: fit -> train/val, test -> test)")
        return VideoDataset(self.splits[split_name], source)

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

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the videos that failed to decode (workers drop them from the batch; see ``collate_videos``)."""
        video = batch.video if isinstance(batch, PairBatch) else batch
        if isinstance(video, VideoBatch) and video.failed:
            stage = getattr(getattr(self._trainer_or_none(), "state", None), "stage", None)
            split = stage_split(getattr(stage, "value", str(stage)))
            seen = self.decode_failures.setdefault(split, {})
            for index, video_id, error in video.failed:
                if index not in seen:
                    log.warning("%s: video %s of split '%s' failed to decode (%s); skipped and counted",
                                type(self).__name__, video_id, split, error)
                seen[index] = (video_id, error)
        return batch

    def _trainer_or_none(self) -> Any:
        try:
            return self.trainer
        except RuntimeError:
            return None

    # ---------------------------------------------------------------- for the model
    def eval_index(self, stage: str) -> EvalIndex:
        """Ids and the text->video map of the split evaluated in ``stage`` (``val`` or ``test``)."""
        split = self.splits[eval_split(stage)]
        return EvalIndex(text_ids=[t.text_id for t in split.texts], texts=[t.text for t in split.texts],
                         text_to_video=[t.video for t in split.texts],
                         video_ids=[v.video_id for v in split.videos])

    def query_bank(self, size: int | None, seed: int = 0) -> Split:
        """QB-Norm's query bank: up to ``size`` texts of the *training* split (``None``: all of them).

        A draw of ``size`` texts without replacement from ``numpy.random.default_rng(seed)``, kept in split order,
        so the same data and arguments always give the same bank. Only annotations are read (no video has to be on
        disk); the split is parsed once and not registered in ``splits``, so a test run's collectives and facts are
        unchanged. The returned ``Split`` has every training video and only the bank's texts (``texts[i].video``
        still points into ``videos``); it is not meant for ``validate``.
        """
        if self._bank_source is None:
            self._bank_source = self.splits["train"] if "train" in self.splits else self.load_split("train")
        source = self._bank_source
        texts = source.texts
        if size is not None:
            if size < 1:
                raise ValueError(f"query bank size must be positive or None (every training text), got {size}")
            if size < len(texts):
                chosen = np.sort(np.random.default_rng(seed).choice(len(texts), size=size, replace=False))
                texts = [texts[i] for i in chosen.tolist()]
        info = {"split": source.name, "size": len(texts), "available": len(source.texts), "seed": seed}
        return Split(source.name, source.videos, list(texts), source.protocol, info)

    def query_bank_dataloader(self, bank: Split, num_replicas: int = 1, rank: int = 0) -> DataLoader:
        """The bank's texts as ``TextBatch``es (``TextBatch.index`` = position in ``bank.texts``), in bank order.

        Under DDP each rank reads its ``DistributedSampler`` shard (the last one padded with repeats, as the
        evaluation loaders are); the model gathers the features and drops the repeats by index. The texts are
        always encoded live (a frozen-feature cache holds the evaluated splits' texts, not the training ones).
        """
        dataset = TextDataset(bank, TextSource())
        sampler = (DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
                   if num_replicas > 1 else None)
        # a private generator: iterating a loader draws its base seed from the global torch RNG otherwise
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, sampler=sampler,
                          collate_fn=collate_texts, num_workers=0, generator=torch.Generator())

    def eval_failures(self, stage: str) -> list[int]:
        """Dataset indices of the videos of the evaluated split that failed to decode, on any rank.

        The model calls this at the end of evaluation (every rank: it is a collective under DDP); those
        videos and their texts are left out of the scores and ``describe`` reports them.
        """
        name = eval_split(stage)
        failed = self._failures_on_any_rank(name)
        self._eval_failed[name] = failed
        if "train" in self.splits:  # the same collective point tells rank 0 (which writes metrics.json) about
            self._failures_on_any_rank("train")  # the training videos every rank failed to decode
        return failed

    def _failures_on_any_rank(self, split_name: str) -> list[int]:
        """Dataset indices of the split's videos that failed to decode on any rank (a collective under DDP);
        the ones other ranks saw are added to this process's ``decode_failures``."""
        videos = self.splits[split_name].videos
        seen = self.decode_failures.setdefault(split_name, {})
        mask = torch.zeros(len(videos), dtype=torch.float32)
        for index in seen:
            mask[index] = 1.0
        trainer = self._trainer_or_none()
        if trainer is not None and trainer.world_size > 1:
            mask = trainer.strategy.reduce(mask.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        failed = torch.nonzero(mask > 0).flatten().tolist()
        for index in failed:
            seen.setdefault(index, (videos[index].video_id, "failed to decode on another rank"))
        return failed

    def describe(self, stage: str) -> dict[str, Any]:
        """Facts recorded in metrics.json next to the numbers (protocol, split sizes, missing/failed videos)."""
        name = eval_split(stage)
        split = self.splits[name]
        val = self.splits.get("val")
        if val is not None:
            selection = val.info.get("model_selection", f"split '{val.name}'")
        else:
            selection = "unknown (this run had no validation split; see the fit run)"
        failed = self._eval_failed.get(name, sorted(self.decode_failures.get(name, {})))
        train_failed = self.decode_failures.get("train", {})
        facts: dict[str, Any] = {
            "dataset": self.name, "model_selection": selection, "split": split.name, "protocol": split.protocol,
            "num_frames": self.num_frames, "image_size": self.image_size, "max_words": self.max_words,
            "reader": self.reader, "feature_cache": self.cache_info or None, **split.info,
            "on_decode_error": self.on_decode_error,
            "num_videos_failed": len(failed),
            "failed_video_ids": [split.videos[i].video_id for i in failed][:100],
            "num_videos_evaluated": len(split.videos) - len(failed),
            "train_decode_failures": len(train_failed),
            "train_failed_video_ids": sorted(v for v, _ in train_failed.values())[:100],
            "train_batch": self._train_batch_facts(),
        }
        if self.aux_captions:
            facts["aux_captions"] = dict(self.aux_captions)
        if self._manifest is not None:
            facts["manifest"] = str(self.manifest_path)
            facts["encoding"] = self._manifest.get("encoding")
            if self.reader == "frames":
                facts["frames_fps"] = self._manifest.get("frames_fps")
        return facts

    def _train_batch_facts(self) -> dict[str, Any] | None:
        """The global batch, world size and per-device batch the evaluated model trained with: this run's when it
        trained, else the tested checkpoint's record; None when neither is known (a checkpoint written before the
        record existed, or a test without a checkpoint)."""
        if self.train_batch is not None:
            return {**self.train_batch.facts(), "recorded_by": "this run"}
        if self._checkpoint_train_batch is not None:
            return {**self._checkpoint_train_batch, "recorded_by": "the tested checkpoint"}
        return None

    def use_feature_cache(self, cache: Any, info: dict[str, Any]) -> None:
        """Serve cached trunk outputs (``datamodules.feature_cache``) instead of frames/texts.

        ``callbacks.feature_cache.FeatureCacheCallback`` builds the cache with the model's backbone in its
        ``setup`` (under DDP only rank 0 builds); only trunks that are frozen are cached, a trainable trunk keeps
        reading frames/texts.
        """
        self.cache_info = info
        for name in self.splits:
            if cache.has_video:
                self._video_sources[name].cache = cache
            if cache.has_text:
                self._text_sources[name].cache = cache
                self._video_sources[name].text_cache = cache

    def aux_store(self, kind: str) -> CaptionStore | None:
        """The loaded auxiliary caption store of ``kind`` (None before setup loaded it, or when not configured)."""
        return self._aux_stores.get(kind)

    def aux_captions_of(self, split_name: str, video_indices: Sequence[int], kind: str) -> list[list[str]]:
        """The ``kind`` captions of videos of a split, by dataset index (``TextBatch.video_index``,
        ``VideoBatch.index``): what a method reads when a text needs its paired video's caption (conical embedding
        optimisation's supplement) or a score needs a candidate's caption by index."""
        source = self._video_sources.get(split_name)
        if source is None:
            raise RuntimeError(f"split '{split_name}' is not set up (setup stages: fit -> train/val, test -> test)")
        if kind not in source.aux:
            raise KeyError(f"no {kind!r} captions configured: set data.init_args.aux_captions: "
                           f"{{{kind}: <{kind}.jsonl>}}")
        store = source.aux[kind]
        videos = self.splits[split_name].videos
        out = []
        for i in video_indices:
            record = store.get(videos[int(i)].video_id)
            if record is None:
                store.require([videos[int(i)].video_id])
            out.append(list(record.captions))
        return out

    def video_texts(self, video_id: str) -> list[str]:
        """Every annotated text of a video in the set-up splits, in split order (empty if it has none)."""
        return [text for _, _, text in self.video_text_entries(video_id)]

    def video_text_entries(self, video_id: str) -> list[tuple[str, str, str]]:
        """``(split, text id, text)`` of every annotated text of a video in the set-up splits, in split order."""
        key = tuple(sorted(self.splits))
        if self._texts_by_video is None or self._texts_by_video[0] != key:  # built once per set of set-up splits
            table: dict[str, list[tuple[str, str, str]]] = {}
            for name, split in self.splits.items():
                for text in split.texts:
                    table.setdefault(split.videos[text.video].video_id, []).append((name, text.text_id, text.text))
            self._texts_by_video = (key, table)
        return list(self._texts_by_video[1].get(video_id, []))

    def aux_texts(self, split_name: str) -> set[str]:
        """Every auxiliary caption of a split's videos (the feature cache encodes them with the queries)."""
        source = self._video_sources.get(split_name)
        if source is None:
            return set()
        texts: set[str] = set()
        for store in source.aux.values():
            for video in self.splits[split_name].videos:
                record = store.get(video.video_id)
                if record is not None:
                    texts.update(record.captions)
        return texts
