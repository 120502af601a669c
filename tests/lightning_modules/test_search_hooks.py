"""``lightning_modules.search_hooks``: the search embeddings from ``search_keys``, a clear error without them, and
``rerank`` scoring a candidate block as the evaluation does (views fused over the block)."""

from __future__ import annotations

import pytest
import torch

from tests.lightning_modules.mixin_hosts import FakeEvalData, Host


def test_search_keys_give_unit_query_and_index_embeddings() -> None:
    host = Host(FakeEvalData([0], 1))
    text, video = {"text": torch.tensor([[3.0, 4.0]])}, {"video": torch.tensor([[0.0, 2.0]])}
    torch.testing.assert_close(host.query_embedding(text), torch.tensor([[0.6, 0.8]]))
    torch.testing.assert_close(host.index_embedding(video), torch.tensor([[0.0, 1.0]]))
    assert host.search_is_exact() is False  # only a method that knows its score is that cosine says True


def test_a_method_without_search_keys_is_told_what_to_define() -> None:
    host = Host(FakeEvalData([0], 1))
    host.search_keys = None
    with pytest.raises(NotImplementedError, match=r"Host defines no search embedding: set search_keys"):
        host.query_embedding({"text": torch.ones(1, 2)})


def test_rerank_scores_a_candidate_block_in_float32_with_views_fused() -> None:
    host = Host(FakeEvalData([0], 1), text_chunk=1, video_chunk=2)
    text = {"text": torch.randn(3, 4, dtype=torch.bfloat16)}
    video = {"video": torch.randn(5, 4, dtype=torch.bfloat16)}
    plain = host.rerank(text, video)
    expected = text["text"].float() @ video["video"].float().T
    torch.testing.assert_close(plain, expected)
    host.similarity = lambda t, v: {"a": t["text"] @ v["video"].T, "b": t["text"] @ v["video"].T}
    torch.testing.assert_close(host.rerank(text, video), 2 * expected)
