"""PPO: the ratio-1 invariant, learning the toy optimum, TensorBoard tags, checkpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf_gym.agents import checkpoint, tags
from rlhf_gym.agents.ppo import PPO, PPOConfig
from rlhf_gym.envs import toy
from rlhf_gym.train import train

PROMPTS = ["the movie was", "i did not like", "a wonderful film", "Q: how do i fix my bike ? A:"]


@pytest.fixture
def tiny_env_kwargs(tiny_lm_dir, tiny_rm_dir):
    return dict(reward_model=str(tiny_rm_dir), prompts=PROMPTS, gold="none", max_prompt_tokens=16)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_first_minibatch_ratio_is_exactly_one(tiny_lm_dir, tiny_env_kwargs, temperature):
    cfg = PPOConfig(
        model=str(tiny_lm_dir),
        num_envs=8,
        num_minibatches=2,
        total_episodes=24,
        max_new_tokens=6,
        temperature=temperature,
        device="cpu",
    )
    agent = PPO(cfg, env_kwargs=tiny_env_kwargs)
    mismatch = []
    agent.train(callback=lambda a, s: mismatch.append(s[tags.LOGPROB_MISMATCH]))
    first = agent.first_minibatch
    assert first[tags.RATIO] == 1.0
    assert first[tags.APPROX_KL] == 0.0
    assert first[tags.CLIPFRAC] == 0.0
    # the rollout's sampling log-probs (KV cache) agree with the update's full forward pass,
    # in every update (a stale cache after a weight change would show here)
    assert len(mismatch) == 3 and max(mismatch) < 1e-4


def toy_objective(agent: PPO, beta: float) -> float:
    """Exact E[score − β·KL] of the agent's policy on the toy, by enumerating prefixes."""

    def visit(prefix: tuple[int, ...]) -> float:
        ids = torch.tensor([prefix])
        with torch.no_grad():
            logits = agent.policy(input_ids=ids).logits[0, -1].float() / agent.cfg.temperature
        logp = logits.log_softmax(-1).numpy().astype(np.float64)
        p = np.exp(logp)
        total = -beta * float(p @ (logp - toy.ref_logprobs(prefix)))
        for a in range(4):
            nxt = prefix + (a,)
            if a == toy.EOS or len(nxt) - 1 >= toy.MAX_NEW_TOKENS:
                words = " ".join(toy.VOCAB[t] for t in nxt[1:] if t != toy.EOS)
                total += p[a] * toy.score("", words)
            else:
                total += p[a] * visit(nxt)
        return total

    return float(np.mean([visit((toy.PROMPTS_IDS[w],)) for w in toy.PROMPTS]))


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_ppo_reaches_the_toy_optimum(beta):
    """Within 2 % of the exact optimum of E[score] − β·KL, at a small and a large β."""
    cfg = PPOConfig(
        env_id="RLHFToy-v0",
        num_envs=64,
        total_episodes=64 * 100,
        learning_rate=1e-3,
        kl_coef=beta,
        seed=0,
    )
    agent = PPO(cfg)
    start = time.perf_counter()
    agent.train()
    optimum = toy.solve(beta).value
    reached = toy_objective(agent, beta)
    print(f"toy: optimum {optimum:.4f}, PPO {reached:.4f}, {time.perf_counter() - start:.1f}s")
    assert abs(reached - optimum) <= 0.02 * abs(optimum)


