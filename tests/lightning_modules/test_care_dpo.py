"""CaRe-DPO's pieces: the DPO term by hand, role embeddings that act only through the role, the retriever's two
sides, the two preference groups on a tiny store, and the training module's objectives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from datamodules.batch import PairBatch, SupplementCaptions
from datamodules.preferences import preference_pairs
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.care_dpo import CaReRetriever
from lightning_modules.components import RoleEmbeddings, dpo_loss
from tests.lightning_modules.batch_helpers import text_and_video_batches

CAPTIONS = [f"caption {i}: a {'red' if i % 2 else 'blue'} circle spins on the grass" for i in range(5)]


def tiny_retriever(**kwargs) -> CaReRetriever:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16)
    return CaReRetriever(backbone=backbone, logit_scale_init=10.0, **kwargs).eval()


# ---------------------------------------------------------------------------------------------- DPO
def test_dpo_loss_matches_a_hand_computed_example() -> None:
    beta = 0.5
    loss, chosen, rejected = dpo_loss(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-20.0]),
                                      torch.tensor([-19.0]), beta)
    # r_w = 0.5 * (-10 + 12) = 1, r_l = 0.5 * (-20 + 19) = -0.5, loss = -log sigmoid(1.5)
    assert chosen.item() == pytest.approx(1.0) and rejected.item() == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-6)


def test_dpo_loss_is_log_two_with_zero_rewards_when_the_policy_is_the_reference() -> None:
    policy = torch.tensor([-3.0, -7.5, -1.25])
    other = torch.tensor([-4.0, -2.0, -9.0])
    loss, chosen, rejected = dpo_loss(policy, policy.clone(), other, other.clone(), 0.1)
    assert torch.equal(chosen, torch.zeros(3)) and torch.equal(rejected, torch.zeros(3))
    assert torch.allclose(loss, torch.full((3,), math.log(2.0)))


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected() -> None:
    chosen = torch.tensor([-5.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    loss, _, _ = dpo_loss(chosen, torch.tensor([-5.0]), rejected, torch.tensor([-5.0]), 0.5)
    loss.sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.25) and rejected.grad.item() == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------- roles
def test_role_vectors_change_a_text_embedding_only_through_its_role() -> None:
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16).eval()
    width = backbone.token_embedding_layer().weight.shape[1]
    roles = RoleEmbeddings(("query", "caption"), width, init_std=0.0)
    texts = ["a red circle spins", "the blue square rises"]
    with torch.no_grad():
        plain = backbone.encode_text(texts).sentence
        assert torch.allclose(roles.encode_text(backbone, texts, "query").sentence, plain, atol=1e-6)
        roles.vectors[1].normal_(0.0, 1.0)  # move the caption role only
        assert torch.allclose(roles.encode_text(backbone, texts, "query").sentence, plain, atol=1e-6)
        as_caption = roles.encode_text(backbone, texts, "caption").sentence
        assert not torch.allclose(as_caption, plain, atol=1e-3)
        # the role is the token embedding plus e_caption at every position, nothing else
        tokens = backbone.tokenize(texts)
        layer = backbone.token_embedding_layer()
        original = layer.forward
        layer.forward = lambda ids: original(ids) + roles.vectors[1]  # type: ignore[method-assign]
        try:
            by_hand = backbone.text_head(*backbone.text_trunk(tokens)).sentence
        finally:
            layer.forward = original  # type: ignore[method-assign]
        assert torch.allclose(as_caption, by_hand, atol=1e-6)
    # after the block the hook is gone
    assert torch.allclose(backbone.encode_text(texts).sentence, plain, atol=1e-6)


def test_role_vectors_get_gradients_through_a_frozen_text_tower() -> None:
    model = tiny_retriever(role_init_std=0.0)
    model.backbone.requires_grad_(False)
    query = model.query_embeddings(["a red circle"])
    caption = model.caption_embeddings(["a red circle"])
    (query * caption).sum().backward()
    assert model.roles is not None and model.roles.vectors.grad is not None
    assert bool((model.roles.vectors.grad.abs().sum(1) > 0).all())


# ---------------------------------------------------------------------------------------------- retriever
def test_retriever_video_side_is_the_normalised_sum_of_meanp_and_its_caption() -> None:
    model = tiny_retriever(caption_weight_init=0.7)
    text, video = text_and_video_batches({"supplement": SupplementCaptions([[c] for c in CAPTIONS])}, 5, 5)
    with torch.no_grad():
        fused = model.encode_video(video)["video"]
        frames = model.backbone_frames(video)
        pooled = F.normalize((F.normalize(frames, dim=-1) * video.mask[..., None]).sum(1)
                             / video.mask.sum(1, keepdim=True), dim=-1)
        caption = model.caption_embeddings(CAPTIONS)
        assert torch.allclose(fused, F.normalize(pooled + 0.7 * caption, dim=-1), atol=1e-5)
        queries = model.encode_text(text)["text"]
        assert torch.allclose(model.similarity({"text": queries}, {"video": fused}),
                              F.normalize(queries, dim=-1) @ fused.t(), atol=1e-6)
        # without the caption the video side is CLIP4Clip meanP
        plain = tiny_retriever(use_caption=False).encode_video(video)["video"]
        assert torch.allclose(plain, pooled, atol=1e-5)


def test_retriever_without_roles_encodes_queries_and_captions_alike() -> None:
    model = tiny_retriever(role_embeddings=False)
    assert model.roles is None
    with torch.no_grad():
        assert torch.allclose(model.query_embeddings(CAPTIONS), model.caption_embeddings(CAPTIONS))


def test_retriever_trains_and_names_a_missing_caption() -> None:
    model = tiny_retriever().train()
    text, video = text_and_video_batches({"supplement": SupplementCaptions([[c] for c in CAPTIONS])}, 5, 5)
    loss, terms = model.training_loss(PairBatch(text, video))
    loss.backward()
    assert torch.isfinite(loss) and "loss_nce" in terms
    assert model.roles.vectors.grad is not None and model.caption_weight.grad is not None
    _, video = text_and_video_batches({"supplement": SupplementCaptions([[c] for c in CAPTIONS[:4]] + [[]])}, 5, 5)
    with pytest.raises(ValueError, match="no 'supplement' caption"):
        model.encode_video(video)


# ---------------------------------------------------------------------------------------------- preference pairs
def _record(vid: str, relevance: list[float], neighbour: str, neighbour_relevance: list[float]) -> dict:
    return {"video_id": vid, "query": f"query of {vid}", "captions": [f"{vid}-c{k}" for k in range(len(relevance))],
            "ref_logprob": [-float(k + 1) for k in range(len(relevance))], "relevance": relevance,
            "neighbour_id": neighbour, "neighbour_captions": [f"{neighbour}-c{k}" for k in range(3)],
            "neighbour_ref_logprob": [-10.0, -11.0, -12.0], "neighbour_relevance": neighbour_relevance}


def test_intra_and_inter_pairs_on_a_tiny_store() -> None:
    records = [_record("v1", [0.1, 0.5, -0.2], "v2", [0.0, 0.3, 0.1]),
               _record("v2", [0.2, 0.2, 0.2], "v1", [0.4, -0.1, 0.0])]
    pairs, counts = preference_pairs(records, ("intra", "inter"))
    assert counts == {"intra": 1, "inter": 2, "intra_ties": 1, "inter_conflicts": 0}
    intra = [p for p in pairs if p.group == "intra"]
    assert [(p.chosen_video, p.chosen, p.chosen_ref, p.rejected_video, p.rejected, p.rejected_ref) for p in intra] == [
        ("v1", "v1-c1", -2.0, "v1", "v1-c2", -3.0)]
    inter = {p.chosen_video: p for p in pairs if p.group == "inter"}
    # v1's best caption against the neighbour's caption that best steals v1's query (neighbour_relevance max: c1)
    assert (inter["v1"].chosen, inter["v1"].rejected_video, inter["v1"].rejected, inter["v1"].rejected_ref) == (
        "v1-c1", "v2", "v2-c1", -11.0)
    # a tie keeps the first caption as the best one
    assert (inter["v2"].chosen, inter["v2"].rejected, inter["v2"].rejected_ref) == ("v2-c0", "v1-c0", -10.0)
    # v1's inter pair rejects v2-c1, which v2's own intra pair prefers: a conflict between the groups
    _, conflicting = preference_pairs([records[0], _record("v2", [0.1, 0.6, 0.2], "v1", [0.4, -0.1, 0.0])])
    assert conflicting["inter_conflicts"] == 1
    only_inter, counts = preference_pairs(records, ("inter",))
    assert {p.group for p in only_inter} == {"inter"} and counts["intra"] == 0


def test_preference_pairs_name_a_missing_key_and_bad_groups() -> None:
    record = _record("v1", [0.1, 0.5], "v2", [0.0, 0.3, 0.1])
    del record["neighbour_relevance"]
    assert len(preference_pairs([record], ("intra",))[0]) == 1
    with pytest.raises(KeyError, match=r"store.jsonl record 1 \(video 'v1'\) lacks \['neighbour_relevance'\]"):
        preference_pairs([record], ("intra", "inter"), where="store.jsonl")
    with pytest.raises(ValueError, match="groups must be"):
        preference_pairs([record], ("both",))


# ---------------------------------------------------------------------------------------------- captioner training
@pytest.fixture(scope="module")
def captioner_module(tmp_path_factory: pytest.TempPathFactory):
    from lightning_modules.captioning import CaptionerTraining, PrefixCaptioner
    from tests.caption_helpers import save_tiny_llama

    llama = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    torch.manual_seed(0)
    return CaptionerTraining(PrefixCaptioner(str(llama), feature_dim=6, num_prefix=2, lm_training="full"),
                             objective="dgdpo", beta=0.5, inter_weight=2.0)


def _preference_batch(module, groups: list[str]):
    from datamodules.preferences import PreferenceBatch

    gen = torch.Generator().manual_seed(3)
    chosen_feats, rejected_feats = torch.randn(len(groups), 3, 6, generator=gen), torch.randn(len(groups), 3, 6,
                                                                                               generator=gen)
    mask = torch.ones(len(groups), 3, dtype=torch.bool)
    chosen = [f"a red circle {i}" for i in range(len(groups))]
    rejected = [f"the blue square moves {i}" for i in range(len(groups))]
    with torch.no_grad():  # the reference is the module itself: policy = reference at this point
        ref_w = module.captioner.sequence_logprob(chosen_feats, [module.prompt] * len(groups), chosen)
        ref_l = module.captioner.sequence_logprob(rejected_feats, [module.prompt] * len(groups), rejected)
    return PreferenceBatch(group=groups, chosen_features=chosen_feats, chosen_mask=mask,
                           rejected_features=rejected_feats, rejected_mask=mask, chosen=chosen, rejected=rejected,
                           chosen_ref=ref_w, rejected_ref=ref_l, chosen_ids=["a"] * len(groups),
                           rejected_ids=["b"] * len(groups))


def test_dgdpo_objective_weights_the_groups_and_starts_at_log_two(captioner_module) -> None:
    module = captioner_module.eval()
    terms = module.dgdpo_terms(_preference_batch(module, ["intra", "inter", "inter"]))
    assert terms["loss_intra"].item() == pytest.approx(math.log(2.0), abs=1e-5)
    assert terms["loss_inter"].item() == pytest.approx(math.log(2.0), abs=1e-5)
    assert terms["loss"].item() == pytest.approx(math.log(2.0) * (1.0 + 2.0), abs=1e-5)  # L_intra + ω·L_inter
    assert terms["reward_margin_intra"].item() == pytest.approx(0.0, abs=1e-5)
    only_inter = module.dgdpo_terms(_preference_batch(module, ["inter", "inter"]))
    assert "loss_intra" not in only_inter
    assert only_inter["loss"].item() == pytest.approx(2.0 * math.log(2.0), abs=1e-5)


def test_dgdpo_step_raises_the_chosen_caption_against_the_rejected(captioner_module) -> None:
    import copy

    module = copy.deepcopy(captioner_module).train()
    batch = _preference_batch(module, ["intra", "inter"])
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        loss = module.dgdpo_terms(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = module.dgdpo_terms(batch)
    assert after["loss"].item() < 3 * math.log(2.0) and after["reward_margin_intra"].item() > 0


def test_sft_loss_is_the_per_token_nll(captioner_module) -> None:
    module = captioner_module.eval()
    feats = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 3, dtype=torch.bool)
    targets = ["a red circle", "the blue square moves left"]
    with torch.no_grad():
        loss = module.sft_loss(feats, mask, targets)
        logprob = module.captioner.sequence_logprob(feats, [module.prompt] * 2, targets, frame_mask=mask)
    tokens = sum(len(module.captioner.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in targets)
    assert loss.item() == pytest.approx(-logprob.sum().item() / tokens, rel=1e-6)
