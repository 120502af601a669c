"""Which constructor arguments a module keeps in its hyper-parameters, depending on who builds it.

LightningCLI hands the module it builds the config it was built from (``class_path``/``init_args`` dicts, the backbone
included) and ``save_hyperparameters`` stores that config, which lets ``load_from_checkpoint`` rebuild every nested
object. Built by hand, the same arguments are live objects (a backbone ``nn.Module``, a captioner) that must not be
pickled into a checkpoint's hyper-parameters. The suite's CLI (``vtr/lightning_cli.py``) marks its instantiation with
:func:`building_from_config`; a module asks :func:`object_args_to_ignore` what to pass as ``ignore``. Lightning keeps
its own record of the config in a private variable; this module is the suite's public equivalent.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

__all__ = ["building_from_config", "is_building_from_config", "object_args_to_ignore", "outside_config_build"]

_BUILDING_FROM_CONFIG: contextvars.ContextVar[bool] = contextvars.ContextVar("vtr_building_from_config",
                                                                             default=False)
P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def building_from_config() -> Iterator[None]:
    """While this is open, modules are being built by LightningCLI from a config (``VTRCLI.instantiate_classes``)."""
    token = _BUILDING_FROM_CONFIG.set(True)
    try:
        yield
    finally:
        _BUILDING_FROM_CONFIG.reset(token)


def is_building_from_config() -> bool:
    """Whether the module being built gets its hyper-parameters from a LightningCLI config."""
    return _BUILDING_FROM_CONFIG.get()


def object_args_to_ignore(*names: str) -> list[str]:
    """``save_hyperparameters(ignore=...)`` for the constructor arguments ``names`` that take objects: none under
    LightningCLI (its hyper-parameters hold their configs), all of them when the module is built by hand."""
    return [] if is_building_from_config() else list(names)


def outside_config_build(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` in a fresh context, where no module is being built from a config.

    A checkpoint loaded while LightningCLI builds another module (CaRe-DPO's stages load their frozen models in
    their constructors) must not take that module's config for its own hyper-parameters: both LightningCLI and
    :func:`building_from_config` pass it through context variables, which read their defaults in a new context.
    """
    return contextvars.Context().run(fn, *args, **kwargs)
