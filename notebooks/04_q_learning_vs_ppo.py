# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 · Q-learning vs PPO
#
# PPO (notebook 03) is an *on-policy* method: it learns only from responses its current policy
# has just written, then throws them away. Q-learning is *off-policy*: it learns the value of
# every action from any data, including old data kept in a replay buffer, or data from a
# policy that explores at random. This notebook builds soft Q-learning for RLHF from the ground
# up, on a toy problem small enough to solve exactly, and then runs it on the language model
# against PPO.
#
# After this notebook you will be able to:
#
# * write the KL-regularised RLHF objective and its exact optimum, and compute it by dynamic
#   programming on a toy MDP (`RLHFToy-v0`);
# * implement tabular soft Q-learning in a dozen lines and measure its distance to the optimum;
# * explain why an off-policy learner needs the policy-independent reward
#   `reward_form="ref_logprob"`, and show what goes wrong without it;
# * read the language model's logits as Q-values, and compare soft Q-learning with PPO on the
#   same budget with `rlhf_gym.compare`.

# %%
import os
import tempfile
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, in a plain kernel

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython import get_ipython
from IPython.display import Markdown, display
from transformers.utils import logging as hf_logging

import rlhf_gym  # noqa: F401  (registers RLHF-v0 and RLHFToy-v0)
from rlhf_gym.agents import config_class, tags
from rlhf_gym.agents.q_learning import TabularQ, TabularQConfig, optimal_q, policy_objective
from rlhf_gym.compare import CompareConfig, compare
from rlhf_gym.envs import ReferencePolicy, toy

SMOKE = os.environ.get("RLHF_GYM_SMOKE") == "1"  # CI: tiny budgets, the same code path
TOY_EPISODES = 300 if SMOKE else 3000  # tabular soft-Q episodes on the toy
LM_EPISODES = 32 if SMOKE else 512  # training episodes per agent on the language model
LM_NUM_ENVS = 32 if SMOKE else 64  # episodes per rollout / collection round
EVAL_EPISODES = 8 if SMOKE else 64  # held-out episodes for each final evaluation
BEST_OF = (1, 2) if SMOKE else (1, 4, 16)  # best-of-n points from the reference

torch.set_num_threads(1)  # the models are tiny: one thread is fastest
hf_logging.disable_progress_bar()  # no "Loading weights" bars

# %% [markdown]
# ## 1. A toy RLHF problem
#
# `RLHFToy-v0` is the RLHF environment of notebook 01 with a vocabulary of four words,
# `<eos> good bad meh` (ids 0-3). A prompt is one word, `meh` or `bad`, drawn uniformly; the
# response has at most 3 tokens. The "reference language model" is a fixed table of next-word
# probabilities given the last word, and the "reward model" is a rule: score =
# (#good − #bad)/3 over the response. Observations, rewards, KL estimators and `info` are those
# of `RLHF-v0`.

# %%
env = gym.make("RLHFToy-v0")
print("vocabulary:", toy.VOCAB, "  prompts:", toy.PROMPTS, "  β (kl_coef):", env.unwrapped.kl_coef)
print("\nπ_ref(next | last word):")
print("last word  " + "".join(f"{w:>8}" for w in toy.VOCAB))
for last, row in toy.REFERENCE_TABLE.items():
    print(f"{toy.VOCAB[last]:<10} " + "".join(f"{p:>8.2f}" for p in row))

# %% [markdown]
# The reference likes `bad` after `bad`: left to itself it scores poorly on the prompt `bad`.
#
# ## 2. The objective and its exact optimum
#
# RLHF maximises the expected score minus β times the KL divergence from the reference:
#
# $$ J(\pi) = \mathbb{E}_{y\sim\pi}[\text{score}(y)] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\text{ref}}). $$
#
# Its optimum is known in closed form. Let Q°(s, a) be the best achievable *score-to-go*
# after token a at state s (the score itself if a ends the response). Then, working backwards
# from the last step (*dynamic programming*),
#
# $$ V^*(s) = \beta \log \sum_a \pi_{\text{ref}}(a\mid s)\, e^{Q^\circ(s,a)/\beta},
# \qquad \pi^*(a\mid s) = \pi_{\text{ref}}(a\mid s)\, e^{(Q^\circ(s,a) - V^*(s))/\beta}, $$
#
# and Q°(s, a) = V*(s + a) when s + a is not final. The optimal policy is the reference
# re-weighted by exp(advantage/β): small β trusts the score, large β stays with the reference.
# The toy has 26 non-final states, so `toy.solve(β)` computes this exactly. We use β = 0.3 in
# this notebook, where the optimum is a visible compromise between the two (the environment's
# default is 0.1; exercise 1 varies β).

