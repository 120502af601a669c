"""Whether a LightningModule runs inside a Trainer, through Lightning's public ``trainer`` property.

A module is also used on its own (built by hand in tests and benchmarks, loaded by ``experiments/search``), where
``module.trainer`` raises: code that adapts to a run (its data module, its stage, its ranks) asks
:func:`attached_trainer` instead of reading Lightning's private ``_trainer`` attribute.
"""

from __future__ import annotations

from typing import Any

import lightning as L

__all__ = ["attached_trainer"]


def attached_trainer(module: L.LightningModule) -> Any | None:
    """The trainer ``module`` is attached to, or None when it runs on its own (``module.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:  # "... is not attached to a `Trainer`"
        return None
