"""Contrastive losses used by several methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def symmetric_infonce(logits: Tensor, positives: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE over a ``[B, B]`` logit matrix (rows: texts, columns: videos).

    With ``positives`` None the diagonal holds the positive pairs (CLIP / CLIP4Clip). A boolean
    ``[B, B]`` ``positives`` mask allows several positives per row (e.g. two captions of the same
    video in one batch): each direction then averages ``-log softmax`` over the row's positives.

    Returns ``(L_t2v + L_v2t) / 2``.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"symmetric_infonce expects a square [B, B] matrix, got {tuple(logits.shape)}")
    logits = logits.float()
    if positives is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    pos = positives.to(logits.dtype)
    t2v = -(F.log_softmax(logits, dim=1) * pos).sum(1) / pos.sum(1).clamp_min(1)
    v2t = -(F.log_softmax(logits, dim=0) * pos).sum(0) / pos.sum(0).clamp_min(1)
    return 0.5 * (t2v.mean() + v2t.mean())


def hard_negative_sets(sim: Tensor, alpha: float) -> Tensor:
    """NarVid Eq. 6 as released: ``H_i = {j != i : S_ij > S_ii - alpha * std_j(S_i)}`` (bool ``[B, B]``).

    ``std`` is the unbiased standard deviation of the whole row (diagonal included); the threshold is
    relative to the positive score (the released code computes the row mean but does not use it).
    """
    positive = sim.diagonal().unsqueeze(1)
    threshold = positive - alpha * sim.std(dim=1, keepdim=True)
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    return (sim > threshold) & ~eye


def cross_view_hard_negatives(sim_video: Tensor, sim_narration: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """NarVid Eq. 7: the union of both views' hard-negative sets, for rows (queries) and columns (videos).

    Returns ``(rows [B, B], columns [B, B])``; ``columns`` is indexed like the transposed matrices.
    """
    rows = hard_negative_sets(sim_video, alpha) | hard_negative_sets(sim_narration, alpha)
    columns = hard_negative_sets(sim_video.t(), alpha) | hard_negative_sets(sim_narration.t(), alpha)
    return rows, columns


def hard_negative_hinge(sim: Tensor, negatives: Tensor, alpha: float, beta: float) -> Tensor:
    """NarVid Eq. 8: ``mean_i sum_{j in H_i} max(0, S_ij - S_ii + beta * alpha * std_i)``.

    Rows without hard negatives contribute 0 and still count in the mean; the margin is not detached
    (gradients flow through the row std, as in the released code).
    """
    margin = beta * alpha * sim.std(dim=1, keepdim=True)
    violation = (sim - sim.diagonal().unsqueeze(1) + margin).clamp_min(0)
    return (violation * negatives).sum(1).mean()


def infonce(logits: Tensor, include_positive: bool = True, symmetric: bool = True) -> Tensor:
    """InfoNCE over a ``[B, B]`` logit matrix whose diagonal holds the positives (rows: anchors).

    ``include_positive`` True is the standard form, ``-log(e^{s_ii} / Σ_j e^{s_ij})``. False is the *decoupled*
    form printed on the conical-embedding slides, whose denominator runs over ``j != i`` only:
    ``-s_ii + log Σ_{j≠i} e^{s_ij}`` (it can go below zero: nothing bounds how far the positive outscores the
    negatives). ``symmetric`` averages the row (anchor -> column) and the column (column -> anchor) direction;
    False keeps the row direction only, as the slides print it.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"infonce expects a square [B, B] matrix, got {tuple(logits.shape)}")
    logits = logits.float()

    def one_direction(matrix: Tensor) -> Tensor:
        positive = matrix.diagonal()
        if include_positive:
            return (torch.logsumexp(matrix, dim=1) - positive).mean()
        if matrix.shape[0] < 2:
            raise ValueError("the decoupled InfoNCE (include_positive=False) needs at least 2 rows: with one row "
                             "there is no negative in the denominator")
        eye = torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)
        return (torch.logsumexp(matrix.masked_fill(eye, float("-inf")), dim=1) - positive).mean()

    if not symmetric:
        return one_direction(logits)
    return 0.5 * (one_direction(logits) + one_direction(logits.t()))


def dpo_loss(policy_chosen: Tensor, reference_chosen: Tensor, policy_rejected: Tensor, reference_rejected: Tensor,
             beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair sigmoid DPO loss (Rafailov et al., 2023, Eq. 7) and the two implicit rewards.

    ``r_w = beta * (log pi(y_w | x_w) - log pi_ref(y_w | x_w))``, ``r_l`` likewise for the rejected caption under its
    own context ``x_l`` (the same video for an intra-video pair, a similar video for an inter-video pair), and
    ``loss = -log sigmoid(r_w - r_l)``. Inputs are ``[N]`` summed sequence log-probabilities; returns
    ``(loss [N], r_w [N], r_l [N])``. When the policy equals the reference both rewards are 0 and the loss is log 2.
    """
    chosen_reward = beta * (policy_chosen.float() - reference_chosen.float())
    rejected_reward = beta * (policy_rejected.float() - reference_rejected.float())
    return -F.logsigmoid(chosen_reward - rejected_reward), chosen_reward, rejected_reward
