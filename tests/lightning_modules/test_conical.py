"""Conical embedding optimisation: the three InfoNCE terms by hand, the fusions, and per-candidate scoring against a
naive loop over (query, video) pairs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from datamodules.batch import PairBatch, SupplementCaptions
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.components import infonce
from lightning_modules.conical import ConicalEmbedding, fuse_strings
from tests.lightning_modules.batch_helpers import text_and_video_batches

SUPPLEMENTS = [f"supplement of video {i}: it {'spins' if i % 2 else 'rises'} on the grass" for i in range(5)]


def tiny_conical(**kwargs) -> ConicalEmbedding:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16)
    return ConicalEmbedding(backbone=backbone, logit_scale_init=10.0, **kwargs).eval()


def batches(augmented: int = 2):
    text, video = text_and_video_batches({"supplement": SupplementCaptions([[s] for s in SUPPLEMENTS])}, 5, 5)
    if augmented:
        video.augmented_frames = torch.stack([torch.flip(video.frames, dims=(-1,)),
                                              torch.rot90(video.frames, 1, dims=(-2, -1))][:augmented], 1)
    return text, video


class FakeDataModule:
    """What the module reads from a data module at evaluation: the eval texts and each video's supplement."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def aux_captions_of(self, split: str, video_indices: list[int], kind: str) -> list[list[str]]:
        assert kind == "supplement"
        return [[SUPPLEMENTS[i]] for i in video_indices]

    def eval_index(self, split: str) -> SimpleNamespace:
        return SimpleNamespace(texts=self.texts)


def attach_eval(model: ConicalEmbedding, texts: list[str], testing: bool = True) -> None:
    """A stand-in trainer in its test stage: enough for the module's eval lookups."""
    trainer = SimpleNamespace(testing=testing, datamodule=FakeDataModule(texts),
                              state=SimpleNamespace(stage=SimpleNamespace(value="test" if testing else "validate")))
    model.trainer = trainer  # the module reads trainer.testing, .state and .datamodule only


