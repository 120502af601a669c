"""CaRe-DPO's preference data: the store the relevance scorer writes, its two groups of pairs, and their batches.

**Store** (JSONL, one record per training video; ``experiments/care_dpo/preferences.py`` writes it)::

    {"video_id": str, "query": str,                       # the ground-truth query q of the video
     "captions": [str] * K, "ref_logprob": [float] * K,   # K sampled captions, log pi_ref(c | v) under the SFT model
     "relevance": [float] * K,                            # R(c_k | v, q) from the frozen retriever
     "neighbour_id": str,                                 # a visually similar training video v'
     "neighbour_captions": [str] * K, "neighbour_ref_logprob": [float] * K,
     "neighbour_relevance": [float] * K}                  # R of v' carrying c'_k, for *this* video's query q

**Pairs** (the Dual-Group DPO reconstruction of ``research/methods.md`` §4.3; CaRe-DPO's exact construction is not
public):

* ``intra`` (same video): ``(v, c_best) ≻ (v, c_worst)`` by ``relevance``; a video whose K captions all score the
  same gives no pair (counted in ``pair_counts["intra_ties"]``, never silently);
* ``inter`` (distinct video-caption pairs): ``(v, c_best) ≻ (v', c'_confuser)``, where ``c'_confuser`` is the
  neighbour's caption that makes v' most relevant to v's query q (``neighbour_relevance``) - the caption that would
  let v' steal q. Each side keeps its own visual context (x_w = v, x_l = v').

The video features of both contexts come from the frozen-feature cache of the wrapped video data module (the
captioner's video tower is frozen), so a DPO step never decodes a video.

**Sidecar** (``<store>.meta.json``, :func:`meta_path`): what made the store - the reference log-probabilities'
checkpoint, trainer precision, device and feature cache, the scorer checkpoint and the split it was selected on, the
sampled split's ids (``experiments/care_dpo/preferences.py`` writes it). DG-DPO refuses a store whose reference
log-probabilities were computed under another precision or on other video features than its own policy's, since its
DPO rewards would then not start at 0.

**Chunks** (:class:`TrainVideoChunks`): the training videos in fixed chunks, the batches of the ``predict`` runs that
sample and score the captions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.base import VideoTextDataModule
from datamodules.batch import VideoBatch, _Movable
from datamodules.batching import TrainBatch, check_batch_settings, resolve_train_batch
from datamodules.collate import collate_videos
from datamodules.datasets import VideoDataset
from datamodules.jsonl import read_jsonl_lines
from datamodules.sampling import ResumableDataLoader, ResumableSampler, SampleKey, TrainProgress

log = logging.getLogger(__name__)

Group = Literal["intra", "inter"]
GROUPS: tuple[str, ...] = ("intra", "inter")
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "intra": ("video_id", "query", "captions", "ref_logprob", "relevance"),
    "inter": ("video_id", "query", "captions", "ref_logprob", "relevance", "neighbour_id", "neighbour_captions",
              "neighbour_ref_logprob", "neighbour_relevance"),
}


@dataclass(frozen=True)
class PreferencePair:
    """One preference ``(x_w, y_w) ≻ (x_l, y_l)`` with the reference log-probabilities of both sides."""

    group: str
    query: str
    chosen_video: str
    chosen: str
    chosen_ref: float
    rejected_video: str
    rejected: str
    rejected_ref: float


META_SUFFIX = ".meta.json"


def meta_path(path: str | Path) -> Path:
    """The sidecar JSON of a samples file or a preference store: ``<file>.meta.json`` next to it."""
    path = Path(path)
    return path.with_name(path.name + META_SUFFIX)


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The sidecar of a samples file or a store (``None`` when it has none); an error naming a sidecar that is not
    a JSON object."""
    sidecar = meta_path(path)
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{sidecar} is not valid JSON ({exc}); delete it and {Path(path).name}, and rerun the "
                         "stage that writes them") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{sidecar} holds a {type(meta).__name__}, not a JSON object; delete it and rerun the stage")
    return meta


