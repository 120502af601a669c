"""CaRe-DPO's preference data, in two resumable stages: sample K captions per training video from the policy, then
score every caption with a frozen retriever and write the preference store (``datamodules/preferences.py``).

**Sampling** (:func:`sample_captions`) writes one JSONL record per training video (``video_id``, ``captions``,
``ref_logprob``): K captions drawn at ``temperature`` from the policy (the SFT captioner in round 1) and each
caption's ``log pi_ref(c | v)`` under the reference (the SFT captioner), computed right away so DG-DPO never
needs a second LM. Videos go in fixed chunks of the split order, each chunk with its own seed, and every record is
appended with one write: a run killed at any point and started again skips the videos already written, redoes the
rest with the same seeds, and ends with the file an uninterrupted run writes (a torn last line is dropped first).

**Scoring** (:func:`score_preferences`): the relevance ``R(c | v, q)`` of a caption is how strongly the video's
ground-truth queries prefer ``v`` carrying ``c`` over its candidate group, each candidate carrying its reference
caption (its greedy SFT caption), under the frozen retriever (a ``CaReRetriever`` trained on the SFT captions):

* ``margin`` (default): ``mean_q [ s(q, v ⊕ c) - max_{u in G(v)} s(q, u ⊕ c_u) ]``;
* ``rank``: ``-mean_q rank of v ⊕ c among {v ⊕ c} ∪ {u ⊕ c_u}`` (1 = first);
* ``score``: ``mean_q s(q, v ⊕ c)``.

``G(v)`` are the ``candidates`` training videos nearest to ``v`` under the retriever's video embedding. The
inter-video neighbour ``v'`` is the nearest of them (``neighbour: embedding``) or, on SynthVTR, the nearest member of
``v``'s own near-duplicate family (``neighbour: family``); its K captions are scored against *v's* queries
(``neighbour_relevance``: how well ``v'`` carrying ``c'`` would steal them). Scoring takes seconds, so the store is
written atomically once (a killed scoring run leaves no store and simply runs again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from callbacks.caption_writer import append_records, read_jsonl, repair_jsonl
from datamodules.base import VideoTextDataModule
from datamodules.captions import CaptionStore
from datamodules.feature_cache import build_or_load_cache

log = logging.getLogger(__name__)

Relevance = Literal["margin", "rank", "score"]
NeighbourRule = Literal["embedding", "family"]


def _chunk_seed(seed: int, first_video: str) -> int:
    return int(hashlib.sha256(f"care-dpo-sample:{seed}:{first_video}".encode()).hexdigest()[:8], 16)


def train_features(data: VideoTextDataModule, backbone: Any) -> tuple[list[str], Any]:
    """The training split's video ids and the frozen-feature cache (built with ``backbone`` if missing)."""
    data.setup("fit")
    cache, _ = build_or_load_cache(data, backbone, torch.device("cpu"), build=True)
    return [v.video_id for v in data.splits["train"].videos], cache


