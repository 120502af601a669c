"""Lineage of trained models and test runs (``datamodules/lineage.py`` holds the nodes and the verdict).

``LineageMixin`` is mixed into every module that ``fit`` trains (the retrieval methods and the captioner training):

* at ``on_fit_start`` it records what this fit reads - the training split, the model-selection split, the auxiliary
  captions of both (with the lineage of each caption store) and the data module's own upstream (a preference store)
  - counted against the data module's test split;
* the node travels in every checkpoint (``checkpoint["vtr_lineage"]``) and comes back with it (``test --ckpt_path``,
  ``load_from_checkpoint``), so a test run, a captioner that generates captions from the checkpoint and a preference
  scorer all know what the model saw;
* ``test_lineage`` builds a test run's node (the test split, the captions it read, test-time inputs the method
  declares, the fit node) and ``metrics.json`` carries it with the verdict computed from it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from datamodules.lineage import (
    SELECTION,
    TEST,
    TRAINING,
    TestSet,
    caption_read,
    leakage_verdict,
    node,
    read_sidecar,
    split_read,
)
from lightning_modules.attachment import attached_trainer

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "vtr_lineage"


def test_set_of(dm: Any) -> TestSet | None:
    """The test split of a data module, from its annotations (no video is read), or None when it has none."""
    if dm is None or not hasattr(dm, "splits"):
        return None
    split = dm.splits.get("test")
    if split is None:
        loader = getattr(dm, "load_split", None)
        if loader is None:
            return None
        try:
            split = loader("test")
        except (FileNotFoundError, ValueError, NotImplementedError, KeyError) as exc:
            log.warning("lineage: %s has no readable test split (%s); reads are recorded uncounted",
                        type(dm).__name__, exc)
            return None
    return TestSet(getattr(dm, "name", type(dm).__name__), split)


def store_upstream(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """The lineage node written next to a caption store (or another input file), or why there is none."""
    lineage = read_sidecar(path)
    if lineage is None:
        return None, f"{Path(path).name} has no lineage record ({Path(path).name}.lineage.json): it was made " \
                     "before lineage was recorded, or by hand / an importer"
    return lineage, None


def aux_reads(dm: Any, split_name: str, kinds: Sequence[str], test: TestSet | None,
              scope: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Reads of the ``kinds`` auxiliary captions of a split's videos, their stores' lineage, and what lacks one."""
    reads: list[dict[str, Any]] = []
    upstream: list[dict[str, Any]] = []
    missing: list[str] = []
    split = dm.splits.get(split_name) if hasattr(dm, "splits") else None
    paths = getattr(dm, "aux_captions", {}) or {}
    if split is None or not hasattr(dm, "aux_store"):
        return reads, upstream, missing
    dataset = getattr(dm, "name", type(dm).__name__)
    for kind in kinds:
        path = paths.get(kind)
        if path is None:
            continue
        store = dm.aux_store(kind)
        if store is None:
            continue
        records = [store[v.video_id] for v in split.videos if v.video_id in store]
        for read in caption_read(split_name, kind, path, records, test, dataset):
            if scope:
                read["scope"] = scope
            reads.append(read)
        lineage, why = store_upstream(path)
        if lineage is not None:
            upstream.append(lineage)
        elif why is not None:
            missing.append(why)
    return reads, upstream, missing


def fit_lineage(module: Any, dm: Any) -> dict[str, Any]:
    """What a fit reads (see the module docstring), counted against ``dm``'s test split."""
    test = test_set_of(dm)
    dataset = getattr(dm, "name", type(dm).__name__)
    reads: list[dict[str, Any]] = []
    upstream: list[dict[str, Any]] = []
    missing: list[str] = []
    splits = getattr(dm, "splits", {}) or {}
    kinds = sorted(module.lineage_aux_kinds("fit")) if hasattr(module, "lineage_aux_kinds") else []
    for name, role in (("train", TRAINING), ("val", SELECTION)):
        split = splits.get(name)
        if split is None:
            continue
        detail = str(split.info.get("model_selection", "")) if role == SELECTION else ""
        reads.append(split_read(role, split, test, dataset, detail=detail))
        more_reads, more_up, more_missing = aux_reads(dm, name, kinds, test)
        reads += more_reads
        upstream += more_up
        missing += more_missing
    if hasattr(module, "lineage_extra_upstream"):
        extra_nodes, extra_missing = module.lineage_extra_upstream()
        upstream += extra_nodes
        missing += extra_missing
    own = getattr(dm, "lineage_upstream", None)  # a data module fed by another stage's output (preferences)
    if callable(own):
        extra_nodes, extra_missing = own()
        upstream += extra_nodes
        missing += extra_missing
    return node("fit", f"fit of {type(module).__name__}", test, reads, _dedup(upstream), _dedup_str(missing),
                dataset=dataset)


