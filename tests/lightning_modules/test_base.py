"""Typed auxiliary captions: ``BaseRetrievalModule.aux_caption_embeddings`` live and from the frozen-feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.batch import MultiCaptions, NarrationCaptions, SupplementCaptions, VideoBatch
from datamodules.collate import collate_aux
from datamodules.feature_cache import CachedFeatures, _encode_texts
from tests.lightning_modules.test_narvid import tiny_narvid

NARRATION = [["a red ball rolls", "the red ball stops", "a hand appears"], ["a blue cube", "the cube turns"]]
MULTI = [["a red ball on a table", "someone rolls a ball"], ["a blue cube", "a cube turns", "a toy", "a box"]]


def cached_items(kind: str, captions: list[list[str]], model: torch.nn.Module, pad_to: int | None) -> list[dict]:
    """Items as ``VideoSource.load`` builds them with a frozen text trunk: the captions and their cached states."""
    texts = sorted({c for row in captions for c in row})
    feats, masks = _encode_texts(texts, model.backbone, torch.device("cpu"))
    cache = CachedFeatures()
    cache.add_texts(texts, feats, masks)
    items = []
    for row in captions:
        tokens = torch.stack([cache.text(c)[0] for c in row])
        mask = torch.stack([cache.text(c)[1] for c in row])
        if pad_to is not None:
            tokens = torch.cat([tokens, tokens.new_zeros((pad_to - len(row), *tokens.shape[1:]))])
            mask = torch.cat([mask, mask.new_zeros((pad_to - len(row), *mask.shape[1:]))])
        items.append({"aux": {kind: row}, "aux_cached": {kind: (tokens, mask)}, "aux_prompt": {kind: "p"}})
    return items


def video_batch(aux: dict, frames: int = 3) -> VideoBatch:
    mask = torch.zeros(2, frames, dtype=torch.bool)
    mask[0, :3], mask[1, :2] = True, True
    return VideoBatch(index=torch.arange(2), mask=mask, video_ids=["v0", "v1"], aux=aux)


@pytest.mark.parametrize("kind", ["narration", "multi"])
def test_live_and_cached_aux_caption_embeddings_agree(kind: str) -> None:
    model = tiny_narvid()
    captions = NARRATION if kind == "narration" else MULTI
    typed = NarrationCaptions if kind == "narration" else MultiCaptions
    with torch.no_grad():
        live, live_mask = model.aux_caption_embeddings(video_batch({kind: typed(captions)}), kind)
        aux = collate_aux(kind, cached_items(kind, captions, model, pad_to=3 if kind == "narration" else None))
        assert isinstance(aux, typed) and aux.tokens is not None
        cached, cached_mask = model.aux_caption_embeddings(video_batch({kind: aux}), kind)
    slots = 3 if kind == "narration" else 4
    assert live.shape == cached.shape == (2, slots, model.backbone.embed_dim)
    expected = torch.zeros(2, slots, dtype=torch.bool)
    for row, caps in enumerate(captions):
        expected[row, :len(caps)] = True
    assert torch.equal(live_mask, expected) and torch.equal(cached_mask, expected)
    # the cache stores fp16 trunk states: equal up to half precision at every caption slot
    torch.testing.assert_close(cached[expected], live[expected], atol=2e-2, rtol=2e-2)


def test_supplement_captions_keep_their_prompt_and_missing_kind_is_a_clear_error() -> None:
    items = [{"aux": {"supplement": ["one"]}, "aux_prompt": {"supplement": "p1"}},
             {"aux": {"supplement": ["two"]}, "aux_prompt": {"supplement": "p2"}}]
    aux = collate_aux("supplement", items)
    assert isinstance(aux, SupplementCaptions) and aux.prompts == ["p1", "p2"] and aux.tokens is None
    model = tiny_narvid()
    with pytest.raises(KeyError, match=r"aux_captions: \{multi: <multi.jsonl>\}"):
        model.aux_caption_embeddings(video_batch({}), "multi")
    assert np.isfinite(model.aux_caption_embeddings(video_batch({"supplement": aux}), "supplement")[0]
                       .detach().numpy()).all()
