# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. PPO and the KL penalty
#
# A reward model is only a *proxy* for what people want: it was fitted to a finite number of
# comparisons and is wrong about texts unlike the ones it saw. Reinforcement learning is very
# good at finding where a reward is wrong. This notebook trains a language model with PPO,
# watches what it optimises, and then deliberately makes it **hack** a weak reward model, to
# show what the KL penalty is for.
#
# After this notebook you will be able to:
#
# * run PPO on the default task from Python and read its training statistics: the reward
#   model's score, the KL from the reference, the gold score;
# * explain the KL coefficient β as a trade-off, and draw the **reward–KL frontier** of a sweep
#   over β;
# * make **reward hacking** happen on purpose, recognise it (the proxy score rises while the
#   gold score falls), and show that the KL penalty limits it: the over-optimisation curve of
#   Gao et al. (2022).
#
# Terms used below. The **policy** π is the language model being trained; the **reference**
# π_ref is a frozen copy of where it started. The **proxy** is the reward model PPO maximises.
# The **gold score** is the package's stand-in for a person (a sentiment lexicon times a
# reader-quality factor that punishes word salad, repetition and broken words; `docs/gold.md`);
# PPO never sees it, we only watch it. The **KL** is `KL(π ‖ π_ref)` summed over the tokens of
# one response, in nats: how far the policy's text has moved from the reference's.

# %%
import os
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, outside Jupyter widgets

import matplotlib.pyplot as plt
import numpy as np
import torch
from transformers.utils import logging as hf_logging

import rlhf_gym  # noqa: F401  (registers RLHF-v0)
from rlhf_gym.agents import tags
from rlhf_gym.agents.ppo import PPO, PPOConfig

SMOKE = os.environ.get("RLHF_GYM_SMOKE") == "1"
torch.set_num_threads(1)  # the models are tiny: one thread is faster than several here
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

NUM_ENVS = 8 if SMOKE else 16  # episodes per PPO update (the vector env's batch size)
EPISODES = 16 if SMOKE else 384  # training episodes per PPO run of the sweep
FIRST_EPISODES = 16 if SMOKE else 192  # the first run, on the shipped reward model
LABELS = 40 if SMOKE else 300  # simulated comparisons the weak reward model learns from
RM_STEPS = 10 if SMOKE else 60  # its optimiser steps
BETAS = (0.0, 0.05, 0.2)  # the KL coefficients of the sweep
LR = 5e-4  # PPO learning rate: 5x the default, to move fast on a small budget
EVAL_EPISODES = 8 if SMOKE else 64  # held-out episodes per evaluation
WORK = tempfile.mkdtemp(prefix="rlhf-gym-nb03-")  # every file this notebook writes goes here
started = time.perf_counter()

# %% [markdown]
# ## 1. PPO on the default task, watched from its own statistics
#
# `PPO(PPOConfig(...))` builds `gym.make_vec("RLHF-v0", num_envs=NUM_ENVS)` with the embedded
# language model and its shipped sentiment reward model. Each **update** samples one response
# per environment from the current policy (a *rollout*), gets the per-token rewards
# `score·[last token] − β·KL_t` from the environment, and takes a few clipped gradient steps on
# them. `train(callback=...)` calls our callback after every update with that rollout's
# statistics (the TensorBoard scalars of `docs/metrics.md`); we keep three:
#
# * `objective/scores`: the mean reward-model score of the rollout (what PPO is paid);
# * `objective/kl`: the mean per-response KL from the reference (what β charges for);
# * `objective/gold_scores`: the mean gold score of the same responses (what we want).
#
# They are measured on the training rollouts themselves, so they cost nothing extra, and they
# are noisy: each point is a mean over the responses of one rollout (here `2 × NUM_ENVS`). The
# run uses β = 0.05, the default, and a learning rate of 5 × the default (`LR`) to show
# movement on a small budget.


# %%
def run_ppo(beta, reward_model=None, episodes=EPISODES, num_envs=NUM_ENVS):
    """Train PPO with KL coefficient ``beta``; return the agent and one row per update."""
    rows = []

    def record(agent, stats):
        rows.append(
            {
                "episodes": agent.episodes_seen,
                "proxy": stats[tags.SCORES],
                "gold": stats[tags.GOLD_SCORES],
                "kl": stats[tags.KL],
            }
        )

    config = PPOConfig(
        kl_coef=beta,
        total_episodes=episodes,
        num_envs=num_envs,
        learning_rate=LR,
        reward_model=reward_model,  # None: the task's shipped reward model
        seed=0,
    )
    agent = PPO(config)  # writer=None: no TensorBoard files
    agent.train(callback=record)
    return agent, rows