def _stack(cache: Any, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [cache.video(v) for v in ids]
    return torch.stack([f for f, _ in rows]), torch.stack([m for _, m in rows]).bool()


@torch.no_grad()
def sample_captions(policy: Any, reference: Any, data: VideoTextDataModule, out: str | Path, num_samples: int = 4,
                    temperature: float = 1.0, top_p: float | None = None, max_new_tokens: int | None = None,
                    batch_size: int = 16, seed: int = 0,
                    after_chunk: Callable[[int], None] | None = None) -> Path:
    """Write ``num_samples`` sampled captions and their reference log-probabilities per training video to ``out``
    (resumable; see the module docstring). ``policy`` / ``reference`` are ``CaptionerTraining`` modules (the same
    object in round 1); ``after_chunk`` is called with the chunk number after each chunk is written."""
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (a preference needs two captions), got {num_samples}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    repair_jsonl(out)
    done = {record["video_id"] for record in read_jsonl(out)}
    ids, cache = train_features(data, policy.backbone)
    policy.eval()
    reference.eval()
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for number, start in enumerate(range(0, len(ids), batch_size)):
            chunk = ids[start:start + batch_size]
            todo = [v for v in chunk if v not in done]
            if not todo:
                continue
            # the whole chunk is regenerated with its own seed, so a resumed chunk equals the uninterrupted one
            torch.manual_seed(_chunk_seed(seed, chunk[0]))
            feats, mask = _stack(cache, chunk)
            prompts = [policy.prompt] * len(chunk)
            captions = policy.captioner.generate(feats, prompts, max_new_tokens=max_new_tokens,
                                                 temperature=temperature, top_p=top_p,
                                                 num_return_sequences=num_samples, frame_mask=mask)
            repeat = torch.arange(len(chunk)).repeat_interleave(num_samples)
            ref = reference.captioner.sequence_logprob(feats[repeat], [reference.prompt] * len(captions), captions,
                                                       frame_mask=mask[repeat])
            records = []
            for row, vid in enumerate(chunk):
                if vid in done:
                    continue
                span = slice(row * num_samples, (row + 1) * num_samples)
                records.append({"video_id": vid, "captions": captions[span],
                                "ref_logprob": [round(float(x), 6) for x in ref[span]],
                                "temperature": temperature, "seed": seed})
            append_records(fd, records)
            done.update(todo)
            if after_chunk is not None:
                after_chunk(number)
    finally:
        os.close(fd)
    return out


def family_of(data: VideoTextDataModule) -> dict[str, int]:
    """SynthVTR's near-duplicate family of every video (an error on other datasets)."""
    specs = Path(data.root) / "synthvtr" / "specs.jsonl"
    if not specs.is_file():
        raise ValueError(f"neighbour: family needs SynthVTR's family table ({specs} does not exist); use "
                         "neighbour: embedding on other datasets")
    return {r["video_id"]: int(r["family"]) for r in read_jsonl(specs)}


@torch.no_grad()
def score_preferences(retriever: Any, data: VideoTextDataModule, samples: str | Path, reference_captions: str | Path,
                      out: str | Path, relevance: Relevance = "margin", candidates: int = 7,
                      neighbour: NeighbourRule = "embedding", batch_size: int = 128) -> Path:
    """Score every sampled caption with the frozen ``retriever`` and write the preference store ``out``."""
    out = Path(out)
    retriever.eval()
    ids, cache = train_features(data, retriever.backbone)
    sampled = {r["video_id"]: r for r in read_jsonl(Path(samples), tolerant_tail=False)}
    missing = [v for v in ids if v not in sampled]
    if missing:
        raise ValueError(f"{samples} lacks samples of {len(missing)} training videos (first {missing[:5]}); run the "
                         "sampling stage to the end")
    store = CaptionStore.load(reference_captions, "supplement")
    store.require(ids)
    texts = {v: data.video_texts(v) for v in ids}
    feats, mask = _stack(cache, ids)

    def video_side(rows: torch.Tensor, captions: list[str] | None) -> torch.Tensor:
        parts = []
        for start in range(0, len(rows), batch_size):
            sl = slice(start, start + batch_size)
            parts.append(retriever.video_embeddings(feats[rows[sl]], mask[rows[sl]],
                                                    None if captions is None else captions[sl]))
        return torch.cat(parts)

    index = torch.arange(len(ids))
    plain = video_side(index, None)
    fixed = video_side(index, [store[v].captions[0] for v in ids])
    nearest = (plain @ plain.t()).fill_diagonal_(-float("inf")).argsort(dim=1, descending=True)
    families = family_of(data) if neighbour == "family" else None
    k = len(sampled[ids[0]]["captions"])
    flat_rows = index.repeat_interleave(k)
    flat_captions = [c for v in ids for c in sampled[v]["captions"]]
    if any(len(sampled[v]["captions"]) != k for v in ids):
        raise ValueError(f"{samples}: every video needs the same number of samples ({k})")
    carried = video_side(flat_rows, flat_captions).view(len(ids), k, -1)
    records = []
    for i, vid in enumerate(ids):
        queries = F.normalize(retriever.query_embeddings(texts[vid]), dim=-1)   # [Q, D]
        group = nearest[i, :candidates]
        own = queries @ carried[i].t()                                           # [Q, K]
        rivals = queries @ fixed[group].t()                                      # [Q, G]
        if relevance == "margin":
            score = (own - rivals.max(dim=1, keepdim=True).values).mean(0)
        elif relevance == "rank":
            score = -(1.0 + (rivals.unsqueeze(1) > own.unsqueeze(2)).sum(2).float()).mean(0)
        else:
            score = own.mean(0)
        if families is not None:
            same = [int(j) for j in nearest[i].tolist() if families[ids[int(j)]] == families[vid]]
            if not same:
                raise ValueError(f"video {vid} has no other member of its family in the training split")
            other = same[0]
        else:
            other = int(group[0])
        steal = (queries @ carried[other].t()).mean(0)                          # v' carrying c'_k, for v's queries
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
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, out)
    return out
