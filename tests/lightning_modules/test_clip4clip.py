"""What CLIP4Clip and NarVid take over from CLIP: the logit scale, the temporal transformer's block and
initialisation, and (NarVid, ``mask_mode: code``) the released rule that drops zero-weight words."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.clip4clip import CLIP4Clip
from lightning_modules.components import token_frame_similarity
from lightning_modules.components.temporal import (
    CLIP4CLIP_LAYER_NORM_EPS,
    QuickGELU,
    ResidualAttentionBlock,
    TemporalTransformer,
)
from lightning_modules.narvid import NarVid

TINY = "vtr-tiny-clip"


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny CLIP state dict whose logit scale is OpenAI CLIP's learnt 100 (not open_clip's init 1/0.07)."""
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone(TINY, pretrained=None, max_words=16)
    with torch.no_grad():
        backbone.model.logit_scale.fill_(math.log(100.0))
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(backbone.model.state_dict(), path)
    return str(path)


def _clip4clip(checkpoint: str, **kwargs: object) -> CLIP4Clip:
    backbone = OpenCLIPBackbone(TINY, pretrained=checkpoint, max_words=16)
    defaults = {"sim_header": "seqTransf", "temporal_layers": 2, "temporal_heads": 8, "max_frames": 12}
    return CLIP4Clip(backbone=backbone, **{**defaults, **kwargs})


def _optimizer_group_of(model: CLIP4Clip, param: torch.nn.Parameter) -> dict:
    model.trainer = SimpleNamespace(estimated_stepping_batches=10)  # what configure_optimizers reads
    optimizer = model.configure_optimizers()["optimizer"]
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_logit_scale_starts_from_the_checkpoint_and_trains_with_the_trunk(clip_checkpoint: str) -> None:
    model = _clip4clip(clip_checkpoint, lr=1e-4, coef_lr=1e-3)
    assert model.logit_scale.item() == pytest.approx(math.log(100.0), abs=1e-6)
    assert model.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-5)
    group = _optimizer_group_of(model, model.logit_scale)
    assert group["lr"] == pytest.approx(1e-7) and group["weight_decay"] == 0.0


def test_logit_scale_number_and_head_group(clip_checkpoint: str) -> None:
    model = _clip4clip(clip_checkpoint, lr=1e-4, coef_lr=1e-3, logit_scale_init=14.29, logit_scale_group="head")
    assert model.logit_scale.exp().item() == pytest.approx(14.29, rel=1e-5)
    assert _optimizer_group_of(model, model.logit_scale)["lr"] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match=r"logit_scale_init=500.0.*max_logit_scale=100"):
        _clip4clip(clip_checkpoint, logit_scale_init=500.0)


def test_pretrained_logit_scale_needs_a_clip_backbone(clip_checkpoint: str, monkeypatch) -> None:
    monkeypatch.setattr(OpenCLIPBackbone, "pretrained_logit_scale", lambda self: None)
    with pytest.raises(ValueError, match=r"no pretrained logit scale.*logit_scale_init to a number"):
        _clip4clip(clip_checkpoint)


def test_temporal_transformer_copies_clip_text_blocks_and_positions(clip_checkpoint: str) -> None:
    model = _clip4clip(clip_checkpoint)
    text = model.backbone.model
    for block, source in zip(model.temporal.blocks, text.transformer.resblocks, strict=False):
        ours, theirs = block.state_dict(), source.state_dict()
        assert set(ours) == set(theirs)
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    torch.testing.assert_close(model.temporal.position.weight, text.positional_embedding[:12], rtol=0, atol=0)
    # NarVid: both temporal transformers (frames and narration) start from the same CLIP blocks
    narvid = NarVid(backbone=OpenCLIPBackbone(TINY, pretrained=clip_checkpoint, max_words=16), temporal_layers=4,
                    temporal_heads=8, max_frames=12)
    for temporal in (narvid.temporal_frames, narvid.temporal_narration):
        for block, source in zip(temporal.blocks, text.transformer.resblocks, strict=True):
            torch.testing.assert_close(block.mlp.c_fc.weight, source.mlp.c_fc.weight, rtol=0, atol=0)


