"""Deep token-level soft Q-learning: targets, parameterisation, decoding, the toy optimum,
TensorBoard tags, checkpoints and resume, the CLI."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlhf_gym.agents import checkpoint, tags
from rlhf_gym.agents import q_learning as ql
from rlhf_gym.agents.soft_q import SoftQ, SoftQConfig, SoftQPolicy, make_batch, soft_lambda_returns
from rlhf_gym.cli import main
from rlhf_gym.envs import toy
from rlhf_gym.envs.policy import ReferencePolicy
from rlhf_gym.train import train

PROMPTS = ["the movie was", "i did not like", "a wonderful film", "Q: how do i fix my bike ? A:"]


@pytest.fixture
def tiny_env_kwargs(tiny_lm_dir, tiny_rm_dir):
    return dict(reward_model=str(tiny_rm_dir), prompts=PROMPTS, gold="none", max_prompt_tokens=16)


def tiny_config(tiny_lm_dir, **kw):
    base = dict(
        model=str(tiny_lm_dir),
        num_envs=8,
        total_episodes=16,
        batch_size=8,
        gradient_steps=2,
        max_new_tokens=6,
        device="cpu",
    )
    return SoftQConfig(**{**base, **kw})


# ---------------------------------------------------------------------- pure math
def test_soft_lambda_returns_by_hand():
    r = torch.tensor([[0.1, 0.2, 1.0, 0.0], [0.3, 2.0, 0.0, 0.0]])
    v = torch.tensor([[9.0, 0.5, -0.4, 7.0], [9.0, 0.7, 7.0, 7.0]])
    logp = torch.tensor([[-9.0, -1.0, -2.0, -5.0], [-9.0, -0.5, -5.0, -5.0]])
    m = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    beta = 0.1
    y0 = soft_lambda_returns(r, v, logp, m, beta, lam=0.0)  # one-step: r + V(s')
    torch.testing.assert_close(
        y0, torch.tensor([[0.1 + 0.5, 0.2 - 0.4, 1.0, 0], [0.3 + 0.7, 2.0, 0, 0]])
    )
    y1 = soft_lambda_returns(r, v, logp, m, beta, lam=1.0)  # Σ r − β Σ_{i>t} log π(a_i|s_i)
    torch.testing.assert_close(
        y1,
        torch.tensor(
            [
                [0.1 + 0.2 + 1.0 + beta * (1.0 + 2.0), 0.2 + 1.0 + beta * 2.0, 1.0, 0],
                [0.3 + 2.0 + beta * 0.5, 2.0, 0, 0],
            ]
        ),
    )
    y_half = soft_lambda_returns(r, v, logp, m, beta, lam=0.5)
    second = 0.2 + 0.5 * -0.4 + 0.5 * (1.0 + beta * 2.0)
    torch.testing.assert_close(
        y_half[0, :3], torch.tensor([0.1 + 0.5 * 0.5 + 0.5 * (second + beta * 1.0), second, 1.0])
    )


# ---------------------------------------------------------------------- parameterisation
def test_reference_initialisation_starts_at_q_zero(tiny_lm_dir, tiny_env_kwargs):
    """θ = reference ⇒ Q° = Q − β·log π_ref = 0 and V = 0: the residual is the score alone."""
    agent = SoftQ(tiny_config(tiny_lm_dir), env_kwargs=tiny_env_kwargs)
    batch = make_batch(agent.collect().episodes, agent.env.pad_token_id, agent.device)
    beta, m = agent.cfg.kl_coef, batch.response_mask
    with torch.no_grad():
        f = agent.response_logits(agent.policy, batch)  # (n, L, V)
    q = beta * (f.gather(2, batch.actions[..., None]).squeeze(2) - batch.ref_lse)
    v = beta * (f.logsumexp(-1) - batch.ref_lse)
    assert ((q - beta * batch.ref_logprobs) * m).abs().max() < 1e-4
    assert (v * m).abs().max() < 1e-4
    # and the stored rewards are the env's policy-independent form: score·[done] + β·log π_ref
    last = m.sum(1).long() - 1
    shaped = batch.rewards - beta * batch.ref_logprobs
    mid = m.clone()
    mid[torch.arange(len(last)), last] = 0
    assert (shaped * mid).abs().max() < 1e-5


def test_beta_gen_zero_reproduces_the_reference(tiny_lm_dir, tiny_env_kwargs):
    agent = SoftQ(tiny_config(tiny_lm_dir, learning_rate=3e-3), env_kwargs=tiny_env_kwargs)
    agent.train()  # θ moves away from the reference
    kw = dict(model=str(tiny_lm_dir), max_new_tokens=6, device="cpu", **tiny_env_kwargs)
    env_q, env_ref = (gym.make_vec("RLHF-v0", num_envs=4, **kw) for _ in range(2))
    greedy = SoftQPolicy(agent.policy, env_q.unwrapped, beta_gen=0.0, seed=7)
    ref = ReferencePolicy(env_ref.unwrapped, seed=7)
    env_q.unwrapped.set_policy(greedy)
    env_ref.unwrapped.set_policy(ref)
    obs_q, _ = env_q.reset(seed=3)
    obs_r, _ = env_ref.reset(seed=3)
    moved = 0.0
    for _ in range(14):  # two episodes per row at least (6 tokens each), autoresets included
        logits_q, logits_r = greedy.action_logits(obs_q), ref.action_logits(obs_r)
        assert torch.equal(logits_q, logits_r)  # bit for bit
        own = greedy.lm.action_logits(obs_q).log_softmax(-1)
        moved = max(moved, float((own - logits_r.log_softmax(-1)).abs().max()))
        a_q, a_r = greedy.act(obs_q), ref.act(obs_r)
        np.testing.assert_array_equal(a_q, a_r)
        obs_q, rew_q, term_q, _, info_q = env_q.step(a_q)
        obs_r, rew_r, term_r, _, info_r = env_ref.step(a_r)
        np.testing.assert_array_equal(rew_q, rew_r)
        assert info_q.keys() == info_r.keys()
        if "kl" in info_q:  # absent when every row was resetting
            np.testing.assert_array_equal(info_q["kl"], info_r["kl"])
    assert moved > 0.05  # the trained LM itself is not the reference: the test is not vacuous


def test_beta_gen_one_is_the_lm_and_in_between_interpolates(tiny_lm_dir, tiny_env_kwargs):
    agent = SoftQ(tiny_config(tiny_lm_dir, learning_rate=3e-3), env_kwargs=tiny_env_kwargs)
    agent.train()
    env = gym.make_vec(
        "RLHF-v0",
        num_envs=2,
        model=str(tiny_lm_dir),
        max_new_tokens=6,
        device="cpu",
        **tiny_env_kwargs,
    )
    obs, _ = env.reset(seed=0)
    ref = env.unwrapped.reference_logits.log_softmax(-1)
    out = {
        g: SoftQPolicy(agent.policy, env.unwrapped, beta_gen=g).action_logits(obs).log_softmax(-1)
        for g in (0.5, 1.0, 2.0)
    }
    own = SoftQPolicy(agent.policy, env.unwrapped).lm.action_logits(obs).log_softmax(-1)
    torch.testing.assert_close(out[1.0], own, atol=1e-5, rtol=0)
    # log π_gen − log π_ref = β_gen · (log π_θ − log π_ref) up to a per-state constant
    for g in (0.5, 2.0):
        diff = (out[g] - ref) - g * (own - ref)
        torch.testing.assert_close(
            diff - diff.mean(-1, keepdim=True), torch.zeros_like(diff), atol=1e-4, rtol=0
        )


# ---------------------------------------------------------------------- learning
def toy_readouts(agent: SoftQ):
    """Q (ref_logprob form) and π of the agent's LM on toy prefixes. The toy reference's
    logits are log-probabilities, so its per-state baseline logsumexp f_ref(s) is 0."""

    def logits(prefix):
        with torch.no_grad():
            ids = torch.tensor([prefix])
            out = agent.policy(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
        return out.double().numpy()

    def q(prefix):
        return agent.cfg.kl_coef * logits(prefix)

    def pi(prefix):
        z = logits(prefix)
        return np.exp(z - np.logaddexp.reduce(z))

    return q, pi


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_soft_q_reaches_the_toy_optimum(beta):
    """Within 2 % of the exact optimum of E[score] − β·KL, at a small and a large β."""
    cfg = SoftQConfig(
        env_id="RLHFToy-v0",
        kl_coef=beta,
        total_episodes=64 * 100,
        num_envs=64,
        learning_rate=1e-3,
        seed=0,
    )
    agent = SoftQ(cfg)
    q, pi = toy_readouts(agent)
    start_residual = ql.bellman_residual(q, beta, policy=pi)
    td = []
    agent.train(callback=lambda a, s: td.append(s[tags.TD_LOSS]))
    optimum = toy.solve(beta).value
    reached = ql.policy_objective(pi, beta)
    end_residual = ql.bellman_residual(q, beta, policy=pi)
    print(
        f"toy: optimum {optimum:.4f}, soft-Q {reached:.4f}; on-policy Bellman residual "
        f"{start_residual:.4f} -> {end_residual:.4f}"
    )
    assert abs(reached - optimum) <= 0.02 * abs(optimum)
    assert end_residual < start_residual / 5  # the Bellman residual falls
    assert np.mean(td[-5:]) < np.mean(td[:5]) / 10
    s = (toy.MEH,)
    assert beta * np.logaddexp.reduce(q(s) / beta) == pytest.approx(toy.solve(beta).v[s], abs=0.05)


# ---------------------------------------------------------------------- train, tags, checkpoints
def test_tensorboard_tags_and_loadable_checkpoint(tmp_path, tiny_lm_dir, tiny_env_kwargs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_lm_dir, checkpoint_every=1)
    summary = train(
        "qlearning",
        cfg,
        logdir=tmp_path,
        eval_episodes=8,
        quiet=True,
        env_kwargs={**tiny_env_kwargs, "gold": "sentiment"},
    )
    run = Path(summary["run_dir"])
    assert run.name.startswith("RLHF-v0__qlearning__0__")
    acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        tags.SCORES,
        tags.KL,
        tags.RLHF_REWARD,
        tags.GOLD_SCORES,
        tags.KL_COEF,
        tags.TD_LOSS,
        tags.Q_VALUES,
        tags.ENTROPY,
        tags.TEMPERATURE,
        tags.BUFFER_EPISODES,
        tags.STEPS_PER_SECOND,
        tags.EPISODES,
    ):
        assert tag in scalars, tag
    assert len(acc.Scalars(tags.TD_LOSS)) == 2
    assert scalars <= set(tags.GLOSSARY)
    assert {"samples", "hyperparameters"} <= {t.split("/")[0] for t in acc.Tags()["tensors"]}
    ckpt = Path(summary["checkpoint"]) / "policy"
    assert (run / "checkpoints" / "update_000001" / "policy" / "config.json").is_file()
    AutoModelForCausalLM.from_pretrained(ckpt)
    env = gym.make("RLHF-v0", model=str(ckpt), max_new_tokens=4, device="cpu", **tiny_env_kwargs)
    env.reset(seed=0)
    assert summary["after"]["kl"]["mean"] > 0  # the trained policy left the reference


def test_resume_gives_the_same_next_update(tmp_path):
    cfg = SoftQConfig(
        env_id="RLHFToy-v0",
        num_envs=16,
        total_episodes=48,
        batch_size=16,
        gradient_steps=3,
        learning_rate=1e-3,
        seed=3,
    )
    full, history = SoftQ(cfg), []

    def record(agent, stats):  # a checkpoint after the second of three rounds
        history.append(stats)
        if agent.update_idx == 2:
            checkpoint.save(tmp_path / "run", agent)

    full.train(callback=record)
    resumed = SoftQ(cfg)
    checkpoint.load(tmp_path / "run", resumed)
    assert resumed.update_idx == 2 and len(resumed.buffer) == 32
    last = resumed.train()
    for key in (tags.SCORES, tags.TD_LOSS, tags.Q_VALUES, tags.KL):
        assert last[key] == history[-1][key], key
    for net in ("policy", "target"):
        for a, b in zip(
            getattr(full, net).parameters(), getattr(resumed, net).parameters(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_tau_one_and_double_q_run():
    cfg = SoftQConfig(
        env_id="RLHFToy-v0", num_envs=8, total_episodes=16, batch_size=8, tau=1.0, double_q=True
    )
    agent = SoftQ(cfg)
    assert agent.target is None  # no copy when the target is the online network
    stats = agent.train()
    assert np.isfinite(stats[tags.TD_LOSS])


def test_the_reward_form_cannot_be_overridden(tiny_lm_dir, tiny_env_kwargs):
    with pytest.raises(ValueError, match="ref_logprob"):
        SoftQ(tiny_config(tiny_lm_dir), env_kwargs={**tiny_env_kwargs, "reward_form": "kl"})


@pytest.mark.parametrize(
    "kwargs",
    [dict(kl_coef=0.0), dict(lam=1.5), dict(tau=0.0), dict(beta_gen=-1.0), dict(batch_size=0)],
)
def test_bad_configs(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SoftQConfig(env_id="RLHFToy-v0", **kwargs)


def test_cli_trains_qlearning_with_its_own_options(tmp_path, capsys):
    argv = [
        "train",
        "--agent",
        "qlearning",
        "--env",
        "RLHFToy-v0",
        "--total-episodes",
        "16",
        "--num-envs",
        "8",
        "--batch-size",
        "8",
        "--lam",
        "0.5",
        "--eval-episodes",
        "8",
        "--logdir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert "checkpoint:" in capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("RLHFToy-v0__qlearning__0__")
    state = checkpoint.load_state(checkpoint.resolve(run))
    assert state["config"]["lam"] == 0.5 and len(state["buffer"]) == 16
    with pytest.raises(SystemExit):  # a PPO option is not a soft-Q option
        main(["train", "--agent", "qlearning", "--clip-range", "0.1"])
    assert "unrecognized arguments: --clip-range" in capsys.readouterr().err
