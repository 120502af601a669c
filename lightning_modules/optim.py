"""Optimisers and learning-rate schedules the retrieval methods train with.

CLIP4Clip and NarVid train with ``BertAdam`` (the optimiser of the original BERT code) and its
``warmup_cosine`` schedule. It differs from ``torch.optim.AdamW`` in three ways that ``optimizer: bertadam``
reproduces:

* no bias correction of the first and second moments (early updates are smaller than Adam's);
* weight decay added to the update *after* the Adam normalisation (``update = m / (sqrt(v) + eps) + wd * p``),
  then ``p -= lr * update``;
* every parameter tensor's gradient is clipped to norm ``max_grad_norm`` (1.0) on its own, before the
  moments (the released training loops clip the global norm to 1.0 as well: ``trainer.gradient_clip_val``).

BERT's ``warmup_cosine`` (``lr_schedule: bert_warmup_cosine``) is ``x / warmup`` during warmup and
``0.5 (1 + cos(pi x))`` after it, with ``x`` the fraction of training done *counted from step 0*: the
cosine does not restart at the end of warmup, and the first step has learning rate 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

OptimizerName = Literal["adamw", "bertadam", "adamax"]
ScheduleName = Literal["warmup_cosine", "bert_warmup_cosine"]


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to 0 over the remaining steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def bert_warmup_cosine(step: int, total: int, warmup: int) -> float:
    """BERT/CLIP4Clip ``warmup_cosine``: ``x / w`` while ``x < w``, else ``0.5 (1 + cos(pi x))``, ``x = step/total``."""
    x = step / max(1, total)
    w = warmup / max(1, total)
    if x < w:
        return x / w
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, x)))


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {"warmup_cosine": warmup_cosine,
                                                          "bert_warmup_cosine": bert_warmup_cosine}


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction, decoupled weight decay added to the update, per-tensor gradient clipping.

    The learning rate is the group's ``lr`` as set by the (external) scheduler; BERT's own optimiser folds
    the schedule in, which is equivalent when the scheduler is ``bert_warmup_cosine``.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0,
                 max_grad_norm: float = 1.0) -> None:
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"BertAdam: invalid lr={lr}, betas={betas} or eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "max_grad_norm": max_grad_norm})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                grad = p.grad
                m, v = state["next_m"], state["next_v"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
                state["step"] += 1
        return loss


def build_optimizer(name: OptimizerName, param_groups: list[dict[str, Any]], lr: float, betas: tuple[float, float],
                    eps: float) -> torch.optim.Optimizer:
    """``adamw`` (torch), ``bertadam`` (CLIP4Clip/NarVid) or ``adamax`` (torch; ExCae's optimiser, whose weight decay
    is the coupled L2 term) over prepared parameter groups."""
    if name == "bertadam":
        return BertAdam(param_groups, lr=lr, betas=betas, eps=eps)
    if name == "adamax":
        return torch.optim.Adamax(param_groups, lr=lr, betas=betas, eps=eps)
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps)