# %%
BETA = 0.3
sol = toy.solve(BETA)
print(f"optimal J at β = {BETA}: {sol.value:.4f} (averaged over the two prompts)\n")
for word in toy.PROMPTS:
    s = (toy.VOCAB.index(word),)
    print(f"prompt {word!r}: first token   " + "  ".join(f"{w} {p:.3f}" for w, p in zip(toy.VOCAB, sol.policy[s])))
    print(f"{'':>14}π_ref would be " + "  ".join(f"{w} {p:.3f}" for w, p in zip(toy.VOCAB, toy.REFERENCE_TABLE[s[0]])))

# %% [markdown]
# How much score does each nat of KL buy? For a policy π, `policy_objective(π, β)` (from
# `rlhf_gym.agents.q_learning`) enumerates every response and returns J exactly; with β = 0 it
# returns E[score], so KL = (E[score] − J)/β. Sweeping β traces the best achievable score at
# every KL budget: the **reward–KL frontier**. No policy can lie above it.

# %%
def exact_policy(solution):
    """π* of a solution as a function prefix → 4 probabilities."""
    return lambda prefix: solution.policy[prefix]


betas = np.geomspace(0.02, 5, 25)
frontier = []
for beta in betas:
    pi_star = exact_policy(toy.solve(beta))
    score = policy_objective(pi_star, 0.0)
    frontier.append((score, (score - policy_objective(pi_star, beta)) / beta))
frontier = np.array(frontier)
ref_score = policy_objective(lambda prefix: np.array(toy.REFERENCE_TABLE[prefix[-1]]), 0.0)

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(frontier[:, 1], frontier[:, 0], "-", label="π* for β from 0.02 to 5")
for beta in (0.05, 0.1, BETA, 1.0):
    pi_star = exact_policy(toy.solve(beta))
    score = policy_objective(pi_star, 0.0)
    kl = (score - policy_objective(pi_star, beta)) / beta
    ax.scatter([kl], [score], color="C0", zorder=3)
    ax.annotate(f"β={beta:g}", (kl, score), textcoords="offset points", xytext=(6, -12), fontsize=8)
ax.scatter([0], [ref_score], color="black", zorder=3, label="the reference (KL 0)")
ax.set(xlabel="KL(π* ‖ π_ref), nats per response", ylabel="E[score]",
       title="RLHFToy-v0: the exact reward–KL frontier")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()
print(f"reference E[score] {ref_score:+.3f}; at β = {betas[0]:.2g}: E[score] {frontier[0, 0]:+.3f} at KL {frontier[0, 1]:.2f}")

# %% [markdown]
# ## 3. Why off-policy learners need the policy-independent reward
#
# The environment can deliver the KL part of the objective in two ways (`reward_form=`):
#
# | `reward_form` | r_t | depends on |
# |---|---|---|
# | `"kl"` (PPO's) | score·[done] − β·KL_t, with KL_t ≈ log π(a_t\|s_t) − log π_ref(a_t\|s_t) | the acting policy π |
# | `"ref_logprob"` | score·[done] + β·log π_ref(a_t\|s_t) | nothing but the reference |
#
# The `"kl"` form is fine for PPO, which collects with its current policy, learns from that
# batch once and throws it away. An off-policy learner breaks both assumptions:
#
# * it **explores**: the data come from a *behaviour* policy (here: uniformly random tokens)
#   that is not the policy being learned, so `"kl"` would penalise the behaviour's KL, which is
#   not in the objective;
# * it **replays**: rewards stored in a buffer were computed with an old policy; when the
#   policy changes they go stale.
#
# With `"ref_logprob"` the reward of a transition is a fixed number, whoever collected it. The
# missing piece of the KL, −β·log π(a_t|s_t), is an *entropy bonus* that soft Q-learning adds
# itself, inside its value function (section 4). Summed over an episode the two give
# score + β·Σ log π_ref − β·Σ log π = score − β·Σ_t k1_t, whose expectation is exactly J(π)
# (`docs/design.md`, "KL"). An adaptive KL coefficient is ruled out for the same reason: it would
# change the meaning of the rewards already in the buffer.
#
# The cell below makes the difference concrete: the same response to the same prompt,
# `bad` → `good meh <eos>`, stepped with two different policies attached, under each reward form.

