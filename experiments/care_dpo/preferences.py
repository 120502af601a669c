"""CaRe-DPO's preference data, in two resumable ``predict`` stages: sample K captions per training video from the
policy, then score every caption with a frozen retriever and write the preference store
(``datamodules/preferences.py``). Both run as ``python main.py predict`` with the stage config's trainer
(accelerator, devices, precision), so on eight GPUs they use eight, and under ``bf16-mixed`` the reference
log-probabilities are computed under the same autocast as the DG-DPO policy that is compared with them. Their
batches are the chunks of :class:`~datamodules.preferences.TrainVideoChunks`: fixed runs of the training split's
videos, whatever the number of processes.

**Sampling** (:class:`CaptionSampler`) writes one JSONL record per training video (``video_id``, ``captions``,
``ref_logprob``): K captions drawn at ``temperature`` from the policy (the SFT captioner in round 1) and each
caption's ``log pi_ref(c | v)`` under the reference (the SFT captioner), computed right away so DG-DPO never needs a
second LM. The captioner's video tower is frozen, so both read the feature cache DG-DPO reads. Each chunk is seeded
with its own seed; the :class:`~callbacks.caption_writer.CaptionWriter` appends every record with one write (one
file per rank, merged at the end), so a run killed at any point and started again skips the videos already written,
redoes the rest with the same seeds, and ends with the file an uninterrupted run writes (a torn last line is dropped
first). ``<samples>.meta.json`` records what made the file (checkpoints, precision, device, feature cache, sampling
settings); a resumed run with other settings is refused instead of mixing them into one file.

**Scoring** (:class:`PreferenceScorer`): the relevance ``R(c | v, q)`` of a caption is how strongly the video's
ground-truth queries prefer ``v`` carrying ``c`` over its candidate group, each candidate carrying its reference
caption (its greedy SFT caption), under the frozen retriever (a ``CaReRetriever`` trained on the SFT captions, its
checkpoint selected on the retriever's validation split):

* ``margin`` (default): ``mean_q [ s(q, v ⊕ c) - max_{u in G(v)} s(q, u ⊕ c_u) ]``;
* ``rank``: ``-mean_q rank of v ⊕ c among {v ⊕ c} ∪ {u ⊕ c_u}`` (1 = first);
* ``score``: ``mean_q s(q, v ⊕ c)``.

``G(v)`` are the ``candidates`` training videos nearest to ``v`` under the retriever's video embedding. The
inter-video neighbour ``v'`` is the nearest of them (``neighbour: embedding``) or, on SynthVTR, the nearest member of
``v``'s own near-duplicate family (``neighbour: family``); its K captions are scored against *v's* queries
(``neighbour_relevance``: how well ``v'`` carrying ``c'`` would steal them). Each chunk's video side (its videos
alone, carrying their SFT caption and carrying each sample) and its queries are embedded where the chunk runs: the
video trunk's cached features when it is frozen, its live output on the decoded frames when it trains (the real
configs' CLIP). Every chunk's embeddings go to their own file under ``<store>.parts/`` (written atomically, so a
killed run redoes only the chunks without one); when every rank is done, rank 0 ranks the candidates and writes the
store and its sidecar ``<store>.meta.json`` atomically: the scorer checkpoint (path, sha256, the monitor it was
selected by and the split it was selected on, with that split's ids and their overlap with the test split), the
sampled split's ids and counts, and the reference log-probabilities' provenance, which DG-DPO checks against its
own precision and feature cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from callbacks.caption_writer import CaptionWriter, read_jsonl
from datamodules.atomic import atomic_write, write_json_atomic, write_text_atomic
from datamodules.batch import VideoBatch
from datamodules.captions import CaptionStore
from datamodules.checksums import file_sha256, ids_sha256
from datamodules.lineage import PREFERENCE_LABELS, node, read_record, write_sidecar
from datamodules.preferences import TrainVideoChunks, meta_path, read_meta

log = logging.getLogger(__name__)

Relevance = Literal["margin", "rank", "score"]
NeighbourRule = Literal["embedding", "family"]


def _chunk_seed(seed: int, first_video: str) -> int:
    return int(hashlib.sha256(f"care-dpo-sample:{seed}:{first_video}".encode()).hexdigest()[:8], 16)



def _check_or_write(path: Path, settings: dict[str, Any], what: str, write: bool) -> None:
    """Refuse to continue ``what`` (an interrupted run's output) under other settings than it was started with; a
    fresh output gets ``settings`` written first (by ``write``: rank 0)."""
    settings = json.loads(json.dumps(settings))  # as the file holds them (tuples -> lists)
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
        if changed:
            details = "; ".join(f"{k}: {recorded.get(k)!r} -> {settings.get(k)!r}" for k in changed[:4])
            raise ValueError(f"{what} was started with other settings ({path}: {details}); continuing would mix "
                             "them in one output. Rerun with the recorded settings, or delete it (and its "
                             "sidecar) to start again")
        return
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, settings, ensure_ascii=False)


def _stage_data(trainer: L.Trainer, stage: str) -> TrainVideoChunks:
    dm = trainer.datamodule
    if not isinstance(dm, TrainVideoChunks):
        raise TypeError(f"{stage} runs over the training videos in chunks: data.class_path must be TrainVideoChunks "
                        f"(wrapping the dataset), got {type(dm).__name__}")
    return dm


def _output_path(output: str, dm: TrainVideoChunks) -> Path:
    """``output`` as the caption writer resolves it (relative to the data root unless absolute)."""
    path = Path(output).expanduser()
    return path if path.is_absolute() else Path(dm.root) / path


def _cache_fingerprint(dm: TrainVideoChunks) -> str | None:
    """The feature-cache folder name (its fingerprint) the stage's video features came from; None when decoded."""
    info = dm.cache_info or {}
    return Path(info["dir"]).name if info.get("video") and info.get("dir") else None


def load_frozen(cls: type[L.LightningModule], path: str) -> Any:
    """``cls`` from ``path`` (opened as untrusted) on the CPU, frozen, in eval mode. Called while LightningCLI builds
    the stage module, it must not see that module's arguments as its own: LightningCLI hands them to
    ``save_hyperparameters`` through a context variable, which the loaded module would otherwise take for its hyper-
    parameters (``outside_config_build`` loads it in a fresh context, where no such variable is set)."""
    from lightning_modules.cli_hyperparameters import outside_config_build
    from lightning_modules.safe_load import load_lightning_module

    # a work folder may be shared: weights only, class paths checked (lightning_modules/safe_load.py)
    model, _ = outside_config_build(load_lightning_module, path, cls, map_location="cpu")
    model.requires_grad_(False)
    return model.eval()


def _load_captioner(path: str, key: str) -> Any:
    from lightning_modules.captioning.training import CaptionerTraining

    if not Path(path).is_file():
        raise FileNotFoundError(f"model.init_args.{key}: {path} does not exist (the SFT stage writes it: "
                                "<work>/seed<N>/sft/run/checkpoints/last.ckpt)")
    return load_frozen(CaptionerTraining, path)


# ---------------------------------------------------------------------------------------------------- sampling
class CaptionSampler(L.LightningModule):
    """Stage 4 as a ``predict`` run: K sampled captions per training video and their reference log-probabilities
    (see the module docstring). Data: :class:`~datamodules.preferences.TrainVideoChunks` with the feature cache on
    (the chunk is the sampling batch); the module adds its own ``CaptionWriter``.

    Args:
        checkpoint: the policy's ``CaptionerTraining`` checkpoint (round 1: the SFT captioner).
        output: the samples file (JSONL; relative to the data root unless absolute).
        reference_checkpoint: the reference policy's checkpoint (null: the policy itself, as in round 1).
        num_samples: K captions per video (at least 2: a preference needs two).
        temperature: sampling temperature.
        top_p: nucleus sampling (null: none).
        max_new_tokens: caption length limit (null: the captioner's default).
        seed: seed of every chunk's draws (with the chunk's first video id).
    """

    reads_cached_text = False  # the captioner reads no text states: the cache builds none

    def __init__(self, checkpoint: str, output: str, reference_checkpoint: str | None = None, num_samples: int = 4,
                 temperature: float = 1.0, top_p: float | None = None, max_new_tokens: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if num_samples < 2:
            raise ValueError(f"model.init_args.num_samples must be >= 2 (a preference needs two captions), got "
                             f"{num_samples}")
        self.save_hyperparameters()
        self.policy = _load_captioner(checkpoint, "checkpoint")
        same = reference_checkpoint is None or Path(reference_checkpoint).resolve() == Path(checkpoint).resolve()
        self.reference = self.policy if same else _load_captioner(reference_checkpoint, "reference_checkpoint")
        if self.reference.backbone.trunk_fingerprint() != self.policy.backbone.trunk_fingerprint():
            raise ValueError(f"{reference_checkpoint} and {checkpoint} have different video towers: the reference "
                             "log-probabilities must be computed on the features the policy reads")
        self.writer = CaptionWriter(output)

    @property
    def backbone(self) -> Any:
        """The policy's frozen video tower (the feature cache callback encodes with it)."""
        return self.policy.backbone

    def configure_callbacks(self) -> list[L.Callback]:
        from callbacks.feature_cache import feature_cache_callbacks

        return [self.writer, *feature_cache_callbacks(self)]

    def setup(self, stage: str) -> None:
        if stage != "predict":
            return
        dm = _stage_data(self.trainer, "sampling")
        if _cache_fingerprint(dm) is None:
            raise ValueError("sampling reads the captioner's frozen video features from the feature cache that DG-DPO "
                             "reads: set data.init_args.videos.init_args.feature_cache: true")
        output = _output_path(self.hparams.output, dm)
        ids = dm.train_ids()
        settings = {"stage": "care_dpo.sample", "split": "train", "n_videos": len(ids),
                    "video_ids_sha256": ids_sha256(ids), "chunk_size": dm.chunk_size,
                    "policy": {"checkpoint": str(Path(self.hparams.checkpoint).resolve()),
                               "sha256": file_sha256(self.hparams.checkpoint)},
                    "reference": {"checkpoint": str(Path(self.hparams.reference_checkpoint
                                                         or self.hparams.checkpoint).resolve()),
                                  "sha256": file_sha256(self.hparams.reference_checkpoint or self.hparams.checkpoint),
                                  "prompt": self.reference.prompt, "precision": str(self.trainer.precision),
                                  "device": self.trainer.strategy.root_device.type,
                                  "feature_cache": _cache_fingerprint(dm)},
                    **{k: self.hparams[k] for k in ("num_samples", "temperature", "top_p", "max_new_tokens", "seed")}}
        _check_or_write(meta_path(output), settings, f"the samples file {output}", self.trainer.is_global_zero)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.policy.on_after_batch_transfer(batch, dataloader_idx)

    def predict_step(self, batch: VideoBatch, batch_idx: int) -> list[dict[str, Any]]:
        """One chunk: its K samples per video and their reference log-probabilities, as records."""
        ids = batch.video_ids
        if not ids:  # every video of the chunk failed to decode (on_decode_error: skip); scoring names them
            return []
        k = self.hparams.num_samples
        # the whole chunk is drawn with its own seed, so a resumed chunk equals the uninterrupted one
        torch.manual_seed(_chunk_seed(self.hparams.seed, ids[0]))
        visual = self.policy.visual(batch)
        mask = batch.mask.bool()
        captions = self.policy.captioner.generate(visual, [self.policy.prompt] * len(ids),
                                                  max_new_tokens=self.hparams.max_new_tokens,
                                                  temperature=self.hparams.temperature, top_p=self.hparams.top_p,
                                                  num_return_sequences=k, frame_mask=mask)
        repeat = torch.arange(len(ids), device=visual.device).repeat_interleave(k)
        ref = self.reference.captioner.sequence_logprob(visual[repeat], [self.reference.prompt] * len(captions),
                                                        captions, frame_mask=mask[repeat])
        # "kind" names the record type for the caption writer, whose resume checks every record it reads back
        return [{"video_id": vid, "kind": "dgdpo_samples", "captions": captions[row * k:(row + 1) * k],
                 "ref_logprob": [round(float(x), 6) for x in ref[row * k:(row + 1) * k]],
                 "temperature": self.hparams.temperature, "seed": self.hparams.seed}
                for row, vid in enumerate(ids)]


# ---------------------------------------------------------------------------------------------------- scoring
def family_of(data: Any) -> dict[str, int]:
    """SynthVTR's near-duplicate family of every video (an error on other datasets)."""
    specs = Path(data.root) / "synthvtr" / "specs.jsonl"
    if not specs.is_file():
        raise ValueError(f"neighbour: family needs SynthVTR's family table ({specs} does not exist); use "
                         "neighbour: embedding on other datasets")
    return {r["video_id"]: int(r["family"]) for r in read_jsonl(specs)}


def score_records(ids: list[str], plain: Tensor, fixed: Tensor, carried: Tensor, queries: list[Tensor],
                  texts: dict[str, list[str]], sampled: dict[str, dict[str, Any]], relevance: Relevance,
                  candidates: int, families: dict[str, int] | None) -> list[dict[str, Any]]:
    """The store's records, in the order of ``ids``, from every training video's embeddings: ``plain`` ``[N, D]``
    (the video alone), ``fixed`` ``[N, D]`` (carrying its reference caption), ``carried`` ``[N, K, D]`` (carrying
    each sample) and ``queries[i]`` ``[Q_i, D]`` (its ground-truth texts), all normalised."""
    nearest = (plain @ plain.t()).fill_diagonal_(-float("inf")).argsort(dim=1, descending=True)
    records = []
    for i, vid in enumerate(ids):
        group = nearest[i, :candidates]
        own = queries[i] @ carried[i].t()                                        # [Q, K]
        rivals = queries[i] @ fixed[group].t()                                   # [Q, G]
        if relevance == "margin":
            score = (own - rivals.max(dim=1, keepdim=True).values).mean(0)
        elif relevance == "rank":
            score = -(1.0 + (rivals.unsqueeze(1) > own.unsqueeze(2)).sum(2).float()).mean(0)
        elif relevance == "score":
            score = own.mean(0)
        else:
            raise ValueError(f"relevance must be margin, rank or score, got {relevance!r}")
        if families is not None:
            same = [int(j) for j in nearest[i].tolist() if families[ids[int(j)]] == families[vid]]
            if not same:
                raise ValueError(f"video {vid} has no other member of its family in the training split")
            other = same[0]
        else:
            other = int(group[0])
        steal = (queries[i] @ carried[other].t()).mean(0)                       # v' carrying c'_k, for v's queries
        record = sampled[vid]
        neighbour_record = sampled[ids[other]]
        records.append({"video_id": vid, "query": texts[vid][0], "num_queries": len(texts[vid]),
                        "captions": record["captions"], "ref_logprob": record["ref_logprob"],
                        "relevance": [round(float(x), 6) for x in score],
                        "candidates": [ids[int(j)] for j in group], "neighbour_id": ids[other],
                        "neighbour_captions": neighbour_record["captions"],
                        "neighbour_ref_logprob": neighbour_record["ref_logprob"],
                        "neighbour_relevance": [round(float(x), 6) for x in steal],
                        "relevance_rule": relevance})
    return records


def selection_facts(checkpoint: str, dm: TrainVideoChunks) -> dict[str, Any]:
    """Which checkpoint scores the preferences and what chose it: the ``ModelCheckpoint`` state saved in it (monitor,
    best score, whether this file is the best one) and the validation split of the retriever's data - the split
    that monitor was computed on - with its ids and how many of them are test videos."""
    from lightning_modules.safe_load import load_tensors

    state = load_tensors(checkpoint, "cpu", "the scorer checkpoint")
    monitor: dict[str, Any] | None = None
    for key, value in (state.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("monitor"):
            score = value.get("best_model_score")
            monitor = {"monitor": value["monitor"], "best_model_score": None if score is None else float(score),
                       "best_model_path": value.get("best_model_path"),
                       "is_best": Path(str(value.get("best_model_path") or "")).name == Path(checkpoint).name}
            break
    val = dm.videos.splits["val"]
    test = dm.videos.load_split("test")  # ids only: nothing is decoded or cached
    val_ids = [v.video_id for v in val.videos]
    shared = sorted({v.video_id for v in test.videos} & set(val_ids))
    return {"checkpoint": str(Path(checkpoint).resolve()), "sha256": file_sha256(checkpoint),
            "selected_by": monitor,
            "val_protocol": (state.get("datamodule_hyper_parameters") or {}).get("val_protocol"),
            "selected_on": {"split": val.name, "model_selection": val.info.get("model_selection"),
                            "protocol": val.protocol, "n_videos": len(val_ids), "n_texts": len(val.texts),
                            "video_ids_sha256": ids_sha256(val_ids),
                            "text_ids_sha256": ids_sha256([t.text_id for t in val.texts]),
                            "test_videos_shared": len(shared), "first_shared": shared[:5]}}


class PreferenceScorer(L.LightningModule):
    """Stage 5 as a ``predict`` run: every sampled caption scored by the frozen retriever, then the preference store
    and its sidecar (see the module docstring). Data: :class:`~datamodules.preferences.TrainVideoChunks` over the
    retriever's dataset (the chunk is the unit of work and of resumption).

    Args:
        checkpoint: the scorer, a ``CaReRetriever`` checkpoint (the pipeline passes the one its fit selected on the
            validation split).
        samples: the sampling stage's output.
        reference_captions: each training video's reference caption (the SFT captioner's greedy captions).
        output: the preference store (JSONL; relative to the data root unless absolute).
        relevance: ``margin``, ``rank`` or ``score``.
        candidates: ``|G(v)|``, the nearest training videos a video competes with.
        neighbour: ``embedding`` (the nearest training video) or ``family`` (SynthVTR's near-duplicate family).
        batch_size: captions per text-tower call.
    """

    reads_cached_text = False  # queries and captions run through the text tower live (role vectors at its input)

    def __init__(self, checkpoint: str, samples: str, reference_captions: str, output: str,
                 relevance: Relevance = "margin", candidates: int = 7, neighbour: NeighbourRule = "embedding",
                 batch_size: int = 128) -> None:
        super().__init__()
        if relevance not in ("margin", "rank", "score"):
            raise ValueError(f"model.init_args.relevance must be margin, rank or score, got {relevance!r}")
        if neighbour not in ("embedding", "family"):
            raise ValueError(f"model.init_args.neighbour must be embedding or family, got {neighbour!r}")
        if candidates < 1:
            raise ValueError(f"model.init_args.candidates must be >= 1, got {candidates}")
        self.save_hyperparameters()
        from lightning_modules.care_dpo import CaReRetriever

        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"model.init_args.checkpoint: {checkpoint} does not exist (the scorer's fit writes "
                                    "<work>/seed<N>/retriever/sft-role/run/checkpoints/best-*.ckpt)")
        self.retriever = load_frozen(CaReRetriever, checkpoint)
        self._ids: list[str] = []
        self._texts: dict[str, list[str]] = {}
        self._sampled: dict[str, dict[str, Any]] = {}
        self._reference: dict[str, str] = {}
        self._num_samples = 0
        self._output = Path(output)

    @property
    def backbone(self) -> Any:
        """The retriever's backbone (the feature cache callback caches what of it is frozen)."""
        return self.retriever.backbone

    @property
    def parts(self) -> Path:
        """The folder of the per-chunk embeddings (removed once the store is written)."""
        return self._output.with_name(self._output.name + ".parts")

    def configure_callbacks(self) -> list[L.Callback]:
        from callbacks.feature_cache import feature_cache_callbacks

        return feature_cache_callbacks(self)

    def setup(self, stage: str) -> None:
        if stage != "predict":
            return
        dm = _stage_data(self.trainer, "scoring")
        self._output = _output_path(self.hparams.output, dm)
        samples = Path(self.hparams.samples)
        ids = dm.train_ids()
        sampled = {r["video_id"]: r for r in read_jsonl(samples, tolerant_tail=False)}
        missing = [v for v in ids if v not in sampled]
        if missing:
            raise ValueError(f"{samples} lacks samples of {len(missing)} training videos (first {missing[:5]}); run "
                             "the sampling stage to the end")
        k = len(sampled[ids[0]]["captions"])
        uneven = [v for v in ids if len(sampled[v]["captions"]) != k]
        if uneven:
            raise ValueError(f"{samples}: every video needs the same number of samples ({k}); {uneven[:5]} differ")
        store = CaptionStore.load(self.hparams.reference_captions, "supplement")
        store.require(ids)
        self._ids, self._sampled, self._num_samples = ids, sampled, k
        self._reference = {v: store[v].captions[0] for v in ids}
        self._texts = {v: dm.videos.video_texts(v) for v in ids}
        stat = Path(self.hparams.checkpoint).stat()  # a retrained scorer at the same path is another scorer
        settings = {"stage": "care_dpo.score", "checkpoint": str(Path(self.hparams.checkpoint).resolve()),
                    "checkpoint_size": stat.st_size, "checkpoint_mtime_ns": stat.st_mtime_ns,
                    "samples": str(samples.resolve()), "reference_captions": str(self.hparams.reference_captions),
                    "precision": str(self.trainer.precision), "device": self.trainer.strategy.root_device.type,
                    "feature_cache": _cache_fingerprint(dm), "batch_size": self.hparams.batch_size,
                    "n_videos": len(ids), "video_ids_sha256": ids_sha256(ids)}
        _check_or_write(self.parts / "settings.json", settings, f"the scoring run of {self._output}",
                        self.trainer.is_global_zero)
        # every rank drops the same chunks: rank 0 reads what an interrupted run left, the others receive it
        done = sorted(self._written_ids()) if self.trainer.is_global_zero else []
        done = self.trainer.strategy.broadcast(done, src=0)
        dm.predict_exclude = set(done)
        if self.trainer.is_global_zero and done:
            log.info("scoring: %d of %d training videos already embedded in %s", len(done), len(ids), self.parts)

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.pt"))

    def _written_ids(self) -> set[str]:
        return {v for path in self._part_files() for v in torch.load(path, weights_only=True)["video_ids"]}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.retriever.on_after_batch_transfer(batch, dataloader_idx)

    def predict_step(self, batch: VideoBatch, batch_idx: int) -> None:
        """One chunk's embeddings, saved to its part file."""
        ids = batch.video_ids
        if not ids:  # every video of the chunk failed to decode; the store then names them missing
            return
        retriever, size, k = self.retriever, self.hparams.batch_size, self._num_samples
        # the pooled video once per video, from the cache (frozen trunk) or the live trunk on decoded frames
        video = retriever.pooled_video(retriever.backbone_frames(batch), batch.mask)

        def carrying(rows: Tensor, captions: list[str]) -> Tensor:
            return torch.cat([retriever.carrying(video[rows[s:s + size]], captions[s:s + size])
                              for s in range(0, len(rows), size)])

        index = torch.arange(len(ids), device=video.device)
        fixed = carrying(index, [self._reference[v] for v in ids])
        carried = carrying(index.repeat_interleave(k), [c for v in ids for c in self._sampled[v]["captions"]])
        queries = [F.normalize(retriever.query_embeddings(self._texts[v]), dim=-1) for v in ids]
        part = {"video_ids": list(ids), "plain": video.float().cpu(), "fixed": fixed.float().cpu(),
                "carried": carried.view(len(ids), k, -1).float().cpu(),
                "queries": torch.cat(queries).float().cpu(), "num_queries": [len(q) for q in queries]}
        path = self.parts / f"part-{ids_sha256(ids)[:16]}.pt"
        atomic_write(path, lambda fh: torch.save(part, fh))

    def on_predict_end(self) -> None:
        if self.trainer.world_size > 1:
            self.trainer.strategy.barrier("care_dpo_score")
        if self.trainer.is_global_zero:
            self.write_store()

    def write_store(self) -> Path:
        """Rank the candidates from every chunk's embeddings; write the sidecar, then the store (both atomically),
        then remove the parts."""
        ids, device = self._ids, self.device
        rows: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        for path in self._part_files():
            part = torch.load(path, weights_only=True)
            queries = part["queries"].split(part["num_queries"])
            for row, vid in enumerate(part["video_ids"]):
                rows.setdefault(vid, (part["plain"][row], part["fixed"][row], part["carried"][row], queries[row]))
        missing = [v for v in ids if v not in rows]
        if missing:
            raise ValueError(f"{self.parts}: no embeddings of {len(missing)} training videos (first {missing[:5]}): "
                             "did they fail to decode (data on_decode_error: skip)? Every training video needs its "
                             "samples scored")
        extra = sorted(set(rows) - set(ids))
        if extra:
            raise ValueError(f"{self.parts} holds videos {extra[:5]} outside this training split; delete the folder "
                             "(it belongs to other data settings)")
        plain = torch.stack([rows[v][0] for v in ids]).to(device)
        fixed = torch.stack([rows[v][1] for v in ids]).to(device)
        carried = torch.stack([rows[v][2] for v in ids]).to(device)
        queries = [rows[v][3].to(device) for v in ids]
        dm = _stage_data(self.trainer, "scoring")
        families = family_of(dm.videos) if self.hparams.neighbour == "family" else None
        records = score_records(ids, plain, fixed, carried, queries, self._texts, self._sampled,
                                self.hparams.relevance, self.hparams.candidates, families)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        out = self._output
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(meta_path(out), self._meta(dm, hashlib.sha256(text.encode("utf-8")).hexdigest()),
                          ensure_ascii=False)
        write_sidecar(out, self._lineage(dm))
        write_text_atomic(out, text)
        shutil.rmtree(self.parts)
        log.info("scoring: %d records -> %s", len(records), out)
        return out

    def _lineage(self, dm: TrainVideoChunks) -> dict[str, Any]:
        """The store's lineage node: its labels read the training videos and their ground-truth queries (the
        ``preference labels`` role: a leak if any were test data) and come from the scorer, whose own fit lineage
        (training and selection splits) is upstream, as is the lineage of the reference captions (the SFT fit)."""
        from lightning_modules.lineage import store_upstream, test_set_of

        videos = dm.videos
        train = videos.splits["train"]
        test = test_set_of(videos)
        ids = set(self._ids)
        text_ids = [t.text_id for t in train.texts if train.videos[t.video].video_id in ids]
        labels = read_record(PREFERENCE_LABELS, videos.name, "train", self._ids, text_ids, test,
                             detail=f"{self.hparams.relevance} relevance of {self._num_samples} samples per video "
                                    f"against its queries and {self.hparams.candidates} candidates")
        upstream: list[dict[str, Any]] = []
        missing: list[str] = []
        scorer = self.retriever.fit_lineage_node()
        if scorer is not None:
            upstream.append(scorer)
        else:
            missing.append(f"scorer checkpoint {Path(self.hparams.checkpoint).name} has no lineage record")
        reference, why = store_upstream(self.hparams.reference_captions)
        if reference is not None:
            upstream.append(reference)
        elif why:
            missing.append(why)
        return node("preferences", self._output.name, test, [labels], upstream, missing)

    def _meta(self, dm: TrainVideoChunks, store_sha256: str) -> dict[str, Any]:
        """The store's sidecar: what was scored, by which checkpoint (selected on which split), under what."""
        train = dm.videos.splits["train"]
        samples = Path(self.hparams.samples)
        sampled_meta = read_meta(samples)
        if sampled_meta is None:
            log.warning("%s has no sidecar: the store cannot record where its reference log-probabilities came from",
                        samples)
        return {"stage": "care_dpo.score", "store_sha256": store_sha256,
                "split": "train", "n_videos": len(self._ids), "n_texts": len(train.texts),
                "video_ids_sha256": ids_sha256(self._ids),
                "text_ids_sha256": ids_sha256([t.text_id for t in train.texts]),
                "samples": {"path": str(samples.resolve()), "sha256": file_sha256(samples),
                            "num_samples": self._num_samples, "meta": sampled_meta},
                "reference": None if sampled_meta is None else sampled_meta.get("reference"),
                "reference_captions": {"path": str(Path(self.hparams.reference_captions).resolve()),
                                       "sha256": file_sha256(self.hparams.reference_captions)},
                "scorer": selection_facts(self.hparams.checkpoint, dm),
                "relevance": self.hparams.relevance, "candidates": self.hparams.candidates,
                "neighbour": self.hparams.neighbour,
                "trainer": {"precision": str(self.trainer.precision), "device": self.device.type,
                            "world_size": self.trainer.world_size, "feature_cache": _cache_fingerprint(dm)}}
