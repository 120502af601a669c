"""lightning_modules.components.losses: the contrastive, hard-negative and DPO losses."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.components import (
    cross_view_hard_negatives,
    dpo_loss,
    hard_negative_hinge,
    hard_negative_sets,
    symmetric_infonce,
)


def test_infonce_matches_definition() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 5)
    expected = 0
    for i in range(5):
        expected += -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
    assert symmetric_infonce(logits).item() == pytest.approx(expected.item() / 10, rel=1e-5)
    # the positives mask reduces to the diagonal case
    assert symmetric_infonce(logits, torch.eye(5, dtype=torch.bool)).item() == pytest.approx(
        symmetric_infonce(logits).item(), rel=1e-6)
    with pytest.raises(ValueError, match="square"):
        symmetric_infonce(torch.randn(3, 4))


# ----------------------------------------------------------------------------- hard negatives
def test_hard_negative_sets_hand_computed() -> None:
    sim = torch.tensor([[0.9, 0.8, 0.1],
                        [0.2, 0.5, 0.6],
                        [0.0, 0.1, 0.3]])
    # row 0: std (unbiased) of [0.9, 0.8, 0.1] = 0.4359; threshold 0.9 - 0.5*0.4359 = 0.682 -> {1}
    # row 1: std of [0.2, 0.5, 0.6] = 0.2082; threshold 0.5 - 0.104 = 0.396 -> {2}
    # row 2: std of [0, 0.1, 0.3] = 0.1528; threshold 0.3 - 0.0764 = 0.224 -> {}
    h = hard_negative_sets(sim, alpha=0.5)
    assert h.tolist() == [[False, True, False], [False, False, True], [False, False, False]]
    other = torch.tensor([[0.9, 0.0, 0.85],
                          [0.0, 0.5, 0.0],
                          [0.0, 0.0, 0.3]])
    rows, cols = cross_view_hard_negatives(sim, other, alpha=0.5)
    assert rows[0].tolist() == [False, True, True]  # union over the two views
    assert cols.shape == (3, 3) and not cols.diagonal().any()
    # hinge: row 0 -> max(0, 0.8 - 0.9 + 2*0.5*0.4359) = 0.3359, row 1 -> 0.6 - 0.5 + 0.2082 = 0.3082
    loss = hard_negative_hinge(sim, h, alpha=0.5, beta=2.0)
    assert loss.item() == pytest.approx((0.33589 + 0.30817) / 3, abs=1e-4)


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