# %%
class Uniform:
    """An acting policy (the ActingPolicy protocol): uniform logits over the 4 tokens."""

    def action_logits(self, observation):
        return torch.zeros(1, len(toy.VOCAB))


def rewards_of(reward_form, acting):
    e = gym.make("RLHFToy-v0", kl_coef=BETA, reward_form=reward_form)
    e.unwrapped.set_policy(acting(e.unwrapped))
    e.reset(seed=0, options={"prompt_index": toy.PROMPTS.index("bad")})
    tokens = [toy.GOOD, toy.MEH, toy.EOS]
    return [round(e.step(a)[1], 4) for a in tokens]


for form in ("kl", "ref_logprob"):
    for name, acting in (("uniform", lambda u: Uniform()), ("reference", lambda u: ReferencePolicy(u))):
        print(f"reward_form={form!r:<14} policy attached: {name:<10} rewards {rewards_of(form, acting)}")

# %% [markdown]
# Under `"kl"` the same transitions earn different rewards depending on which policy is
# attached; under `"ref_logprob"` they do not. (With the reference attached, the `"kl"` rewards
# are 0 until the score at the end: the reference's KL from itself is 0.)
#
# ## 4. Tabular soft Q-learning
#
# Soft Q-learning (Haarnoja et al. 2017) learns Q(s, a) = r(s, a) + V(s') with the *soft* value
#
# $$ V(s) = \beta \log \sum_a e^{Q(s,a)/\beta}, \qquad \pi(a\mid s) = \mathrm{softmax}(Q(s,\cdot)/\beta)[a]. $$
#
# The log-sum-exp is a smooth maximum; it is where the entropy bonus lives. With the
# `ref_logprob` reward this Q equals Q°(s, a) + β·log π_ref(a|s), so V and π are exactly V* and
# π* of section 2 at the fixed point (`optimal_q(β)` gives the exact table in this form). The
# update after each transition is the usual one, Q(s, a) ← Q(s, a) + α·(r + V(s') − Q(s, a))
# with V = 0 after the last token. The toy is deterministic, so a constant step α converges.
#
# The behaviour policy picks tokens uniformly at random: an off-policy learner may learn from
# any behaviour that keeps trying every token. The state is the token prefix, read from the
# observation. We measure two distances to the optimum every 50 episodes: the **gap** J(π*) −
# J(π) of the learned policy (exact, by enumeration), and the largest error of any table entry,
# max |Q − Q*|.

# %%
Q_STAR, _ = optimal_q(BETA)


def prefix_of(obs):
    """The state: the prompt token and the response tokens so far."""
    n = int(obs["attention_mask"].sum())
    return tuple(int(t) for t in obs["input_ids"][:n])