default_agent, default_rows = run_ppo(0.05, episodes=FIRST_EPISODES, num_envs=2 * NUM_ENVS)


def plot_training(ax_row, rows, label, color):
    x = [r["episodes"] for r in rows]
    ax_row[0].plot(x, [r["proxy"] for r in rows], "o-", ms=3, color=color, label=label)
    ax_row[1].plot(x, [r["kl"] for r in rows], "o-", ms=3, color=color, label=label)
    ax_row[2].plot(x, [r["gold"] for r in rows], "o-", ms=3, color=color, label=label)


fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
plot_training(axes, default_rows, "β = 0.05, shipped reward model", "C0")
for ax, title in zip(axes, ("reward-model score (proxy)", "KL from reference (nats)", "gold score")):
    ax.set(title=title, xlabel="training episodes")
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()
first, last = default_rows[0], default_rows[-1]
print(f"first rollout: proxy {first['proxy']:+.2f}  KL {first['kl']:5.2f}  gold {first['gold']:+.2f}")
print(f"last rollout:  proxy {last['proxy']:+.2f}  KL {last['kl']:5.2f}  gold {last['gold']:+.2f}")

# %% [markdown]
# The first rollout is sampled before any update, from the reference itself, so its KL is
# 0. Read the two printed lines against the figure: the proxy score climbs, the KL grows (the
# price of moving), and with the shipped reward model, trained on about 50,000 simulated labels,
# the gold score rises with the proxy (single rollouts are noisy: compare the first and the
# last few points rather than two single ones). The README's "Training" section reports the full run
# (`rlhf-gym train`, 4,096 episodes): there the gold score rises from +0.064 to +0.744 on
# held-out prompts (figures from the README, not from this notebook).
#
# ## 2. A weak proxy: a reward model from few labels
#
# To see over-optimisation within a few minutes we need a reward model that is easy to fool.
# The shipped one takes longer to fool: in the README's over-optimisation benchmark (β = 0,
# the shipped model, the default learning rate) the held-out gold score peaks after 512
# episodes and falls below the reference's only after about 1,500 (figures from the README),
# beyond this notebook's budget. So we build a weak one ourselves, with the feedback pipeline of `rlhf_gym.feedback`:
#
# 1. `simulate`: sample pairs of responses from the reference and let the *simulated person*
#    (the gold labeler plus Bradley–Terry noise) say which one is better;
# 2. `train_reward_model`: fit a fresh score head on the embedded model's transformer with the
#    Bradley–Terry loss, for only `RM_STEPS` optimiser steps on `LABELS` comparisons;
# 3. `normalise_on`: rescale the scores to mean 0 and standard deviation 1 on the responses
#    it was trained on, so that β means the same as with the shipped model; `save_model`
#    writes a Hugging Face folder that `reward_model=` accepts.
#
# The README's learning curve (`benchmarks/reward_learning_curve.py`) measured how good such
# models are: with 100 labels the model orders 0.615 of held-out pairs as the gold labeler
# does, with 300 labels 0.713, against 0.934 for the shipped one (figures from the README). A
# model like that agrees with the gold labeler near the reference's own texts, and knows
# nothing about texts far from them.

# %%
from rlhf_gym.feedback.records import read_preferences
from rlhf_gym.feedback.simulate import SimulateConfig, simulate
from rlhf_gym.feedback.trainer import (
    RewardTrainConfig,
    load_base,
    normalise_on,
    save_model,
    train_reward_model,
)

prefs_path = os.path.join(WORK, "prefs.jsonl")
simulate(SimulateConfig(out=prefs_path, task="sentiment", pairs=LABELS, seed=0))
records = read_preferences(prefs_path).records
torch.manual_seed(0)  # the new score head's initial weights
rm, rm_tokenizer = load_base("default")
result = train_reward_model(rm, rm_tokenizer, records, RewardTrainConfig(seed=0, max_steps=RM_STEPS))
texts = sorted({r.prompt + x for r in records for x in (r.response_a, r.response_b)})
normalise_on(rm, rm_tokenizer, texts)
WEAK_RM = save_model(rm, rm_tokenizer, os.path.join(WORK, "weak-rm"))
print(f"{len(records)} simulated comparisons; trained {result.steps} steps on {result.train_pairs}")
print(f"accuracy on its {result.heldout_pairs} held-out comparisons: {result.heldout.get('accuracy', float('nan')):.2f}")

