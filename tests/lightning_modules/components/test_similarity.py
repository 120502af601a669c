"""lightning_modules.components.similarity: token-frame similarity against a loop, with masks and packing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.components import token_frame_similarity


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
