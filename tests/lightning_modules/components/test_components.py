"""Shared blocks: losses, temporal transformer, similarity heads, tiled scoring, frame sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.readers import resize_center_crop, sample_frame_indices
from lightning_modules.base import score_tiles, warmup_cosine
from lightning_modules.components import TemporalTransformer, symmetric_infonce, token_frame_similarity


def test_infonce_matches_definition() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 5)
    expected = 0
    for i in range(5):
        expected += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    assert symmetric_infonce(logits).item() == pytest.approx(expected.item() / 10, rel=1e-5)
    # the positives mask reduces to the diagonal case
    assert symmetric_infonce(logits, torch.eye(5, dtype=torch.bool)).item() == pytest.approx(
        symmetric_infonce(logits).item(), rel=1e-6)
    with pytest.raises(ValueError, match="square"):
        symmetric_infonce(torch.randn(3, 4))


def test_temporal_transformer_ignores_padded_frames() -> None:
    torch.manual_seed(0)
    block = TemporalTransformer(16, layers=2, heads=2, max_frames=8).eval()
    x = torch.randn(1, 6, 16)
    mask = torch.tensor([[True, True, True, True, False, False]])
    y = block(x, mask)
    x2 = x.clone()
    x2[:, 4:] = 100.0  # garbage in padded slots must not change real outputs
    y2 = block(x2, mask)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    with pytest.raises(ValueError, match="max_frames"):
        block(torch.randn(1, 9, 16), torch.ones(1, 9, dtype=torch.bool))


def naive_token_frame(words, wmask, frames, fmask):
    out = torch.zeros(words.shape[0], frames.shape[0])
    for i in range(words.shape[0]):
        for j in range(frames.shape[0]):
            w = F.normalize(words[i][wmask[i]], dim=-1)
            f = F.normalize(frames[j][fmask[j]], dim=-1)
            s = w @ f.t()
            out[i, j] = 0.5 * (s.max(1).values.mean() + s.max(0).values.mean())
    return out


def test_token_frame_similarity_matches_loop_and_respects_masks() -> None:
    torch.manual_seed(0)
    words, frames = torch.randn(4, 6, 8), torch.randn(5, 3, 8)
    wmask = torch.rand(4, 6) > 0.4
    wmask[:, 0] = True
    fmask = torch.rand(5, 3) > 0.3
    fmask[:, 0] = True
    got = token_frame_similarity(words, wmask, frames, fmask)
    torch.testing.assert_close(got, naive_token_frame(words, wmask, frames, fmask), rtol=1e-5, atol=1e-5)


def test_score_tiles_equals_full_matrix_and_permutes_with_queries() -> None:
    """Leakage guard: #texts != #videos in every tile, shuffled queries give permuted rows."""
    torch.manual_seed(0)
    text = {"words": torch.randn(11, 5, 8), "word_mask": torch.ones(11, 5, dtype=torch.bool)}
    video = {"frames": torch.randn(7, 4, 8), "frame_mask": torch.ones(7, 4, dtype=torch.bool)}

    def sim(t, v):
        return token_frame_similarity(t["words"], t["word_mask"], v["frames"], v["frame_mask"])

    full = sim(text, video)
    for tc, vc in [(1, 1), (3, 2), (4, 7), (20, 20)]:
        torch.testing.assert_close(score_tiles(sim, text, video, tc, vc), full)
    perm = torch.randperm(11)
    shuffled = {k: v[perm] for k, v in text.items()}
    torch.testing.assert_close(score_tiles(sim, shuffled, video, 3, 2), full[perm])


def test_warmup_cosine_schedule() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-9)
    assert warmup_cosine(0, 10, 0) == pytest.approx(1.0)
    assert 0 < warmup_cosine(30, 100, 10) < 1 and not math.isnan(warmup_cosine(5, 5, 5))


@pytest.mark.parametrize("available,wanted", [(32, 8), (8, 8), (5, 8), (100, 12), (13, 12)])
def test_frame_sampling(available: int, wanted: int) -> None:
    uniform = sample_frame_indices(available, wanted, "uniform")
    assert len(uniform) == min(available, wanted)
    assert np.all(np.diff(uniform) > 0) and uniform.min() >= 0 and uniform.max() < available
    np.testing.assert_array_equal(uniform, sample_frame_indices(available, wanted, "uniform"))
    rng = np.random.default_rng(0)
    for _ in range(20):
        rand = sample_frame_indices(available, wanted, "random_offset", rng)
        assert len(rand) == len(uniform) and np.all(np.diff(rand) > 0) and rand.max() < available
    if available >= 2 * wanted:  # each random pick stays inside its segment
        edges = np.linspace(0, available, wanted + 1)
        assert np.all((rand >= np.floor(edges[:-1])) & (rand < np.ceil(edges[1:])))
    with pytest.raises(ValueError, match="0 frames"):
        sample_frame_indices(0, 4, "uniform")