def soft_q_learning(reward_form, episodes=TOY_EPISODES, alpha=0.5, beta=BETA, every=50, seed=0):
    """Tabular soft Q-learning from uniformly random behaviour; returns the table and a curve."""
    env = gym.make("RLHFToy-v0", kl_coef=beta, reward_form=reward_form)
    env.unwrapped.set_policy(Uniform())  # the behaviour policy (the "kl" form reads it)
    rng = np.random.default_rng(seed)
    Q = {}
    value = lambda s: beta * np.logaddexp.reduce(Q.get(s, np.zeros(4)) / beta)  # soft V(s)
    policy = lambda s: np.exp((Q.get(s, np.zeros(4)) - value(s)) / beta)  # softmax(Q/β)
    curve = []
    obs, _ = env.reset(seed=seed)
    for episode in range(1, episodes + 1):
        done = False
        while not done:
            s, a = prefix_of(obs), int(rng.integers(4))
            obs, r, done, _, _ = env.step(a)
            target = r if done else r + value(prefix_of(obs))
            q = Q.setdefault(s, np.zeros(4))
            q[a] += alpha * (target - q[a])
        obs, _ = env.reset()
        if episode % every == 0:
            gap = sol.value - policy_objective(policy, beta)
            q_err = max(np.abs(Q.get(s, np.zeros(4)) - Q_STAR[s]).max() for s in Q_STAR)
            curve.append((episode, gap, q_err))
    return Q, policy, np.array(curve)


Q, learned, curve = soft_q_learning("ref_logprob")
print(f"after {TOY_EPISODES} episodes: gap J(π*) − J(π) = {curve[-1, 1]:.2e}, max |Q − Q*| = {curve[-1, 2]:.2e}")
bad = (toy.BAD,)
print("learned π(first token | 'bad'):", np.round(learned(bad), 4))
print("exact   π*(first token | 'bad'):", np.round(sol.policy[bad], 4))

# %% [markdown]
# The package's `TabularQ` agent (`rlhf_gym.agents.q_learning`) is the same algorithm with 16
# episodes side by side in the vector environment; its `history` records the exact objective
# of its policy every 200 episodes. And to see section 3 in numbers, the same loop runs once
# more with PPO's reward form, `"kl"`, and the uniform behaviour policy attached.

# %%
agent = TabularQ(TabularQConfig(kl_coef=BETA, total_episodes=TOY_EPISODES, eval_every=50 if SMOKE else 200))
agent.train()
package_curve = np.array([(h[tags.EPISODES], sol.value - h["exact_objective"]) for h in agent.history])

_, learned_kl, curve_kl = soft_q_learning("kl")
print(f"gap after {TOY_EPISODES} episodes: ref_logprob {curve[-1, 1]:.2e},"
      f" TabularQ {package_curve[-1, 1]:.2e}, kl reward form {curve_kl[-1, 1]:.3f}")
print("with the kl form, π(first token | 'bad'):", np.round(learned_kl(bad), 4))

fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(12, 4))
ax_a.plot(curve[:, 0], np.maximum(curve[:, 1], 1e-12), label="our loop, reward_form='ref_logprob'")
ax_a.plot(package_curve[:, 0], np.maximum(package_curve[:, 1], 1e-12), "s--", ms=4, label="TabularQ agent (16 envs)")
ax_a.plot(curve_kl[:, 0], np.maximum(curve_kl[:, 1], 1e-12), label="our loop, reward_form='kl' (uniform behaviour)")
ax_a.set(yscale="log", xlabel="episodes", ylabel="J(π*) − J(π)", title="(a) gap to the exact optimum")
ax_b.plot(curve[:, 0], curve[:, 2], color="C0")
ax_b.set(yscale="log", xlabel="episodes", ylabel="max over (s, a) of |Q − Q*|",
         title="(b) largest table error (ref_logprob)")
for ax in (ax_a, ax_b):
    ax.grid(alpha=0.3)
