"""NarVid: nucleus rule, hard-negative sets, z-fusion, co-attention masking, leakage, training step."""

from __future__ import annotations

import pytest
import torch

from datamodules.batch import NarrationCaptions, PairBatch, TextBatch, VideoBatch
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.base import score_tiles
from lightning_modules.components import (
    token_frame_similarity,
)
from lightning_modules.narvid import NarVid, zscore
from tests.lightning_modules.batch_helpers import colour, text_and_video_batches


def test_zscore_fusion_uses_whole_matrix_statistics() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(6, 4) * 3 + 1, torch.randn(6, 4) * 0.1
    fused = zscore(a) + zscore(b)
    expected = (a - a.mean()) / a.std(unbiased=False) + (b - b.mean()) / b.std(unbiased=False)
    torch.testing.assert_close(fused, expected)


# ----------------------------------------------------------------------------- module
def tiny_narvid(**kwargs) -> NarVid:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=12)
    defaults = dict(temporal_layers=1, temporal_heads=8, dropout=0.0, nucleus_p=0.5)
    return NarVid(backbone=backbone, **{**defaults, **kwargs}).eval()


def batches(n_videos: int = 5, n_texts: int = 7, frames: int = 4) -> tuple[TextBatch, VideoBatch]:
    narration = [[f"frame {t} of video {i} shows a {colour(i)} ball" for t in range(frames)] for i in range(n_videos)]
    return text_and_video_batches({"narration": NarrationCaptions(narration)}, n_videos, n_texts, frames)