def test_resize_center_crop() -> None:
    frames = torch.zeros(2, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle of a wide frame
    out = resize_center_crop(frames, 20)
    assert out.shape == (2, 3, 20, 20) and out.dtype == torch.uint8
    assert out[0, :, 10, 10].min() > 200 and out[0, :, 10, 0].max() < 60


def test_bert_warmup_cosine_schedule() -> None:
    from lightning_modules.optim import bert_warmup_cosine

    assert bert_warmup_cosine(0, 100, 10) == 0.0  # BERT's first step has learning rate 0
    assert bert_warmup_cosine(5, 100, 10) == pytest.approx(0.5)
    # after warmup the cosine is of the whole run's progress: it does not restart at 1
    assert bert_warmup_cosine(10, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert bert_warmup_cosine(50, 100, 10) == pytest.approx(0.5)
    assert bert_warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_bertadam_matches_its_update_rule_by_hand() -> None:
    from lightning_modules.optim import BertAdam

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    start = p.detach().clone()
    opt = BertAdam([p], lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2, max_grad_norm=1.0)
    grads = [torch.randn(4, 3) * 5, torch.randn(4, 3) * 0.1]
    m, v, ref = torch.zeros(4, 3), torch.zeros(4, 3), start.clone()
    for g in grads:
        p.grad = g.clone()
        opt.step()
        clipped = g * min(1.0, 1.0 / (g.norm().item() + 1e-6))  # this tensor's own norm, clipped to 1
        m = 0.9 * m + 0.1 * clipped
        v = 0.98 * v + 0.02 * clipped * clipped
        ref = ref - 0.1 * (m / (v.sqrt() + 1e-6) + 0.2 * ref)  # no bias correction; decay added to the update
    torch.testing.assert_close(p.detach(), ref, rtol=1e-5, atol=1e-6)
    # Adam with bias correction would have moved the first step by ~lr per entry; BertAdam moves it by
    # lr * 0.1 / sqrt(0.02) ~ 0.71 lr: the missing correction is visible
    q = torch.nn.Parameter(torch.zeros(3))
    q.grad = torch.ones(3)
    BertAdam([q], lr=1.0, betas=(0.9, 0.98), eps=0.0, max_grad_norm=0.0).step()
    torch.testing.assert_close(q.detach(), torch.full((3,), -0.1 / math.sqrt(0.02)))


@pytest.mark.parametrize("masked_value", ["zero", "neginf"])
@pytest.mark.parametrize("longest", [3, 9, 12])  # 12: a query fills every slot, nothing can be cut
def test_token_frame_similarity_without_padded_slots_is_bit_identical(masked_value: str, longest: int) -> None:
    """Skipping the word slots past the longest query changes no bit of the result (nor, to rounding, the
    gradients): under ``zero`` the cut-off slots' masked 0 in the frame->word maximum is put back."""
    g = torch.Generator().manual_seed(longest)
    n_t, n_v, slots, t, d = 7, 5, 12, 6, 16
    words = torch.randn(n_t, slots, d, generator=g, requires_grad=True)
    frames = torch.randn(n_v, t, d, generator=g)
    frames[1] = -frames[1]  # negative cosines, where a masked 0 wins the maximum
    frames.requires_grad_(True)
    lengths = torch.randint(1, longest + 1, (n_t,), generator=g)
    lengths[0], lengths[2] = longest, max(int(lengths[2]), 2)
    word_mask = torch.arange(slots)[None] < lengths[:, None]
    word_mask[2, 0] = False  # a hole inside a query (a word whose weight underflowed, NarVid's code mode)
    keep = torch.rand(n_t, n_v, t, generator=g) < 0.4
    keep[..., 0] = True
    word_weights = torch.softmax(torch.randn(n_t, slots, generator=g).masked_fill(~word_mask, float("-inf")), -1)
    frame_weights = torch.softmax(torch.randn(n_t, n_v, t, generator=g).masked_fill(~keep, float("-inf")), -1)
    cases = [dict(frame_mask=keep, word_weights=word_weights, frame_weights=frame_weights),
             dict(frame_mask=keep[0])]  # per-video frame mask, uniform weights
    for case in cases:
        out = {}
        for skip in (False, True):
            score = token_frame_similarity(words, word_mask, frames, masked_value=masked_value, skip_padded_words=skip,
                                           **case)
            grads = torch.autograd.grad(score.square().sum(), (words, frames))
            out[skip] = (score, grads)
        assert torch.equal(out[True][0], out[False][0])
        for packed, every in zip(out[True][1], out[False][1], strict=True):
            torch.testing.assert_close(packed, every, atol=1e-6, rtol=1e-6)


def test_score_tiles_text_order_groups_tiles_and_keeps_row_order() -> None:
    torch.manual_seed(0)
    text = {"words": torch.randn(11, 5, 8), "word_mask": torch.rand(11, 5) > 0.3}
    video = {"frames": torch.randn(7, 4, 8), "frame_mask": torch.ones(7, 4, dtype=torch.bool)}
    seen: list[list[float]] = []

    def sim(t, v):
        seen.append(t["words"][:, 0, 0].tolist())
        return token_frame_similarity(t["words"], t["word_mask"], v["frames"], v["frame_mask"])

    order = torch.randperm(11)
    plain = score_tiles(sim, text, video, 3, 4)
    seen.clear()
    ordered = score_tiles(sim, text, video, 3, 4, text_order=order)
    torch.testing.assert_close(ordered, plain, atol=0, rtol=0)
    assert seen[0] == text["words"][order[:3], 0, 0].tolist()  # the first tile holds the first texts of the order
    with pytest.raises(ValueError, match="permutation of the 11 texts"):
        score_tiles(sim, text, video, 3, 4, text_order=torch.zeros(11, dtype=torch.long))
