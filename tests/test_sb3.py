"""Stable-Baselines3 agents: check_env, the LM policies, callbacks, save/load, train adapters."""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_checker import check_env
from test_ppo import PROMPTS, toy_objective

import rlhf_gym
from rlhf_gym.agents import tags
from rlhf_gym.agents.sb3 import (
    SB3DQN,
    SB3PPO,
    AttachPolicyCallback,
    LMActorCriticPolicy,
    LMQPolicy,
    RLHFInfoCallback,
    SB3ActingPolicy,
    SB3DQNConfig,
    SB3PPOConfig,
)
from rlhf_gym.envs import toy
from rlhf_gym.train import train


@pytest.fixture
def tiny_kwargs(tiny_kw):
    """A small RLHF-v0: tiny models, short context (the SB3 policy reruns it every step)."""
    return tiny_kw(prompts=PROMPTS, max_new_tokens=4)


@pytest.mark.parametrize("env_id", sorted(rlhf_gym._ENVS))
def test_sb3_check_env_on_every_registered_id(env_id, tiny_kwargs):
    kwargs = {} if env_id == "RLHFToy-v0" else tiny_kwargs  # the same class, small models
    env = gym.make(env_id, **kwargs)
    with pytest.warns(UserWarning, match="no acting policy"):  # check_env attaches none
        check_env(env.unwrapped, warn=True)


def test_actor_is_the_lm_head_and_the_env_gets_its_logits(tiny_kwargs):
    env = gym.make("RLHF-v0", **tiny_kwargs)
    model = PPO(LMActorCriticPolicy, env, policy_kwargs=dict(lm=tiny_kwargs["model"]))
    obs, _ = env.reset(seed=0)
    obs_t, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        logits = model.policy.get_distribution(obs_t).distribution.logits  # (1, V), normalised
        n = int(obs["attention_mask"].sum())
        ids = torch.as_tensor(obs["input_ids"][None, :n])
        lm = model.policy.lm(input_ids=ids).logits[:, -1].log_softmax(-1)
        assert model.policy.predict_values(obs_t).item() == 0.0  # zero-initialised value head
    torch.testing.assert_close(logits, lm, rtol=1e-5, atol=1e-5)
    # the env's acting policy reuses the hidden state of that forward pass
    cache_before = model.policy.features_extractor.cache
    acting = SB3ActingPolicy(model).action_logits({k: v[None] for k, v in obs.items()})
    assert model.policy.features_extractor.cache is cache_before  # no second LM pass
    torch.testing.assert_close(acting.log_softmax(-1), lm, rtol=1e-5, atol=1e-5)


def test_sb3_ppo_on_rlhf_v0_changes_the_weights_and_sees_the_kl(tiny_kwargs):
    env = gym.make("RLHF-v0", **tiny_kwargs, kl_estimator="full")
    model = PPO(
        LMActorCriticPolicy,
        env,
        n_steps=8,
        batch_size=8,
        n_epochs=1,
        learning_rate=1e-3,
        seed=0,
        policy_kwargs=dict(lm=tiny_kwargs["model"]),
    )
    before = [p.detach().clone() for p in model.policy.lm.parameters()]
    kls: list[float] = []
    info = RLHFInfoCallback(every=1, on_update=lambda s: kls.append(s[tags.KL]))
    model.learn(16, callback=[AttachPolicyCallback(), info])
    after = model.policy.lm.parameters()
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert all(changed)  # every LM weight (body and head) is trained
    assert kls and max(kls) > 0  # exact KL of the moved policy: the env saw π, not π_ref
    assert env.unwrapped.policy is None  # detached after learn


def test_plain_multiinput_ppo_runs_and_its_kl(tiny_kwargs):
    env = gym.make("RLHF-v0", **tiny_kwargs, kl_estimator="full")
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0)
    kls: list[float] = []
    info = RLHFInfoCallback(every=1, on_update=lambda s: kls.append(s[tags.KL]))
    with pytest.warns(UserWarning, match="no acting policy"):
        model.learn(8, callback=info)
    assert kls and all(k == 0 for k in kls)  # no policy attached: π = π_ref, KL 0
    kls.clear()
    model.learn(8, callback=[AttachPolicyCallback(), info])
    assert kls and min(kls) > 0  # the env now compares the MLP policy with the reference


