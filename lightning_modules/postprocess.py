"""Test-time post-processing of a text x video score matrix: dual softmax (DSL) and QB-Norm.

Both re-score a finished similarity matrix ``sim[t, v]`` (rows: text queries, columns: videos) without touching
the model. They are *not* part of any method here: the test-time post-processing callback
(``callbacks/test_time_postprocessing.py``) applies them only when the model asks (``postprocess: [dsl, qbnorm]``),
after the plain metrics are written, and writes each one's numbers to its own
``test/metrics_<flag>.json`` (docs/reference/metrics.md, "Post-processing (DSL, QB-Norm)").

* **DSL** (dual softmax, CAMoE: Cheng et al. 2021, arXiv 2109.04290, the DSL section): every score is multiplied by a
  prior, the softmax of the scores over the *other queries* of the same video. It needs the whole test query set
  at once (a transductive step: a query's scores depend on the other test queries), so it is never mixed with the
  plain numbers.
* **QB-Norm with the Dynamic Inverted Softmax** (Bogolin et al., CVPR 2022, arXiv 2112.12777): a query bank of
  texts that are *not* test queries (here: training-split captions) estimates how "popular" each video is (a hub);
  test queries whose best video is such a hub get their scores divided by the video's bank normaliser.

The functions take float32/float64 numpy arrays or torch tensors, compute in float64 and return the input's kind
and (floating) dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from lightning_modules.metrics import RECALL_KS, ranks_t2v, ranks_v2t, summarize_ranks

__all__ = ["DSL_TEMPERATURE", "QBNORM_BETA", "QBNORM_TOPK", "activation_set", "check_bank_disjoint", "dual_softmax",
           "postprocessed_metrics", "qb_norm"]

# CAMoE's DSL prior is a softmax over CLIP *logits*, i.e. the cosine times CLIP's logit scale 100; the temperature
# of the released ``dual_softmax_loss`` (temp=1000, dividing those logits) smooths training gradients and is 1 at
# inference. So on cosine scores the published inference prior is softmax(100 * cos): tau = 100.
DSL_TEMPERATURE = 100.0
# QB-Norm's defaults (the paper's and the reference code's, github.com/ioanacroi/qb-norm): beta = 20, k = 1.
QBNORM_BETA = 20.0
QBNORM_TOPK = 1

Matrix = TypeVar("Matrix", np.ndarray, Tensor)


def _as_float64(sim: np.ndarray | Tensor, name: str) -> Tensor:
    if isinstance(sim, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(sim))
    elif isinstance(sim, Tensor):
        t = sim.detach()
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(sim).__name__}")
    if t.ndim != 2 or 0 in t.shape:
        raise ValueError(f"{name} must be a non-empty 2-D [queries, videos] matrix, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must hold floating-point scores, got {t.dtype}")
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN scores")
    return t.to(torch.float64)


def _like(result: Tensor, original: Matrix) -> Matrix:
    """``result`` (float64) back in the input's kind, device and floating dtype."""
    if isinstance(original, np.ndarray):
        return result.cpu().numpy().astype(original.dtype, copy=False)
    return result.to(device=original.device, dtype=original.dtype)


def dual_softmax(sim: Matrix, temperature: float = DSL_TEMPERATURE,
                 direction: Literal["t2v", "v2t"] = "t2v") -> Matrix:
    """CAMoE's dual softmax at inference: the scores re-weighted by the prior over the opposite axis.

    Text-to-video (CAMoE's "revised similarity" of the DSL): for every video ``v`` the prior is the
    softmax of the scores over the *queries* ``t`` (the column of ``v``),

        sim'[t, v] = sim[t, v] * exp(tau * sim[t, v]) / sum_{t'} exp(tau * sim[t', v]),

    so a video that many queries score highly has its score with each of them damped. Video-to-text (the videos
    are the queries) uses the prior over videos for each text (the row): ``sim * softmax(tau * sim, over v)``.
    The result stays a texts x videos matrix in both directions (rank v2t on it as usual). CAMoE's constant factor
    ``len(sim)`` changes no ranking and is left out.

    DSL is **transductive**: the prior for one test query is computed from every other test query's scores (the
    whole test query set at once), information a system answering one query at a time does not have. Its numbers
    are therefore reported separately from the plain ones. It also multiplies scores by a positive prior, so it
    assumes positive scores (CLIP cosines, in practice): on centred scores (a z-score fusion) a negative score is
    pushed further down the higher its prior.

    Args:
        sim: ``[n_texts, n_videos]`` scores.
        temperature: ``tau``, the inverse temperature of the prior (see ``DSL_TEMPERATURE`` for the default).
        direction: ``t2v`` (prior over queries) or ``v2t`` (prior over videos).
    """
    if direction not in ("t2v", "v2t"):
        raise ValueError(f"direction must be 't2v' or 'v2t', got {direction!r}")
    if not temperature > 0:
        raise ValueError(f"the DSL temperature must be positive, got {temperature}")
    s = _as_float64(sim, "sim")
    prior = torch.softmax(temperature * s, dim=0 if direction == "t2v" else 1)
    return _like(s * prior, sim)