def _dedup(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for n in nodes:
        key = repr(sorted((k, repr(v)) for k, v in n.items()))
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


def _dedup_str(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


class LineageMixin:
    """Records a fit's lineage and carries it in checkpoints (see the module docstring).

    Which auxiliary caption kinds a run read is observed, not declared: every access goes through ``note_aux_read``
    (``BaseRetrievalModule.aux_caption_embeddings`` and the methods' own caption accessors call it).
    """

    _fit_lineage: dict[str, Any] | None = None
    _aux_read: set[str]

    def add_lineage_upstream(self, lineage: dict[str, Any] | None, missing: str | None = None) -> None:
        """Another stage's lineage that fed this fit besides its data (the checkpoint it starts from)."""
        extra = self.__dict__.setdefault("_lineage_extra", ([], []))
        if lineage is not None:
            extra[0].append(lineage)
        if missing:
            extra[1].append(missing)

    def lineage_extra_upstream(self) -> tuple[list[dict[str, Any]], list[str]]:
        return self.__dict__.get("_lineage_extra", ([], []))

    def note_aux_read(self, kind: str) -> None:
        """Record that this run read the ``kind`` auxiliary captions (their stores then enter its lineage)."""
        if not hasattr(self, "_aux_read"):
            self._aux_read = set()
        self._aux_read.add(kind)

    def lineage_aux_kinds(self, stage: str) -> set[str]:
        """The auxiliary caption kinds read since the current fit or test started."""
        return set(getattr(self, "_aux_read", set()))

    def reset_lineage_reads(self) -> None:
        self._aux_read = set()

    def on_fit_start(self) -> None:
        super().on_fit_start()  # type: ignore[misc]
        self.reset_lineage_reads()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        trainer = getattr(self, "_trainer", None)
        fitting = trainer is not None and getattr(trainer.state, "fn", None) is not None and \
            trainer.state.fn.value == "fit"
        if fitting:  # what this fit has read so far (the kinds its steps and validations actually touched)
            self._fit_lineage = fit_lineage(self, trainer.datamodule)
        if self._fit_lineage is not None:
            checkpoint[CHECKPOINT_KEY] = self._fit_lineage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self._fit_lineage = checkpoint.get(CHECKPOINT_KEY)

    def fit_lineage_node(self) -> dict[str, Any] | None:
        """The lineage of the fit that produced these weights (None when they were never trained here)."""
        return self._fit_lineage

    def lineage_test_reads(self, dm: Any, test: TestSet | None
                           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        """The reads a test made besides the test split: the auxiliary captions of the test videos it read (with
        their stores' lineage). A method whose reads feed only some similarity views overrides this (conical)."""
        return aux_reads(dm, "test", sorted(self.lineage_aux_kinds("test")), test)


def checkpoint_lineage(checkpoint: dict[str, Any], path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """The fit lineage a loaded checkpoint dict carries, or why there is none."""
    lineage = checkpoint.get(CHECKPOINT_KEY)
    if isinstance(lineage, dict):
        return lineage, None
    return None, f"checkpoint {Path(path).name} has no lineage record (saved before lineage was recorded)"


def test_lineage(module: Any, dm: Any, extra_reads: Sequence[dict[str, Any]] = (),
                 extra_upstream: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A test run's lineage node: the test split, the captions the method read at test (``lineage_test_reads``),
    the fit that trained the weights, and ``extra_*`` (a query bank)."""
    test = test_set_of(dm)
    dataset = getattr(dm, "name", type(dm).__name__)
    split = dm.splits.get("test") if hasattr(dm, "splits") else None
    reads: list[dict[str, Any]] = []
    if split is not None:
        reads.append(split_read(TEST, split, test, dataset))
    method_reads, upstream, missing = module.lineage_test_reads(dm, test)
    reads += method_reads
    reads += list(extra_reads)
    upstream = list(upstream) + list(extra_upstream)
    fit = module.fit_lineage_node()
    trainer = attached_trainer(module) if isinstance(module, L.LightningModule) else None
    ckpt_path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
    if fit is not None:
        upstream.insert(0, fit)
    elif ckpt_path:
        missing.append(f"checkpoint {Path(ckpt_path).name} has no lineage record (saved before lineage was recorded)")
    return node("test", f"test of {type(module).__name__}", test, reads, _dedup(upstream), _dedup_str(missing),
                dataset=dataset)


def verdict_fields(lineage: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``'s ``lineage``, ``leakage`` (computed) and ``leakage_unverified``."""
    leaks, unverified = leakage_verdict(lineage)
    return {"lineage": lineage, "leakage": leaks, "leakage_unverified": unverified}
