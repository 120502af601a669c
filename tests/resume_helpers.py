"""Importable pieces for the kill-and-resume tests (the runs are separate ``python main.py`` processes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from datamodules.batch import VideoBatch
from lightning_modules.base import Features
from lightning_modules.clip4clip import CLIP4Clip


class DropoutCLIP4Clip(CLIP4Clip):
    """CLIP4Clip with dropout on the video embedding, so training draws from the global torch RNG (the tiny
    test backbone has no dropout of its own, and an exact resume must restore that RNG too)."""

    def __init__(self, feature_dropout: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature_dropout = feature_dropout

    def encode_video(self, batch: VideoBatch) -> Features:
        feats = super().encode_video(batch)
        return {"video": F.dropout(feats["video"], self.feature_dropout, self.training)}


class PauseAtStep(L.Callback):
    """Writes ``marker`` and sleeps when the batch after ``step`` optimiser steps is about to start, so a test
    can SIGKILL the run at a known point (the checkpoints of earlier steps are on disk by then)."""

    def __init__(self, step: int, marker: str, seconds: float = 600.0) -> None:
        self.step, self.marker, self.seconds = step, marker, seconds

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(f"{trainer.current_epoch} {batch_idx}")
            time.sleep(self.seconds)


class SaveFinalWeights(L.Callback):
    """Saves the weights at the end of training (``last.ckpt`` may be older: Lightning 2.6 rewrites it only
    with a top-k or step checkpoint, or at the end of a process that saved nothing else)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            torch.save(pl_module.state_dict(), self.path)


class CrashAtStep(L.Callback):
    """Raises when the batch after ``step`` optimiser steps is about to start: a crash of every rank at once
    (under ``ddp_spawn`` a SIGKILL of the launcher would orphan the workers)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash before step {self.step}")
