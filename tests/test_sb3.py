"""Stable-Baselines3 agents: check_env, the LM policies, callbacks, save/load, train adapters,
the shared-model vector env and the features extractor's fast paths."""

from __future__ import annotations

import gc
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import DummyVecEnv
from test_ppo import PROMPTS, toy_objective

import rlhf_gym
from rlhf_gym.agents import tags
from rlhf_gym.agents.sb3 import (
    SB3DQN,
    SB3PPO,
    AttachPolicyCallback,
    LMActorCriticPolicy,
    LMFeaturesExtractor,
    LMQPolicy,
    RLHFInfoCallback,
    RLHFVecEnv,
    SB3ActingPolicy,
    SB3DQNConfig,
    SB3PPOConfig,
    SharedReference,
    VocabularyCategorical,
    covering_rows,
)
from rlhf_gym.envs import toy
from rlhf_gym.envs.policy import sample_tokens
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


def test_sb3_actions_come_from_the_package_sampler(tiny_kwargs):
    env = gym.make("RLHF-v0", **tiny_kwargs)
    model = PPO(LMActorCriticPolicy, env, policy_kwargs=dict(lm=tiny_kwargs["model"]), seed=0)
    assert isinstance(model.policy.action_dist, VocabularyCategorical)
    obs, _ = env.reset(seed=0)
    obs_t, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        dist = model.policy.get_distribution(obs_t)
        probs = dist.distribution.probs[0].double()
        # the same draws as sample_tokens from torch's global generator, which SB3 seeds
        torch.manual_seed(3)
        a = dist.sample()
        torch.manual_seed(3)
        assert torch.equal(a, torch.tensor([int(sample_tokens(dist.distribution.logits, None))]))
        draws = torch.cat([dist.sample() for _ in range(4000)])
    # a token the policy finds likely is drawn about as often as its probability says
    top = int(probs.argmax())
    freq = float((draws == top).double().mean())
    sd = float((probs[top] * (1 - probs[top]) / len(draws)).sqrt())
    assert abs(freq - float(probs[top])) < 5 * sd + 1e-9
    # and the actions SB3 predicts are in the action space
    action, _ = model.predict(obs, deterministic=False)
    assert env.action_space.contains(int(action))


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
    assert isinstance(agent.venv, RLHFVecEnv) and agent.venv.reference is not None  # shared
    assert all(p.requires_grad for p in agent.policy.parameters())
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.train()
    assert any(
        not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True)
    )
    separate = SB3PPO(SB3PPOConfig(**{**cfg.__dict__, "shared_models": False}), env_kwargs=kw)
    assert not isinstance(separate.venv, RLHFVecEnv)  # SB3's DummyVecEnv of gym.make envs
    assert (
        separate.venv.envs[0].unwrapped.reward_model
        is not separate.venv.envs[1].unwrapped.reward_model
    )


# ---------------------------------------------------------------------- the shared-model vec env
def pair(env_id: str, num_envs: int, seed: int, **kwargs):
    """The shared-model vector env and SB3's DummyVecEnv of gym.make envs, both seeded."""
    shared = RLHFVecEnv(env_id, num_envs, **kwargs)
    separate = DummyVecEnv([lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)])
    shared.seed(seed)
    separate.seed(seed)
    return shared, separate


