"""Temporal transformer over per-frame embeddings (CLIP4Clip ``seqTransf``; NarVid reuses it, §1.4)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block as in CLIP (attention + 4x MLP with GELU)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    """``out = Transformer(x + pos) + x`` with padded frames masked out of attention.

    CLIP4Clip initialises these blocks from the first layers of CLIP's text transformer; here they
    start from PyTorch's default init (listed in the README's differences section). The residual
    around the whole block means an untrained transformer starts close to mean pooling.
    """

    def __init__(self, width: int, layers: int = 4, heads: int = 8, max_frames: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"TemporalTransformer: width {width} is not divisible by heads {heads}")
        self.max_frames = max_frames
        self.position = nn.Embedding(max_frames, width)
        nn.init.normal_(self.position.weight, std=0.01)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads, dropout) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [B, T, D]`` frame embeddings, ``mask [B, T]`` True for real frames -> ``[B, T, D]``."""
        t = x.shape[1]
        if t > self.max_frames:
            raise ValueError(f"TemporalTransformer got {t} frames but max_frames={self.max_frames}; "
                             "raise max_frames in the model config")
        pos = self.position(torch.arange(t, device=x.device))
        h = x + pos.unsqueeze(0).to(x.dtype)
        pad = ~mask.bool()
        for block in self.blocks:
            h = block(h, pad)
        return h + x
