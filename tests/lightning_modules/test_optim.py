"""lightning_modules.optim: the learning-rate schedules and BertAdam's update rule."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.optim import warmup_cosine


def test_warmup_cosine_schedule() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-9)
    assert warmup_cosine(0, 10, 0) == pytest.approx(1.0)
    assert 0 < warmup_cosine(30, 100, 10) < 1 and not math.isnan(warmup_cosine(5, 5, 5))


def test_bert_warmup_cosine_schedule() -> None:
    from lightning_modules.optim import bert_warmup_cosine

    assert bert_warmup_cosine(0, 100, 10) == 0.0  # BERT's first step has learning rate 0
    assert bert_warmup_cosine(5, 100, 10) == pytest.approx(0.5)
    # after warmup the cosine is of the whole run's progress: it does not restart at 1
    assert bert_warmup_cosine(10, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert bert_warmup_cosine(50, 100, 10) == pytest.approx(0.5)
    assert bert_warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_bertadam_matches_its_update_rule_by_hand() -> None:
    from lightning_modules.optim import BertAdam

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    start = p.detach().clone()
    opt = BertAdam([p], lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2, max_grad_norm=1.0)
    grads = [torch.randn(4, 3) * 5, torch.randn(4, 3) * 0.1]
    m, v, ref = torch.zeros(4, 3), torch.zeros(4, 3), start.clone()
    for g in grads:
        p.grad = g.clone()
        opt.step()
        clipped = g * min(1.0, 1.0 / (g.norm().item() + 1e-6))  # this tensor's own norm, clipped to 1
        m = 0.9 * m + 0.1 * clipped
        v = 0.98 * v + 0.02 * clipped * clipped
        ref = ref - 0.1 * (m / (v.sqrt() + 1e-6) + 0.2 * ref)  # no bias correction; decay added to the update
    torch.testing.assert_close(p.detach(), ref, rtol=1e-5, atol=1e-6)
    # Adam with bias correction would have moved the first step by ~lr per entry; BertAdam moves it by
    # lr * 0.1 / sqrt(0.02) ~ 0.71 lr: the missing correction is visible
    q = torch.nn.Parameter(torch.zeros(3))
    q.grad = torch.ones(3)
    BertAdam([q], lr=1.0, betas=(0.9, 0.98), eps=0.0, max_grad_norm=0.0).step()
    torch.testing.assert_close(q.detach(), torch.full((3,), -0.1 / math.sqrt(0.02)))
