"""``lightning_modules.cli_hyperparameters``: object arguments stay out of a hand-built module's hyper-parameters,
are kept (as configs) while LightningCLI builds it, and a checkpoint loaded during that build is built by hand."""

from __future__ import annotations

import contextvars

import lightning as L
from torch import nn

from lightning_modules.cli_hyperparameters import (
    building_from_config,
    is_building_from_config,
    object_args_to_ignore,
    outside_config_build,
)


class WithNet(L.LightningModule):
    def __init__(self, net: nn.Module, width: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=object_args_to_ignore("net"))
        self.net = net


def test_a_hand_built_module_keeps_no_object_in_its_hyper_parameters() -> None:
    assert not is_building_from_config()
    module = WithNet(nn.Linear(1, 1), width=3)
    assert dict(module.hparams) == {"width": 3}


def test_under_the_cli_every_argument_is_kept_and_the_mark_is_undone() -> None:
    with building_from_config():
        assert is_building_from_config() and object_args_to_ignore("net", "backbone") == []
        with building_from_config():  # nested marks unwind one at a time
            assert is_building_from_config()
        assert is_building_from_config()
    assert not is_building_from_config() and object_args_to_ignore("net", "backbone") == ["net", "backbone"]


def test_outside_config_build_runs_in_a_fresh_context() -> None:
    """No context variable set around the call is seen inside it: ours, and LightningCLI's own (here: a stand-in)."""
    other: contextvars.ContextVar[str | None] = contextvars.ContextVar("cli_config", default=None)
    token = other.set("the outer module's config")
    try:
        with building_from_config():
            seen = outside_config_build(lambda *a, **k: (is_building_from_config(), other.get(), a, k), 1, key=2)
            assert is_building_from_config()  # unchanged outside the call
    finally:
        other.reset(token)
    assert seen == (False, None, (1,), {"key": 2})
