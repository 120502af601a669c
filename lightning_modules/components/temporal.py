"""Temporal transformer over per-frame embeddings (CLIP4Clip ``seqTransf``; NarVid reuses it, §1.4).

The block is CLIP's residual attention block as CLIP4Clip's cross module builds it: pre-LayerNorm with
``eps = 1e-12`` (CLIP4Clip's TF-style LayerNorm), multi-head self-attention, and a 4x MLP with QuickGELU.
Its parameter names are CLIP's (``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``), so the first
resblocks of a CLIP text transformer load into it unchanged (``TemporalTransformer.init_from_clip_text``),
which is how CLIP4Clip and NarVid initialise their temporal transformers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import Tensor, nn

TemporalInit = Literal["clip_text", "random"]

# CLIP4Clip's cross-module LayerNorm (``modules/until_module.py``) is TF-style with eps 1e-12; NarVid uses it
CLIP4CLIP_LAYER_NORM_EPS = 1e-12


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the activation OpenAI CLIP was trained with (its blocks expect it)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-LN transformer block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(x))`` with QuickGELU."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0,
                 layer_norm_eps: float = CLIP4CLIP_LAYER_NORM_EPS) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    """``out = Transformer(x + pos) + x`` with padded frames masked out of attention (CLIP4Clip Eq. 5).

    Initialisation (``init_from_clip_text`` or ``init_random``) is chosen by the method from its
    ``temporal_init`` setting; see ``build_temporal_transformer``. The residual around the whole block does
    *not* make an untrained block a mean-pooling identity: LayerNorm rescales every block's input, so the
    update is of the order of the frame embeddings themselves (at width 512, 4 layers, random init and
    inputs of per-dimension std 0.5, ``|T(x) - x| / |x|`` = 1.4), and the initialisation matters.
    """

    def __init__(self, width: int, layers: int = 4, heads: int = 8, max_frames: int = 64,
                 dropout: float = 0.0, layer_norm_eps: float = CLIP4CLIP_LAYER_NORM_EPS) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"TemporalTransformer: width {width} is not divisible by heads {heads}")
        self.width, self.heads, self.max_frames = width, heads, max_frames
        self.position = nn.Embedding(max_frames, width)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads, dropout, layer_norm_eps)
                                    for _ in range(layers))
        self.init_random()

    def init_random(self) -> None:
        """CLIP4Clip's ``init_weights`` for modules it does not load: normal(0, 0.02) weights, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):
                nn.init.normal_(module.in_proj_weight, std=0.02)
                nn.init.zeros_(module.in_proj_bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def init_from_clip_text(self, resblocks: nn.ModuleList, positional_embedding: Tensor) -> None:
        """Copy the first ``len(self.blocks)`` CLIP text resblocks and the first ``max_frames`` positions.

        CLIP4Clip/NarVid: ``transformerClip`` (and NarVid's ``transformerCaption``) take the text
        transformer's resblocks ``0 .. cross_num_hidden_layers-1``; the frame position table starts as
        CLIP's text positional embedding.
        """
        layers = len(self.blocks)
        if layers > len(resblocks):
            raise ValueError(f"temporal_init=clip_text: temporal_layers={layers} but the CLIP text transformer has "
                             f"only {len(resblocks)} blocks; lower temporal_layers or use temporal_init=random")
        context, width = positional_embedding.shape
        if width != self.width:
            raise ValueError(f"temporal_init=clip_text: the CLIP text width {width} differs from the temporal "
                             f"width {self.width} (the joint embedding size); use temporal_init=random")
        if self.max_frames > context:
            raise ValueError(f"temporal_init=clip_text: max_frames={self.max_frames} exceeds the CLIP text context "
                             f"length {context}, whose positional embedding initialises the frame positions; "
                             f"set max_frames <= {context}")
        for target, source in zip(self.blocks, resblocks, strict=False):
            heads = getattr(getattr(source, "attn", None), "num_heads", None)
            if heads != self.heads:
                raise ValueError(f"temporal_init=clip_text: the CLIP text blocks have {heads} heads but "
                                 f"temporal_heads={self.heads}; set temporal_heads={heads}")
            state = {k: v for k, v in source.state_dict().items()}
            missing, unexpected = target.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"temporal_init=clip_text: the CLIP text block does not match CLIP's layout "
                                 f"(missing {missing}, unexpected {unexpected}); use temporal_init=random")
        self.position.weight.copy_(positional_embedding[: self.max_frames].to(self.position.weight.dtype))

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


def build_temporal_transformer(backbone: nn.Module, init: TemporalInit, layers: int, heads: int,
                               max_frames: int, dropout: float = 0.0) -> TemporalTransformer:
    """A temporal transformer of the backbone's joint width, initialised as ``init`` says.

    ``clip_text`` needs a backbone with a CLIP text transformer (``clip_text_transformer()``); the
    error says what to change otherwise.
    """
    temporal = TemporalTransformer(backbone.embed_dim, layers, heads, max_frames, dropout)
    if init == "clip_text":
        source = backbone.clip_text_transformer()
        if source is None:
            raise ValueError(f"temporal_init=clip_text needs a CLIP backbone; {type(backbone).__name__} has no CLIP "
                             "text transformer. Set model.init_args.temporal_init: random")
        temporal.init_from_clip_text(*source)
    return temporal
