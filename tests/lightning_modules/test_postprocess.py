"""DSL and QB-Norm (lightning_modules/postprocess.py) against direct loops on small matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_modules.postprocess import activation_set, check_bank_disjoint, dual_softmax, qb_norm


def dsl_loop(sim: np.ndarray, tau: float, direction: str) -> np.ndarray:
    n_t, n_v = sim.shape
    out = np.zeros((n_t, n_v))
    for t in range(n_t):
        for v in range(n_v):
            if direction == "t2v":  # prior over the queries of video v
                norm = sum(math.exp(tau * sim[u, v]) for u in range(n_t))
            else:  # prior over the videos of text t
                norm = sum(math.exp(tau * sim[t, w]) for w in range(n_v))
            out[t, v] = sim[t, v] * math.exp(tau * sim[t, v]) / norm
    return out


def qbnorm_loop(sim: np.ndarray, bank: np.ndarray, beta: float, k: int) -> tuple[np.ndarray, set[int]]:
    n_t, n_v = sim.shape
    active: set[int] = set()
    for b in range(bank.shape[0]):
        order = sorted(range(n_v), key=lambda v, b=b: (-bank[b, v], v))
        active.update(order[:k])
    norm = [sum(math.exp(beta * bank[b, v]) for b in range(bank.shape[0])) for v in range(n_v)]
    out = sim.astype(np.float64).copy()
    for t in range(n_t):
        best = max(range(n_v), key=lambda v, t=t: (sim[t, v], -v))
        if best in active:
            for v in range(n_v):
                out[t, v] = math.exp(beta * sim[t, v]) / norm[v]
    return out, active


@pytest.mark.parametrize("direction", ["t2v", "v2t"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dual_softmax_matches_loop(direction: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    sim = rng.uniform(-0.2, 0.6, (7, 5)).astype(dtype)
    expected = dsl_loop(sim.astype(np.float64), 100.0, direction)
    got = dual_softmax(sim, 100.0, direction)
    assert isinstance(got, np.ndarray) and got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-12)
    as_torch = dual_softmax(torch.from_numpy(sim), 100.0, direction)
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.from_numpy(sim).dtype
    np.testing.assert_allclose(as_torch.numpy(), got)


def test_dual_softmax_damps_a_hub_video() -> None:
    # video 0 is every query's best raw match (a hub); DSL hands query 1 to the video only it scores highly
    sim = np.array([[0.9, 0.1], [0.8, 0.75]])
    assert (sim.argmax(1) == 0).all()
    assert dual_softmax(sim, 10.0).argmax(1).tolist() == [0, 1]


@pytest.mark.parametrize("k", [1, 2])
def test_qb_norm_matches_loop_and_activation_rule(k: int) -> None:
    rng = np.random.default_rng(1)
    bank = rng.uniform(0, 0.5, (9, 6))
    bank[:, 5] -= 1.0  # video 5 is nobody's top-k: queries whose best video is 5 keep their raw scores
    bank[:, 4] -= 1.0
    sim = rng.uniform(0, 0.5, (8, 6))
    sim[0, 5] = sim[1, 4] = 0.9
    expected, active = qbnorm_loop(sim, bank, 20.0, k)
    assert 5 not in active and 4 not in active
    assert activation_set(bank, k).nonzero().flatten().tolist() == sorted(active)
    ratio = qb_norm(sim, bank, beta=20.0, k=k, log_space=False)
    np.testing.assert_allclose(ratio, expected, rtol=1e-10)
    np.testing.assert_array_equal(ratio[:2], sim[:2])  # best video outside the activation set: raw scores
    assert not np.allclose(ratio[2:], sim[2:])
    logs = qb_norm(sim, bank, beta=20.0, k=k)  # default: log of the ratio for the normalised rows
    normalised = ~np.isclose(expected, sim).all(axis=1)
    np.testing.assert_allclose(logs[normalised], np.log(expected[normalised]), rtol=1e-10)
    np.testing.assert_array_equal(logs[~normalised], sim[~normalised])
    assert (np.argsort(-logs, axis=1, kind="stable") == np.argsort(-ratio, axis=1, kind="stable")).all()


def test_qb_norm_is_stable_where_exp_overflows() -> None:
    # z-scored fusions reach |s| ~ 10: exp(20 * 10) overflows float32 (and float64 at ~35); log space does not
    sim = np.array([[40.0, 35.0, -40.0]], dtype=np.float32)
    bank = np.array([[38.0, 1.0, 0.0], [0.0, 36.0, 1.0]], dtype=np.float32)
    out = qb_norm(sim, bank)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out[0].argmax() == 0


def test_qb_norm_torch_and_shape_checks() -> None:
    sim = torch.rand(4, 3, dtype=torch.float32)
    out = qb_norm(sim, torch.rand(5, 3, dtype=torch.float64))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="same test videos"):
        qb_norm(sim, torch.rand(5, 4))
    with pytest.raises(ValueError, match="top-k"):
        activation_set(torch.rand(5, 3), 0)


def test_bank_overlap_is_refused() -> None:
    check_bank_disjoint(["v1#0", "v1#1"], ["ret0", "ret1"], ["v1"], ["v9"])
    with pytest.raises(ValueError, match=r"model.init_args.postprocess.*qbnorm.*1 text ids.*'v9#0'"):
        check_bank_disjoint(["v1#0", "v9#0"], ["v9#0", "v9#1"])
    with pytest.raises(ValueError, match=r"model.init_args.postprocess.*1 videos.*'v9'"):
        check_bank_disjoint(["v1#0", "v9#0"], ["ret0"], ["v1", "v9"], ["v9"])
