"""lightning_modules.captioning.lora: LoRA adapters start as the frozen layer and can be switched off."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from lightning_modules.captioning import adapters_disabled, add_lora


def test_add_lora_starts_as_the_frozen_layer_and_can_be_switched_off():
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("q_proj", nn.Linear(4, 5))
    net.add_module("other", nn.Linear(5, 5))
    x = torch.randn(3, 4)
    before = net(x)
    assert add_lora(net, ["q_proj"], rank=2) == ["q_proj"]
    assert isinstance(net.q_proj, LoraLayer) and type(net.other) is nn.Linear
    torch.testing.assert_close(net(x), before)  # B starts at zero
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    assert not torch.allclose(net(x), before)
    with adapters_disabled(net):  # DPO's reference policy: the same LM without its adapters
        torch.testing.assert_close(net(x), before)
    assert not torch.allclose(net(x), before)
    with pytest.raises(ValueError, match=r"no nn\.Linear named"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), ["k_proj"])
