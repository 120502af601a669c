"""Frozen-feature cache: trunk outputs computed once per (backbone, weights, preprocessing) fingerprint.

When a backbone's trunks are frozen (``PretrainedTwoTower`` by default), their outputs are a pure
function of the input frames/texts. Ablation runs and seeds then share one pass of decoding and
trunk inference; training touches only heads and method modules.

Layout: ``<cache_dir>/<sha>/fingerprint.json`` and, per split, ``video_<split>_<ids-sha>.npy`` (fp16
``[N, T, F]``), ``video_<split>_<ids-sha>.mask.npy`` and ``text_<split>_<texts-sha>.npy`` (fp16
``[N, L, H]``) with its mask and a JSON row index. Files are written to a temporary name and renamed,
so an interrupted build never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.atomic import save_npy_atomic
from datamodules.augment import apply_clip_transform, draw_transforms, view_generator
from datamodules.batch import normalize_frames
from datamodules.random_state import preserved_random_state

if TYPE_CHECKING:
    from datamodules.base import VideoTextDataModule

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]



class CachedFeatures:
    """Lookup of cached trunk outputs by video id and by text string."""

    def __init__(self) -> None:
        self._video_rows: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        self._text_rows: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        self._augmented_rows: dict[str, tuple[np.ndarray, list[str], int]] = {}

    @property
    def has_augmented(self) -> bool:
        return bool(self._augmented_rows)

    def add_augmented(self, ids: list[str], feats: np.ndarray, names: list[list[str]]) -> None:
        for i, vid in enumerate(ids):
            self._augmented_rows[vid] = (feats, names[i], i)

    def augmented(self, video_id: str) -> tuple[Tensor, list[str]]:
        """The pool of augmented views of a training video, ``[P, T, F]``, and each view's transform."""
        feats, names, i = self._augmented_rows[video_id]
        return torch.from_numpy(np.asarray(feats[i], dtype=np.float32)), list(names)

    @property
    def has_video(self) -> bool:
        return bool(self._video_rows)

    @property
    def has_text(self) -> bool:
        return bool(self._text_rows)

    def add_videos(self, ids: list[str], feats: np.ndarray, mask: np.ndarray) -> None:
        for i, vid in enumerate(ids):
            self._video_rows[vid] = (feats, mask, i)

    def add_texts(self, texts: list[str], feats: np.ndarray, mask: np.ndarray) -> None:
        for i, text in enumerate(texts):
            self._text_rows[text] = (feats, mask, i)

    def video(self, video_id: str) -> tuple[Tensor, Tensor]:
        feats, mask, i = self._video_rows[video_id]
        return torch.from_numpy(np.asarray(feats[i], dtype=np.float32)), torch.from_numpy(np.asarray(mask[i]))

    def text(self, text: str) -> tuple[Tensor, Tensor]:
        feats, mask, i = self._text_rows[text]
        return torch.from_numpy(np.asarray(feats[i], dtype=np.float32)), torch.from_numpy(np.asarray(mask[i]))


