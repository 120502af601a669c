"""Keep the training random state out of the work a run does before training (building caches, data, banks).

A run that builds its feature cache, generates SynthVTR or checks its manifest must train exactly like a run that
finds them ready: ``benchmarks/feature_cache.py`` once gave test R@1 12.5 for the first run of a config and 15.8
for its reruns, because building the cache drew from the global torch RNG before training. The builders use
private generators; :func:`preserved_random_state` is the guarantee around them, since libraries they call may
draw from a global generator too.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["GlobalRandomState", "preserved_random_state"]


@dataclass
class GlobalRandomState:
    """The global random state a training run draws from: python ``random``, numpy's legacy global generator, torch's
    CPU generator and, when CUDA is initialised, every CUDA device's generator."""

    python: Any
    numpy: Any
    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls) -> GlobalRandomState:
        # CUDA is only read when already initialised: initialising it here would take GPU memory in a CPU run
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch_cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        elif torch.cuda.is_initialized():
            # CUDA started inside the block: its generators began from the seed torch.manual_seed (Lightning's
            # seed_everything) queued for them, and the block may have drawn since; start them from it again
            torch.cuda.manual_seed_all(torch.initial_seed())

    def equals(self, other: GlobalRandomState) -> bool:
        """Whether two captures are the same state (for tests and checks)."""
        same_numpy = all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
                         for a, b in zip(self.numpy, other.numpy, strict=True))
        same_cuda = (self.cuda is None) == (other.cuda is None) and all(
            torch.equal(a, b) for a, b in zip(self.cuda or [], other.cuda or [], strict=True))
        return (self.python == other.python and same_numpy and torch.equal(self.torch_cpu, other.torch_cpu)
                and same_cuda)


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run the block, then put the global random state back as it was before it (also when the block raises)."""
    saved = GlobalRandomState.capture()
    try:
        yield
    finally:
        saved.restore()
