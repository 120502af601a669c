"""lightning_modules.backbones.open_clip_backbone: the tiny open_clip model (offline, random init), its
text trunk against open_clip's, checkpoints, freezing and fingerprint.
"""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from lightning_modules.backbones import OpenCLIPBackbone, TextFeatures, VideoTextBackbone
from lightning_modules.backbones.open_clip_backbone import clip_valid_mask
from tests.lightning_modules.backbone_helpers import TEXTS, TINY, random_frames, tiny_clip


def test_tiny_clip_builds_with_expected_facts():
    backbone = tiny_clip()
    assert isinstance(backbone, VideoTextBackbone)
    assert backbone.embed_dim == 64 and backbone.max_words == 16 and backbone.image_size == 64
    assert backbone.image_mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert backbone.image_std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert not backbone.video_trunk_frozen and not backbone.text_trunk_frozen


def test_tiny_clip_shapes():
    backbone = tiny_clip()
    feats = backbone.encode_text(TEXTS)
    assert isinstance(feats, TextFeatures)
    assert feats.sentence.shape == (3, 64) and feats.tokens.shape == (3, 16, 64)
    assert feats.mask.dtype == torch.bool and feats.mask.shape == (3, 16)
    assert feats.mask[0].sum() == 4  # SOT a cat EOT
    assert feats.mask[2].all()  # truncated to max_words
    assert backbone.encode_frames(random_frames()).shape == (2, 3, 64)
    tokens = backbone.tokenize(TEXTS)
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape == (3, 16)
    assert tokens["input_ids"][2, -1] == backbone.tokenizer.eot_token_id  # EOT kept on truncation


def test_text_trunk_reproduces_clip_encode_text():
    """The EOT token of our per-token features is exactly open_clip's pooled ``encode_text``."""
    backbone = tiny_clip().eval()
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

    source = tiny_clip(seed=3).eval()
    path = tmp_path / "tiny.pt"
    torch.save(source.model.state_dict(), path)
    loaded = OpenCLIPBackbone(TINY, pretrained=str(path), max_words=16).eval()

    folder = tmp_path / "tiny_dir"
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config(TINY), "preprocess_cfg": {"size": 64}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, folder / "model.safetensors")
    from_dir = OpenCLIPBackbone(TINY, pretrained=f"local-dir:{folder}", max_words=16).eval()

    frames = random_frames()
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
    backbone = tiny_clip(freeze_video=True, freeze_text=True).train()
    assert backbone.video_trunk_frozen and backbone.text_trunk_frozen
    assert not any(m.training for m in backbone.model.modules())
    assert not any(p.requires_grad for p in backbone.parameters())

    partial = tiny_clip(freeze_video=True).train()
    assert not any(m.training for m in partial.model.visual.modules())
    assert partial.model.transformer.training
    trainable = {n for n, p in partial.model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("visual.") for n in trainable)
    assert "logit_scale" not in trainable  # the Lightning module owns the temperature
    partial.encode_text(TEXTS).sentence.sum().backward()
    assert partial.model.positional_embedding.grad is not None


def test_open_clip_trunk_parameters_and_fingerprint():
    backbone = tiny_clip()
    params = {id(p) for p in backbone.trunk_parameters()}
    assert id(backbone.model.logit_scale) not in params
    assert len(params) == sum(1 for _ in backbone.model.parameters()) - 1
    fingerprint = backbone.trunk_fingerprint()
    json.dumps(fingerprint)
    assert fingerprint == tiny_clip().trunk_fingerprint()  # same seed, same random weights
    assert fingerprint != tiny_clip(seed=1).trunk_fingerprint()
    assert (fingerprint["model_name"], fingerprint["max_words"], fingerprint["image_size"]) == (TINY, 16, 64)


def test_pretrained_null_from_a_command_line_means_random_init():
    # jsonargparse hands `--...pretrained null` to a `str | None` argument as the string 'None'
    for spelling in ("None", "null"):
        assert OpenCLIPBackbone(TINY, pretrained=spelling, max_words=16).pretrained is None
