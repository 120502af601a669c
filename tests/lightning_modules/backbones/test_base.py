"""lightning_modules.backbones.base: what every backbone offers (the VideoTextBackbone contract), on both adapters."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.backbones import OpenCLIPBackbone, PretrainedTwoTower, VideoTextBackbone
from lightning_modules.backbones.base import last_valid_token
from tests.lightning_modules.backbone_helpers import TEXTS, TINY, tiny_clip


def test_signatures_build_a_cli_parser():
    """LightningCLI (jsonargparse) builds the options from the type-hinted signatures."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(OpenCLIPBackbone, "clip")
    parser.add_class_arguments(PretrainedTwoTower, "two")
    cfg = parser.parse_args(["--clip.model_name", TINY, "--clip.pretrained", "null", "--two.embed_dim", "8"])
    assert cfg.clip.pretrained is None and cfg.two.embed_dim == 8 and cfg.two.freeze_video is True


def test_sentence_head_is_text_heads_sentence_without_the_tokens(two_tower):
    """Auxiliary captions read only the sentence; ``sentence_head`` gives exactly ``text_head``'s sentence without
    projecting every token (the two-tower's head maps all ``L`` tokens otherwise)."""
    projected: list[torch.Size] = []
    hook = two_tower.text_proj.register_forward_hook(lambda m, args, out: projected.append(args[0].shape))
    try:
        for backbone in (two_tower, tiny_clip()):
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


def test_last_valid_token_takes_each_rows_last_unmasked_state() -> None:
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    assert torch.equal(last_valid_token(hidden, mask), torch.stack([hidden[0, 1], hidden[1, 3]]))
    # a row without any valid token reads its first slot rather than wrapping round to the last
    assert torch.equal(last_valid_token(hidden, torch.zeros(2, 4, dtype=torch.bool)), hidden[:, 0])


def test_a_backbone_without_a_token_embedding_layer_says_what_to_implement() -> None:
    class Bare(OpenCLIPBackbone):  # an adapter that does not expose its lookup
        def token_embedding_layer(self) -> torch.nn.Module:
            return VideoTextBackbone.token_embedding_layer(self)

    with pytest.raises(NotImplementedError, match="Bare does not expose its token embedding layer; implement "
                                                  "token_embedding_layer"):
        Bare(TINY, pretrained=None, max_words=16).token_embedding_layer()
