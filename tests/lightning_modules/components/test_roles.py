"""lightning_modules.components.roles: role embeddings change a text's embedding only through its role."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.components import RoleEmbeddings


# ---------------------------------------------------------------------------------------------- roles
def test_role_vectors_change_a_text_embedding_only_through_its_role() -> None:
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16).eval()
    width = backbone.token_embedding_layer().weight.shape[1]
    roles = RoleEmbeddings(("query", "caption"), width, init_std=0.0)
    texts = ["a red circle spins", "the blue square rises"]
    with torch.no_grad():
        plain = backbone.encode_text(texts).sentence
        assert torch.allclose(roles.encode_text(backbone, texts, "query").sentence, plain, atol=1e-6)
        roles.vectors[1].normal_(0.0, 1.0)  # move the caption role only
        assert torch.allclose(roles.encode_text(backbone, texts, "query").sentence, plain, atol=1e-6)
        as_caption = roles.encode_text(backbone, texts, "caption").sentence
        assert not torch.allclose(as_caption, plain, atol=1e-3)
        # the role is the token embedding plus e_caption at every position, nothing else
        tokens = backbone.tokenize(texts)
        layer = backbone.token_embedding_layer()
        original = layer.forward
        layer.forward = lambda ids: original(ids) + roles.vectors[1]  # type: ignore[method-assign]
        try:
            by_hand = backbone.text_head(*backbone.text_trunk(tokens)).sentence
        finally:
            layer.forward = original  # type: ignore[method-assign]
        assert torch.allclose(as_caption, by_hand, atol=1e-6)
    # after the block the hook is gone
    assert torch.allclose(backbone.encode_text(texts).sentence, plain, atol=1e-6)


def test_roles_must_be_distinct_and_an_unknown_role_is_named() -> None:
    with pytest.raises(ValueError, match="distinct and non-empty"):
        RoleEmbeddings(("query", "query"), 4)
    with pytest.raises(ValueError, match="distinct and non-empty"):
        RoleEmbeddings((), 4)
    with pytest.raises(KeyError, match="unknown role 'narration'; roles are \\['query', 'caption'\\]"):
        RoleEmbeddings(("query", "caption"), 4).vector("narration")