# %% [markdown]
# The held-out accuracy above is measured against the simulated person's noisy labels, on
# the few comparisons the trainer kept aside: a rough figure. What matters is what happens when
# PPO pushes against this model.
#
# ## 3. A sweep over β on the weak proxy
#
# Now three PPO runs against the weak reward model, identical except for β (`BETAS`): no
# penalty at all, then two penalties. Everything else is the same, including the learning rate
# of 5 × the default. Why these settings make hacking fast:
#
# * **few labels** (section 2): the proxy is confidently wrong about most of the text space;
# * **β = 0**: nothing holds the policy near the texts where the proxy is right;
# * **a high learning rate**: each update moves the policy far, so it reaches the proxy's blind
#   spots in a few hundred episodes instead of several thousand.

# %%
sweep = {}
for beta in BETAS:
    agent, rows = run_ppo(beta, reward_model=str(WEAK_RM))
    sweep[beta] = {"agent": agent, "rows": rows}

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for k, beta in enumerate(BETAS):
    plot_training(axes, sweep[beta]["rows"], f"β = {beta:g}", f"C{k + 1}")
for ax, title in zip(axes, ("weak proxy score", "KL from reference (nats)", "gold score")):
    ax.set(title=title, xlabel="training episodes")
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# To compare the finished policies fairly we measure each on the **held-out prompts** (prompts
# no run trained on) with `rlhf_gym.evaluate.evaluate`: `EVAL_EPISODES` responses per policy,
# scored by the same weak proxy and by the gold labeler, with the *exact* KL from the reference
# (summed over the whole vocabulary at every token, rather than the one-sample estimate the
# training rollouts use). `policy=None` measures the reference itself. The table also gives the
# peak of each run's gold score during training (the figure's right panel) and the KL there.

# %%
from rlhf_gym.evaluate import evaluate


def heldout(policy):
    """Proxy, gold and exact KL of ``policy`` on the held-out prompts (weak proxy as reward)."""
    return evaluate("RLHF-v0", policy=policy, episodes=EVAL_EPISODES, num_envs=EVAL_EPISODES,
                    prompts="sentiment-eval", reward_model=str(WEAK_RM), n_samples=4)  # fmt: skip


reference = heldout(None).summary()
for beta in BETAS:
    sweep[beta]["eval"] = heldout(sweep[beta]["agent"].policy)

print(f"held-out, {EVAL_EPISODES} episodes each")
print(f"{'policy':>10} {'proxy':>7} {'gold':>7} {'KL':>7}   {'peak gold in training':>22}")
row = "{:>10} {:+7.2f} {:+7.2f} {:7.1f}   {}"
print(row.format("reference", reference["score"]["mean"], reference["gold_score"]["mean"], 0.0, ""))
for beta in BETAS:
    s = sweep[beta]["eval"].summary()
    peak = max(sweep[beta]["rows"], key=lambda r: r["gold"])
    where = f"{peak['gold']:+.2f} at KL {peak['kl']:.1f}"
    print(row.format(f"β = {beta:g}", s["score"]["mean"], s["gold_score"]["mean"], s["kl"]["mean"], where))

# %% [markdown]
# ### The reward–KL frontier
#
# β sets an exchange rate: each nat of KL costs β units of score. A larger β buys less proxy
# score with less KL. Plotting each policy's held-out proxy score against its KL draws the
# **frontier** a practitioner chooses from; the gold score at the same KL shows which choices
# were real improvements.

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for k, beta in enumerate(BETAS):
    s = sweep[beta]["eval"].summary()
    kl, proxy, gold = s["kl"]["mean"], s["score"]["mean"], s["gold_score"]["mean"]
    ax.scatter(kl, proxy, marker="s", s=60, color=f"C{k + 1}", label=f"β = {beta:g}: proxy")
    ax.scatter(kl, gold, marker="o", s=60, facecolors="none", edgecolors=f"C{k + 1}",
               label=f"β = {beta:g}: gold")  # fmt: skip
    ax.annotate(f"β={beta:g}", (kl, proxy), textcoords="offset points", xytext=(5, 5), fontsize=8)