@pytest.mark.parametrize("env_id", ["RLHFToy-v0", "RLHF-v0"])
def test_the_exact_kl_term_is_the_envs_kl(env_id, tiny_lm_dir, tiny_env_kwargs):
    """With kl_estimator='full' (the default) the rollout keeps the reference's log-probs at
    every response state, and the update's exact KL summed over a response is the env's
    per-sequence KL of it; with k1 nothing is kept and no KL term is logged."""
    extra = {}
    if env_id == "RLHF-v0":
        extra = dict(model=str(tiny_lm_dir), max_new_tokens=6, device="cpu")
    kwargs = tiny_env_kwargs if env_id == "RLHF-v0" else None
    agent = PPO(PPOConfig(env_id=env_id, num_envs=8, total_episodes=8, **extra), env_kwargs=kwargs)
    ro = agent.collect()
    B, L = ro.response_mask.shape
    assert ro.ref_logprobs is not None and ro.ref_logprobs.shape == (B, L, agent.env.vocab_size)
    with torch.no_grad():
        *_, kl = agent.forward(ro.input_ids, ro.attention_mask, L, ro.ref_logprobs)
    np.testing.assert_allclose((kl * ro.response_mask).sum(1).numpy(), ro.episodes.kls, atol=1e-4)
    assert tags.KL_LOSS in agent.update(ro)
    k1 = PPO(PPOConfig(env_id=env_id, num_envs=8, total_episodes=8, kl_estimator="k1", **extra),
             env_kwargs=kwargs)  # fmt: skip
    ro = k1.collect()
    assert ro.ref_logprobs is None and tags.KL_LOSS not in k1.update(ro)


def test_the_learning_rate_anneals_to_zero():
    cfg = PPOConfig(env_id="RLHFToy-v0", num_envs=8, total_episodes=32)
    agent, lrs = PPO(cfg), []
    agent.train(callback=lambda a, s: lrs.append(s[tags.LEARNING_RATE]))
    assert lrs == pytest.approx([2e-4, 1.5e-4, 1e-4, 0.5e-4])
    fixed = PPO(PPOConfig(env_id="RLHFToy-v0", num_envs=8, total_episodes=16, anneal_lr=False))
    assert fixed.learning_rate() == 2e-4


def test_tensorboard_tags_in_a_real_event_file(tmp_path, tiny_lm_dir, tiny_env_kwargs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = PPOConfig(
        model=str(tiny_lm_dir),
        num_envs=8,
        num_minibatches=2,
        total_episodes=16,
        max_new_tokens=5,
        device="cpu",
        checkpoint_every=1,
    )
    summary = train(
        "ppo",
        cfg,
        logdir=tmp_path,
        eval_episodes=8,
        quiet=True,
        env_kwargs={**tiny_env_kwargs, "gold": "sentiment"},
    )
    run = Path(summary["run_dir"])
    assert run.name.startswith("RLHF-v0__ppo__0__")
    acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        tags.SCORES,
        tags.KL,
        tags.RLHF_REWARD,
        tags.GOLD_SCORES,
        tags.POLICY_LOSS,
        tags.VALUE_LOSS,
        tags.APPROX_KL,
        tags.CLIPFRAC,
        tags.STEPS_PER_SECOND,
    ):
        assert tag in scalars, tag
    assert len(acc.Scalars(tags.SCORES)) == 2
    texts = {t.split("/")[0] for t in acc.Tags()["tensors"]}
    assert {"samples", "hyperparameters"} <= texts
    assert set(scalars) <= set(tags.GLOSSARY)  # every logged tag is documented
    # checkpoints every update, loadable by from_pretrained and as the env's model
    assert (run / "checkpoints" / "update_000001" / "policy" / "config.json").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(Path(summary["checkpoint"]) / "policy")