def test_clip_text_init_mismatches_are_clear_errors(clip_checkpoint: str) -> None:
    with pytest.raises(ValueError, match=r"temporal_layers=5 but the CLIP text transformer has only 4 blocks"):
        _clip4clip(clip_checkpoint, temporal_layers=5)
    with pytest.raises(ValueError, match=r"have 8 heads but temporal_heads=4; set temporal_heads=8"):
        _clip4clip(clip_checkpoint, temporal_heads=4)
    with pytest.raises(ValueError, match=r"max_frames=100 exceeds the CLIP text context length 77"):
        _clip4clip(clip_checkpoint, max_frames=100)
    random_init = _clip4clip(clip_checkpoint, temporal_init="random", temporal_heads=4, max_frames=100)
    assert random_init.temporal.position.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_temporal_block_is_clips_block_with_clip4clips_eps() -> None:
    block = ResidualAttentionBlock(16, 2)
    assert isinstance(block.mlp.gelu, QuickGELU)
    assert block.ln_1.eps == block.ln_2.eps == CLIP4CLIP_LAYER_NORM_EPS == 1e-12
    x = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    # padded frames never influence real ones
    temporal = TemporalTransformer(16, 2, 2, 8).eval()
    x = torch.randn(1, 5, 16)
    mask = torch.tensor([[True, True, True, False, False]])
    changed = x.clone()
    changed[:, 3:] += 10.0
    torch.testing.assert_close(temporal(x, mask)[:, :3], temporal(changed, mask)[:, :3])


def _released_fine_similarity(words: torch.Tensor, word_mask: torch.Tensor, frames: torch.Tensor,
                              frame_mask: torch.Tensor, word_weights: torch.Tensor, frame_weights: torch.Tensor,
                              ) -> torch.Tensor:
    """The released fine matching written out: adjust_weights_and_mask, then multiplicative masks."""
    adjusted_words = word_mask.float().clone()
    adjusted_words[word_weights == 0] = 0  # adjust_weights_and_mask on the word side
    w, v = F.normalize(words, dim=-1), F.normalize(frames, dim=-1)
    logits = torch.einsum("atd,bvd->abtv", w, v)
    logits = logits * adjusted_words[:, None, :, None] * frame_mask.float()[None, :, None, :]
    t2v = (logits.max(-1).values * (word_weights * adjusted_words)[:, None, :]).sum(-1)
    v2t = (logits.max(-2).values * frame_weights).sum(-1)
    return (t2v + v2t) / 2


def test_code_mask_mode_drops_words_whose_weight_underflows() -> None:
    torch.manual_seed(0)
    model = NarVid(backbone=OpenCLIPBackbone(TINY, pretrained=None, max_words=16), temporal_layers=1,
                   temporal_heads=8, mask_mode="code")
    n_t, n_v, length, t, d = 2, 3, 5, 4, 64
    frames = torch.randn(n_v, t, d)
    words = torch.randn(n_t, length, d)
    words[:, 2] = frames.mean((0, 1)) * 10  # word 2 is the best match of most frames...
    word_mask = torch.ones(n_t, length, dtype=torch.bool)
    word_mask[1, 4] = False
    logits = torch.zeros(n_t, length)
    logits[:, 2] = -2000.0  # ...but its word logit is so low that exp(logit / 0.1) underflows to exactly 0
    weights = torch.softmax(logits.masked_fill(~word_mask, float("-inf")), dim=-1)
    assert (weights[:, 2] == 0).all()
    frame_mask = torch.ones(n_v, t, dtype=torch.bool)
    frame_weights = torch.full((n_t, n_v, t), 1.0 / t)
    ours = token_frame_similarity(words, word_mask & (weights > 0), frames, frame_mask[None].expand(n_t, -1, -1),
                                  word_weights=weights, frame_weights=frame_weights, masked_value="zero")
    released = _released_fine_similarity(words, word_mask, frames, frame_mask, weights, frame_weights)
    torch.testing.assert_close(ours, released, rtol=1e-5, atol=1e-6)
    kept = token_frame_similarity(words, word_mask, frames, frame_mask, word_weights=weights,
                                  frame_weights=frame_weights, masked_value="zero")
    assert (kept - released).abs().max() > 1e-3  # the rule changes the score here

    # through the module: ``code`` applies the rule, ``clean`` keeps the word
    sentence = torch.randn(n_t, d)
    text = {"sentence": sentence, "words": words, "word_mask": word_mask, "word_weights": weights}
    with torch.no_grad():
        code = model.view_similarity(text, frames, frame_mask)
        model.hparams.mask_mode = "clean"
        clean = model.view_similarity(text, frames, frame_mask)
    assert not torch.allclose(code, clean)