ax.scatter(0, reference["score"]["mean"], marker="s", color="grey", label="reference: proxy")
ax.scatter(0, reference["gold_score"]["mean"], marker="o", facecolors="none", edgecolors="grey",
           label="reference: gold")  # fmt: skip
ax.set(xlabel="exact KL from reference (nats per response)", ylabel="held-out mean score",
       title="Reward–KL frontier over β (weak proxy)")  # fmt: skip
ax.grid(alpha=0.3)
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Reward hacking, made visible: the over-optimisation curve
#
# Gao et al. (2022, "Scaling Laws for Reward Model Overoptimization") plot the proxy and the
# gold score against √KL, the square root of the policy's distance from the reference. The
# proxy rises monotonically: PPO is doing its job. The gold score rises at first, while the
# policy is still writing the kind of text the proxy was trained on, then peaks and falls once
# the policy has moved into regions where the proxy is wrong. That fall is **reward hacking**.
#
# Below, every update of every run is one point (proxy dashed, gold solid), smoothed by a
# running mean over four updates to tame the noise of rollouts of `NUM_ENVS` responses each.
The KL here is the training rollouts' one-sample estimate, also smoothed.


# %%
def smooth(values, n=4):
    values = np.asarray(values, dtype=float)
    return np.array([values[max(0, i - n + 1) : i + 1].mean() for i in range(len(values))])


fig, ax = plt.subplots(figsize=(7, 4.5))
for k, beta in enumerate(BETAS):
    rows = sweep[beta]["rows"]
    x = np.sqrt(np.maximum(smooth([r["kl"] for r in rows]), 0.0))
    ax.plot(x, smooth([r["proxy"] for r in rows]), "--", color=f"C{k + 1}")
    ax.plot(x, smooth([r["gold"] for r in rows]), "-", marker="o", ms=3, color=f"C{k + 1}",
            label=f"β = {beta:g}: gold (solid), proxy (dashed)")  # fmt: skip
ax.axhline(reference["gold_score"]["mean"], color="grey", lw=1, ls=":", label="reference's held-out gold score")
ax.set(xlabel="√KL(π ‖ π_ref)  (√nats per response)", ylabel="mean score of the rollout",
       title="Over-optimisation of a weak reward model (RLHF-v0, PPO)")  # fmt: skip
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# What the policies write: the first held-out responses of the β = 0 policy and of the most
# penalised one, each with its proxy score and its gold score.

# %%
for beta in (BETAS[0], BETAS[-1]):
    res = sweep[beta]["eval"]
    print(f"β = {beta:g}:")
    for (prompt, response, score), gold in zip(res.samples, res.gold_scores):
        print(f"  proxy {score:+.2f}  gold {gold:+.2f}  {prompt}|{response}")

# %% [markdown]
# ### Reading the results
#
# Check each statement against the table and the figures above; they come from this run.
#
# * **β = 0 hacks the proxy.** It is paid only by the proxy, and on the held-out prompts it
#   has the highest proxy score of the three policies and by far the lowest gold score, below
#   the reference's. The training curves show the order of events: the gold score rose for the
#   first few updates (its peak, in the table, came at a small KL), then the KL shot up and the
#   gold score fell to the bottom of its range while the proxy stayed high. The responses above
#   show what the weak proxy likes and a reader does not: fragments of words ("funable"),
#   repetition and word salad, which a few hundred labels never taught it to dislike.
# * **The KL penalty stops it.** With either β the gold score stays above the reference's at
#   the end, more than a whole point above the β = 0 policy's. β = 0.2 holds the policy
#   closest to the reference (the smallest KL in the table); β = 0.05 lets it wander much
#   further, with a KL estimate that swings from update to update, and still did not collapse
#   within this budget, but nothing guarantees that it would not later.
# * **The frontier is rough.** With one seed, a few hundred training episodes and 64 held-out
#   episodes per policy, proxy scores a few tenths apart are within the noise (the proxy's
#   standard deviation over responses is several tenths), so the penalised points need not
#   line up on a clean curve. The clear contrast is between β = 0 and the rest.
# * **A weak proxy limits every run.** A penalty limits how far the policy can exploit the
#   proxy's errors; it cannot add knowledge the proxy lacks. More labels make the proxy better;
#   β makes its errors cheaper to live with.
#
# What this notebook changed to make hacking happen within its budget: the proxy (300 labels
# and 60 training steps instead of the shipped model's about 50,000 labels), the learning rate
# (5 × the default) and small rollouts (`NUM_ENVS` responses per update, so twice as many
# updates per episode as with 32). The README's "Reward hacking, made visible" section has the
# full-size measurement, on held-out prompts with the shipped reward model (β = 0 and β = 0.05,
# 8,192 episodes each, `benchmarks/overoptimisation.py`): there the β = 0 gold score peaks at
# +0.504 and ends at −0.855 at a KL of 168 nats, while β = 0.05 ends at +0.754 at 7.1 nats
# (figures from the README).