@torch.no_grad()
def _encode_videos(dm: VideoTextDataModule, split_name: str, backbone: Any, device: torch.device,
                   views: dict[str, list[str]] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Trunk features ``[N, T, F]`` of a split's uniformly sampled clips and their masks; with ``views`` (video id ->
    one transform name per view) also ``[N, P, T, F]`` of the same clips under each view's transform (one decode)."""
    from datamodules.collate import collate_videos
    from datamodules.datasets import VideoDataset, VideoSource

    split = dm.splits[split_name]
    source = VideoSource(split, dm.reader, dm.image_size, dm.num_frames)
    # a private generator: building the cache must not consume the global torch RNG, or the first run of a
    # config (which builds it) would train with another dropout stream than every later run (which loads it)
    loader = DataLoader(VideoDataset(split, source), batch_size=max(1, dm.eval_batch_size // 2),
                        num_workers=dm.num_workers, collate_fn=collate_videos, generator=torch.Generator())
    feats: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    augmented: list[np.ndarray] = []

    def trunk(uint8_frames: Tensor, mask: Tensor) -> np.ndarray:
        frames = normalize_frames(uint8_frames.to(device), backbone.image_mean, backbone.image_std)
        b, t = frames.shape[:2]
        out = backbone.frame_trunk(frames.flatten(0, 1)).view(b, t, -1)
        return (out * mask.to(device).unsqueeze(-1)).half().cpu().numpy()

    for batch in _progress(loader, f"caching {split_name} video features"):
        feats.append(trunk(batch.frames, batch.mask))
        masks.append(batch.mask.numpy())
        if views is not None:
            names = [views[vid] for vid in batch.video_ids]
            per_view = [trunk(torch.stack([apply_clip_transform(clip, row[p]) for clip, row in
                                           zip(batch.frames, names, strict=True)]), batch.mask)
                        for p in range(len(names[0]))]
            augmented.append(np.stack(per_view, axis=1))
    return np.concatenate(feats), np.concatenate(masks), np.concatenate(augmented) if views is not None else None


@torch.no_grad()
def _encode_texts(texts: list[str], backbone: Any, device: torch.device, batch_size: int = 256,
                  ) -> tuple[np.ndarray, np.ndarray]:
    # Length-sorted batches trimmed to their longest row: the trunk's outputs at real tokens do not
    # depend on padding, and short batches run several times faster than padding everything to L.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    feats: np.ndarray | None = None
    masks = np.zeros((len(texts), backbone.max_words), dtype=bool)
    for start in _progress(range(0, len(texts), batch_size), "caching text features"):
        rows = order[start:start + batch_size]
        tokens = backbone.tokenize([texts[i] for i in rows])
        length = int(tokens["attention_mask"].sum(1).max())
        tokens = {k: v[:, :length].to(device) for k, v in tokens.items()}
        hidden, mask = backbone.text_trunk(tokens)
        if feats is None:
            feats = np.zeros((len(texts), backbone.max_words, hidden.shape[-1]), dtype=np.float16)
        feats[rows, :length] = (hidden * mask.unsqueeze(-1)).half().cpu().numpy()
        masks[rows, :length] = mask.cpu().numpy()
    assert feats is not None
    return feats, masks


def _augmented_views(dm: VideoTextDataModule, ids: list[str]) -> dict[str, list[str]]:
    """Each training video's pool of ``augmentation_pool`` transforms, drawn from (seed, video id)."""
    return {vid: draw_transforms(view_generator(dm.augmentation_seed, vid), dm.augmentations, dm.augmentation_pool)
            for vid in ids}


def _progress(iterable: Any, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, leave=False)
    except ImportError:  # pragma: no cover - tqdm ships with lightning
        return iterable


def build_or_load_cache(dm: VideoTextDataModule, backbone: Any, device: torch.device | None = None,
                        build: bool = True, texts: bool = True) -> tuple[CachedFeatures, dict[str, Any]]:
    """Load the cache for every split ``dm`` has set up, computing what is missing when ``build``.

    ``texts: false`` leaves the text states out even for a frozen text trunk: for a model that runs that trunk live
    anyway (CaRe-DPO's retriever with role embeddings adds its role vectors at the trunk's input).

    Under DDP the model calls this with ``build=True`` on rank 0 only, then a barrier, then on the
    other ranks with ``build=False`` (they only read).

    The global random state (python, numpy, torch, CUDA) is the same after this call as before it, whether the cache
    was built or found: the run that builds it trains exactly like the runs that reuse it.
    """
    with preserved_random_state():
        return _build_or_load_cache(dm, backbone, device, build, texts)


def _build_or_load_cache(dm: VideoTextDataModule, backbone: Any, device: torch.device | None, build: bool,
                         texts: bool) -> tuple[CachedFeatures, dict[str, Any]]:
    device = device or next(backbone.parameters()).device
    fingerprint = {"version": CACHE_VERSION, "backbone": backbone.trunk_fingerprint(),
                   "data": {"dataset": dm.name, "root": str(dm.root.resolve()), "num_frames": dm.num_frames,
                            "image_size": dm.image_size, "reader": dm.reader, "sampling": "uniform"}}
    directory = dm.cache_dir / _sha(fingerprint)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fingerprint.json").write_text(json.dumps(fingerprint, indent=2, default=str))
    cache = CachedFeatures()
    info: dict[str, Any] = {"dir": str(directory), "video": backbone.video_trunk_frozen,
                            "text": texts and backbone.text_trunk_frozen, "built_s": 0.0}
    was_training = backbone.training
    backbone.eval()
    started = time.perf_counter()
    for name, split in dm.splits.items():
        if backbone.video_trunk_frozen:
            ids = [v.video_id for v in split.videos]
            path = directory / f"video_{name}_{_sha(ids)}.npy"
            mask_path = path.with_suffix(".mask.npy")
            # the training split's fixed pool of augmented views (data augmented_views > 0): the same decode
            views = _augmented_views(dm, ids) if name == "train" and getattr(dm, "augmented_views", 0) > 0 else None
            aug_path = (directory / f"video_{name}_aug_{_sha([ids, views])}.npy") if views is not None else None
            missing = not (path.exists() and mask_path.exists()) or (aug_path is not None and not aug_path.exists())
            if missing:
                if not build:
                    raise FileNotFoundError(f"feature cache {path} (or its augmented views) was not built by rank 0")
                feats, mask, augmented = _encode_videos(dm, name, backbone, device, views)
                if aug_path is not None:
                    save_npy_atomic(aug_path, augmented)
                save_npy_atomic(mask_path, mask)
                save_npy_atomic(path, feats)
            cache.add_videos(ids, np.load(path, mmap_mode="r"), np.load(mask_path))
            if aug_path is not None:
                cache.add_augmented(ids, np.load(aug_path, mmap_mode="r"), [views[v] for v in ids])
        if info["text"]:
            aux = dm.aux_texts(name) if hasattr(dm, "aux_texts") else set()
            texts = sorted({t.text for t in split.texts} | aux)
            path = directory / f"text_{name}_{_sha(texts)}.npy"
            mask_path = path.with_suffix(".mask.npy")
            if not (path.exists() and mask_path.exists()):
                if not build:
                    raise FileNotFoundError(f"feature cache {path} was not built by rank 0")
                feats, mask = _encode_texts(texts, backbone, device)
                save_npy_atomic(mask_path, mask)
                save_npy_atomic(path, feats)
            cache.add_texts(texts, np.load(path, mmap_mode="r"), np.load(mask_path))
    backbone.train(was_training)
    info["built_s"] = round(time.perf_counter() - started, 2)
    log.info("feature cache ready in %s (%.1f s)", directory, info["built_s"])
    return cache, info