ax_a.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# With `ref_logprob` the gap falls by orders of magnitude, and every table entry converges,
# even for states the learned policy would almost never visit, because the uniform behaviour
# keeps visiting them. With the `"kl"` form the rewards carry the behaviour's KL: the uniform
# policy's k1 = log ¼ − log π_ref(a|s) turns into a bonus of β·log 4 for *every* token, so the
# learner converges, to the optimum of a different objective, one that pays for longer
# responses, and the gap stays where the printout shows it.
#
# ## 5. Soft Q-learning on the language model
#
# On the LM a table is out of the question (1,024 actions, and a state space of all texts), so
# the `qlearning` agent (`rlhf_gym.agents.soft_q.SoftQ`) uses a trick from Guo et al. (2021):
# the language model's own **logits are the Q-values**, read relative to the reference,
#
# $$ Q(s,a) = \beta\,\big(f_\theta(s)[a] - \log\textstyle\sum_b e^{f_{\text{ref}}(s)[b]}\big), \qquad
# \pi(a\mid s) = \mathrm{softmax}(f_\theta(s))[a], $$
#
# so the policy is the LM itself, with no extra head, and an LM initialised from the reference
# starts at Q° = 0 everywhere: the reference is the prior. It runs the environment with
# `reward_form="ref_logprob"`, keeps a replay buffer of whole episodes, and regresses Q on soft
# λ-returns (multi-step targets that carry the end-of-response score back to the first token
# faster than one-step backups) computed with a slowly updated target network.
#
# `rlhf_gym.compare` trains each agent with the same number of episodes and seeds, evaluates
# each on the held-out prompts (reward-model score, gold score, exact KL from the reference),
# and adds best-of-n sampling from the reference as a point of comparison. The budget here is
# small, so that the notebook runs in minutes on a CPU.

# %%
print("β: PPO", config_class("ppo")().kl_coef, " soft-Q", config_class("qlearning")().kl_coef,
      "(each agent's default; compare runs every agent with its own defaults)")
cc = CompareConfig(
    agents=("ppo", "qlearning"),
    seeds=1,
    total_episodes=LM_EPISODES,
    num_envs=LM_NUM_ENVS,
    eval_episodes=EVAL_EPISODES,
    best_of=BEST_OF,
    out=tempfile.mkdtemp(prefix="rlhf-gym-compare-"),
)
comparison = compare(cc)
display(Markdown(comparison["table"]))

# %% [markdown]
# The table: each agent's held-out `final score` (the reward model, the proxy both agents
# optimise), `gold score` (the stand-in for a person), exact `KL` from the reference in nats per
# response, and its speed; then the reference (the agents' common starting point, evaluated
# once per run) and best-of-n (a separate, larger sample of the reference's answers: its n = 1
# row is the reference again). The ± is the spread over seeds, 0 with one seed. How much of a
# difference is noise? The standard error of a held-out mean score is about its standard
# deviation over √(episodes); here are the reference's:

# %%
reference = comparison["results"][0].reference
for key in ("score", "gold_score"):
    std = reference[key]["std"]
    se = std / np.sqrt(EVAL_EPISODES)
    print(f"{key:>10}: std over episodes {std:.3f} → standard error of a mean of {EVAL_EPISODES}: {se:.3f},"
          f" of a difference of two such means: {np.sqrt(2) * se:.3f}")

# %%
results, bon = comparison["results"], comparison["best_of"]
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for k, r in enumerate(results):
    steps, scores = r.curve
    axes[0].plot(steps, scores, "o-", ms=3, color=f"C{k}", label=r.agent)
    axes[1].scatter(r.kl, r.score, s=60, color=f"C{k}", label=r.agent, zorder=3)
    axes[2].scatter(r.kl, r.gold, s=60, color=f"C{k}", label=r.agent, zorder=3)
