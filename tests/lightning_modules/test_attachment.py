"""``lightning_modules.attachment``: a module's trainer through the public ``trainer`` property, None when it runs
on its own."""

from __future__ import annotations

import lightning as L

from lightning_modules.attachment import attached_trainer


def test_a_module_on_its_own_has_no_trainer_and_an_attached_one_has_it() -> None:
    module = L.LightningModule()
    assert attached_trainer(module) is None
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    module.trainer = trainer
    assert attached_trainer(module) is trainer
    module.trainer = None
    assert attached_trainer(module) is None