def activation_set(bank_sim: np.ndarray | Tensor, k: int = QBNORM_TOPK) -> Tensor:
    """QB-Norm's activation set: ``[n_videos]`` bool, True for the videos among the top ``k`` of some bank query.

    Ties are broken towards the lower video index (a stable sort), so the set is deterministic.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"qbnorm top-k must be a positive integer, got {k!r}")
    b = _as_float64(bank_sim, "bank_sim")
    k = min(int(k), b.shape[1])
    top = torch.argsort(-b, dim=1, stable=True)[:, :k]
    active = torch.zeros(b.shape[1], dtype=torch.bool, device=b.device)
    active[top.flatten()] = True
    return active


def qb_norm(sim: Matrix, bank_sim: np.ndarray | Tensor, beta: float = QBNORM_BETA, k: int = QBNORM_TOPK,
            log_space: bool = True) -> Matrix:
    """QB-Norm with the Dynamic Inverted Softmax (Bogolin et al. 2022, the DIS of the method section).

    With a query bank ``B`` (texts that are not test queries) scored against the same videos, ``bank_sim[b, v]``,
    every video ``v`` gets the normaliser ``Z(v) = sum_{b in B} exp(beta * bank_sim[b, v])`` (the inverted
    softmax's denominator). The activation set ``A`` holds the videos that are among the top ``k`` of at least
    one bank query. A test query ``t`` whose best video ``argmax_v sim[t, v]`` is in ``A`` gets

        sim'[t, v] = exp(beta * sim[t, v]) / Z(v)          for every v,

    every other query keeps its raw scores (the "dynamic" part: only queries that retrieve a hub are
    normalised). Only text-to-video is defined: rows of different queries are on different scales afterwards, so
    the matrix cannot be ranked column-wise (video-to-text).

    As in the reference code (github.com/ioanacroi/qb-norm, ``dynamic_inverted_softmax.py``); the differences are
    numerical only: ``Z`` is a float64 ``logsumexp`` (``exp(20 * s)`` of z-scored fusions overflows float32), a
    tie for a query's best video goes to the lower index (the reference takes ``np.argsort``'s first), and with
    ``log_space`` (the default) a normalised row holds ``beta * sim - log Z(v)``, the logarithm of the value
    above: a monotone map of each row, so every text-to-video rank is the same, without the underflow of
    ``exp`` in float32.

    Args:
        sim: ``[n_texts, n_videos]`` test scores.
        bank_sim: ``[n_bank, n_videos]`` scores of the bank queries against the same videos (same scorer).
        beta: the inverse temperature ``beta`` (paper: 20).
        k: size of each bank query's top list that forms the activation set (paper: 1).
        log_space: return ``log(exp(beta s) / Z)`` for normalised rows (default) rather than the ratio itself.
    """
    s = _as_float64(sim, "sim")
    b = _as_float64(bank_sim, "bank_sim").to(s.device)
    if b.shape[1] != s.shape[1]:
        raise ValueError(f"bank_sim scores {b.shape[1]} videos but sim scores {s.shape[1]}; score the bank against "
                         "the same test videos")
    if not beta > 0:
        raise ValueError(f"qbnorm beta must be positive, got {beta}")
    active = activation_set(b, k)
    log_z = torch.logsumexp(beta * b, dim=0)  # [n_videos]
    normalise = active[torch.argmax(s, dim=1)]  # argmax: first index among ties
    normalised = beta * s[normalise] - log_z
    out = s.clone()
    out[normalise] = normalised if log_space else torch.exp(normalised)
    return _like(out, sim)


def check_bank_disjoint(bank_text_ids: Sequence[str], test_text_ids: Sequence[str],
                        bank_video_ids: Sequence[str] = (), test_video_ids: Sequence[str] = ()) -> None:
    """Refuse a query bank that shares a text (or a described video) with the test queries.

    QB-Norm's bank must hold queries the evaluation does not ask: a test query in the bank would normalise
    scores with its own answer (leakage). Raises ``ValueError`` naming the option and the first shared ids.
    """
    for what, bank, test in (("text ids", bank_text_ids, test_text_ids), ("videos", bank_video_ids, test_video_ids)):
        shared = sorted(set(bank) & set(test))
        if shared:
            raise ValueError(
                f"model.init_args.postprocess: qbnorm: the query bank (training-split texts) shares {len(shared)} "
                f"{what} with the test split (first: {shared[:5]}); the bank must not contain test queries or "
                "describe test videos. Fix the splits, or drop qbnorm from model.init_args.postprocess")


def postprocessed_metrics(t2v: Tensor, v2t: Tensor | None, gt: Tensor, plain: dict[str, Any]) -> dict[str, float]:
    """metrics.json's keys for a post-processed matrix: t2v ranked on ``t2v``, v2t on ``v2t`` (or, when ``None``,
    the plain numbers copied), rsum over both, and the plain run's counts."""
    out = summarize_ranks(ranks_t2v(t2v, gt), "t2v")
    if v2t is not None:
        out.update(summarize_ranks(ranks_v2t(v2t, gt), "v2t"))
    else:
        out.update({k: float(v) for k, v in plain.items() if k.startswith("v2t_")})
    out["rsum"] = float(sum(out[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in RECALL_KS))
    for key in ("num_texts", "num_videos", "num_videos_failed", "num_texts_unscored"):
        out[key] = float(plain[key])
    return out