def test_sb3_dqn_runs_with_lm_q_values(tiny_kwargs):
    env = gym.make("RLHF-v0", **tiny_kwargs, reward_form="ref_logprob")
    model = DQN(
        LMQPolicy,
        env,
        learning_starts=8,
        batch_size=8,
        train_freq=2,
        target_update_interval=8,
        seed=0,
        policy_kwargs=dict(lm=tiny_kwargs["model"]),
    )
    q_head = model.policy.q_net.q_net
    assert q_head is model.policy.lm.get_output_embeddings()
    assert model.policy.q_net_target.features_extractor.lm is not model.policy.lm
    before = q_head.weight.detach().clone()
    model.learn(24, callback=[AttachPolicyCallback(), RLHFInfoCallback()])
    assert not torch.equal(before, q_head.weight)
    obs, _ = env.reset(seed=1)
    acting = SB3ActingPolicy(model).action_logits({k: v[None] for k, v in obs.items()})
    probs = acting.exp()[0]
    eps = model.exploration_rate
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert probs.max().item() == pytest.approx(1 - eps + eps / probs.numel(), abs=1e-5)


def test_info_callback_tags_in_a_real_event_file(tmp_path, tiny_kwargs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = gym.make("RLHF-v0", **{**tiny_kwargs, "gold": "sentiment"})
    model = PPO(
        LMActorCriticPolicy,
        env,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        tensorboard_log=str(tmp_path),
        policy_kwargs=dict(lm=tiny_kwargs["model"]),
    )
    model.learn(16, callback=[AttachPolicyCallback(), RLHFInfoCallback()], tb_log_name="sb3")
    acc = EventAccumulator(str(tmp_path / "sb3_1"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in (tags.SCORES, tags.KL, tags.RLHF_REWARD, tags.GOLD_SCORES, tags.RESPONSE_LENGTH):
        assert tag in scalars, tag
    assert {tags.KL_COEF, tags.EPISODES} <= scalars


def test_saved_model_loads_back_and_acts_identically(tmp_path, tiny_kwargs):
    env = gym.make("RLHF-v0", **tiny_kwargs)
    model = PPO(
        LMActorCriticPolicy,
        env,
        n_steps=8,
        batch_size=8,
        n_epochs=1,
        learning_rate=1e-2,
        seed=0,
        policy_kwargs=dict(lm=tiny_kwargs["model"], temperature=0.7),
    )
    model.learn(8, callback=AttachPolicyCallback())  # the saved weights are not the initial ones
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip")
    assert loaded.policy.temperature == 0.7
    obs, _ = env.reset(seed=2)
    for _ in range(3):
        obs_t, _ = model.policy.obs_to_tensor(obs)
        with torch.no_grad():
            a = model.policy.get_distribution(obs_t).distribution.logits
            b = loaded.policy.get_distribution(obs_t).distribution.logits
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        action, _ = model.predict(obs, deterministic=True)
        assert loaded.predict(obs, deterministic=True)[0] == action
        obs, *_ = env.step(action)


def test_train_adapters_follow_the_agent_contract(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name, cfg in (
        ("sb3-ppo", SB3PPOConfig(env_id="RLHFToy-v0", num_envs=4, total_episodes=8, n_steps=4)),
        (
            "sb3-dqn",
            SB3DQNConfig(env_id="RLHFToy-v0", num_envs=4, total_episodes=8, learning_starts=4),
        ),
    ):
        summary = train(name, cfg, logdir=tmp_path / name, eval_episodes=8, quiet=True)
        acc = EventAccumulator(summary["run_dir"], size_guidance={"scalars": 0})
        acc.Reload()
        scalars = set(acc.Tags()["scalars"])
        assert {tags.SCORES, tags.KL, tags.EPISODES, tags.STEPS_PER_SECOND} <= scalars, name
        assert [e.step for e in acc.Scalars(tags.EPISODES)] == [4, 8]
        assert scalars <= set(tags.GLOSSARY), name
        assert Path(summary["checkpoint"]).name == "update_000002"


def test_resume_restores_the_sb3_state(tmp_path):
    from rlhf_gym.agents import checkpoint

    cfg = SB3PPOConfig(env_id="RLHFToy-v0", num_envs=4, total_episodes=16, n_steps=4)
    first = SB3PPO(SB3PPOConfig(**{**cfg.__dict__, "total_episodes": 8}))
    first.train()
    path = checkpoint.save(tmp_path, first)
    resumed = SB3PPO(cfg)
    checkpoint.load(path, resumed)
    assert (resumed.update_idx, resumed.episodes_seen) == (2, 8)
    assert resumed.model.num_timesteps == first.model.num_timesteps
    pairs = zip(first.model.policy.parameters(), resumed.model.policy.parameters(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    resumed.train()
    assert (resumed.update_idx, resumed.episodes_seen) == (4, 16)


@pytest.mark.slow
def test_sb3_ppo_reaches_the_toy_optimum():
    beta = 0.1
    cfg = SB3PPOConfig(
        env_id="RLHFToy-v0",
        num_envs=16,
        n_steps=16,
        total_episodes=800,
        learning_rate=1e-3,
        kl_coef=beta,
        kl_estimator="full",
    )
    agent = SB3PPO(cfg)
    start = time.perf_counter()
    agent.train()
    optimum, reached = toy.solve(beta).value, toy_objective(agent, beta)
    print(f"toy: optimum {optimum:.4f}, SB3 PPO {reached:.4f}, {time.perf_counter() - start:.0f}s")
    assert reached == pytest.approx(optimum, abs=0.03)


def greedy_return(agent: SB3DQN, beta: float) -> float:
    """Exact ``E[score + β·Σ log π_ref]`` of the greedy-in-Q policy on the toy (its reward)."""

    def visit(prefix: tuple[int, ...]) -> float:
        with torch.no_grad():
            a = int(agent.policy(input_ids=torch.tensor([prefix])).logits[0, -1].argmax())
        r = beta * float(toy.ref_logprobs(prefix)[a])
        nxt = prefix + (a,)
        if a == toy.EOS or len(nxt) - 1 >= toy.MAX_NEW_TOKENS:
            return r + toy.score("", " ".join(toy.VOCAB[t] for t in nxt[1:] if t != toy.EOS))
        return r + visit(nxt)

    return float(np.mean([visit((toy.PROMPTS_IDS[w],)) for w in toy.PROMPTS]))


def best_greedy_return(beta: float) -> float:
    """The best deterministic return of that reward, by exhaustive search."""

    def best(prefix: tuple[int, ...]) -> float:
        values = []
        for a in range(4):
            r, nxt = beta * float(toy.ref_logprobs(prefix)[a]), prefix + (a,)
            if a == toy.EOS or len(nxt) - 1 >= toy.MAX_NEW_TOKENS:
                words = " ".join(toy.VOCAB[t] for t in nxt[1:] if t != toy.EOS)
                values.append(r + toy.score("", words))
            else:
                values.append(r + best(nxt))
        return max(values)

    return float(np.mean([best((toy.PROMPTS_IDS[w],)) for w in toy.PROMPTS]))


@pytest.mark.slow
def test_sb3_dqn_improves_on_the_toy():
    beta = 0.1
    cfg = SB3DQNConfig(
        env_id="RLHFToy-v0",
        num_envs=8,
        total_episodes=800,
        learning_rate=1e-3,
        learning_starts=64,
        target_update_interval=64,
        kl_coef=beta,
    )
    agent = SB3DQN(cfg)
    before = greedy_return(agent, beta)
    agent.train()
    after, best = greedy_return(agent, beta), best_greedy_return(beta)
    print(f"toy DQN greedy return: before {before:.4f}, after {after:.4f}, best {best:.4f}")
    assert after > before + 0.2
    assert after == pytest.approx(best, abs=0.05)


def test_adapter_trains_the_copy_of_the_frozen_reference(tiny_kwargs):
    """Through `rlhf-gym train --agent sb3-ppo` the LM starts as a copy of the env's frozen
    reference: that copy must be trainable (a frozen copy once trained only the value head)."""
    kw = {k: v for k, v in tiny_kwargs.items() if k not in ("model", "max_new_tokens")}
    cfg = SB3PPOConfig(
        model=tiny_kwargs["model"],
        num_envs=2,
        total_episodes=4,
        n_steps=4,
        max_new_tokens=4,
        device="cpu",
    )
    agent = SB3PPO(cfg, env_kwargs=kw)
    assert all(p.requires_grad for p in agent.policy.parameters())
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.train()
    assert any(
        not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True)
    )
