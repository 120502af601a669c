"""Test-time post-processing of a finished test evaluation (``postprocess: [dsl, qbnorm]``).

``BaseRetrievalModule.on_test_epoch_end`` hands its plain test evaluation to ``run_test_postprocessing`` after the
plain artifacts are written; this module re-scores the matrix with each requested flag (the matrix math lives in
``lightning_modules.postprocess``), encodes QB-Norm's query bank of training texts with the module's own
``encode_text``/``score``, and (rank 0) writes ``metrics_<flag>.json`` and ``sim_t2v_<flag>.npy`` next to
``metrics.json``, which it never changes. Kept out of the base so the base reads as the shared training and
evaluation protocol.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lightning_modules.metrics import RECALL_KS, ranks_t2v, ranks_v2t, summarize_ranks
from lightning_modules.postprocess import activation_set, check_bank_disjoint, dual_softmax, qb_norm

if TYPE_CHECKING:
    from lightning_modules.base import BaseRetrievalModule, Features

__all__ = ["QBNORM_BANK_SEED", "check_query_bank", "postprocessed_metrics", "run_test_postprocessing"]

# QB-Norm's bank is a deterministic draw of training texts; recorded in metrics_qbnorm.json
QBNORM_BANK_SEED = 0


def check_query_bank(module: BaseRetrievalModule, dm: Any) -> None:
    """Refuse a QB-Norm bank that shares a text id or a described video with the test split (annotations only)."""
    if not hasattr(dm, "query_bank"):
        raise TypeError(f"model.init_args.postprocess: qbnorm needs a data module with query_bank (training "
                        f"texts); {type(dm).__name__} has none")
    bank = dm.query_bank(module.hparams.qbnorm_bank_size, seed=QBNORM_BANK_SEED)
    test = dm.splits["test"] if "test" in dm.splits else dm.load_split("test")
    check_bank_disjoint([t.text_id for t in bank.texts], [t.text_id for t in test.texts],
                        sorted({bank.videos[t.video].video_id for t in bank.texts}),
                        [v.video_id for v in test.videos])


def run_test_postprocessing(module: BaseRetrievalModule, ev: dict[str, Any], metrics: dict[str, Any],
                            out: Path | None) -> dict[str, dict[str, Any]]:
    """Each requested post-processing of the test matrix ``ev["sim"]``, its metrics and (rank 0) its artifacts.

    Every rank computes (QB-Norm's bank encoding is a collective under DDP: each rank encodes its shard of the
    bank and the features are all-gathered, as the evaluation features are). Returns flag -> ``t2v``/``v2t``
    matrices, ``metrics`` and the ``postprocess`` record.
    """
    results: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(module.hparams.postprocess):
        started = time.perf_counter()
        result = _dsl(module, ev, metrics) if name == "dsl" else _qbnorm(module, ev, metrics)
        result["metrics"]["postprocess_seconds"] = round(time.perf_counter() - started, 3)
        results[name] = result
    if out is not None and module.trainer.is_global_zero:
        for name, result in results.items():
            _write_artifacts(module, name, result, ev, out)
    return results


def _dsl(module: BaseRetrievalModule, ev: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """DSL in both directions: t2v with the prior over the test queries, v2t with the prior over videos."""
    tau = float(module.hparams.dsl_temperature)
    t2v, v2t = dual_softmax(ev["sim"], tau, "t2v"), dual_softmax(ev["sim"], tau, "v2t")
    record = {"name": "dsl", "params": {"temperature": tau},
              "bank": {"split": "test", "size": len(ev["gt"]),
                       "note": "the prior of each video is computed over every test query at once (transductive)"},
              "directions": {"t2v": "dsl (prior over test queries)", "v2t": "dsl (prior over test videos)"},
              "negative_score_fraction": float((ev["sim"] < 0).float().mean())}
    return {"t2v": t2v, "v2t": v2t, "metrics": postprocessed_metrics(t2v, v2t, ev["gt"], plain),
            "postprocess": record}


def _qbnorm(module: BaseRetrievalModule, ev: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """QB-Norm (dynamic inverted softmax) of the t2v scores with a bank of training-split texts.

    The bank (``datamodule.query_bank``) is checked to share no text id and no described video with the test
    split, encoded with the module's ``encode_text``, and scored against the test videos through ``score`` (the
    same tiles and ``fuse_views`` as the test queries; a fusion that standardises over the whole matrix, such as
    NarVid's z-score, then uses the bank matrix's own statistics). v2t is not post-processed.
    """
    hp = module.hparams
    dm = module.trainer.datamodule
    check_query_bank(module, dm)  # again, on the split as evaluated
    bank = dm.query_bank(hp.qbnorm_bank_size, seed=QBNORM_BANK_SEED)
    bank_sim, _ = module.score(_encode_bank(module, bank), ev["video_feats"])
    t2v = qb_norm(ev["sim"], bank_sim, float(hp.qbnorm_beta), int(hp.qbnorm_topk))
    active = activation_set(bank_sim, int(hp.qbnorm_topk))
    normalised = int(active[torch.argmax(ev["sim"], dim=1)].sum())
    record = {"name": "qbnorm",
              "params": {"beta": float(hp.qbnorm_beta), "topk": int(hp.qbnorm_topk),
                         "bank_size": hp.qbnorm_bank_size, "log_space": True},
              "bank": dict(bank.info),
              "activation_set_size": int(active.sum()), "queries_normalised": normalised,
              "directions": {"t2v": "qbnorm",
                             "v2t": "not post-processed: the v2t_* numbers (and their part of rsum) are the "
                                    "plain scores' (a v2t QB-Norm would need a bank of videos)"}}
    return {"t2v": t2v, "v2t": None, "metrics": postprocessed_metrics(t2v, None, ev["gt"], plain),
            "postprocess": record, "bank_sim": bank_sim, "bank_text_ids": [t.text_id for t in bank.texts]}


@torch.no_grad()
def _encode_bank(module: BaseRetrievalModule, bank: Any) -> Features:
    """Features of the bank's texts, in bank order, on every rank (each encodes its shard; all-gathered)."""
    from lightning_modules.base import as_float32

    trainer = module.trainer
    loader = trainer.datamodule.query_bank_dataloader(bank, trainer.world_size, trainer.global_rank)
    was_training = module.training
    module.eval()
    store: list[tuple[Tensor, Features]] = []
    with trainer.precision_plugin.forward_context():  # the autocast the test queries were encoded under
        for batch in loader:
            batch = batch.to(module.device)
            store.append((batch.index, as_float32(module.encode_text(batch))))
    module.train(was_training)
    idx, feats = module.gather_eval_store(store)
    if len(idx) != len(bank.texts):
        raise RuntimeError(f"query bank: encoded {len(idx)} of {len(bank.texts)} texts after de-duplication")
    return feats


