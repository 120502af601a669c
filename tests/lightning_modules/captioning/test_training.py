"""lightning_modules.captioning.training: CaptionerTraining's SFT and DG-DPO objectives."""

from __future__ import annotations

import math

import pytest
import torch


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