# %% [markdown]
# ## Exercises
#
# **1.** Add an adaptive KL controller (Ziegler et al., 2019): instead of a fixed β, the
# environment adjusts β to keep the KL near a target. Train on the weak proxy with
# `kl_target=6` and β starting at 0.1, and plot the β in force (`objective/kl_coef`) and the KL
# over training.
#
# <details><summary>Solution</summary>
#
# ```python
# rows = []
# agent = PPO(PPOConfig(kl_coef=0.1, kl_target=6.0, kl_horizon=1000, total_episodes=EPISODES,
#                       num_envs=NUM_ENVS, learning_rate=LR, reward_model=str(WEAK_RM)))
# agent.train(callback=lambda a, s: rows.append((a.episodes_seen, s[tags.KL_COEF], s[tags.KL])))
# x, beta, kl = zip(*rows)
# fig, ax = plt.subplots()
# ax.plot(x, kl, label="KL"); ax.axhline(6, ls=":", color="grey")
# ax2 = ax.twinx(); ax2.plot(x, beta, color="C1", label="β")
# plt.show()
# ```
#
# β rises while the KL is above the target and falls while it is below; `kl_horizon` (in
# episodes) sets how fast it reacts.
# </details>
#
# **2.** Make the proxy less weak: train it on 4 × `LABELS` comparisons (and 2 × `RM_STEPS`
# steps) and repeat the β = 0 run. Does the gold score still fall, and how far does the KL go
# before it peaks?
#
# <details><summary>Solution</summary>
#
# ```python
# path = os.path.join(WORK, "prefs4.jsonl")
# simulate(SimulateConfig(out=path, task="sentiment", pairs=4 * LABELS, seed=0))
# recs = read_preferences(path).records
# torch.manual_seed(0)
# rm4, tok4 = load_base("default")
# train_reward_model(rm4, tok4, recs, RewardTrainConfig(seed=0, max_steps=2 * RM_STEPS))
# normalise_on(rm4, tok4, sorted({r.prompt + x for r in recs for x in (r.response_a, r.response_b)}))
# RM4 = save_model(rm4, tok4, os.path.join(WORK, "rm4"))
# _, rows4 = run_ppo(0.0, reward_model=str(RM4))
# peak = max(rows4, key=lambda r: r["gold"])
# print(peak, rows4[-1])
# ```
#
# A better proxy is right over a wider region, so the gold score tends to keep up with the
# proxy for longer (a higher peak at a larger KL) before the policy finds its errors; without a
# penalty it still finds them eventually (the README's benchmark shows it for the shipped model,
# trained on about 50,000 labels).
# </details>
#
# **3.** Why is the KL plotted as √KL? Compute the KL bound of best-of-n sampling,
# `log n − (n − 1)/n`, for n = 1, 2, 4, …, 1024, and plot √ of it against log₂ n.
#
# <details><summary>Solution</summary>
#
# ```python
# n = 2.0 ** np.arange(11)
# kl = np.log(n) - (n - 1) / n
# plt.plot(np.log2(n), np.sqrt(kl), "o-"); plt.xlabel("log2 n"); plt.ylabel("√KL"); plt.show()
# ```
#
# For large n the KL grows like log n, so √KL grows like √(log n); Gao et al. found that in
# √KL the gold score of both best-of-n and RL follows simple functional forms (a quadratic
# for best-of-n, `√KL·(α − β·log √KL)` for RL), which makes the peak easy to see and to fit.
# </details>
