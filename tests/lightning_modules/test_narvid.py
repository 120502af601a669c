"""NarVid: nucleus rule, hard-negative sets, z-fusion, co-attention masking, leakage, training step."""

from __future__ import annotations

import pytest
import torch

from datamodules.batch import NarrationCaptions, PairBatch, TextBatch, VideoBatch
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.base import score_tiles
from lightning_modules.components import (
    CoAttention,
    cross_view_hard_negatives,
    hard_negative_hinge,
    hard_negative_sets,
    nucleus_filter,
    token_frame_similarity,
    topk_filter,
)
from lightning_modules.narvid import NarVid, zscore
from tests.lightning_modules.batch_helpers import colour, text_and_video_batches


# ----------------------------------------------------------------------------- nucleus filter
def test_nucleus_keeps_entries_within_mass_and_always_top1() -> None:
    # temperature 1 on log-probabilities gives the probabilities back exactly
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    scores = probs.log()
    mask = torch.ones(1, 4, dtype=torch.bool)
    # cumulative: 0.5, 0.8, 0.95, 1.0 -> p=0.8 keeps the first two (0.8 <= 0.8), drops the crossing third
    w = nucleus_filter(scores, mask, temperature=1.0, p=0.8)
    torch.testing.assert_close(w, torch.tensor([[0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]]))
    # p below the top mass still keeps the top-1, renormalised to 1
    w = nucleus_filter(scores, mask, temperature=1.0, p=0.1)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    # p=1 keeps everything
    torch.testing.assert_close(nucleus_filter(scores, mask, 1.0, 1.0), probs, rtol=1e-5, atol=1e-6)


def test_nucleus_boundary_is_inclusive_and_order_independent() -> None:
    probs = torch.tensor([[0.25, 0.25, 0.5]])
    w = nucleus_filter(probs.log(), torch.ones(1, 3, dtype=torch.bool), temperature=1.0, p=0.75)
    assert (w > 0).tolist() == [[True, False, True]] or (w > 0).tolist() == [[False, True, True]]
    assert w.sum().item() == pytest.approx(1.0)


def test_masked_frames_never_selected() -> None:
    torch.manual_seed(0)
    scores = torch.randn(5, 7, 6)
    mask = torch.rand(7, 6) > 0.4
    mask[:, 0] = True
    scores[..., ~mask[0]] = 10.0  # masked frames with huge scores must still get no weight
    for w in (nucleus_filter(scores, mask[None], 0.1, 0.6), topk_filter(scores, mask[None], 0.1, 3)):
        assert torch.all(w[:, ~mask] == 0)
        torch.testing.assert_close(w.sum(-1), torch.ones(5, 7))


# ----------------------------------------------------------------------------- hard negatives
def test_hard_negative_sets_hand_computed() -> None:
    sim = torch.tensor([[0.9, 0.8, 0.1],
                        [0.2, 0.5, 0.6],
                        [0.0, 0.1, 0.3]])
    # row 0: std (unbiased) of [0.9, 0.8, 0.1] = 0.4359; threshold 0.9 - 0.5*0.4359 = 0.682 -> {1}
    # row 1: std of [0.2, 0.5, 0.6] = 0.2082; threshold 0.5 - 0.104 = 0.396 -> {2}
    # row 2: std of [0, 0.1, 0.3] = 0.1528; threshold 0.3 - 0.0764 = 0.224 -> {}
    h = hard_negative_sets(sim, alpha=0.5)
    assert h.tolist() == [[False, True, False], [False, False, True], [False, False, False]]
    other = torch.tensor([[0.9, 0.0, 0.85],
                          [0.0, 0.5, 0.0],
                          [0.0, 0.0, 0.3]])
    rows, cols = cross_view_hard_negatives(sim, other, alpha=0.5)
    assert rows[0].tolist() == [False, True, True]  # union over the two views
    assert cols.shape == (3, 3) and not cols.diagonal().any()
    # hinge: row 0 -> max(0, 0.8 - 0.9 + 2*0.5*0.4359) = 0.3359, row 1 -> 0.6 - 0.5 + 0.2082 = 0.3082
    loss = hard_negative_hinge(sim, h, alpha=0.5, beta=2.0)
    assert loss.item() == pytest.approx((0.33589 + 0.30817) / 3, abs=1e-4)


def test_zscore_fusion_uses_whole_matrix_statistics() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(6, 4) * 3 + 1, torch.randn(6, 4) * 0.1
    fused = zscore(a) + zscore(b)
    expected = (a - a.mean()) / a.std(unbiased=False) + (b - b.mean()) / b.std(unbiased=False)
    torch.testing.assert_close(fused, expected)


# ----------------------------------------------------------------------------- co-attention masking
@pytest.mark.parametrize("mode,invariant", [("clean", True), ("code", False)])
def test_co_attention_padding(mode: str, invariant: bool) -> None:
    torch.manual_seed(0)
    block = CoAttention(16, heads=2, dropout=0.0, mask_mode=mode).eval()
    frames, narration = torch.randn(1, 5, 16), torch.randn(1, 5, 16)
    mask = torch.tensor([[True, True, True, False, False]])
    f1, n1 = block(frames, narration, mask)
    frames2, narration2 = frames.clone(), narration.clone()
    frames2[:, 3:] += 5.0
    narration2[:, 3:] += 5.0
    f2, n2 = block(frames2, narration2, mask)
    same = torch.allclose(f1[:, :3], f2[:, :3], atol=1e-5) and torch.allclose(n1[:, :3], n2[:, :3], atol=1e-5)
    assert same == invariant  # the released code lets padded slots leak attention; clean does not


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
