"""callbacks.config_logging: the resolved config goes to every W&B logger whole, and to no other logger."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from callbacks.config_logging import LoggerSaveConfigCallback


class _Run:
    def __init__(self) -> None:
        self.updates: list[tuple[dict[str, Any], bool]] = []
        self.config = SimpleNamespace(update=lambda values, allow_val_change: self.updates.append(
            (values, allow_val_change)))


def test_the_whole_config_reaches_each_wandb_logger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: dict[int, _Run] = {}
    monkeypatch.setattr(WandbLogger, "experiment", property(lambda self: runs.setdefault(id(self), _Run())))
    wandb = [WandbLogger(save_dir=str(tmp_path), offline=True), WandbLogger(save_dir=str(tmp_path), offline=True)]
    csv = CSVLogger(tmp_path)
    config = Namespace(model=Namespace(class_path="lightning_modules.CLIP4Clip", init_args=Namespace(lr=1e-4)),
                       trainer=Namespace(max_epochs=3))
    callback = LoggerSaveConfigCallback(ArgumentParser(), config)
    callback.save_config(SimpleNamespace(loggers=[csv, *wandb]), None, "fit")  # type: ignore[arg-type]
    expected = {"cli": {"model": {"class_path": "lightning_modules.CLIP4Clip", "init_args": {"lr": 1e-4}},
                        "trainer": {"max_epochs": 3}}, "stage": "fit"}
    assert [runs[id(lg)].updates for lg in wandb] == [[(expected, True)], [(expected, True)]]
    assert len(runs) == 2  # the CSV logger was not asked for a run


def test_without_a_wandb_logger_nothing_is_pushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: WandbLogger) -> None:
        raise AssertionError("no W&B run may be opened")

    monkeypatch.setattr(WandbLogger, "experiment", property(refuse))
    callback = LoggerSaveConfigCallback(ArgumentParser(), Namespace(seed_everything=0))
    callback.save_config(SimpleNamespace(loggers=[CSVLogger(tmp_path)]), None, "test")  # type: ignore[arg-type]