def _write_artifacts(module: BaseRetrievalModule, name: str, result: dict[str, Any], ev: dict[str, Any],
                     out: Path) -> None:
    """``metrics_<name>.json`` (metrics.json's schema, ``postprocess`` describing what was done) and
    ``sim_t2v_<name>.npy`` (float32, the matrix the t2v numbers were computed from; DSL also writes its v2t
    matrix, ``sim_v2t_dsl.npy``, still texts x videos; QB-Norm its bank's scores against the test videos,
    ``sim_bank_qbnorm.npy``, with the bank's ``bank_text_ids_qbnorm.json``)."""
    if name in ev["views"]:
        raise ValueError(f"{type(module).__name__} has a similarity view named {name!r}, whose raw matrix would be "
                         f"overwritten by the {name} post-processing (sim_t2v_{name}.npy); rename the view")
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"sim_t2v_{name}.npy", result["t2v"].numpy().astype(np.float32))
    if result["v2t"] is not None:
        np.save(out / f"sim_v2t_{name}.npy", result["v2t"].numpy().astype(np.float32))
    if "bank_sim" in result:  # QB-Norm's bank x test videos scores: the result can be recomputed offline
        np.save(out / f"sim_bank_{name}.npy", result["bank_sim"].numpy().astype(np.float32))
        (out / f"bank_text_ids_{name}.json").write_text(json.dumps(result["bank_text_ids"]))
    record = module.test_record(result["metrics"])
    record["postprocess"] = result["postprocess"]
    if "bank_text_ids" in result:  # the bank is one more read of this number's lineage (overlap with test counted)
        record.update(_bank_lineage(module, result["bank_text_ids"]))
    (out / f"metrics_{name}.json").write_text(json.dumps(record, indent=2, default=str))


def _bank_lineage(module: BaseRetrievalModule, bank_text_ids: list[str]) -> dict[str, Any]:
    """metrics.json's lineage and verdict with QB-Norm's query bank added as a read (``query bank`` role)."""
    from datamodules.lineage import QUERY_BANK, read_record
    from lightning_modules.lineage import test_lineage, test_set_of, verdict_fields

    dm = module.trainer.datamodule
    test = test_set_of(dm)
    bank = dm.query_bank(module.hparams.qbnorm_bank_size, seed=QBNORM_BANK_SEED)
    videos = sorted({bank.videos[t.video].video_id for t in bank.texts})
    read = read_record(QUERY_BANK, getattr(dm, "name", "?"), bank.name, videos, bank_text_ids, test,
                       texts=[], detail=f"{len(bank_text_ids)} training texts normalise the test scores")
    return verdict_fields(test_lineage(module, dm, extra_reads=[read]))


def postprocessed_metrics(t2v: Tensor, v2t: Tensor | None, gt: Tensor, plain: dict[str, Any]) -> dict[str, float]:
    """metrics.json's keys for a post-processed matrix: t2v ranked on ``t2v``, v2t on ``v2t`` (or, when ``None``,
    the plain numbers copied), rsum over both, and the plain run's counts."""
    out = summarize_ranks(ranks_t2v(t2v, gt), "t2v")
    if v2t is not None:
        out.update(summarize_ranks(ranks_v2t(v2t, gt), "v2t"))
    else:
        out.update({k: float(v) for k, v in plain.items() if k.startswith("v2t_")})
    out["rsum"] = float(sum(out[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in RECALL_KS))
    for key in ("num_texts", "num_videos", "num_videos_failed", "num_texts_unscored"):
        out[key] = float(plain[key])
    return out
