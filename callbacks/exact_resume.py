"""What a checkpoint needs beyond Lightning's own state for a resumed run to equal an uninterrupted one.

Lightning stores weights, optimiser, schedulers, loop counters, callback states and (for stateful loaders)
the data position; ``datamodules.sampling`` makes the training order a function of (seed, epoch). Left:

* the **RNG states** of every rank (python, numpy, torch CPU, CUDA): dropout and anything else drawing from
  the global generators continues exactly where the interrupted run was. They are restored at
  ``on_train_start``, after the resumed run has built its model and loaders (which draw from the RNGs too)
  and right before the first training step, the point the interrupted run's next step followed its save;
* the **logger versions** (CSV/TensorBoard version directory, W&B run id), so ``main.py`` can point the
  resumed run's loggers at the same run directory before they are created (``resume_logger_overrides``);
  ``ModelCheckpoint`` then finds its ``dirpath`` unchanged and keeps ``best_model_path``/``best_model_score``.
"""

from __future__ import annotations

import csv
import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import CSVLogger, Logger

log = logging.getLogger(__name__)

RNGState = dict[str, Any]


def capture_rng_state() -> RNGState:
    """This process's python, numpy, torch and (when initialised) CUDA generator states.

    Only tensors, ints, floats and tuples: Lightning loads checkpoints with ``weights_only=True``, which
    refuses numpy arrays (numpy's state vector travels as a tensor).
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: RNGState = {"python": random.getstate(), "torch": torch.get_rng_state(),
                       "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                                 "pos": int(pos), "has_gauss": int(has_gauss),
                                 "cached_gaussian": float(cached_gaussian)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: RNGState) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _logger_version(logger: Logger) -> str | int | None:
    try:
        return logger.version
    except Exception:  # a logger without a resolvable version (e.g. a W&B run that failed to start)
        return None


class ExactResume(L.Callback):
    """Checkpoints every rank's RNG states and the loggers' versions; restores the RNGs on resume.

    Always added by ``main.py`` (the CLI); harmless when a run is never resumed. Under DDP every rank's
    states are gathered into the (rank-0-written) checkpoint, so each rank resumes its own stream; a
    checkpoint from another world size restores none (the data order differs then anyway).
    """

    def __init__(self) -> None:
        self._pending: list[RNGState] | None = None

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def state_dict(self) -> dict[str, Any]:
        own = capture_rng_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # checkpoints are dumped on every rank (rank 0 writes), so this collective lines up
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, own)
        else:
            states = [own]
        return {"rng": states, "loggers": list(self._loggers)}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    @property
    def _loggers(self) -> list[dict[str, Any]]:
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return []
        return [{"class": type(lg).__name__, "name": getattr(lg, "name", None), "version": _logger_version(lg)}
                for lg in trainer.loggers]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states, self._pending = self._pending, None
        if not states:
            return
        if len(states) != trainer.world_size:
            log.warning("checkpoint holds RNG states of %d rank(s), this run has %d: RNG states not restored",
                        len(states), trainer.world_size)
            return
        restore_rng_state(states[trainer.global_rank])


# ------------------------------------------------------------------------------- used by main.py on resume
def read_resume_info(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint's global step and ``ExactResume`` state (loggers), without loading the tensors."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # Lightning reports an unreadable checkpoint itself when it restores it
        log.warning("could not read %s ahead of resuming (%s): the run gets a new logger version", ckpt_path, exc)
        return {"global_step": None, "loggers": []}
    state = (ckpt.get("callbacks") or {}).get("ExactResume", {})
    return {"global_step": int(ckpt.get("global_step", 0)), "loggers": state.get("loggers", [])}


def run_dir_of_checkpoint(ckpt_path: str | Path) -> Path | None:
    """``<save_dir>/<name>/<version>`` for a checkpoint at ``<run dir>/checkpoints/<file>.ckpt``."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


VERSIONED_DIR_LOGGERS = ("CSVLogger", "TensorBoardLogger")  # run directory <save_dir>/<name>/<version>


def resume_logger_overrides(loggers: list[tuple[str, dict[str, Any]]], ckpt_path: str | Path,
                            info: dict[str, Any]) -> list[dict[str, Any]]:
    """For each configured logger (class name, init args), the init args that point it at the checkpoint's run.

    The recorded versions (``ExactResume`` state) match loggers by class, in order: a CSV/TensorBoard logger
    gets ``version`` (its run directory), a W&B logger ``id`` (Lightning opens W&B runs with
    ``resume="allow"``). A checkpoint without them (written before this callback existed) still resumes a
    CSV/TensorBoard logger whose ``<save_dir>/<name>`` holds the checkpoint's run directory. Versions the
    config sets explicitly are left alone.
    """
    recorded: dict[str, list[Any]] = {}
    for entry in info.get("loggers", []):
        recorded.setdefault(entry["class"], []).append(entry["version"])
    run_dir = run_dir_of_checkpoint(ckpt_path)
    updates: list[dict[str, Any]] = []
    for cls, args in loggers:
        versions = recorded.get(cls)
        version = versions.pop(0) if versions else None
        update: dict[str, Any] = {}
        if cls == "WandbLogger":
            if version is not None and not args.get("id") and not args.get("version"):
                update["id"] = version
        elif cls in VERSIONED_DIR_LOGGERS and args.get("version") is None:
            if version is None and run_dir is not None and args.get("save_dir") is not None:
                root = Path(args["save_dir"]) / str(args.get("name") or "")
                if run_dir.parent.resolve() == root.resolve():
                    version = run_dir.name
            if version is not None:
                update["version"] = version
        updates.append(update)
    return updates


def keep_csv_rows_before(logger: CSVLogger, global_step: int) -> int:
    """Carry the rows the interrupted run logged before its checkpoint into the resumed run's ``metrics.csv``.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it opens a run directory; rows at a step
    at or after the checkpoint's are dropped, as the resumed run logs them again. Rank 0 only.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return 0
    with path.open(newline="") as fh:
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
    kept = [row for row in rows if "step" in row and int(float(row["step"])) < global_step]
    writer = logger.experiment  # creating the writer removes the old file; its rows are written first
    writer.metrics[:0] = kept
    writer.save()
    return len(kept)
