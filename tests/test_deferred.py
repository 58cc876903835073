"""``reference_pass="deferred"``: one reference pass per finished response gives the per-step
form's numbers (the return, and per token through the last step's ``info``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlhf_gym  # noqa: F401
from rlhf_gym.agents.models import make_policy
from rlhf_gym.envs.policy import LMPolicy


def play(env_id: str, reference_pass: str, **kw) -> tuple[list[list[float]], list[dict]]:
    """Each row's per-step rewards and last-step info, one episode per row, a perturbed policy."""
    envs = gym.make_vec(env_id, num_envs=4, reference_pass=reference_pass, **kw)
    torch.manual_seed(0)
    policy = make_policy(envs.unwrapped).eval()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # away from the reference: the KL is not 0
    sampler = LMPolicy(policy, 4, pad_token_id=envs.unwrapped.pad_token_id, seed=1)
    envs.unwrapped.set_policy(sampler)
    obs, _ = envs.reset(seed=5)
    rewards: list[list[float]] = [[] for _ in range(4)]
    finals: list[dict] = [{} for _ in range(4)]
    done = np.zeros(4, dtype=bool)
    while not done.all():
        obs, r, terminated, _, info = envs.step(sampler.act(obs))
        for i in np.flatnonzero(~done):
            rewards[i].append(float(r[i]))
            if terminated[i]:
                finals[i] = {
                    k: info[k][i] for k in info if not k.startswith("_") and info[f"_{k}"][i]
                }
        done |= terminated
    return rewards, finals


@pytest.mark.parametrize(
    "env_id, kw",
    [
        ("RLHF-v0", dict(kl_estimator="full", device="cpu")),
        ("RLHF-v0", dict(kl_estimator="k1", device="cpu")),
        ("RLHF-v0", dict(kl_estimator="k3", device="cpu", reward_form="ref_logprob")),
        ("RLHFToy-v0", dict(kl_estimator="full")),
    ],
)
def test_deferred_gives_the_per_step_numbers(env_id: str, kw: dict) -> None:
    steps, step_finals = play(env_id, "per_step", **kw)
    deferred, finals = play(env_id, "deferred", **kw)
    total_kl = 0.0
    for i in range(4):
        a, b, fa, fb = steps[i], deferred[i], step_finals[i], finals[i]
        assert len(a) == len(b)  # the same tokens were sampled: same lengths
        assert b[:-1] == [0.0] * (len(b) - 1)  # the deferred form pays at the last step
        np.testing.assert_allclose(sum(a), sum(b), atol=1e-4)  # the same return
        assert fb["score"] == fa["score"] and fb["response_text"] == fa["response_text"]
        np.testing.assert_allclose(fb["kl_sum"], fa["kl_sum"], atol=1e-4)
        beta = fb["kl_coef"]
        per_token = (
            -beta * fb["kl_per_token"]
            if fb["reward_form"] == "kl"
            else beta * fb["ref_logprob_per_token"]
        )
        per_token[-1] += fb["score"]
        np.testing.assert_allclose(per_token, a, atol=1e-4)  # the per-step rewards, rebuilt
        ref = fb["ref_logprobs"]
        assert tuple(ref.shape) == (len(a), fa.get("ref_logprobs", ref).shape[-1])
        total_kl += abs(fa["kl_sum"])
    assert total_kl > 1e-3


def test_deferred_has_no_per_step_reference_logits_and_checks_its_argument() -> None:
    env = gym.make("RLHFToy-v0", reference_pass="deferred")
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="reference_pass='deferred'.*info\\['ref_logprobs'\\]"):
        env.unwrapped.reference_logits  # noqa: B018 - the property raises
    with pytest.raises(ValueError, match=r"reference_pass='later' is not one of"):
        gym.make("RLHFToy-v0", reference_pass="later")


@pytest.mark.parametrize("estimator", ["full", "k1"])
def test_ppo_collects_the_same_rollout_with_either_reference_pass(estimator: str) -> None:
    from rlhf_gym.agents.ppo import PPO, PPOConfig

    rollouts = []
    for reference_pass in ("per_step", "deferred"):
        cfg = PPOConfig(
            num_envs=8,
            num_minibatches=2,
            total_episodes=16,
            device="cpu",
            kl_estimator=estimator,
            reference_pass=reference_pass,
        )
        agent = PPO(cfg)
        agent.train()  # one update: the second rollout comes from a policy away from π_ref
        rollouts.append(agent.collect())
    a, b = rollouts
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.response_mask, b.response_mask)
    torch.testing.assert_close(b.rewards, a.rewards, atol=1e-4, rtol=0)
    torch.testing.assert_close(b.logprobs, a.logprobs)
    assert float((a.rewards * a.response_mask).abs().sum()) > 0
    if estimator == "full":
        m = a.response_mask.bool()
        torch.testing.assert_close(b.ref_logprobs[m], a.ref_logprobs[m], atol=1e-4, rtol=0)
    else:
        assert a.ref_logprobs is None and b.ref_logprobs is None
