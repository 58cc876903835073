"""GAE, whitening and the leave-one-out baseline against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from rlhf_gym.agents.common import gae, leave_one_out, masked_mean, whiten


def test_gae_by_hand():
    # one sequence of 3 tokens, one of 2 (padded)
    r = torch.tensor([[0.0, 0.0, 1.0], [0.5, -1.0, 0.0]])
    v = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.9]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.5
    adv, ret = gae(r, v, m, gamma, lam)
    # row 0: deltas d2 = 1 - 0.3 = 0.7; d1 = 0 + .9*.3 - .2 = 0.07; d0 = 0 + .9*.2 - .1 = 0.08
    a2 = 0.7
    a1 = 0.07 + gamma * lam * a2
    a0 = 0.08 + gamma * lam * a1
    # row 1: d1 = -1 - 0.5 = -1.5 (terminal, the padded 9.9 is ignored); d0 = .5 + .9*.5 - .4 = .55
    b1 = -1.5
    b0 = 0.55 + gamma * lam * b1
    expected = torch.tensor([[a0, a1, a2], [b0, b1, 0.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + v) * m)


def test_gae_rlhf_defaults_gamma_one():
    r = torch.tensor([[0.0, 0.0, 2.0]])
    v = torch.zeros(1, 3)
    adv, _ = gae(r, v, torch.ones(1, 3), 1.0, 0.95)
    torch.testing.assert_close(adv, torch.tensor([[2.0 * 0.95**2, 2.0 * 0.95, 2.0]]))


def test_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    w = whiten(x, m)
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = (vals - 2.5) / vals.var(unbiased=True).sqrt()
    torch.testing.assert_close(w[m.bool()], expected, atol=1e-6, rtol=1e-6)
    assert (w[~m.bool()] == 0).all()
    assert masked_mean(x, m).item() == pytest.approx(2.5)


def test_gae_with_zero_values_and_lambda_one_is_the_return_to_go():
    r = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    expected = torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], [4 + 0.5 * 5, 5.0, 0.0]])
    torch.testing.assert_close(gae(r, torch.zeros_like(r), m, 0.5, 1.0)[0], expected)


def test_leave_one_out_by_hand():
    # one prompt, three samples of lengths 3, 2 and 1 (γ = 1); returns-to-go:
    # row 0: [3, 2, 1]   row 1: [5, 4, –] (held at 4)   row 2: [-1, –, –] (held at -1)
    r = torch.tensor([[1.0, 1.0, 1.0], [1.0, 4.0, 0.0], [-1.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = leave_one_out(r, m, group=3)
    expected = torch.tensor(
        [
            [3 - (5 - 1) / 2, 2 - (4 - 1) / 2, 1 - (4 - 1) / 2],
            [5 - (3 - 1) / 2, 4 - (2 - 1) / 2, 0.0],
            [-1 - (3 + 5) / 2, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(adv, expected)


def test_leave_one_out_keeps_prompts_apart_and_is_zero_for_equal_samples():
    r = torch.tensor([[0.0, 2.0], [0.0, 2.0], [1.0, 0.0], [3.0, 0.0]])
    m = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    adv = leave_one_out(r, m, group=2)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.0], [0.0, 0.0], [-2.0, 0.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="group >= 2"):
        leave_one_out(r, m, group=3)