def test_similarity_has_no_leakage_across_tiles_and_query_order() -> None:
    model = tiny_narvid()
    text, video = batches()
    with torch.no_grad():
        tf, vf = model.encode_text(text), model.encode_video(video)
        full = model.similarity(tf, vf)
        assert set(full) == {"video", "narration"} and full["video"].shape == (7, 5)
        tiled = score_tiles(model.similarity, tf, vf, 3, 2)  # #texts != #videos in every tile
        for k in full:
            torch.testing.assert_close(tiled[k], full[k], atol=1e-5, rtol=1e-5)
        perm = torch.randperm(7)
        shuffled = score_tiles(model.similarity, {k: v[perm] for k, v in tf.items()}, vf, 2, 3)
        for k in full:
            torch.testing.assert_close(shuffled[k], full[k][perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("switches", [
    {}, {"use_co_attention": False}, {"use_narration_matching": False}, {"use_hard_negatives": False},
    {"filter_mode": "topk"}, {"filter_mode": "none"}, {"mask_mode": "clean"},
])
def test_training_loss_backpropagates_under_each_ablation(switches: dict) -> None:
    model = tiny_narvid(**switches).train()
    text, video = batches(n_videos=5, n_texts=5)
    video.frames = video.frames.float()
    loss, logs = model.training_loss(PairBatch(text=text, video=video))
    assert torch.isfinite(loss)
    loss.backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.startswith("temporal_frames") for n in trained)
    if switches.get("use_narration_matching", True):
        assert "loss_nce_narration" in logs
    if switches.get("use_hard_negatives", True):
        assert "loss_hard_negative" in logs


def test_missing_narration_is_a_clear_error() -> None:
    model = tiny_narvid()
    _, video = batches()
    video.aux = {}
    with pytest.raises(KeyError, match="aux_captions"):
        model.encode_video(video)
    _, video = batches()
    video.aux["narration"].captions[2] = video.aux["narration"].captions[2][:2]
    with pytest.raises(ValueError, match="v2 has 2 narration captions for 4 frames"):
        model.encode_video(video)


def test_fusion_modes() -> None:
    model = tiny_narvid()
    views = {"video": torch.randn(4, 3), "narration": torch.randn(4, 3) * 5}
    torch.testing.assert_close(model.fuse_views(views), zscore(views["video"]) + zscore(views["narration"]))
    model.hparams.fusion = "sum"
    torch.testing.assert_close(model.fuse_views(views), views["video"] + views["narration"])
    model.hparams.fusion = "video_only"
    torch.testing.assert_close(model.fuse_views(views), views["video"])


def varied_queries(n_texts: int = 9, most: int = 13) -> TextBatch:
    """Queries of 2 to ``most + 1`` words (the tiny backbone has 12 slots, start and end tokens included: at the
    default some fill every slot, most leave padding)."""
    words = "a man in a red shirt plays a guitar on a small stage while the crowd".split()
    texts = [" ".join(words[:2 + (5 * i) % most]) for i in range(n_texts)]
    return TextBatch(index=torch.arange(n_texts), video_index=torch.arange(n_texts) % 5, texts=texts)


@pytest.mark.parametrize("mask_mode", ["code", "clean"])
def test_packed_queries_score_bit_for_bit_what_every_slot_scores(mask_mode: str) -> None:
    """``pack_queries`` (length-sorted tiles, each computing only its longest query's slots) changes no score."""
    model = tiny_narvid(mask_mode=mask_mode, eval_text_chunk=3, eval_video_chunk=2)
    text = varied_queries()
    _, video = batches()
    with torch.no_grad():
        tf, vf = model.encode_text(text), model.encode_video(video)
        lengths = tf["word_mask"].sum(1)
        assert lengths.min() < lengths.max() == tf["word_mask"].shape[1]  # padded queries and a full one
        order = model.text_tile_order(tf)
        assert torch.equal(lengths[order], lengths.sort(stable=True).values) and not torch.equal(order,
                                                                                               torch.arange(9))
        packed, packed_views = model.score(tf, vf)
        model.hparams.pack_queries = False
        assert model.text_tile_order(tf) is None
        every, every_views = model.score(tf, vf)
    assert torch.equal(packed, every)
    assert all(torch.equal(packed_views[k], every_views[k]) for k in every_views)


def _view_similarity_before(model: NarVid, text: dict, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``NarVid.view_similarity`` as it was before packing: every word slot, the frames normalised twice."""
    q = torch.nn.functional.normalize(text["sentence"], dim=-1)
    x = torch.nn.functional.normalize(sequence, dim=-1)
    sims = torch.einsum("id,jfd->ijf", q, x)
    weights = model.filtering_scores(sims, mask[None])
    gram = torch.einsum("jfd,jgd->jfg", x, x)
    norm = torch.einsum("ijf,jfg,ijg->ij", weights, gram, weights).clamp_min(1e-12).sqrt()
    coarse = (weights * sims).sum(-1) / norm
    word_mask = text["word_mask"] & (text["word_weights"] > 0)
    fine = token_frame_similarity(text["words"], word_mask, sequence, weights > 0, word_weights=text["word_weights"],
                                  frame_weights=weights, masked_value="zero", skip_padded_words=False)
    return 0.5 * (coarse + fine)


def test_training_step_equals_the_previous_arithmetic() -> None:
    """The training step without re-normalisation and padded slots: same loss and gradients as before."""
    text = varied_queries(5, most=7)  # at most 8 words + 2 tokens: the batch's slots 10 and 11 are padding
    _, video = batches(n_videos=5, n_texts=5)
    results = []
    for before in (False, True):
        model = tiny_narvid().train()
        if before:
            model.view_similarity = lambda t, s, m, model=model: _view_similarity_before(model, t, s, m)
        torch.manual_seed(1)  # the same dropout masks for both
        loss, _ = model.training_loss(PairBatch(text=text, video=video))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                        if p.grad is not None}))
    (loss, grads), (loss_before, grads_before) = results
    torch.testing.assert_close(loss, loss_before, atol=1e-6, rtol=1e-6)
    assert grads.keys() == grads_before.keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_before[name], atol=1e-5, rtol=1e-5, msg=name)  # rounding: |g| <= 9
