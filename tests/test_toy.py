"""RLHFToy-v0: the exact DP optimum agrees with what the environment pays out."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlhf_gym  # noqa: F401
from rlhf_gym.envs import toy


class TablePolicy:
    """An acting policy read from a table of per-prefix distributions."""

    def __init__(self, table, seed=0):
        self.table, self.rng = table, np.random.default_rng(seed)

    def prefix(self, obs):
        return tuple(int(t) for t in obs["input_ids"][obs["attention_mask"] == 1])

    def action_logits(self, observation):
        obs = {k: v[0] for k, v in observation.items()}
        return torch.log(torch.tensor(self.table[self.prefix(obs)]))[None]

    def act(self, obs):
        return int(self.rng.choice(4, p=self.table[self.prefix(obs)]))


def test_dp_solution_is_consistent():
    sol = toy.solve(kl_coef=0.1)
    for pi in sol.policy.values():
        assert pi.sum() == pytest.approx(1.0)
        assert (pi >= 0).all()
    # β → 0 gives the greedy optimum: "good good good" scores 1 from every prompt
    assert toy.solve(0.0).value == pytest.approx(1.0)
    # large β keeps the reference: the value tends to E_ref[score]
    assert toy.solve(100.0).value < toy.solve(0.1).value


@pytest.mark.parametrize("estimator", ["full", "k1"])
def test_env_pays_the_dp_value_under_the_optimal_policy(estimator):
    beta = 0.1
    sol = toy.solve(beta)
    env = gym.make("RLHFToy-v0", kl_coef=beta, kl_estimator=estimator)
    policy = TablePolicy(sol.policy)
    env.unwrapped.set_policy(policy)
    returns = []
    for ep in range(3000):
        obs, _ = env.reset(seed=ep)
        done, total = False, 0.0
        while not done:
            obs, r, done, _, _ = env.step(policy.act(obs))
            total += r
        returns.append(total)
    stderr = np.std(returns) / np.sqrt(len(returns))
    assert np.mean(returns) == pytest.approx(sol.value, abs=4 * stderr + 1e-3)


def test_reference_policy_value_is_below_optimum():
    sol = toy.solve(0.1)
    env = gym.make("RLHFToy-v0", kl_coef=0.1)
    ref_table = {p: np.exp(toy.ref_logprobs(p)) for p in sol.policy}
    policy = TablePolicy(ref_table)
    env.unwrapped.set_policy(policy)
    scores = []
    for ep in range(1000):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            obs, _, done, _, info = env.step(policy.act(obs))
        scores.append(info["score"])
    assert np.mean(scores) < sol.value - 0.3  # plenty of room to improve


def test_toy_observation_and_text():
    env = gym.make("RLHFToy-v0")
    obs, info = env.reset(seed=0)
    assert obs["input_ids"].shape == (4,) and info["prompt_text"] in toy.PROMPTS
    for a in (toy.GOOD, toy.BAD, toy.GOOD):
        obs, r, done, _, info = env.step(a)
    assert done and info["response_text"] == "good bad good"
    assert info["score"] == pytest.approx(1 / 3)
