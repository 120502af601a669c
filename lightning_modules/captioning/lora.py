"""Low-rank adapters (LoRA; Hu et al., 2021, §4.1) on a frozen language model, through ``peft``.

``h = W0 x + (alpha / r) * B A x`` with ``B`` initialised to zero, so an adapted model starts out computing
exactly what the frozen one computes and only ``A`` and ``B`` train. ``peft`` injects the adapter layers in place
(``inject_adapter_in_model``), so the LM stays a plain ``transformers`` model: its ``generate`` and its
``inputs_embeds`` path are unchanged, and adapter parameters are named ``...lora_A...`` / ``...lora_B...``.
``adapters_disabled`` turns them off for a block of code — the frozen reference policy of DPO (Rafailov et
al., 2023, Eq. 7) is the same LM without its adapters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn


def add_lora(model: nn.Module, targets: Sequence[str], rank: int = 8, alpha: float = 16.0,
             dropout: float = 0.0) -> list[str]:
    """Put LoRA adapters on every linear layer whose attribute name is in ``targets`` (e.g. ``q_proj``,
    ``v_proj``); returns the qualified names of the adapted layers (an error naming the targets if none)."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    wanted = set(targets)
    if not any(isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in wanted for n, m in model.named_modules()):
        raise ValueError(f"no nn.Linear named {sorted(wanted)} in {type(model).__name__}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=sorted(wanted))
    inject_adapter_in_model(config, model)
    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run the model without its LoRA updates (the frozen base weights alone), then turn them back on."""
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
