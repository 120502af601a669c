"""Low-rank adapters (LoRA; Hu et al., 2021, §4.1) for the linear layers of a frozen language model.

``h = W0 x + (alpha / r) * B A x`` with ``A`` ``[r, in]`` (Kaiming-uniform) and ``B`` ``[out, r]`` (zeros), so an
adapted model starts out computing exactly what the frozen one computes and only ``A`` and ``B`` train. The
adapter weights are kept in float32 whatever the base layer's dtype (a bf16 LM trains fp32 adapters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    Args:
        base: the layer to adapt (frozen in place).
        rank: ``r``, the rank of the update.
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout on the adapter's input (training only).
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        update = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.t() @ self.lora_B.t()
        return self.base(x) + (self.scaling * update).to(x.dtype)


def add_lora(model: nn.Module, targets: Sequence[str], rank: int = 8, alpha: float = 16.0,
             dropout: float = 0.0) -> list[str]:
    """Replace every ``nn.Linear`` whose attribute name is in ``targets`` (e.g. ``q_proj``, ``v_proj``) by a
    :class:`LoRALinear` around it; returns the qualified names of the adapted layers (an error if none)."""
    wanted = set(targets)
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in wanted]
    if not found:
        raise ValueError(f"no nn.Linear named {sorted(wanted)} in {type(model).__name__}")
    for name, module in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(module, rank, alpha, dropout))
    return [name for name, _ in found]
