"""Conical embedding optimisation (CEO; Yang, Chen & Yao, ECAI 2025) on the shared core — a RECONSTRUCTION.

Only the slides are public, no paper text or code; docs/methods/conical.md lists what is reconstructed.
What they give, and what this module does with it:

* **mLLM-supplemental captions, text side.** A video LLM writes a caption from each video-text pair (prompts A/B/C,
  ``configs/captioners/supplement_*.yaml``); the text embedding ``t_emb`` is built from the query *and* that
  supplement ("Text embedding (original + mLLM-supplemental)"). How the two are combined is not given:
  ``text_fusion`` = ``concat`` (one string, query then supplement, within the backbone's token budget; default),
  ``sum`` (sum of the two sentence embeddings) or ``gate`` (a learnt per-dimension gate between them).
* **Augmented copies, video side.** Each training clip is randomly rotated / flipped (one transform for the whole
  clip; data ``augmented_views``). ``v_org`` and ``v_aug`` are CLIP4Clip meanP embeddings of the clip and a copy.
* **Three InfoNCE terms** (slides, "CEO Dual Objectives"), each with its own multiplicative scale τ:

  - L_va (elasticity preservation): ``-E log exp(τ_va s(v_org^i, v_aug^i)) / Σ_{j≠i} exp(τ_va s(v_org^i, v_aug^j))``
  - L_tv (alignment to the video): the same between ``t_emb^i`` and ``v_org^j``
  - L_ta (alignment to the copies): the same between ``t_emb^i`` and ``v_aug^j``

  The printed denominators leave out the positive (the decoupled form); ``include_positive`` (default true) uses
  the standard InfoNCE instead. Printed as one direction; ``symmetric`` (default true) averages both. The total is
  ``weight_tv·L_tv + weight_ta·L_ta + weight_va·L_va`` (weights unknown; 1 each). With several copies per clip, L_ta
  and L_va average over the copies. τ_tv is the base module's ``logit_scale``; τ_ta and τ_va are ``logit_scale_ta``
  and ``logit_scale_va``, started at the same value and learnt (``learnable_temperature``).

**The test-time question.** At evaluation a query has no video; if its supplement is the one its *paired* video got,
the text carries information from the ground truth. ``test_supplement`` chooses how a test query is scored:

* ``paired``: the query fused with its own video's supplement — what the data source "video-text pairs" suggests,
  and a leak: the test input is chosen through the ground-truth pairing;
* ``none``: the bare query (the model was trained with supplements);
* ``per_candidate``: the score of (query, video j) fuses the query with *video j's* supplement: exact, and leak-free
  when no test video's supplement was written from a test query (prompts B and C; prompt A under the captioner's
  default ``text_context: training``, where test videos get the fallback prompt). It costs one fused text per
  (query, video) pair — a matrix product for ``sum``, texts x videos encoder passes for ``concat`` — in tiles.

Whether a number leaked is computed, not declared: ``lineage_test_reads`` records what each scored mode read (the
ground-truth pairing for ``paired``, the test videos' supplement records for ``paired`` and ``per_candidate``, each
scoped to its view), and the verdict in ``metrics.json`` (``leakage``) counts test queries among the texts those
supplements were written from (``lightning_modules/lineage.py``).

Every test also scores the other modes of ``report_supplements`` as views (``paired/t2v_R1`` ... in metrics.json),
so one trained model answers the question; validation (model selection) scores ``val_supplement`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.annotations import eval_split
from datamodules.batch import PairBatch, TextBatch, VideoBatch
from datamodules.captions import CaptionKind
from lightning_modules.attachment import attached_trainer
from lightning_modules.base import BaseRetrievalModule, Features
from lightning_modules.components import cosine_matrix, infonce, masked_mean_pool

TextFusion = Literal["concat", "sum", "gate"]
TestSupplement = Literal["paired", "none", "per_candidate"]
SUPPLEMENT_MODES: tuple[str, ...] = get_args(TestSupplement)


def fuse_strings(query: str, supplement: str, separator: str) -> str:
    """``concat`` fusion: the query, then its supplement, as one string (the tokenizer truncates at its budget)."""
    return f"{query.strip()}{separator}{supplement.strip()}"


class SupplementGate(nn.Module):
    """``gate`` fusion: ``g ⊙ q + (1 − g) ⊙ s`` with ``g = σ(W [q; s] + b)``, started at ``g = 1/2`` (the mean)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, query: Tensor, supplement: Tensor) -> Tensor:
        gate = torch.sigmoid(self.proj(torch.cat([query, supplement.to(query.dtype)], -1)))
        return gate * query + (1 - gate) * supplement.to(query.dtype)


