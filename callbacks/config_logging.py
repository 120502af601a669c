"""Save the resolved config next to the run *and* push it to every logger (W&B gets it whole).

Lightning's ``SaveConfigCallback`` writes ``config.yaml`` into the log directory only; the W&B run
would otherwise show a partial config (Lightning #19268). The resolved config is what reproduces
a run, so it goes to the W&B run config and to the run directory.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger


class LoggerSaveConfigCallback(SaveConfigCallback):
    """``SaveConfigCallback`` that also logs the full config to W&B (rank 0 only; no collectives)."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config: dict[str, Any] = self.config.as_dict()
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"cli": config, "stage": stage}, allow_val_change=True)
