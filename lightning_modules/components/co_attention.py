"""Video-narration co-attention (NarVid §3.3, Eq. 2; the Cap4Video block NarVid's code reuses)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

MaskMode = Literal["code", "clean"]


class _CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, mask_mode: MaskMode) -> None:
        super().__init__()
        self.heads, self.head_dim, self.mask_mode = heads, width // heads, mask_mode
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        b, t, d = queries.shape
        s = context.shape[1]

        def split(x: Tensor, n: int) -> Tensor:
            return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(queries), t), split(self.k(context), s), split(self.v(context), s)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [b, h, t, s]
        keep = context_mask.bool()[:, None, None, :]
        if self.mask_mode == "code":
            # released code: scores multiplied by the 0/1 mask, so padded slots score 0 (not -inf) and
            # keep some attention mass; reproduced for parity with the published numbers. Every score stays
            # finite, so the softmax has no all-masked row to clean up
            attn = torch.softmax(scores * keep.to(scores.dtype), dim=-1)
        else:  # a video without any valid slot would give a row of NaN: 0 attention instead
            attn = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1).nan_to_num(0.0)
        attn = self.dropout(attn)
        return (attn @ v).transpose(1, 2).reshape(b, t, d)


class _Stream(nn.Module):
    """Residual + LayerNorm after attention, then an FFN of width ``D`` (not 4D, as in the code)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.out = nn.Linear(width, width)
        self.ln1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.ln2 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attended: Tensor) -> Tensor:
        x = self.ln1(self.dropout(self.out(attended)) + x)
        return self.ln2(self.dropout(self.ffn(x)) + x)


class CoAttention(nn.Module):
    """One co-attention layer: frames attend to narration and narration attends to frames (Eq. 2).

    Args:
        width: feature width ``D``.
        heads: attention heads (NarVid: ``D / 64``).
        dropout: dropout on attention and residual branches (NarVid: 0.1).
        mask_mode: ``code`` reproduces the released code's multiplicative score masking; ``clean`` uses
            -inf masking so padded frames get no attention.
    """

    def __init__(self, width: int, heads: int = 8, dropout: float = 0.1, mask_mode: MaskMode = "code") -> None:
        super().__init__()
        self.mask_mode = mask_mode
        self.frames_from_narration = _CrossAttention(width, heads, dropout, mask_mode)
        self.narration_from_frames = _CrossAttention(width, heads, dropout, mask_mode)
        self.frame_stream = _Stream(width, dropout)
        self.narration_stream = _Stream(width, dropout)

    def forward(self, frames: Tensor, narration: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``frames``, ``narration``: ``[B, T, D]`` aligned per frame; ``mask [B, T]`` (narration shares it)."""
        # the released code attends to narration with an all-ones mask; the clean variant masks padding
        narration_mask = torch.ones_like(mask, dtype=torch.bool) if self.mask_mode == "code" else mask
        a_frames = self.frames_from_narration(frames, narration, narration_mask)
        a_narration = self.narration_from_frames(narration, frames, mask)
        return self.frame_stream(frames, a_frames), self.narration_stream(narration, a_narration)
