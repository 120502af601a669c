"""``main.py`` takes any ``LightningDataModule`` (not only ``VideoTextDataModule`` subclasses), by short class name too.

A data module with an interface of its own (as a preference-pair module for caption training will have) runs ``fit``
(and the test after it) through the CLI, and composes with a shipped retrieval model config; the shipped datasets'
short names keep resolving (every shipped composition: ``tests/test_configs.py``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from main import main
from tests.run_helpers import TINY_CLIP4CLIP


class TinyPairs(L.LightningDataModule):
    """Random regression pairs: a data module that shares nothing with ``VideoTextDataModule``."""

    def __init__(self, num_pairs: int = 8, batch_size: int = 4) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.data = TensorDataset(torch.randn(num_pairs, 3, generator=generator),
                                  torch.randn(num_pairs, 1, generator=generator))
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)


class TinyRegressor(L.LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Linear(3, 1)

    def _loss(self, batch: list[Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return self._loss(batch)

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch))

    def test_step(self, batch: list[Tensor], batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_fit_with_a_data_module_that_is_not_a_video_text_data_module(tmp_path: Path):
    cli = main(["fit", "--model=TinyRegressor", "--data=TinyPairs", "--data.init_args.batch_size=2",
                "--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.devices=1",
                "--trainer.logger=false", "--trainer.enable_checkpointing=false",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                f"--trainer.default_root_dir={tmp_path}"])
    assert type(cli.datamodule) is TinyPairs and cli.datamodule.batch_size == 2
    assert cli.trainer.global_step == 4  # 8 pairs in batches of 2
    assert "test/loss" in cli.trainer.callback_metrics  # fit ended with its test


def test_a_retrieval_config_takes_another_data_module(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TINY_CLIP4CLIP), "--data=TinyPairs", "--data.init_args.num_pairs=6",
              "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].endswith(".CLIP4Clip")
    assert printed["data"]["class_path"].endswith(".TinyPairs")
    assert printed["data"]["init_args"] == {"num_pairs": 6, "batch_size": 4}


def test_shipped_data_modules_still_resolve_by_short_name(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root=/nowhere", "--print_config"])
    assert exit_info.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["class_path"] == "datamodules.MSRVTT"
