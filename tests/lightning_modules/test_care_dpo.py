"""CaRe-DPO's pieces: the DPO term by hand, role embeddings that act only through the role, the retriever's two
sides, the two preference groups on a tiny store, and the training module's objectives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from datamodules.batch import PairBatch, SupplementCaptions
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.care_dpo import CaReRetriever
from tests.lightning_modules.batch_helpers import text_and_video_batches

CAPTIONS = [f"caption {i}: a {'red' if i % 2 else 'blue'} circle spins on the grass" for i in range(5)]


def tiny_retriever(**kwargs) -> CaReRetriever:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16)
    return CaReRetriever(backbone=backbone, logit_scale_init=10.0, **kwargs).eval()


def test_role_vectors_get_gradients_through_a_frozen_text_tower() -> None:
    model = tiny_retriever(role_init_std=0.0)
    model.backbone.requires_grad_(False)
    query = model.query_embeddings(["a red circle"])
    caption = model.caption_embeddings(["a red circle"])
    (query * caption).sum().backward()
    assert model.roles is not None and model.roles.vectors.grad is not None
    assert bool((model.roles.vectors.grad.abs().sum(1) > 0).all())


# ---------------------------------------------------------------------------------------------- retriever
def test_retriever_video_side_is_the_normalised_sum_of_meanp_and_its_caption() -> None:
    model = tiny_retriever(caption_weight_init=0.7)
    text, video = text_and_video_batches({"supplement": SupplementCaptions([[c] for c in CAPTIONS])}, 5, 5)
    with torch.no_grad():
        fused = model.encode_video(video)["video"]
        frames = model.backbone_frames(video)
        pooled = F.normalize((F.normalize(frames, dim=-1) * video.mask[..., None]).sum(1)
                             / video.mask.sum(1, keepdim=True), dim=-1)
        caption = model.caption_embeddings(CAPTIONS)
        assert torch.allclose(fused, F.normalize(pooled + 0.7 * caption, dim=-1), atol=1e-5)
        queries = model.encode_text(text)["text"]
        assert torch.allclose(model.similarity({"text": queries}, {"video": fused}),
                              F.normalize(queries, dim=-1) @ fused.t(), atol=1e-6)
        # without the caption the video side is CLIP4Clip meanP
        plain = tiny_retriever(use_caption=False).encode_video(video)["video"]
        assert torch.allclose(plain, pooled, atol=1e-5)


def test_retriever_without_roles_encodes_queries_and_captions_alike() -> None:
    model = tiny_retriever(role_embeddings=False)
    assert model.roles is None
    with torch.no_grad():
        assert torch.allclose(model.query_embeddings(CAPTIONS), model.caption_embeddings(CAPTIONS))


def test_retriever_trains_and_names_a_missing_caption() -> None:
    model = tiny_retriever().train()
    text, video = text_and_video_batches({"supplement": SupplementCaptions([[c] for c in CAPTIONS])}, 5, 5)
    loss, terms = model.training_loss(PairBatch(text, video))
    loss.backward()
    assert torch.isfinite(loss) and "loss_nce" in terms
    assert model.roles.vectors.grad is not None and model.caption_weight.grad is not None
    _, video = text_and_video_batches({"supplement": SupplementCaptions([[c] for c in CAPTIONS[:4]] + [[]])}, 5, 5)
    with pytest.raises(ValueError, match="no 'supplement' caption"):
        model.encode_video(video)