class ConicalEmbedding(BaseRetrievalModule):
    """CEO's retriever: supplement-fused text embeddings and augmented video copies, trained with L_tv, L_ta, L_va.

    Args:
        supplement_key: kind of the supplement captions in the data module's ``aux_captions`` (one record per
            video; its first caption is the supplement).
        use_supplement: fuse the supplement into the text (off: the bare query everywhere, the "no supplement" row).
        text_fusion: ``concat`` | ``sum`` | ``gate`` (see the module docstring).
        supplement_separator: what joins query and supplement under ``concat``.
        test_supplement: how test queries are scored (reported score): ``paired`` | ``none`` | ``per_candidate``.
        val_supplement: the same for validation / model selection (``None``: ``test_supplement``).
        report_supplements: modes each test also scores as views (``<mode>/t2v_R1`` ... in metrics.json).
        weight_tv: weight of L_tv.
        weight_ta: weight of L_ta (0 = off).
        weight_va: weight of L_va (0 = off).
        include_positive: standard InfoNCE (True) or the slides' decoupled form without the positive (False).
        symmetric: average both directions of each term (True) or the printed direction only (False).
        per_candidate_batch: fused strings per text-encoder call under ``per_candidate`` + ``concat``.
        text_memo_size: with a frozen text trunk, the trunk states of up to this many fused strings are kept in
            memory (training and validation strings repeat every epoch); 0 = off.
        **kwargs: ``BaseRetrievalModule`` arguments (backbone, lr, logit_scale_init, ...).
    """

    # the test-time supplement modes and per-candidate batching only steer what a test reports and how fast:
    # ``vtr test --ckpt_path`` takes them from its command line
    test_time_args: ClassVar[tuple[str, ...]] = (*BaseRetrievalModule.test_time_args, "test_supplement",
                                                 "report_supplements", "per_candidate_batch")

    def __init__(self, supplement_key: CaptionKind = "supplement", use_supplement: bool = True,
                 text_fusion: TextFusion = "concat", supplement_separator: str = " ",
                 test_supplement: TestSupplement = "none", val_supplement: TestSupplement | None = None,
                 report_supplements: Sequence[TestSupplement] = SUPPLEMENT_MODES,
                 weight_tv: float = 1.0, weight_ta: float = 1.0, weight_va: float = 1.0,
                 include_positive: bool = True, symmetric: bool = True, per_candidate_batch: int = 2048,
                 text_memo_size: int = 50_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, mode in (("test_supplement", test_supplement), ("val_supplement", val_supplement),
                           *(("report_supplements", m) for m in report_supplements)):
            if mode is not None and mode not in SUPPLEMENT_MODES:
                raise ValueError(f"model.init_args.{name}: {mode!r} is not one of {list(SUPPLEMENT_MODES)}")
        if text_fusion not in ("concat", "sum", "gate"):
            raise ValueError(f"model.init_args.text_fusion: {text_fusion!r} is not one of concat, sum, gate")
        if min(weight_tv, weight_ta, weight_va) < 0 or weight_tv + weight_ta + weight_va == 0:
            raise ValueError(f"loss weights must be >= 0 and not all 0: weight_tv={weight_tv}, weight_ta={weight_ta}, "
                             f"weight_va={weight_va}")
        if weight_tv == 0 and weight_ta == 0:
            raise ValueError("weight_tv and weight_ta are both 0: nothing would train the text side")
        self.supplement_key = supplement_key
        self.gate = SupplementGate(self.backbone.embed_dim) if use_supplement and text_fusion == "gate" else None
        # τ_ta and τ_va: the slides give each term its own scale; started where τ_tv (``logit_scale``) starts
        # (a term switched off leaves its scale without gradient, which DDP would report as an unused parameter)
        start = float(self.logit_scale.detach())
        learnable = self.logit_scale.requires_grad
        self.logit_scale_ta = nn.Parameter(torch.tensor(start), requires_grad=learnable and weight_ta > 0)
        self.logit_scale_va = nn.Parameter(torch.tensor(start), requires_grad=learnable and weight_va > 0)
        if weight_tv == 0:
            self.logit_scale.requires_grad_(False)
        self._trunk_memo: dict[str, tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ which modes are scored now
    def eval_modes(self) -> list[str]:
        """Validation scores ``val_supplement``; a test scores ``test_supplement`` and ``report_supplements``."""
        hp = self.hparams
        if not hp.use_supplement:
            return ["none"]
        testing = bool(getattr(attached_trainer(self), "testing", False))
        main = hp.test_supplement if testing or hp.val_supplement is None else hp.val_supplement
        return list(dict.fromkeys([main, *(hp.report_supplements if testing else [])]))

    def _split_name(self) -> str:
        stage = self.trainer.state.stage
        return eval_split(getattr(stage, "value", str(stage)))

    # ------------------------------------------------------------------ text side
    def encode_strings(self, texts: list[str], memo: bool = True) -> Tensor:
        """Sentence embeddings ``[n, D]`` of raw strings (fused texts, supplements) through the backbone's text side.

        With a frozen text trunk the trunk runs without gradients and, when ``memo``, its states are kept per string
        (up to ``text_memo_size``); the trainable head runs every time. Frozen-trunk states are rounded to float16,
        as the feature cache stores them, so a string embeds the same whether it was seen before or not, memoised or
        not, and like a cached query would.
        """
        if not texts:
            return self.logit_scale.new_zeros((0, self.backbone.embed_dim))
        if not self.backbone.text_trunk_frozen:
            return self.backbone.encode_text(texts).sentence
        keep = memo and self.hparams.text_memo_size > 0
        todo = list(dict.fromkeys(t for t in texts if not (keep and t in self._trunk_memo)))
        fresh: dict[str, tuple[Tensor, Tensor]] = {}
        if todo:
            tokens = {k: v.to(self.device) for k, v in self.backbone.tokenize(todo).items()}
            with torch.no_grad():
                hidden, mask = self.backbone.text_trunk(tokens)
            hidden = (hidden * mask.unsqueeze(-1)).half()  # as datamodules/feature_cache.py stores trunk states
            for i, text in enumerate(todo):
                fresh[text] = (hidden[i], mask[i])
                if keep and len(self._trunk_memo) < self.hparams.text_memo_size:
                    self._trunk_memo[text] = (hidden[i].cpu(), mask[i].cpu())
        rows = [fresh[t] if t in fresh else self._trunk_memo[t] for t in texts]
        hidden = torch.stack([r[0].to(self.device) for r in rows]).to(self.dtype_for_heads())
        mask = torch.stack([r[1].to(self.device) for r in rows]).bool()
        return self.backbone.text_head(hidden, mask).sentence

    def fuse(self, queries: list[str], query_embedding: Tensor, supplements: list[str]) -> Tensor:
        """``t_emb`` of each query with its supplement (row-aligned), under ``text_fusion``."""
        fusion = self.hparams.text_fusion
        if fusion == "concat":
            sep = self.hparams.supplement_separator
            return self.encode_strings([fuse_strings(q, s, sep) for q, s in zip(queries, supplements, strict=True)])
        supplement = self.encode_strings(supplements).to(query_embedding.dtype)
        if fusion == "sum":
            return query_embedding + supplement
        assert self.gate is not None
        return self.gate(query_embedding, supplement)

    def batch_supplements(self, batch: VideoBatch) -> list[str]:
        """The supplement of each video of a batch (its record's first caption)."""
        self.note_aux_read(self.supplement_key)
        aux = batch.aux.get(self.supplement_key)
        if aux is None:
            raise KeyError(f"{type(self).__name__} needs {self.supplement_key!r} captions in the batch: set "
                           f"data.init_args.aux_captions: {{{self.supplement_key}: <file>.jsonl}} (written by "
                           "python main.py predict --config configs/captioners/supplement_a.yaml), or "
                           "model.init_args.use_supplement: false")
        return [captions[0] for captions in aux.captions]

    def supplements_of(self, video_index: Tensor) -> list[str]:
        """The supplement of each video (dataset index into the split evaluated now)."""
        self.note_aux_read(self.supplement_key)
        rows = self.trainer.datamodule.aux_captions_of(self._split_name(), video_index.tolist(), self.supplement_key)
        return [captions[0] for captions in rows]

    def encode_text(self, batch: TextBatch) -> Features:
        """Evaluation texts: the bare query (``query``), its index, and under ``paired`` the query fused with its own
        video's supplement (``paired``)."""
        query = self.backbone_text(batch).sentence
        feats = {"query": query, "text_index": batch.index}
        if "paired" in self.eval_modes():
            feats["paired"] = self.fuse(batch.texts, query, self.supplements_of(batch.video_index))
        return feats

    # ------------------------------------------------------------------ video side
    def pooled(self, frames: Tensor, mask: Tensor) -> Tensor:
        """CLIP4Clip meanP: the mean of the L2-normalised frame embeddings, L2-normalised."""
        return F.normalize(masked_mean_pool(F.normalize(frames, dim=-1), mask), dim=-1)

    def encode_video(self, batch: VideoBatch) -> Features:
        feats = {"video": self.pooled(self.backbone_frames(batch), batch.mask), "video_index": batch.index}
        if "per_candidate" in self.eval_modes() and self.hparams.text_fusion != "concat":
            feats["supplement"] = self.encode_strings(self.batch_supplements(batch))
        return feats

    # ------------------------------------------------------------------ search (experiments/search)
    search_keys = ("query", "video")

    def search_is_exact(self) -> bool:
        """Exact when the reported score is the bare query against the video (``test_supplement: none``)."""
        return self.eval_modes()[0] == "none"

    def rerank(self, text_feats: Features, video_feats: Features) -> Tensor:
        """The per-candidate and paired scores read each candidate's supplement (and the query's own video) through
        the data module of an evaluation split, which a search over a folder does not have."""
        raise NotImplementedError(f"{type(self).__name__}: the second stage of a search (test_supplement="
                                  f"{self.eval_modes()[0]!r}) is not supported; query the index with --rerank 0 "
                                  "(the query-video cosine only)")

    # ------------------------------------------------------------------ scoring
    def similarity(self, text_feats: Features, video_feats: Features) -> dict[str, Tensor]:
        """Cosine of text and video embeddings under every evaluated ``test_supplement`` mode (one view each)."""
        views = {}
        for mode in self.eval_modes():
            if mode == "none":
                views[mode] = cosine_matrix(text_feats["query"], video_feats["video"])
            elif mode == "paired":
                views[mode] = cosine_matrix(text_feats["paired"], video_feats["video"])
            else:
                views[mode] = self.per_candidate_similarity(text_feats, video_feats)
        return views

    def fuse_views(self, views: dict[str, Tensor]) -> Tensor:
        """The reported score: the first mode scored (``test_supplement`` at test, ``val_supplement`` at validation)."""
        return views[self.eval_modes()[0]]

    def per_candidate_similarity(self, text_feats: Features, video_feats: Features) -> Tensor:
        """``s(q_i, v_j) = cos(fuse(q_i, supplement_j), v_j)`` for a tile of texts and videos: no test query ever sees
        its own video's supplement unless it scores that video."""
        query, video = text_feats["query"], video_feats["video"]
        fusion = self.hparams.text_fusion
        if fusion == "sum":
            # cos(q + s_j, v_j) in closed form: (q·v_j + s_j·v_j) / ||q + s_j||, no [n_t, n_v, D] tensor
            supp = video_feats["supplement"].to(query.dtype)
            numerator = query @ video.t() + (supp * video).sum(-1)[None, :]
            norm_sq = (query * query).sum(-1)[:, None] + (supp * supp).sum(-1)[None, :] + 2 * query @ supp.t()
            return numerator / norm_sq.clamp_min(1e-12).sqrt()
        if fusion == "gate":
            assert self.gate is not None
            supp = video_feats["supplement"]
            rows = []
            for i in range(query.shape[0]):  # one query against the tile's videos: [n_v, D] at a time
                fused = self.gate(query[i].expand(supp.shape[0], -1), supp)
                rows.append((F.normalize(fused, dim=-1) * video).sum(-1))
            return torch.stack(rows)
        dm = self.trainer.datamodule
        texts = dm.eval_index(self._split_name()).texts
        queries = [texts[int(i)] for i in text_feats["text_index"].tolist()]
        supplements = self.supplements_of(video_feats["video_index"])
        sep = self.hparams.supplement_separator
        pairs = [fuse_strings(q, s, sep) for q in queries for s in supplements]
        step = self.hparams.per_candidate_batch
        fused = torch.cat([F.normalize(self.encode_strings(pairs[k:k + step], memo=False).float(), dim=-1)
                           for k in range(0, len(pairs), step)]).view(len(queries), len(supplements), -1)
        return (fused * video.float()[None]).sum(-1)

    # ------------------------------------------------------------------ training
    def training_loss(self, batch: PairBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """``weight_tv·L_tv + weight_ta·L_ta + weight_va·L_va`` on the all-gathered batch; each term logged alone."""
        hp = self.hparams
        query = self.backbone_text(batch.text).sentence
        if hp.use_supplement:
            text = self.fuse(batch.text.texts, query, self.batch_supplements(batch.video))
        else:
            text = query
        local: Features = {"text": text, "video": self.pooled(self.backbone_frames(batch.video), batch.video.mask)}
        if hp.weight_ta > 0 or hp.weight_va > 0:
            copies = self.backbone_augmented_frames(batch.video)  # [B, A, T, D]
            mask = batch.video.mask[:, None].expand(-1, copies.shape[1], -1)
            local["augmented"] = self.pooled(copies.flatten(0, 1), mask.flatten(0, 1)).view(*copies.shape[:2], -1)
        feats = self.gather_for_loss(local)
        text, video = F.normalize(feats["text"].float(), dim=-1), feats["video"].float()

        def term(scale: Tensor, anchors: Tensor, others: Tensor) -> Tensor:
            return infonce(scale.exp() * anchors @ others.t(), hp.include_positive, hp.symmetric)

        terms: dict[str, Tensor] = {}
        values: dict[str, Tensor] = {}
        values["tv"] = term(self.logit_scale, text, video)
        if "augmented" in feats:
            copies = feats["augmented"].float().unbind(1)
            values["ta"] = torch.stack([term(self.logit_scale_ta, text, c) for c in copies]).mean()
            values["va"] = torch.stack([term(self.logit_scale_va, video, c) for c in copies]).mean()
        for name, weight in (("tv", hp.weight_tv), ("ta", hp.weight_ta), ("va", hp.weight_va)):
            if weight > 0:
                terms[f"loss_{name}"] = weight * values[name]
        loss = sum(terms.values())
        logs = {**{f"L_{k}": v.detach() for k, v in values.items()}, "logit_scale_ta": self.logit_scale_ta.exp(),
                "logit_scale_va": self.logit_scale_va.exp()}
        return loss, {k: v.detach() for k, v in {**terms, **logs}.items()}

    # ------------------------------------------------------------------ artifacts
    def test_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """metrics.json, with the supplement mode of the reported score and of each view (the lineage of each mode's
        reads, and so the computed leakage verdict, comes from ``lineage_test_reads``)."""
        record = super().test_record(metrics)
        modes = self.eval_modes()
        record["test_supplement"] = modes[0]
        record["supplement_views"] = modes
        return record

    def lineage_test_reads(self, dm: Any, test: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        """What each scored mode read at test, scoped to its view unless it is the reported score: ``paired`` reads
        the ground-truth pairing (each query's own video) and the test videos' supplements; ``per_candidate`` the
        test videos' supplements; ``none`` nothing beyond the test split."""
        from datamodules.lineage import GROUND_TRUTH, read_record
        from lightning_modules.lineage import aux_reads

        modes = self.eval_modes()
        reads: list[dict[str, Any]] = []
        upstream: list[dict[str, Any]] = []
        missing: list[str] = []
        split = dm.splits["test"]
        for position, mode in enumerate(modes):
            if mode == "none":
                continue
            scope = None if position == 0 else f"{mode}/*"
            mode_reads, mode_up, mode_missing = aux_reads(dm, "test", [self.supplement_key], test, scope=scope)
            if mode == "paired":
                pairing = read_record(GROUND_TRUTH, getattr(dm, "name", "?"), "test",
                                      [v.video_id for v in split.videos], [t.text_id for t in split.texts], test,
                                      detail="each test query is fused with the supplement of its own ground-truth "
                                             "video (test_supplement: paired)")
                if scope:
                    pairing["scope"] = scope
                mode_reads.insert(0, pairing)
            reads += mode_reads
            upstream += mode_up
            missing += mode_missing
        return reads, upstream, missing
