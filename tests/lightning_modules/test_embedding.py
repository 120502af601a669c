"""EmbeddingRetrievalModule: two embedding functions give a method its features, its cosine score, its training loss
and its exact search hooks; CLIP4Clip meanP written on it scores exactly as CLIP4Clip does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.batch import PairBatch, TextBatch, VideoBatch
from experiments.search.checkpoint import NoSearchEmbeddingError, require_search_embedding
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.base import BaseRetrievalModule, Features
from lightning_modules.clip4clip import CLIP4Clip
from lightning_modules.components import masked_mean_pool, symmetric_infonce
from lightning_modules.embedding import EmbeddingRetrievalModule
from tests.lightning_modules.batch_helpers import text_and_video_batches


class MeanPooled(EmbeddingRetrievalModule):
    """CLIP4Clip meanP written on EmbeddingRetrievalModule: the sentence, and the mean of the unit frames."""

    def embed_text(self, batch: TextBatch) -> Tensor:
        return self.backbone_text(batch).sentence

    def embed_video(self, batch: VideoBatch) -> Tensor:
        return masked_mean_pool(F.normalize(self.backbone_frames(batch), dim=-1), batch.mask)


class FrameSequence(MeanPooled):
    """The usual slip: the frame sequence returned without pooling it."""

    def embed_video(self, batch: VideoBatch) -> Tensor:
        return self.backbone_frames(batch)


def _tiny_backbone() -> OpenCLIPBackbone:
    torch.manual_seed(0)
    return OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16)


@pytest.fixture(scope="module")
def batches() -> tuple[TextBatch, VideoBatch]:
    return text_and_video_batches({})


@pytest.fixture(scope="module")
def model() -> MeanPooled:
    return MeanPooled(backbone=_tiny_backbone(), logit_scale_init=14.29).eval()


def test_features_are_the_two_embeddings_and_the_score_their_cosine(model: MeanPooled,
                                                                    batches: tuple[TextBatch, VideoBatch]) -> None:
    text, video = batches
    with torch.no_grad():
        t, v = model.encode_text(text), model.encode_video(video)
        assert set(t) == {"text"} and set(v) == {"video"}
        torch.testing.assert_close(t["text"], model.embed_text(text))
        torch.testing.assert_close(v["video"], model.embed_video(video))
        sim = model.similarity(t, v)
    assert sim.shape == (len(text), len(video))
    expected = torch.stack([torch.stack([F.cosine_similarity(a, b, dim=0) for b in v["video"]]) for a in t["text"]])
    torch.testing.assert_close(sim, expected, rtol=1e-5, atol=1e-6)


def test_search_hooks_come_free_and_rank_exactly_as_the_score(model: MeanPooled,
                                                              batches: tuple[TextBatch, VideoBatch]) -> None:
    text, video = batches
    with torch.no_grad():
        t, v = model.encode_text(text), model.encode_video(video)
        query, index = model.query_embedding(t), model.index_embedding(v)
    assert model.search_is_exact() is True
    assert query.shape == (len(text), t["text"].shape[1]) and index.shape == (len(video), v["video"].shape[1])
    torch.testing.assert_close(query.norm(dim=1), torch.ones(len(text)))
    torch.testing.assert_close(index.norm(dim=1), torch.ones(len(video)))
    # what FAISS computes over the index (inner products) is the evaluated score itself, not an approximation
    torch.testing.assert_close(query @ index.T, model.similarity(t, v), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.rerank(t, v), model.similarity(t, v), rtol=1e-5, atol=1e-6)
    require_search_embedding(model, "unused.ckpt")  # what experiments.search index checks first


def test_training_loss_is_infonce_on_the_cosine_at_the_base_temperature(batches: tuple[TextBatch, VideoBatch]) -> None:
    model = MeanPooled(backbone=_tiny_backbone(), logit_scale_init=14.29)
    text, video = batches
    pairs = PairBatch(text=TextBatch(index=torch.arange(len(video)), video_index=torch.arange(len(video)),
                                     texts=text.texts[:len(video)]), video=video)
    loss, logged = model.training_loss(pairs)
    sim = model.similarity(model.encode_text(pairs.text), model.encode_video(pairs.video))
    torch.testing.assert_close(loss, symmetric_infonce(14.29 * sim), rtol=1e-4, atol=1e-5)
    assert set(logged) == {"loss_nce"}
    loss.backward()
    assert model.logit_scale.grad is not None  # the base's learnt temperature trains with it


def test_clip4clip_meanp_is_such_a_method(batches: tuple[TextBatch, VideoBatch]) -> None:
    """CLIP4Clip (meanP) written on EmbeddingRetrievalModule: the same weights give the same scores and the same
    search vectors, so CLIP4Clip could subclass it without changing a number or a checkpoint key."""
    text, video = batches
    reference = CLIP4Clip(sim_header="meanP", backbone=_tiny_backbone(), logit_scale_init=14.29).eval()
    ported = MeanPooled(backbone=_tiny_backbone(), logit_scale_init=14.29).eval()
    assert ported.load_state_dict(reference.state_dict()) is not None  # strict: the same parameters
    with torch.no_grad():
        ours: tuple[Features, Features] = (ported.encode_text(text), ported.encode_video(video))
        theirs: tuple[Features, Features] = (reference.encode_text(text), reference.encode_video(video))
        torch.testing.assert_close(ported.similarity(*ours), reference.similarity(*theirs))
        torch.testing.assert_close(ported.query_embedding(ours[0]), reference.query_embedding(theirs[0]))
        torch.testing.assert_close(ported.index_embedding(ours[1]), reference.index_embedding(theirs[1]))


def test_a_frame_sequence_instead_of_one_vector_is_an_error_naming_the_hook(
        batches: tuple[TextBatch, VideoBatch]) -> None:
    model = FrameSequence(backbone=_tiny_backbone(), logit_scale_init=14.29).eval()
    with pytest.raises(ValueError, match=r"FrameSequence\.embed_video returned \[5, 4, \d+\]; expected a "
                                         r"\[batch, dim\] tensor with batch = 5"):
        model.encode_video(batches[1])


def test_overriding_the_similarity_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"overrides similarity.*subclass lightning_modules\.base\.BaseRetrievalModule"):
        class Bilinear(MeanPooled):  # the definition itself is what fails
            def similarity(self, text_feats: Features, video_feats: Features) -> Tensor:
                return text_feats["text"] @ video_feats["video"].T


def test_without_both_embeddings_the_class_is_abstract() -> None:
    class TextOnly(EmbeddingRetrievalModule):
        def embed_text(self, batch: TextBatch) -> Tensor:
            return self.backbone_text(batch).sentence

    with pytest.raises(TypeError, match=r"abstract.*embed_video"):
        TextOnly(backbone=_tiny_backbone(), logit_scale_init=14.29)  # type: ignore[abstract]


class WordFrame(BaseRetrievalModule):
    """A query-dependent score with no first-stage embedding: it cannot be indexed."""

    def similarity(self, text_feats: Features, video_feats: Features) -> Tensor:
        return text_feats["text"] @ video_feats["frames"].mean(1).T


class HalfSearch(WordFrame):
    def index_embedding(self, video_feats: Features) -> Tensor:
        return F.normalize(video_feats["frames"].mean(1), dim=-1)


def test_the_search_check_names_what_a_method_lacks() -> None:
    require_search_embedding(CLIP4Clip(sim_header="meanP", backbone=_tiny_backbone(), logit_scale_init=14.29), "c")
    with pytest.raises(NoSearchEmbeddingError, match=r"WordFrame \(tests\.lightning_modules\.test_embedding, "
                                                      r"checkpoint my\.ckpt\) defines no search embedding \(it has "
                                                      r"neither search_keys.*EmbeddingRetrievalModule"):
        require_search_embedding(WordFrame(backbone=_tiny_backbone(), logit_scale_init=14.29), "my.ckpt")
    with pytest.raises(NoSearchEmbeddingError, match="it overrides only index_embedding"):
        require_search_embedding(HalfSearch(backbone=_tiny_backbone(), logit_scale_init=14.29), "my.ckpt")