axes[1].scatter([0], [reference["score"]["mean"]], marker="x", s=60, color="black", label="reference")
axes[2].scatter([0], [reference["gold_score"]["mean"]], marker="x", s=60, color="black", label="reference")
for ax, key, name in ((axes[1], "score", "score"), (axes[2], "gold", "gold score")):
    ax.plot([p["kl"] for p in bon], [p[key] for p in bon], "k--s", ms=4, alpha=0.7, label="best-of-n (reference)")
    for p in bon:
        ax.annotate(f"n={p['n']}", (p["kl"], p[key]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set(xlabel="KL from the reference (nats per response)", ylabel=f"held-out {name}")
axes[0].set(xlabel="env steps (response tokens)", ylabel="mean score of the training rollouts", title="(a) training")
axes[1].set_title("(b) reward-model score against KL")
axes[2].set_title("(c) gold score against KL")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.suptitle(f"RLHF-v0, {LM_EPISODES} training episodes per agent, one seed")
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the panels with the standard errors above in mind: a gap between the two agents smaller
# than about twice the standard error of a difference is within the noise of the evaluation
# alone, before the variation between training seeds, which one seed cannot measure; so do not
# rank the agents on this run. What the figure does show is the shape of the problem. Both agents move away from
# the reference (KL > 0) and raise the score; panels (b) and (c) place them against best-of-n,
# the simplest way to spend a KL budget, and (c) asks whether the gain is real, by the gold
# labeler's judgement. The README reports a larger comparison made with the same command
# (`rlhf-gym compare --agents ppo,qlearning --seeds 3`, 2,048 episodes per run; its table and
# figure are measured figures from the README, not from this notebook).
#
# What differs between the two in practice: PPO uses each response once (a few epochs over the
# batch) and needs a value head and the KL-penalised reward; soft-Q keeps a buffer, reuses old
# responses, needs the `ref_logprob` reward and a fixed β, and its policy *is* its Q-function.
#
# ## Summary
#
# * The KL-regularised objective has an exact optimum, π* ∝ π_ref·exp(Q°/β); on the toy dynamic
#   programming computes it, and tabular soft Q-learning converges to it from random behaviour.
# * Off-policy learning needs rewards that do not depend on the policy: `reward_form="ref_logprob"`
#   gives β·log π_ref per token, and soft Q-learning's log-sum-exp supplies the entropy term;
#   with the `"kl"` form the learner converges to the wrong objective.
# * On the LM, soft-Q reads the logits as Q-values with the reference as prior, and
#   `rlhf_gym.compare` puts it beside PPO at the same budget.
#
# ## Exercises
#
# **1.** On the toy, how does π*(first token | `bad`) change from β = 0.01 to β = 10? Predict
# the two limits before you compute them.
#
# <details><summary>Solution</summary>
#
# As β → 0 the score dominates and π* puts (almost) all its mass on `good`; as β grows π* goes
# back to the reference's row for `bad`, (0.2, 0.1, 0.5, 0.2).
#
# ```python
# for beta in (0.01, 0.1, 1.0, 10.0):
#     print(beta, np.round(toy.solve(beta).policy[(toy.BAD,)], 3))
# ```
# </details>
#
# **2.** Check section 3's identity on one toy episode: with `reward_form="ref_logprob"`, the
# sum of the rewards minus β·Σ log π(a_t|s_t) of the acting policy equals score − β·`kl_sum`
# (with `kl_estimator="k1"`).
#
# <details><summary>Solution</summary>
#
# ```python
# e = gym.make("RLHFToy-v0", reward_form="ref_logprob", kl_estimator="k1")
# pol = ReferencePolicy(e.unwrapped, temperature=2.0, seed=0)  # any policy other than π_ref
# e.unwrapped.set_policy(pol)
# obs, _ = e.reset(seed=0)
# total, log_pi, done = 0.0, 0.0, False
# while not done:
#     logits = pol.action_logits(obs)[0]
#     a = int(pol.act(obs))
#     log_pi += float(torch.log_softmax(logits, -1)[a])
#     obs, r, done, _, info = e.step(a)
#     total += r
# beta = e.unwrapped.kl_coef
# print(total - beta * log_pi, info["score"] - beta * info["kl_sum"])  # equal
# ```
# </details>
#
# **3.** Plain Q-learning (`TabularQConfig(kl_coef=0)`) maximises the score alone. Train it on
# the toy and compute the E[score] and the KL from the reference of its greedy policy; where
# does it sit on the frontier of section 2?
#
# <details><summary>Solution</summary>
#
# It learns to answer `good good good` to both prompts: E[score] = 1, the top of the frontier,
# at the largest KL, −Σ log π_ref of those tokens (the β → 0 end of the curve).
#
# ```python
# plain = TabularQ(TabularQConfig(kl_coef=0.0, total_episodes=3000))
# plain.train()
# score = policy_objective(plain.policy, 0.0)
# kl = (score - policy_objective(plain.policy, 0.1)) / 0.1
# print(f"E[score] {score:.3f}  KL {kl:.2f} nats")
# ```
# </details>
