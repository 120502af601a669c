"""Test-time post-processing of a finished test evaluation (``model.init_args.postprocess: [dsl, qbnorm]``), as a
callback.

``BaseRetrievalModule.configure_callbacks`` adds :class:`TestTimePostprocessing` when the model's ``postprocess`` asks
for any. Its ``setup`` checks QB-Norm's query bank against the test split before training (not hours later), and its
``on_test_end`` (after the module's ``on_test_epoch_end`` wrote the plain artifacts, which it never changes)
re-scores the test matrix with each requested flag (the matrix math lives in ``lightning_modules.postprocess``),
encodes QB-Norm's query bank of training texts with the module's own ``encode_text``/``score``, and (rank 0) writes
``metrics_<flag>.json`` and ``sim_t2v_<flag>.npy`` next to ``metrics.json``.

The callback depends on the module only through :class:`PostprocessedModule` (what a ``BaseRetrievalModule`` is), so
``lightning_modules`` never imports this file at module level and this file never imports the base.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from torch import Tensor

from datamodules.atomic import save_npy_atomic, write_text_atomic
from lightning_modules.postprocess import (
    activation_set,
    check_bank_disjoint,
    dual_softmax,
    postprocessed_metrics,
    qb_norm,
)
from lightning_modules.scoring import Features, as_float32

__all__ = ["QBNORM_BANK_SEED", "PostprocessedModule", "TestTimePostprocessing", "check_query_bank",
           "run_test_postprocessing"]

# QB-Norm's bank is a deterministic draw of training texts; recorded in metrics_qbnorm.json
QBNORM_BANK_SEED = 0


class PostprocessedModule(Protocol):
    """What the post-processing needs of a module: its flags (``hparams.postprocess``, ``dsl_temperature``,
    ``qbnorm_beta``, ``qbnorm_topk``, ``qbnorm_bank_size``, ``write_artifacts``), the test evaluation it just ran
    (``last_eval``, ``last_metrics``), and its encoders, scoring, gathering and metrics.json record."""

    hparams: Any
    trainer: L.Trainer
    device: torch.device
    training: bool
    last_eval: dict[str, Any]
    last_metrics: dict[str, Any]

    def encode_text(self, batch: Any) -> Features: ...
    def score(self, text_feats: Features, video_feats: Features) -> tuple[Tensor, dict[str, Tensor]]: ...
    def gather_eval_store(self, store: list[tuple[Tensor, Features]]) -> tuple[Tensor, Features]: ...
    def test_record(self, metrics: dict[str, Any]) -> dict[str, Any]: ...
    def artifact_dir(self) -> Path: ...
    def eval(self) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...


class TestTimePostprocessing(L.Callback):
    """Runs the module's requested post-processing after each test; ``results`` holds the last test's, by flag
    (``t2v``/``v2t`` matrices, ``metrics``, the ``postprocess`` record)."""

    __test__ = False  # a callback, not a pytest test class (its name starts with "Test")

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if dm is not None and "qbnorm" in pl_module.hparams.postprocess and stage in ("fit", "test"):
            check_query_bank(pl_module, dm)  # before training, not hours later at the end of the test

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not pl_module.hparams.postprocess:
            return
        out = pl_module.artifact_dir() if pl_module.hparams.write_artifacts else None  # every rank asks (broadcast)
        try:
            self.results = run_test_postprocessing(pl_module, pl_module.last_eval, pl_module.last_metrics, out)
        finally:
            pl_module.last_eval.pop("video_feats", None)  # only QB-Norm's bank needed the test videos' features


def check_query_bank(module: PostprocessedModule, dm: Any) -> None:
    """Refuse a QB-Norm bank that shares a text id or a described video with the test split (annotations only)."""
    if not hasattr(dm, "query_bank"):
        raise TypeError(f"model.init_args.postprocess: qbnorm needs a data module with query_bank (training "
                        f"texts); {type(dm).__name__} has none")
    bank = dm.query_bank(module.hparams.qbnorm_bank_size, seed=QBNORM_BANK_SEED)
    test = dm.splits["test"] if "test" in dm.splits else dm.load_split("test")
    check_bank_disjoint([t.text_id for t in bank.texts], [t.text_id for t in test.texts],
                        sorted({bank.videos[t.video].video_id for t in bank.texts}),
                        [v.video_id for v in test.videos])


def run_test_postprocessing(module: PostprocessedModule, ev: dict[str, Any], metrics: dict[str, Any],
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


def _dsl(module: PostprocessedModule, ev: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
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


def _qbnorm(module: PostprocessedModule, ev: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
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
def _encode_bank(module: PostprocessedModule, bank: Any) -> Features:
    """Features of the bank's texts, in bank order, on every rank (each encodes its shard; all-gathered)."""
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


def _write_artifacts(module: PostprocessedModule, name: str, result: dict[str, Any], ev: dict[str, Any],
                     out: Path) -> None:
    """``metrics_<name>.json`` (metrics.json's schema, ``postprocess`` describing what was done) and
    ``sim_t2v_<name>.npy`` (float32, the matrix the t2v numbers were computed from; DSL also writes its v2t
    matrix, ``sim_v2t_dsl.npy``, still texts x videos; QB-Norm its bank's scores against the test videos,
    ``sim_bank_qbnorm.npy``, with the bank's ``bank_text_ids_qbnorm.json``)."""
    if name in ev["views"]:
        raise ValueError(f"{type(module).__name__} has a similarity view named {name!r}, whose raw matrix would be "
                         f"overwritten by the {name} post-processing (sim_t2v_{name}.npy); rename the view")
    out.mkdir(parents=True, exist_ok=True)
    save_npy_atomic(out / f"sim_t2v_{name}.npy", result["t2v"].numpy().astype(np.float32))
    if result["v2t"] is not None:
        save_npy_atomic(out / f"sim_v2t_{name}.npy", result["v2t"].numpy().astype(np.float32))
    if "bank_sim" in result:  # QB-Norm's bank x test videos scores: the result can be recomputed offline
        save_npy_atomic(out / f"sim_bank_{name}.npy", result["bank_sim"].numpy().astype(np.float32))
        write_text_atomic(out / f"bank_text_ids_{name}.json", json.dumps(result["bank_text_ids"]))
    record = module.test_record(result["metrics"])
    record["postprocess"] = result["postprocess"]
    if "bank_text_ids" in result:  # the bank is one more read of this number's lineage (overlap with test counted)
        record.update(_bank_lineage(module, result["bank_text_ids"]))
    write_text_atomic(out / f"metrics_{name}.json", json.dumps(record, indent=2, default=str))


def _bank_lineage(module: PostprocessedModule, bank_text_ids: list[str]) -> dict[str, Any]:
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