def read_preference_store(path: str | Path) -> list[dict[str, Any]]:
    """Records of a preference store, in file order; an error naming the file when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference store {path} does not exist; write it with the scoring stage "
                                "(python -m experiments.care_dpo --config <pipeline.yaml>)")
    records = [record for _, record in read_jsonl_lines(path)]
    if not records:
        raise ValueError(f"preference store {path} holds no records")
    return records


def preference_pairs(records: Sequence[dict[str, Any]], groups: Sequence[str] = GROUPS,
                     where: str = "<store>") -> tuple[list[PreferencePair], dict[str, int]]:
    """The pairs of each group in ``groups`` from store records, and their counts (``intra``, ``inter``,
    ``intra_ties``, and ``inter_conflicts``: inter pairs whose rejected side is an intra pair's chosen side). A record
    missing a key its group needs is an error naming the store, the line and the key."""
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown or not groups:
        raise ValueError(f"groups must be a non-empty subset of {list(GROUPS)}, got {list(groups)}")
    pairs: list[PreferencePair] = []
    counts = {"intra": 0, "inter": 0, "intra_ties": 0, "inter_conflicts": 0}
    for line, record in enumerate(records, start=1):
        for group in groups:
            absent = [key for key in REQUIRED_KEYS[group] if key not in record]
            if absent:
                raise KeyError(f"{where} record {line} (video {record.get('video_id')!r}) lacks {absent}, which "
                               f"the {group!r} group needs; rescore the store")
        relevance = [float(r) for r in record["relevance"]]
        if not relevance or len(relevance) != len(record["captions"]) or len(relevance) != len(record["ref_logprob"]):
            raise ValueError(f"{where} record {line} (video {record['video_id']!r}): captions, ref_logprob and "
                             "relevance must be non-empty lists of one length")
        best = max(range(len(relevance)), key=lambda k: (relevance[k], -k))
        worst = min(range(len(relevance)), key=lambda k: (relevance[k], k))
        vid, query = record["video_id"], record["query"]
        if "intra" in groups:
            if relevance[best] > relevance[worst]:
                pairs.append(PreferencePair("intra", query, vid, record["captions"][best],
                                            float(record["ref_logprob"][best]), vid, record["captions"][worst],
                                            float(record["ref_logprob"][worst])))
                counts["intra"] += 1
            else:
                counts["intra_ties"] += 1
        if "inter" in groups:
            confusion = [float(r) for r in record["neighbour_relevance"]]
            confuser = max(range(len(confusion)), key=lambda k: (confusion[k], -k))
            pairs.append(PreferencePair("inter", query, vid, record["captions"][best],
                                        float(record["ref_logprob"][best]), record["neighbour_id"],
                                        record["neighbour_captions"][confuser],
                                        float(record["neighbour_ref_logprob"][confuser])))
            counts["inter"] += 1
    # an inter pair whose rejected side is an intra pair's chosen side: the two groups pull one (video, caption) in
    # opposite directions (the neighbour's most confusable caption is often its own best one)
    chosen = {(p.chosen_video, p.chosen) for p in pairs if p.group == "intra"}
    counts["inter_conflicts"] = sum((p.rejected_video, p.rejected) in chosen for p in pairs if p.group == "inter")
    return pairs, counts


@dataclass
class PreferenceBatch(_Movable):
    """A batch of preference pairs with the cached video-trunk features of both contexts.

    Attributes:
        group: ``intra`` or ``inter`` per pair.
        chosen_features / rejected_features: ``[B, T, F]`` frozen video-trunk features of ``x_w`` / ``x_l``.
        chosen_mask / rejected_mask: ``[B, T]`` real frames.
        chosen / rejected: the captions ``y_w`` / ``y_l``.
        chosen_ref / rejected_ref: ``[B]`` ``log pi_ref`` of each side (computed once by the sampling stage).
        chosen_ids / rejected_ids: the video ids of the two contexts.
    """

    group: list[str]
    chosen_features: Tensor
    chosen_mask: Tensor
    rejected_features: Tensor
    rejected_mask: Tensor
    chosen: list[str]
    rejected: list[str]
    chosen_ref: Tensor
    rejected_ref: Tensor
    chosen_ids: list[str]
    rejected_ids: list[str]

    def __len__(self) -> int:
        return len(self.group)


class _PairDataset(Dataset):
    def __init__(self, pairs: list[PreferencePair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: SampleKey | int) -> PreferencePair:
        return self.pairs[key.index if isinstance(key, SampleKey) else key]


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs for DG-DPO training; validation and test are the wrapped video data module's.

    Args:
        videos: the video-text data module the store was sampled from (its ``feature_cache`` must be on: the
            pairs' contexts are read from the frozen video-trunk cache).
        store: the preference store (JSONL, see the module docstring), relative to the working directory.
        groups: which groups' pairs to train on (``intra``, ``inter`` or both).
        batch_size: pairs per step and device (``global_batch_size`` unset; 16 when neither is set).
        global_batch_size: pairs per optimiser step over all processes (``batch_size`` unset), split over devices x
            nodes when the run starts (``datamodules/batching.py``): DDP averages the processes' gradients, so this is
            the batch the optimiser sees whatever the number of GPUs.
    """

    def __init__(self, videos: VideoTextDataModule, store: str, groups: Sequence[Group] = GROUPS,
                 batch_size: int | None = None, global_batch_size: int | None = None) -> None:
        super().__init__()
        check_batch_settings(batch_size, global_batch_size, "data.init_args")
        if not getattr(videos, "feature_cache", False):
            raise ValueError("PreferenceDataModule reads the pairs' video features from the frozen-feature cache: set "
                             "data.init_args.videos.init_args.feature_cache: true")
        self.videos = videos
        self.store = Path(store)
        self.groups = tuple(groups)
        self.batch_size = batch_size  # as configured; the run's batch is ``train_batch``
        self.global_batch_size = global_batch_size
        self.train_batch: TrainBatch | None = None
        self.pairs: list[PreferencePair] = []
        self.pair_counts: dict[str, int] = {}
        self._cache: Any = None
        self._meta: dict[str, Any] | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, Any] | None = None

    # the frozen-feature cache callback builds the cache on the wrapped module and hands it back here
    feature_cache = True

    # ---------------------------------------------------------------- lineage (``datamodules/lineage.py``)
    @property
    def splits(self) -> dict[str, Any]:
        """The wrapped module's splits: DG-DPO trains on its training videos and validates on its validation split."""
        return self.videos.splits

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.videos.name

    def load_split(self, split: str) -> Any:
        return self.videos.load_split(split)

    def lineage_upstream(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The preference store's lineage (its labels: which scorer, selected on which split; the samples' policy),
        which joins the lineage of the DG-DPO fit that trains on it."""
        from datamodules.lineage import read_sidecar

        lineage = read_sidecar(self.store)
        if lineage is None:
            return [], [f"preference store {self.store.name} has no lineage record (scored before lineage was "
                        "recorded); score it again with python -m experiments.care_dpo"]
        return [lineage], []

    @property
    def feature_source(self) -> VideoTextDataModule:
        return self.videos

    def use_feature_cache(self, cache: Any, info: dict[str, Any]) -> None:
        reference = (self._meta or {}).get("reference") or {}
        if "feature_cache" in reference and reference["feature_cache"] != Path(info["dir"]).name:
            # the reference log-probabilities were computed from other video features than the policy reads here
            source = (f"the feature cache {reference['feature_cache']!r}" if reference["feature_cache"]
                      else "decoded frames (no feature cache)")
            raise ValueError(f"{self.store}: its reference log-probabilities were computed from {source} "
                             f"({meta_path(self.store)}) but DG-DPO reads the cache {info['dir']}; sample with the "
                             "data and video tower DG-DPO uses (root, num_frames, image_size, reader, feature_cache: "
                             "true) so that its DPO rewards start at 0")
        self._cache = cache
        self.videos.use_feature_cache(cache, info)

    def prepare_data(self) -> None:
        self.videos.prepare_data()

    def resolve_train_batch(self) -> TrainBatch:
        """The pairs per step on this run's processes, kept in ``train_batch``."""
        self.train_batch = resolve_train_batch(self.batch_size, self.global_batch_size, self.trainer.num_devices,
                                               self.trainer.num_nodes, "data.init_args", default=16)
        return self.train_batch

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.resolve_train_batch()  # a world size that does not divide the global batch fails first
        self.videos.trainer = self.trainer
        self.videos.setup(stage)
        if stage == "fit" and not self.pairs:
            self.pairs, self.pair_counts = preference_pairs(read_preference_store(self.store), self.groups,
                                                            str(self.store))
            self._meta = read_meta(self.store)
            self._check_reference_precision()
            train_ids = {v.video_id for v in self.videos.splits["train"].videos}
            used = {p.chosen_video for p in self.pairs} | {p.rejected_video for p in self.pairs}
            outside = sorted(used - train_ids)
            if outside:
                raise ValueError(f"{self.store}: videos {outside[:5]} are not in the training split of "
                                 f"{type(self.videos).__name__}; the store belongs to other data settings")
            if not self.pairs:
                raise ValueError(f"{self.store}: no pairs for groups {list(self.groups)} ({self.pair_counts})")

    def _check_reference_precision(self) -> None:
        """The store's reference log-probabilities must come from the precision this run trains in: at the first
        step the policy is the reference, and its DPO rewards are 0 only if both were computed alike."""
        recorded = ((self._meta or {}).get("reference") or {}).get("precision")
        if recorded is None:
            log.warning("%s: no reference precision in its sidecar %s, so nothing checks that its reference "
                        "log-probabilities were computed under this run's precision (sample and score again with "
                        "python -m experiments.care_dpo to record it)", self.store, meta_path(self.store).name)
            return
        precision = str(self.trainer.precision)
        if recorded != precision:
            raise ValueError(f"{self.store}: the reference log-probabilities were computed under precision "
                             f"{recorded!r} but DG-DPO trains under {precision!r}, so its DPO rewards would not start "
                             f"at 0; sample under {precision!r} (the sampling stage's trainer.precision) or train "
                             f"under {recorded!r}")

    def _collate(self, pairs: list[PreferencePair]) -> PreferenceBatch:
        if self._cache is None:
            raise RuntimeError("PreferenceDataModule has no feature cache yet (the model's FeatureCacheCallback "
                               "builds it in setup)")
        chosen = [self._cache.video(p.chosen_video) for p in pairs]
        rejected = [self._cache.video(p.rejected_video) for p in pairs]
        return PreferenceBatch(
            group=[p.group for p in pairs],
            chosen_features=torch.stack([f for f, _ in chosen]), chosen_mask=torch.stack([m for _, m in chosen]).bool(),
            rejected_features=torch.stack([f for f, _ in rejected]),
            rejected_mask=torch.stack([m for _, m in rejected]).bool(),
            chosen=[p.chosen for p in pairs], rejected=[p.rejected for p in pairs],
            chosen_ref=torch.tensor([p.chosen_ref for p in pairs]),
            rejected_ref=torch.tensor([p.rejected_ref for p in pairs]),
            chosen_ids=[p.chosen_video for p in pairs], rejected_ids=[p.rejected_video for p in pairs])

    def train_dataloader(self) -> DataLoader:
        """Pairs in a seeded order per epoch; the position is checkpointed, so a killed run resumes mid-epoch."""
        trainer = self.trainer
        dataset = _PairDataset(self.pairs)
        sampler = ResumableSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=True)
        per_device = self.resolve_train_batch().per_device_batch_size
        loader = ResumableDataLoader(dataset, per_device, sampler, progress=self._train_progress,
                                     collate_fn=self._collate, num_workers=0)
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        self._train_loader = loader
        return loader

    def _train_progress(self) -> TrainProgress:
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return TrainProgress(done, done >= self.trainer.num_training_batches)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self._train_loader is not None:
            state["train_loader"] = self._train_loader.state_dict()
        if self.train_batch is not None:
            state["train_batch"] = self.train_batch.facts()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_loader_state = state_dict.get("train_loader")

    def val_dataloader(self) -> Any:
        return self.videos.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.videos.test_dataloader()


