"""Tabular Q-learning on the toy: the exact optimum, convergence to it, the Bellman residual."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_gym.agents import tags
from rlhf_gym.agents.q_learning import (
    TabularQ,
    TabularQConfig,
    bellman_residual,
    optimal_q,
    policy_objective,
    soft_value,
    states,
    visitation,
)
from rlhf_gym.envs import toy


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5])
def test_optimal_q_is_the_fixed_point_of_the_dp(beta):
    q, v = optimal_q(beta)
    sol = toy.solve(beta)
    assert len(states()) == 26 and set(states()) == set(q)
    assert bellman_residual(q.__getitem__, beta) < 1e-12  # its own Bellman equation holds
    for s in states():
        assert soft_value(q[s], beta) == pytest.approx(v[s], abs=1e-12)  # plain logsumexp value
        if beta > 0:  # softmax(Q/β) is toy.solve's π_ref·exp((Q° − V)/β)
            z = q[s] / beta
            pi = np.exp(z - np.logaddexp.reduce(z))
            np.testing.assert_allclose(pi, sol.policy[s], atol=1e-12)
    pi = (lambda s: np.exp(q[s] / beta - v[s] / beta)) if beta > 0 else sol.policy.__getitem__
    assert policy_objective(pi, beta) == pytest.approx(sol.value, abs=1e-12)


def test_visitation_is_a_distribution_over_first_steps():
    uniform = visitation(lambda s: np.full(4, 0.25))
    first = [w for s, w in uniform.items() if len(s) == 1]
    assert sum(w.sum() for w in first) == pytest.approx(1.0)
    assert uniform[(toy.MEH, toy.GOOD)].sum() == pytest.approx(0.5 * 0.25)


@pytest.mark.parametrize("beta", [0.1, 0.0], ids=["soft", "plain"])
def test_tabular_q_converges_to_the_dp_optimum(beta):
    agent = TabularQ(TabularQConfig(kl_coef=beta, total_episodes=3000, seed=0))
    last = agent.train()
    q_star, v_star = optimal_q(beta)
    worst = max(np.abs(agent[s] - q_star[s]).max() for s in states())
    assert worst < 2e-3, f"max |Q − Q*| = {worst}"
    for word in toy.PROMPTS:
        s = (toy.PROMPTS_IDS[word],)
        assert agent.value(s) == pytest.approx(v_star[s], abs=1e-3)
    assert last["exact_objective"] == pytest.approx(toy.solve(beta).value, abs=1e-4)
    # the Bellman residual falls by orders of magnitude over training
    residuals = [h[tags.BELLMAN_RESIDUAL] for h in agent.history]
    assert residuals[0] > 100 * residuals[-1]
    assert last[tags.EPSILON] == 1.0 and (tags.TEMPERATURE in last) == (beta > 0)


def test_plain_and_soft_optima_differ():
    """The KL term matters: the soft optimum keeps probability on 'meh', the plain one does not."""
    soft, plain = (TabularQ(TabularQConfig(kl_coef=b, total_episodes=1500)) for b in (0.5, 0.0))
    soft.train()
    plain.train()
    s = (toy.MEH,)
    assert plain.policy(s)[toy.GOOD] == 1.0
    assert 0.05 < soft.policy(s)[toy.MEH] < 0.5
    np.testing.assert_allclose(soft.policy(s), toy.solve(0.5).policy[s], atol=5e-3)


def test_initial_table_has_a_large_residual():
    agent = TabularQ(TabularQConfig(kl_coef=0.1))
    assert bellman_residual(agent.__getitem__, 0.1) > 0.1
    assert np.all(agent[(toy.MEH,)] == 0) and not agent.q  # reading never writes the table


@pytest.mark.parametrize(
    "kwargs",
    [dict(kl_coef=-0.1), dict(learning_rate=0.0), dict(total_episodes=0), dict(epsilon_end=1.5)],
)
def test_bad_tabular_configs(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TabularQConfig(**kwargs)