# ------------------------------------------------------------------ the loss, by hand
def test_infonce_standard_and_decoupled_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.3], [1.5, -0.5, 0.2]])
    rows = [-math.log(math.exp(logits[i, i]) / sum(math.exp(v) for v in logits[i])) for i in range(3)]
    cols = [-math.log(math.exp(logits[i, i]) / sum(math.exp(v) for v in logits[:, i])) for i in range(3)]
    assert infonce(logits, symmetric=False).item() == pytest.approx(sum(rows) / 3, abs=1e-6)
    assert infonce(logits).item() == pytest.approx((sum(rows) + sum(cols)) / 6, abs=1e-6)
    # the slides' denominator: j != i only
    decoupled = [-logits[i, i].item() + math.log(sum(math.exp(logits[i, j]) for j in range(3) if j != i))
                 for i in range(3)]
    assert infonce(logits, include_positive=False, symmetric=False).item() == pytest.approx(sum(decoupled) / 3,
                                                                                             abs=1e-6)
    # matches F.cross_entropy on the standard form
    assert infonce(logits, symmetric=False).item() == pytest.approx(
        F.cross_entropy(logits, torch.arange(3)).item(), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        infonce(torch.ones(1, 1), include_positive=False)


@pytest.mark.parametrize("include_positive", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
def test_training_loss_is_the_weighted_sum_of_the_three_terms(include_positive: bool, symmetric: bool) -> None:
    model = tiny_conical(text_fusion="sum", weight_tv=1.0, weight_ta=0.5, weight_va=2.0,
                         include_positive=include_positive, symmetric=symmetric)
    with torch.no_grad():
        model.logit_scale_ta.fill_(math.log(7.0))
        model.logit_scale_va.fill_(math.log(3.0))
    text, video = batches(augmented=2)
    with torch.no_grad():
        loss, logs = model.training_loss(PairBatch(text, video))
        q = model.backbone.encode_text(text.texts).sentence
        s = model.backbone.encode_text(SUPPLEMENTS).sentence
        t = F.normalize(q + s, dim=-1)

        def pooled(frames, mask):
            return F.normalize(((F.normalize(frames, dim=-1) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)),
                               dim=-1)

        v = pooled(model.backbone.encode_frames(video.frames), video.mask)
        copies = [pooled(model.backbone.encode_frames(video.augmented_frames[:, a]), video.mask) for a in range(2)]

    def nce(logits):
        return infonce(logits, include_positive, symmetric)

    tv = nce(10.0 * t @ v.t())
    ta = sum(nce(7.0 * t @ c.t()) for c in copies) / 2
    va = sum(nce(3.0 * v @ c.t()) for c in copies) / 2
    torch.testing.assert_close(logs["L_tv"], tv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logs["L_ta"], ta, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logs["L_va"], va, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, tv + 0.5 * ta + 2.0 * va, atol=1e-5, rtol=1e-5)
    assert {"loss_tv", "loss_ta", "loss_va"} <= set(logs)


def test_switching_terms_off_drops_them_and_needs_no_copies() -> None:
    model = tiny_conical(weight_ta=0.0, weight_va=0.0)
    text, video = batches(augmented=0)
    loss, logs = model.training_loss(PairBatch(text, video))
    assert "loss_ta" not in logs and "loss_va" not in logs and "L_ta" not in logs
    torch.testing.assert_close(loss.detach(), logs["loss_tv"])
    with pytest.raises(ValueError, match="augmented_views"):
        tiny_conical().training_loss(PairBatch(text, video))
    with pytest.raises(ValueError, match="nothing would train the text side"):
        tiny_conical(weight_tv=0.0, weight_ta=0.0)


def test_gradients_reach_every_scale_and_the_gate() -> None:
    model = tiny_conical(text_fusion="gate").train()
    text, video = batches()
    loss, _ = model.training_loss(PairBatch(text, video))
    loss.backward()
    for name in ("logit_scale", "logit_scale_ta", "logit_scale_va", "gate.proj.weight"):
        assert model.get_parameter(name).grad is not None and model.get_parameter(name).grad.abs().sum() > 0, name


# ------------------------------------------------------------------ fusions and test-time modes
@pytest.mark.parametrize("fusion", ["concat", "sum", "gate"])
def test_per_candidate_equals_a_naive_loop_and_its_diagonal_equals_paired(fusion: str) -> None:
    model = tiny_conical(text_fusion=fusion, text_memo_size=0, per_candidate_batch=4)
    if fusion == "gate":  # a non-trivial gate
        torch.nn.init.normal_(model.gate.proj.weight, std=0.5)
    text, video = batches(augmented=0)
    attach_eval(model, text.texts)
    with torch.no_grad():
        tf, vf = model.encode_text(text), model.encode_video(video)
        views = model.similarity(tf, vf)
        naive = torch.zeros(len(text.texts), len(SUPPLEMENTS))
        v = vf["video"]
        for i, query in enumerate(text.texts):
            q = model.backbone.encode_text([query]).sentence
            for j, supplement in enumerate(SUPPLEMENTS):
                if fusion == "concat":
                    fused = model.backbone.encode_text([fuse_strings(query, supplement, " ")]).sentence
                else:
                    s = model.backbone.encode_text([supplement]).sentence
                    fused = q + s if fusion == "sum" else model.gate(q, s)
                naive[i, j] = F.cosine_similarity(fused, v[j:j + 1]).item()
    assert set(views) == {"none", "paired", "per_candidate"}
    torch.testing.assert_close(views["per_candidate"], naive, atol=1e-5, rtol=1e-4)
    # per_candidate scores the true pair exactly as paired does: the two modes differ only off the diagonal
    gt = text.video_index
    torch.testing.assert_close(views["per_candidate"][torch.arange(5), gt], views["paired"][torch.arange(5), gt],
                               atol=1e-5, rtol=1e-4)
    # none is the bare query
    torch.testing.assert_close(views["none"], F.normalize(tf["query"], dim=-1) @ v.t(), atol=1e-6, rtol=1e-5)
    assert torch.equal(model.fuse_views(views), views["none"])


def test_validation_scores_only_the_selected_mode() -> None:
    model = tiny_conical(text_fusion="sum", test_supplement="paired", val_supplement="none")
    text, video = batches(augmented=0)
    attach_eval(model, text.texts, testing=False)
    assert model.eval_modes() == ["none"]
    with torch.no_grad():
        views = model.similarity(model.encode_text(text), model.encode_video(video))
    assert set(views) == {"none"}
    attach_eval(model, text.texts, testing=True)
    assert model.eval_modes() == ["paired", "none", "per_candidate"]
    no_supplement = tiny_conical(use_supplement=False)
    attach_eval(no_supplement, text.texts)
    assert no_supplement.eval_modes() == ["none"]


def test_missing_supplements_name_the_setting() -> None:
    text, video = batches()
    video.aux = {}
    with pytest.raises(KeyError, match=r"aux_captions: \{supplement"):
        tiny_conical().training_loss(PairBatch(text, video))


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match="test_supplement"):
        tiny_conical(test_supplement="oracle")
    with pytest.raises(ValueError, match="text_fusion"):
        tiny_conical(text_fusion="product")


def test_frozen_text_trunk_memo_gives_the_same_embedding_every_time() -> None:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16, freeze_video=True, freeze_text=True)
    model = ConicalEmbedding(backbone=backbone, logit_scale_init=10.0).eval()
    texts = ["a red ball rolls", "a blue box slides left", "a red ball rolls"]
    with torch.no_grad():
        first = model.encode_strings(texts)            # computes and memoises two strings
        again = model.encode_strings(texts)            # from the memo
        unmemoised = model.encode_strings(texts, memo=False)
        live = backbone.encode_text(texts).sentence    # the trunk in float32, no rounding
    assert len(model._trunk_memo) == 2
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    torch.testing.assert_close(first, unmemoised, atol=0, rtol=0)
    torch.testing.assert_close(first, live, atol=2e-3, rtol=2e-3)  # float16 states, as the feature cache stores them


def test_without_supplement_and_copies_it_is_clip4clip_meanp() -> None:
    from lightning_modules.clip4clip import CLIP4Clip

    model = tiny_conical(use_supplement=False, weight_ta=0.0, weight_va=0.0)
    torch.manual_seed(0)
    baseline = CLIP4Clip(backbone=model.backbone, sim_header="meanP", logit_scale_init=10.0).eval()
    text, video = batches(augmented=0)
    with torch.no_grad():
        loss, _ = model.training_loss(PairBatch(text, video))
        reference, _ = baseline.training_loss(PairBatch(text, video))
    torch.testing.assert_close(loss, reference, atol=1e-6, rtol=1e-6)
