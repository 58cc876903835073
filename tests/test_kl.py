"""Each KL estimator against the exact KL on small categorical distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_gym.envs.kl import AdaptiveKLController, estimate_kl


def exact_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("estimator", ["k1", "k3", "full"])
def test_estimator_expectation_is_exact_kl(estimator, seed):
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    logp = torch.tensor(np.log(p))[None].repeat(6, 1)  # one row per possible action
    logq = torch.tensor(np.log(q))[None].repeat(6, 1)
    per_action = estimate_kl(estimator, logp, logq, torch.arange(6)).numpy()
    # E_{a~π}[estimate] computed exactly by enumerating the actions
    assert float(p @ per_action) == pytest.approx(exact_kl(p, q), rel=1e-9)
    if estimator == "k3":
        assert (per_action >= 0).all()


def test_k1_sign_and_k3_direction():
    # π puts 0.9 on action 0, π_ref 0.5: log π(0) − log π_ref(0) > 0; k3 uses r = π_ref/π.
    logp = torch.log(torch.tensor([[0.9, 0.1]]))
    logq = torch.log(torch.tensor([[0.5, 0.5]]))
    a = torch.tensor([0])
    assert estimate_kl("k1", logp, logq, a).item() == pytest.approx(np.log(0.9 / 0.5))
    r = 0.5 / 0.9
    assert estimate_kl("k3", logp, logq, a).item() == pytest.approx((r - 1) - np.log(r))


def test_full_kl_handles_zero_probabilities():
    logp = torch.tensor([[0.0, -float("inf")]])  # π = (1, 0)
    logq = torch.log(torch.tensor([[0.25, 0.75]]))
    assert estimate_kl("full", logp, logq, torch.tensor([0])).item() == pytest.approx(np.log(4))


def test_unknown_estimator():
    with pytest.raises(ValueError, match="'k2' is not one of"):
        estimate_kl("k2", torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]))


def test_adaptive_controller_moves_towards_target():
    ctl = AdaptiveKLController(value=0.2, target=6.0, horizon=100)
    assert ctl.update(60.0) == pytest.approx(0.2 * (1 + 0.2 / 100))  # clipped at +20 %
    assert ctl.update(3.0) < 0.2 * (1 + 0.2 / 100)  # below target: β shrinks
    with pytest.raises(ValueError, match="kl_target"):
        AdaptiveKLController(value=0.1, target=0.0, horizon=10)