class _ChunkDataset(Dataset):
    """Item ``i``: the videos of chunk ``i`` as one ``VideoBatch`` (cached features or decoded frames)."""

    def __init__(self, videos: VideoDataset, chunks: list[list[int]]) -> None:
        self.videos = videos
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> VideoBatch:
        return collate_videos([self.videos[j] for j in self.chunks[i]])


def _one_chunk(items: list[VideoBatch]) -> VideoBatch:
    """The DataLoader's ``batch_size`` is 1: each item is already a whole chunk."""
    return items[0]


class TrainVideoChunks(L.LightningDataModule):
    """The training split's videos in fixed chunks, the batches of CaRe-DPO's ``predict`` stages that sample captions
    and score them (``experiments/care_dpo/preferences.py``: ``CaptionSampler``, ``PreferenceScorer``).

    Chunk ``i`` holds the videos ``i * chunk_size ... (i + 1) * chunk_size - 1`` of the split order, whatever the
    number of processes: a stage seeded per chunk writes the same records on one device or eight, and a resumed run
    regenerates a part-done chunk whole. Each chunk is one ``VideoBatch`` read as evaluation reads videos (uniform
    frames): the cached trunk features when the wrapped module's feature cache serves them (the model's video trunk
    is frozen), else the decoded frames, which the model's own (trainable) trunk then encodes live.

    Args:
        videos: the video-text data module (its ``aux_captions`` are not read: the stages take their captions from
            their own files).
        chunk_size: videos per chunk (the sampling stage's ``batch_size``).
    """

    def __init__(self, videos: VideoTextDataModule, chunk_size: int = 16) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"data.init_args.chunk_size must be >= 1, got {chunk_size}")
        self.videos = videos
        self.chunk_size = chunk_size
        # the writer of the stage's output sets these before the loader is built (see CaptionWriter.setup)
        self.predict_videos: list[Any] = []
        self.predict_exclude: set[str] = set()

    @property
    def feature_cache(self) -> bool:
        return bool(getattr(self.videos, "feature_cache", False))

    @property
    def feature_source(self) -> VideoTextDataModule:
        return self.videos

    @property
    def root(self) -> Path:
        return self.videos.root

    @property
    def cache_info(self) -> dict[str, Any]:
        return self.videos.cache_info

    def use_feature_cache(self, cache: Any, info: dict[str, Any]) -> None:
        self.videos.use_feature_cache(cache, info)

    def prepare_data(self) -> None:
        self.videos.prepare_data()

    def setup(self, stage: str) -> None:
        self.videos.trainer = self.trainer
        # train and validation, as the retriever's fit sets them up (the same feature cache files; the validation
        # split is what selected the scorer's checkpoint)
        self.videos.setup("fit")
        self.predict_videos = list(self.videos.splits["train"].videos)

    def train_ids(self) -> list[str]:
        """The training split's video ids, in split order."""
        return [v.video_id for v in self.videos.splits["train"].videos]

    def chunks(self) -> list[list[int]]:
        """Every chunk's video positions in the training split."""
        n = len(self.videos.splits["train"].videos)
        return [list(range(start, min(start + self.chunk_size, n))) for start in range(0, n, self.chunk_size)]

    def predict_dataloader(self) -> DataLoader:
        """The chunks that hold a video not in ``predict_exclude`` (already written by an interrupted run)."""
        videos = self.videos.splits["train"].videos
        todo = [c for c in self.chunks() if any(videos[i].video_id not in self.predict_exclude for i in c)]
        return DataLoader(_ChunkDataset(self.videos.video_dataset("train"), todo), batch_size=1, shuffle=False,
                          num_workers=self.videos.num_workers, collate_fn=_one_chunk, persistent_workers=False)
