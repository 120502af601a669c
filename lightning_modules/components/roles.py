"""Role embeddings: one learnt vector per functional role of a text, added to its input token embeddings.

CaRe-DPO's retriever (arXiv 2509.16560, abstract) gives the text encoder "role embeddings to better distinguish
between textual inputs with different functional roles, such as an auxiliary caption and a text query". The
paper's form is not public; this is the reconstruction of ``research/methods.md`` §4.3, in the manner of BERT's
segment embeddings: ``e_role`` (width of the text trunk's token embeddings) is added to the embedding of every
token of a text that plays ``role``, *before* the trunk, so a shared (even frozen) text tower computes different
features for the same words as a query and as a caption. It works on any backbone through its
``token_embedding_layer()`` (a forward hook on that layer), so the trunk's code is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # the backbones import components (pooling): no runtime import back
    from lightning_modules.backbones.base import TextFeatures, VideoTextBackbone


class RoleEmbeddings(nn.Module):
    """``len(roles)`` learnt vectors of width ``width``; ``init_std`` 0 starts every role at the plain encoder."""

    def __init__(self, roles: Sequence[str], width: int, init_std: float = 0.02) -> None:
        super().__init__()
        if len(set(roles)) != len(roles) or not roles:
            raise ValueError(f"roles must be distinct and non-empty, got {list(roles)}")
        self.roles = tuple(roles)
        self.vectors = nn.Parameter(torch.randn(len(roles), width) * init_std)

    def vector(self, role: str) -> Tensor:
        if role not in self.roles:
            raise KeyError(f"unknown role {role!r}; roles are {list(self.roles)}")
        return self.vectors[self.roles.index(role)]

    @contextmanager
    def applied(self, layer: nn.Module, role: str) -> Iterator[None]:
        """While active, every output of ``layer`` (the token embedding lookup) gets ``e_role`` added."""
        vector = self.vector(role)

        def add_role(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            return output + vector.to(output.dtype)

        handle = layer.register_forward_hook(add_role)
        try:
            yield
        finally:
            handle.remove()

    def encode_text(self, backbone: VideoTextBackbone, texts: list[str], role: str) -> TextFeatures:
        """``backbone.encode_text(texts)`` with ``e_role`` added to every input token embedding."""
        with self.applied(backbone.token_embedding_layer(), role):
            return backbone.encode_text(texts)
