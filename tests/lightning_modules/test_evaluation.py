"""``lightning_modules.evaluation``: every text and video scored once, whatever order and padding the loaders gave,
with index maps for multi-caption sets, and a clear error when the evaluation missed part of the split."""

from __future__ import annotations

import pytest
import torch

from tests.lightning_modules.mixin_hosts import FakeEvalData, Host, one_hot

# 6 texts of 4 videos (videos 0 and 3 have two captions each)
TEXT_TO_VIDEO = [0, 0, 1, 2, 3, 3]


def _store(host: Host, text_rows: list[int], video_rows: list[int]) -> None:
    """Loader batches as a distributed sampler leaves them: out of order, the last rows repeated as padding."""
    text = one_hot([TEXT_TO_VIDEO[i] for i in text_rows], 4)
    video = one_hot(video_rows, 4)
    for start in range(0, len(text_rows), 3):  # loader batches of 3 texts
        host._eval_store["text"].append((torch.tensor(text_rows[start:start + 3]), {"text": text[start:start + 3]}))
    host._eval_store["video"] += [(torch.tensor(video_rows), {"video": video})]


def test_padding_and_order_do_not_change_the_scores() -> None:
    host = Host(FakeEvalData(TEXT_TO_VIDEO, 4))
    host.on_test_epoch_start()
    assert host.lineage_resets == 1  # the test's lineage counts the reads of the test itself
    _store(host, [5, 1, 0, 3, 2, 4, 5, 1], [3, 1, 0, 2, 3])  # texts 5, 1 and video 3 twice (sampler padding)
    metrics = host._evaluate("test")
    assert metrics["num_texts"] == 6 and metrics["num_videos"] == 4
    assert metrics["t2v_R1"] == 100.0 and metrics["v2t_R1"] == 100.0
    assert metrics["num_videos_failed"] == 0 and metrics["num_texts_unscored"] == 0
    ev = host.last_eval
    assert ev["text_idx"].tolist() == list(range(6)) and ev["video_idx"].tolist() == list(range(4))
    assert ev["gt"].tolist() == TEXT_TO_VIDEO and ev["complete"] is True
    torch.testing.assert_close(ev["sim"], one_hot(TEXT_TO_VIDEO, 4))
    assert host._eval_store == {"text": [], "video": []}  # emptied for the next evaluation


def test_a_video_missing_from_a_full_evaluation_is_an_error_naming_the_counts() -> None:
    host = Host(FakeEvalData(TEXT_TO_VIDEO, 4))
    _store(host, [0, 1, 2, 3, 4, 5], [0, 1, 2])
    with pytest.raises(RuntimeError, match=r"test evaluation covered 6/6 texts and 3/4 videos"):
        host._evaluate("test")


def test_a_video_that_failed_to_decode_leaves_with_its_texts_and_is_counted() -> None:
    host = Host(FakeEvalData(TEXT_TO_VIDEO, 4, failed=[3]))
    _store(host, [0, 1, 2, 3, 4, 5], [0, 1, 2])
    metrics = host._evaluate("test")
    assert metrics["num_videos_failed"] == 1 and metrics["num_texts_unscored"] == 2  # texts 4, 5 described video 3
    assert metrics["num_texts"] == 4 and metrics["t2v_R1"] == 100.0
    assert host.last_eval["complete"] is False


def test_a_limited_run_scores_the_covered_subset() -> None:
    host = Host(FakeEvalData(TEXT_TO_VIDEO, 4), limit_val_batches=0.5)
    _store(host, [0, 2, 3], [0, 1, 2])  # a debugging run: part of the texts and videos
    host.on_validation_epoch_end()
    assert host.logged["val/num_texts"] == 3.0 and host.logged["val/t2v_R1"] == 100.0


def test_score_fuses_named_views_tile_by_tile() -> None:
    host = Host(FakeEvalData(TEXT_TO_VIDEO, 4), text_chunk=4, video_chunk=1)
    host.similarity = lambda t, v: {"a": t["text"] @ v["video"].T, "b": 2 * t["text"] @ v["video"].T}
    text, video = {"text": torch.randn(5, 3)}, {"video": torch.randn(7, 3)}
    fused, views = host.score(text, video)
    torch.testing.assert_close(views["b"], 2 * views["a"])
    torch.testing.assert_close(fused, 3 * (text["text"] @ video["video"].T))


def test_an_evaluation_without_batches_says_which_side_is_empty() -> None:
    host = Host(FakeEvalData(TEXT_TO_VIDEO, 4))
    host._eval_store["text"].append((torch.tensor([0]), {"text": one_hot([0], 4)}))
    with pytest.raises(RuntimeError, match="no video batches were evaluated"):
        host._evaluate("test")