def assert_same_obs(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("env_id", ["RLHF-v0", "RLHFToy-v0"])
def test_vec_env_gives_what_single_envs_give(env_id, tiny_kwargs):
    """Same seeds and actions: the same prompts, observations, terminations, infos and (to
    float rounding of the batched reference) rewards as a DummyVecEnv of single envs, with
    SB3's same-step autoreset (terminal_observation is the single env's last observation)."""
    kw = dict(reward_form="ref_logprob", kl_coef=0.5)  # β·log π_ref: rewards need the reference
    if env_id == "RLHF-v0":
        kw.update({**tiny_kwargs, "gold": "sentiment"})
    shared, separate = pair(env_id, 3, seed=7, **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no acting policy")
        assert_same_obs(shared.reset(), separate.reset())
        eos = shared.get_attr("eos_token_id")[0]
        vocab = shared.action_space.n
        rng = np.random.default_rng(0)
        ended = 0
        for _ in range(20):
            actions = rng.integers(0, vocab, size=3)
            actions[rng.random(3) < 0.25] = eos
            obs_a, rew_a, done_a, infos_a = shared.step(actions)
            obs_b, rew_b, done_b, infos_b = separate.step(actions)
            assert_same_obs(obs_a, obs_b)
            np.testing.assert_array_equal(done_a, done_b)
            np.testing.assert_allclose(rew_a, rew_b, rtol=1e-5, atol=1e-5)
            for ia, ib, done in zip(infos_a, infos_b, done_a, strict=True):
                assert ia.keys() == ib.keys() and ia["TimeLimit.truncated"] is False
                for key in ("score", "gold_score", "response_text", "prompt_text"):
                    assert ia.get(key) == ib.get(key)
                for key in ("kl", "ref_logprob", "kl_sum", "response_length"):
                    np.testing.assert_allclose(ia.get(key, 0), ib.get(key, 0), atol=1e-5)
                if done:
                    ended += 1
                    assert "score" in ia and "terminal_observation" in ia
                    assert_same_obs(ia["terminal_observation"], ib["terminal_observation"])
    assert ended >= 3  # resets happened mid-run
    shared.close()
    separate.close()


def test_vec_env_shapes_dtypes_and_sb3_methods(tiny_kwargs):
    """What SB3's VecEnv contract needs, checked as env_checker checks a single env."""
    venv = RLHFVecEnv("RLHF-v0", 2, **tiny_kwargs, render_mode="ansi")
    single = venv.observation_space
    obs = venv.reset()
    for key, space in single.spaces.items():
        assert obs[key].shape == (2, *space.shape) and obs[key].dtype == space.dtype
        assert all(space.contains(row) for row in obs[key])
    with pytest.warns(UserWarning, match="no acting policy"):
        for _ in range(tiny_kwargs["max_new_tokens"]):
            obs, rewards, dones, infos = venv.step(np.array([5, 6]))
            assert rewards.shape == (2,) and rewards.dtype == np.float32
            assert dones.shape == (2,) and dones.dtype == bool
            assert len(infos) == 2 and all(isinstance(i, dict) for i in infos)
            assert all(single["input_ids"].contains(row) for row in obs["input_ids"])
    assert dones.all()  # max_new_tokens reached in both rows at once
    assert all(single.contains(i["terminal_observation"]) for i in infos)
    assert all(
        i["terminal_observation"]["attention_mask"].sum() > m.sum()
        for i, m in zip(infos, obs["attention_mask"], strict=True)
    )  # obs is the next episode's
    assert venv.get_attr("max_new_tokens") == [tiny_kwargs["max_new_tokens"]] * 2
    assert venv.env_is_wrapped(gym.Wrapper) == [False, False]
    assert all(isinstance(text, str) for text in venv.env_method("render"))
    assert venv.envs[0].spec.id == "RLHF-v0"
    venv.set_attr("foo", 1)
    assert venv.get_attr("foo", indices=[1]) == [1]
    venv.close()


def test_vec_env_loads_one_reference_and_one_reward_model(tiny_kwargs):
    from transformers import PreTrainedModel

    def models() -> set[int]:
        """Ids of the live Hugging Face models that are not the body of another."""
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # isinstance on deprecated torch objects warns
            found = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
        bodies = {id(m.base_model) for m in found if m.base_model is not m}
        return {id(m) for m in found} - bodies

    before = models()
    venv = RLHFVecEnv("RLHF-v0", 4, **tiny_kwargs)
    assert len(models() - before) == 2  # the reference and the reward model, once each
    envs = [e.unwrapped for e in venv.envs]
    assert isinstance(venv.reference, SharedReference)
    assert all(e.reference_model is venv.reference.model for e in envs)
    assert all(e.reward_model is envs[0].reward_model for e in envs)
    assert all(e.tokenizer is envs[0].tokenizer for e in envs)
    venv.reset()
    assert venv.reference.calls == 0  # the prefill waits for the first read
    with pytest.warns(UserWarning, match="no acting policy"):
        for _ in range(3):
            venv.step(np.array([5, 6, 7, 8]))
    # one prefill of all 4 rows (read by the first step), one decode of all 4 rows for each
    # later step; the last step's tokens wait for the next read
    assert venv.reference.calls == 3
    logits = envs[2].reference_logits
    assert venv.reference.calls == 4 and logits.shape == (1, envs[2].vocab_size)


def test_sb3_ppo_through_the_vec_env_attaches_its_policy(tiny_kwargs):
    venv = RLHFVecEnv("RLHF-v0", 2, **tiny_kwargs, kl_estimator="full")
    model = PPO(
        LMActorCriticPolicy,
        venv,
        n_steps=8,
        batch_size=16,
        n_epochs=2,
        learning_rate=1e-3,
        seed=0,
        policy_kwargs=dict(lm=tiny_kwargs["model"]),
    )
    kls: list[float] = []
    info = RLHFInfoCallback(every=1, on_update=lambda s: kls.append(s[tags.KL]))
    model.learn(32, callback=[AttachPolicyCallback(), info])
    assert model.num_timesteps == 32 and len(kls) >= 4
    assert max(kls) > 0  # every env saw π (the exact KL of the moved policy)
    assert all(e.unwrapped.policy is None for e in venv.envs)  # detached after learn


# ---------------------------------------------------------------------- the extractor's fast paths
def test_covering_rows():
    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0], [1, 4, 0, 0], [1, 2, 3, 5], [7, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert covering_rows(ids, mask).tolist() == [3, 3, 2, 3, 4]
    assert covering_rows(ids, mask, chunk=2).tolist() == [3, 3, 2, 3, 4]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_extractor_fast_paths_match_a_plain_forward(arch, tiny_kw, tiny_llama_dir):
    """One pass per distinct sequence (training) and the KV cache (acting) give the hidden
    states of a plain forward pass over each row alone."""
    kw = tiny_kw(prompts=PROMPTS, max_new_tokens=5)
    lm_dir = kw["model"] if arch == "gpt2" else str(tiny_llama_dir)
    env = gym.make("RLHF-v0", **{**kw, "model": lm_dir})
    extractor = LMFeaturesExtractor(env.observation_space, lm=lm_dir, kv_cache=True)

    def plain(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            n = int(mask.sum())
            out = extractor.lm.base_model(input_ids=ids[None, :n])
        return out.last_hidden_state[0, -1]

    rng = np.random.default_rng(0)
    states = []  # three responses, every step kept: many prefixes of one another
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no acting policy")
        for i in range(3):
            obs, _ = env.reset(seed=i, options={"prompt_index": i})  # three distinct prompts
            states.append(obs)
            for _ in range(4):
                obs, *_ = env.step(int(rng.integers(2, 200)))
                states.append(obs)
    batch = {k: torch.as_tensor(np.stack([s[k] for s in states])).float() for k in states[0]}
    ids, mask = batch["input_ids"].long(), batch["attention_mask"].long()
    assert covering_rows(ids, mask).tolist() == [4] * 5 + [9] * 5 + [14] * 5  # 3 passes, not 15
    extractor.train(True)
    h = extractor(batch)
    want = torch.stack(
        [plain(batch["input_ids"][i].long(), batch["attention_mask"][i]) for i in range(15)]
    )
    torch.testing.assert_close(h, want, rtol=1e-4, atol=1e-5)
    # acting: the rows of a rollout, stepped and (row 1) reset, through the KV cache
    extractor.train(False)
    with torch.no_grad():
        for step in range(5):
            picks = [min(step, 4), 5 + (step % 2) * 4, 10 + min(step, 4)]  # row 1 restarts
            obs = {k: v[picks] for k, v in batch.items()}
            h = extractor(obs)
            want = torch.stack(
                [plain(obs["input_ids"][i].long(), obs["attention_mask"][i]) for i in range(3)]
            )
            torch.testing.assert_close(h, want, rtol=1e-4, atol=1e-5)
    assert extractor.rows is not None
    extractor.train(True)
    assert extractor.rows is None  # dropped at the switch (the weights are about to change)


def test_sb3_language_models_are_fused_copies(tiny_lm_dir):
    """load_lm fuses gelu_new like the env's loader, on a copy: the caller's module keeps its
    own activation modules."""
    from transformers import AutoModelForCausalLM
    from transformers.activations import NewGELUActivation

    from rlhf_gym.agents.sb3 import load_lm

    mine = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    for spec in (str(tiny_lm_dir), mine.config, mine):
        built = load_lm(spec)
        assert not any(isinstance(m, NewGELUActivation) for m in built.modules())
    assert any(isinstance(m, NewGELUActivation) for m in mine.modules())