def test_resume_gives_the_same_next_update(tmp_path):
    cfg = PPOConfig(env_id="RLHFToy-v0", num_envs=16, total_episodes=48, seed=3)
    full, history, saved = PPO(cfg), [], []

    def record(agent, stats):  # a checkpoint after the second of three updates
        history.append(stats)
        if agent.update_idx == 2:
            saved.append(checkpoint.save(tmp_path / "run", agent))

    full.train(callback=record)
    (path,) = saved
    resumed = PPO(cfg)
    checkpoint.load(tmp_path / "run", resumed)  # the run directory resolves to the latest
    assert resumed.update_idx == 2
    last = resumed.train()
    for key in (tags.SCORES, tags.POLICY_LOSS, tags.VALUE_LOSS, tags.APPROX_KL):
        assert last[key] == history[-1][key], key
    for a, b in zip(full.policy.parameters(), resumed.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert path.name == "update_000002"


def test_bad_checkpoint_paths(tmp_path):
    agent = PPO(PPOConfig(env_id="RLHFToy-v0", num_envs=8, total_episodes=8))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        checkpoint.load(tmp_path / "missing", agent)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        checkpoint.load(tmp_path / "empty", agent)
    good = checkpoint.save(tmp_path / "run", agent)
    (good / "trainer_state.safetensors").unlink()
    with pytest.raises(ValueError, match="partial, trainer_state.safetensors is missing"):
        checkpoint.load(good, agent)


def test_checkpoint_from_another_model(tmp_path, tiny_lm_dir, tiny_env_kwargs):
    tiny = PPO(
        PPOConfig(model=str(tiny_lm_dir), num_envs=8, total_episodes=8, device="cpu"),
        env_kwargs=tiny_env_kwargs,
    )
    saved = checkpoint.save(tmp_path / "run", tiny)
    toy_agent = PPO(PPOConfig(env_id="RLHFToy-v0", num_envs=8, total_episodes=8))
    with pytest.raises(ValueError, match="from another model"):
        checkpoint.load(saved, toy_agent)


@pytest.mark.slow
def test_ctrl_c_leaves_a_loadable_checkpoint(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "rlhf_gym.cli",
        "train",
        "--env",
        "RLHFToy-v0",
        "--total-episodes",
        "100000",
        "--num-envs",
        "16",
        "--logdir",
        str(tmp_path),
        "--checkpoint-every",
        "0",
        "--eval-episodes",
        "16",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # a suite started in the background (`.ci/run &`) inherits SIGINT ignored, and Python
        # then installs no KeyboardInterrupt handler: give the child the default disposition
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    buf = ""
    # wait for a few updates: the bar redraws at most every 0.1 s, so it may skip "3/"
    while time.time() < deadline and not any(
        int(done) >= 3 for done in re.findall(r"(\d+)/\d+ \[", buf)
    ):
        buf += proc.stderr.read(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)  # generous: a loaded 2-core machine is slow
    assert "interrupted: checkpoint written to" in err
    ckpt = checkpoint.resolve(next(tmp_path.iterdir()))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt / "policy")
    assert checkpoint.resolve(ckpt) == ckpt


def test_metrics_glossary_doc_is_current():
    doc = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
    assert doc.read_text() == tags.glossary_markdown(), (
        "run: python -m rlhf_gym.agents.tags > docs/metrics.md"
    )


def test_critic_from_the_reward_model(tiny_lm_dir, tiny_rm_dir, tiny_env_kwargs):
    cfg = PPOConfig(
        model=str(tiny_lm_dir),
        num_envs=8,
        num_minibatches=2,
        total_episodes=8,
        max_new_tokens=5,
        device="cpu",
        critic="reward_model",
    )
    agent = PPO(cfg, env_kwargs=tiny_env_kwargs)
    head = agent.critic.head.weight.detach().clone()
    stats = agent.train()
    assert np.isfinite(stats[tags.VALUE_LOSS])
    assert not torch.equal(head, agent.critic.head.weight)  # the critic is trained
    assert agent.first_minibatch[tags.RATIO] == 1.0


@pytest.mark.slow
def test_ppo_objective_stays_above_the_reference_at_beta_one():
    """At β = 1 the optimum lies close to the reference; the trained policy's held-out
    objective E[score] − β·KL (exact KL) must be above 0, the reference's, where PPO with
    the one-sample k1 KL and a constant learning rate ended at J ≈ −0.9 to −2 (issue 16)."""
    from rlhf_gym.evaluate import evaluate

    beta = 1.0
    agent = PPO(PPOConfig(kl_coef=beta, total_episodes=1024, seed=0, device="cpu"))
    agent.train()
    result = evaluate(
        "RLHF-v0",
        policy=agent.policy,
        episodes=256,
        num_envs=64,
        seed=10_000,
        prompts="sentiment-eval",
    )
    j = np.asarray(result.scores) - beta * np.asarray(result.kls)
    print(f"J {j.mean():+.3f} ± {j.std() / np.sqrt(len(j)):.3f}, KL {np.mean(result.kls):.3f}")
    assert j.mean() > 0


@pytest.mark.slow
def test_the_kl_target_lands_within_a_quarter_on_the_default_task():
    """`--kl-target` ties the controller's horizon to the run (total_episodes / 80), and the
    held-out KL lands on the target. 1,024 episodes of 16 rows: the default run's 64 updates
    at a quarter of its cost (the default run itself, README: 0.8 → 0.853 and 4 → 4.19 nats)."""
    from rlhf_gym.train import held_out

    cfg = PPOConfig(kl_target=0.3, total_episodes=1024, num_envs=16, device="cpu")
    assert cfg.env_kwargs()["kl_horizon"] == 1024 / 80
    agent = PPO(cfg)
    agent.train()
    assert agent.env.kl_coef > 4 * cfg.kl_coef  # β had to move far: the old horizon could not
    kl = held_out(cfg, agent.policy, 128, None).summary()["kl"]["mean"]
    assert abs(kl / cfg.kl_target - 1) <= 0.25, kl


def test_samples_per_prompt_groups_rows_and_leave_one_out_trains(tiny_lm_dir, tiny_env_kwargs):
    """With samples_per_prompt = k, rows g·k … g·k + k − 1 share a prompt (seeded, so a second
    agent draws the same ones); the leave-one-out baseline needs no critic and trains."""
    cfg = PPOConfig(
        model=str(tiny_lm_dir),
        num_envs=8,
        num_minibatches=2,
        total_episodes=16,
        max_new_tokens=5,
        device="cpu",
        samples_per_prompt=4,
        baseline="leave_one_out",
    )
    agent = PPO(cfg, env_kwargs=tiny_env_kwargs)
    assert agent.critic is None
    ro = agent.collect()
    P = ro.input_ids.shape[1] - ro.response_mask.shape[1]
    prompts = [
        tuple(row[m.bool()].tolist())
        for row, m in zip(ro.input_ids[:, :P], ro.attention_mask[:, :P], strict=True)
    ]
    assert prompts[0:4] == [prompts[0]] * 4 and prompts[4:8] == [prompts[4]] * 4
    assert len({r.tolist().__repr__() for r in ro.input_ids}) > 2  # the samples differ
    again = PPO(cfg, env_kwargs=tiny_env_kwargs).collect()
    assert torch.equal(again.input_ids[:, :P], ro.input_ids[:, :P])
    stats = agent.update(ro)
    assert tags.VALUE_LOSS not in stats and np.isfinite(stats[tags.POLICY_LOSS])
    assert agent.first_minibatch[tags.RATIO] == 1.0


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(baseline="leave_one_out"), "samples_per_prompt must be >= 2"),
        (dict(samples_per_prompt=3), "divisible by samples_per_prompt=3"),
        (dict(baseline="mean"), "baseline='mean' is not one of"),
        (dict(samples_per_prompt=0), "samples_per_prompt"),
    ],
)
def test_bad_baseline_settings(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PPOConfig(env_id="RLHFToy-v0", num_envs=8, **changes).validate()


@pytest.mark.parametrize("reference_pass", ["deferred", "per_step"])
def test_collection_without_autoreset_equals_next_step_autoreset(reference_pass):
    """The agents' vector env has no autoreset (finished rows leave every model call); the
    rollout is the one a next-step-autoreset env gives: same tokens, same rewards (the
    embedded default, whose responses end at different lengths)."""
    cfg = PPOConfig(
        num_envs=8,
        num_minibatches=2,
        total_episodes=8,
        max_new_tokens=16,
        device="cpu",
        reference_pass=reference_pass,
    )
    agents = [PPO(cfg, env_kwargs=mode) for mode in ({}, {"autoreset_mode": "next_step"})]
    assert agents[0].envs.metadata["autoreset_mode"].name == "DISABLED"
    a, b = (agent.collect() for agent in agents)
    assert a.response_mask.sum(1).min() < a.response_mask.shape[1]  # some rows end early
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.response_mask, b.response_mask)
    torch.testing.assert_close(a.rewards, b.rewards, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    real = a.response_mask.bool()  # after a row's end its reference rows are not read
    torch.testing.assert_close(a.ref_logprobs[real], b.ref_logprobs[real], atol=1e-5, rtol=0)
