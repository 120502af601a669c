"""``RunCosts``: what a run costs, measured inside the run itself (the leaderboard's cost columns,
``experiments/leaderboard``).

Added to any ``main.py fit`` / ``test`` run with ``--trainer.callbacks+=RunCosts`` (the leaderboard adds it to every
cell); it changes nothing the run computes. It measures:

- **parameters** when fitting starts: the trainable ones (``requires_grad``) and all of them;
- **training steps**: each batch from ``on_train_batch_start`` to ``on_train_batch_end`` (forward, backward and the
  optimiser step; CUDA synchronised on both sides), and the interval from one step's end to the next one's (the same
  plus loading the batch). The record keeps the median of each over the whole fit, and the step count;
- **evaluation on a 1,000-video gallery**, at the end of a test of a ``BaseRetrievalModule``, before the module's own
  end-of-test evaluation (callbacks run first): the test's text and video features, gathered as the test gathers them
  (``gather_eval_store``), the video features repeated in test-set order until there are ``gallery_size`` rows
  (160 SynthVTR test videos -> 6.25 copies), then one timed call of the module's ``score`` (every view its test
  scores, in its own tiles) of all test queries against that gallery. The time divided by the number of queries is the
  evaluation time per query; encoding the queries and the videos is not in it (the features are what the test
  encoded). The module's own evaluation afterwards is untouched (``score`` keeps no state that the test reads, except
  ExCae's expert usage, which its own later ``score`` call rewrites).

Everything goes to ``<log_dir>/run_costs.json`` (rank 0; written atomically; a fit and the test after it merge into
one file).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from datamodules.atomic import write_json_atomic

OUTPUT = "run_costs.json"


def _sync(trainer: L.Trainer) -> None:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        torch.cuda.synchronize(device)



def tile_rows(feats: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """Every tensor of ``feats`` (one row per video, first dimension) repeated in order to ``rows`` rows."""
    sizes = {key: int(value.shape[0]) for key, value in feats.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"video features with different row counts {sizes}: cannot tell the videos apart")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError("no video features to tile")
    index = torch.arange(rows) % n
    return {key: value[index.to(value.device)] for key, value in feats.items()}


class RunCosts(L.Callback):
    """Parameters, training step times and the gallery evaluation time of a run (see the module docstring).

    Args:
        gallery_size: videos in the timed evaluation gallery.
        output: file name under the run's ``log_dir``.
    """

    def __init__(self, gallery_size: int = 1000, output: str = OUTPUT) -> None:
        if gallery_size < 1:
            raise ValueError(f"gallery_size must be at least 1, got {gallery_size}")
        self.gallery_size = gallery_size
        self.output = output
        self._step_ms: list[float] = []
        self._interval_ms: list[float] = []
        self._started: float | None = None
        self._last_end: float | None = None
        self._fit_started: float | None = None
        self._record: dict[str, Any] = {}

    # ------------------------------------------------------------------ where the record goes
    def path(self, trainer: L.Trainer) -> Path:
        return Path(trainer.log_dir or trainer.default_root_dir) / self.output

    def _write(self, trainer: L.Trainer, **parts: Any) -> None:
        self._record.update(parts)
        if trainer.is_global_zero:
            write_json_atomic(self.path(trainer), self._record)

    # ------------------------------------------------------------------ fit
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = list(pl_module.parameters())
        self._fit_started = time.perf_counter()
        self._write(trainer, trainable_params=sum(p.numel() for p in params if p.requires_grad),
                    total_params=sum(p.numel() for p in params), device=str(trainer.strategy.root_device),
                    world_size=trainer.world_size, precision=str(trainer.precision))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        _sync(trainer)
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._started is None:
            return
        _sync(trainer)
        now = time.perf_counter()
        self._step_ms.append((now - self._started) * 1000.0)
        if self._last_end is not None:
            self._interval_ms.append((now - self._last_end) * 1000.0)
        self._last_end, self._started = now, None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the gap across an epoch boundary holds validation: not a training interval
        self._last_end = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fit_s = None if self._fit_started is None else round(time.perf_counter() - self._fit_started, 3)
        self._write(trainer, train_steps=len(self._step_ms),
                    step_ms_median=round(statistics.median(self._step_ms), 3) if self._step_ms else None,
                    interval_ms_median=round(statistics.median(self._interval_ms), 3) if self._interval_ms else None,
                    fit_s=fit_s)

    # ------------------------------------------------------------------ test
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        store = getattr(pl_module, "_eval_store", None)
        gather = getattr(pl_module, "gather_eval_store", None)
        score = getattr(pl_module, "score", None)
        if not isinstance(store, dict) or not store.get("text") or not store.get("video") or gather is None \
                or score is None:
            return  # not a retrieval module's test (nothing scored): nothing to time
        _, text_feats = gather(store["text"])   # every rank takes part in the all-gather
        _, video_feats = gather(store["video"])
        if not trainer.is_global_zero:
            return
        test_videos = int(next(iter(video_feats.values())).shape[0])
        gallery = tile_rows(video_feats, self.gallery_size)
        queries = int(next(iter(text_feats.values())).shape[0])
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            _sync(trainer)
            started = time.perf_counter()
            sim, _ = score(text_feats, gallery)
            _sync(trainer)
            seconds = time.perf_counter() - started
        pl_module.train(was_training)
        if tuple(sim.shape) != (queries, self.gallery_size):
            raise RuntimeError(f"the gallery scoring returned shape {tuple(sim.shape)}, expected "
                               f"({queries}, {self.gallery_size})")
        self._write(trainer, eval_gallery={
            "gallery_videos": self.gallery_size, "test_videos": test_videos, "queries": queries,
            "seconds": round(seconds, 4), "ms_per_query": round(seconds / max(queries, 1) * 1000.0, 4),
            "how": f"the module's score() of its {queries} test queries against its {test_videos} test videos' "
                   f"features repeated in order to {self.gallery_size} rows (features as the test gathered them; "
                   "encoding not included)"})
