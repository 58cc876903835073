# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 2. Reward models from preferences
#
# RLHF needs a number for every response: the **reward**. People are bad at giving absolute
# scores ("is this review a 6.5 or a 7?") but good at comparisons ("which of these two is
# better?"). So the feedback half of RLHF collects **comparisons** and turns them into a
# **reward model**, a network that reads `prompt + response` and outputs one number.
#
# After this notebook you will be able to:
#
# * state the **Bradley–Terry model**, P(A ≻ B) = σ(r_A − r_B), and explain why it turns
#   comparisons into scores;
# * simulate a noisy human labeler with `rlhf_gym.feedback.simulate` and read its output;
# * train a reward model with `rlhf_gym.feedback.trainer.train_reward_model` and measure it
#   against the noise-free **gold** labeler;
# * draw a learning curve (accuracy against the number of labels) and explain its ceiling;
# * find and read the pairs on which a reward model disagrees with the gold labeler.
#
# Everything runs offline on a CPU, on the sentiment task of `RLHF-v0` (continue a short movie
# review; people prefer positive, fluent continuations).

# %%
import os
import random
import tempfile
import time
import warnings
from pathlib import Path

# tqdm warns on import in a kernel without ipywidgets; we show no progress bars anyway
warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import numpy as np
import torch
from transformers.utils import logging as hf_logging

from rlhf_gym.envs import HFRewardModel
from rlhf_gym.feedback.metrics import preference_metrics, score_records
from rlhf_gym.feedback.records import read_preferences
from rlhf_gym.feedback.simulate import LABEL_TEMPERATURE, SimulateConfig, bt_label, simulate
from rlhf_gym.feedback.trainer import (
    RewardTrainConfig,
    bradley_terry_loss,
    load_base,
    train_reward_model,
)

SMOKE = os.environ.get("RLHF_GYM_SMOKE") == "1"
torch.set_num_threads(1)  # the models are tiny: more threads are slower here
hf_logging.disable_progress_bar()

TASK = "sentiment"
SIZES = [16, 64] if SMOKE else [50, 200, 800]  # training labels for the learning curve
HELDOUT_PAIRS = 48 if SMOKE else 400  # test pairs, on prompts the models never train on
MIN_STEPS = 10 if SMOKE else 100  # the trainer's floor on optimiser steps (default 100)
TMP = Path(tempfile.mkdtemp(prefix="rlhf-gym-nb02-"))
started = time.perf_counter()

# %% [markdown]
# ## 1. The Bradley–Terry model
#
# Suppose every response has a hidden quality r (its **reward**). The Bradley–Terry model
# (Bradley and Terry, 1952; the model behind chess Elo ratings) says that a judge prefers A to
# B with probability
#
# $$P(A \succ B) = \sigma(r_A - r_B) = \frac{1}{1 + e^{-(r_A - r_B)}}.$$
#
# Only the **difference** of the two rewards matters: adding the same constant to every reward
# changes nothing, so a reward model's scores have no natural zero (rlhf-gym shifts and
# scales them to mean 0 and standard deviation 1 afterwards). Equal rewards give a coin flip;
# a gap of 2 gives σ(2) ≈ 0.88.
#
# Training a reward model r_θ is maximum likelihood under this model: for a pair where the
# person chose A over B, the loss is
#
# $$\mathcal{L} = -\log \sigma(r_\theta(A) - r_\theta(B)).$$
#
# `bradley_terry_loss` is the trainer's implementation. The loss is large when the model
# ranks the pair the wrong way round, log 2 ≈ 0.693 when it cannot tell them apart, and
# falls towards 0 as the model ranks the chosen response further ahead:

# %%
r_chosen = torch.tensor([-2.0, 0.0, 2.0])  # the model's score of the chosen response
r_rejected = torch.zeros(3)  # ... and of the rejected one
for rc, rr in zip(r_chosen, r_rejected, strict=True):
    loss = bradley_terry_loss(rc[None], rr[None], p_a=torch.ones(1))
    print(f"r_chosen - r_rejected = {rc - rr:+.0f}:  loss {loss.item():.3f}")

# %% [markdown]
# ### The simulated person
#
# We have no people at hand, so rlhf-gym simulates one. Each task has a **gold labeler**
# (`rlhf_gym.envs.gold`): a fixed function that scores a response in [−1, 1] the way a careful
# reader would (for sentiment: how positive it is, multiplied by a reader-quality factor that
# punishes repetition, word salad, broken words and unfinished sentences). The simulated
# person compares two responses with **Bradley–Terry noise** at temperature T:
#
# $$P(\text{person picks } A) = \sigma\!\left(\frac{g_A - g_B}{T}\right),$$
#
# where g is the gold score. Small T is a consistent person; large T a careless one. The
# default is T = `LABEL_TEMPERATURE` = 0.1: a gold gap of 0.22 is judged right 90% of the time
# and close calls are coin flips, as they are for people. `bt_label` is this person, judging
# one pair at a time. Here it judges the same pair, whose gold gap is 0.05, twenty times:

# %%
toy_gold = lambda prompt, response: 0.30 if "good" in response else 0.25  # noqa: E731
rng = random.Random(0)
picks = [
    bt_label("", " good", " fine", toy_gold, LABEL_TEMPERATURE, rng).response_a for _ in range(20)
]
print("chosen:", " ".join(p.strip() for p in picks))
print(
    f"' good' chosen {picks.count(' good')} of 20 times; sigma(0.05 / 0.1) = {1 / (1 + np.exp(-0.5)):.3f}"
)

# %% [markdown]
# Now the real thing: `simulate` samples two responses per prompt from the reference language
# model of `RLHF-v0`, asks the gold labeler to score both, and lets the simulated person
# choose. It writes the pairs as JSON Lines in the TRL convention (`prompt`, `chosen`,
# `rejected`), and keeps the noise-free gold scores of both (`gold_a` is the chosen one's) so
# that we can grade the labels, and later the reward models, against gold.
#
# We simulate the training pool on the task's **training prompts**, and a separate test set on
# its **held-out prompts** (`sentiment-eval`), with another seed. No reward model below sees a
# held-out prompt during training.

# %%
train_file, test_file = TMP / "train.jsonl", TMP / "heldout.jsonl"
simulate(SimulateConfig(out=str(train_file), task=TASK, pairs=max(SIZES), seed=0))
simulate(
    SimulateConfig(
        out=str(test_file), task=TASK, pairs=HELDOUT_PAIRS, prompts=f"{TASK}-eval", seed=1
    )
)
pool = read_preferences(train_file).records
heldout = read_preferences(test_file).records
print(f"{len(pool)} training pairs, {len(heldout)} held-out pairs")
ex = pool[0]
print(f"\nprompt:   {ex.prompt!r}\nchosen:   {ex.response_a!r}  gold {ex.meta['gold_a']:+.3f}")
print(f"rejected: {ex.response_b!r}  gold {ex.meta['gold_b']:+.3f}")

# %% [markdown]
# Does the simulated person really follow the Bradley–Terry curve? For every training pair,
# the **gold gap** is |g_A − g_B|, and the label *agrees with gold* when the chosen response is
# the one with the higher gold score. The figure groups the pairs by their gold gap and plots
# the share of labels that agree (dots; the numbers are the pairs in each group) over the
# curve σ(gap / T) at T = 0.1 and, for comparison, at a more and a less careful T.

# %%
gaps = np.array([abs(r.meta["gold_a"] - r.meta["gold_b"]) for r in pool])
agree = np.array([r.meta["gold_a"] > r.meta["gold_b"] for r in pool], float)
edges = np.array([0, 0.05, 0.1, 0.2, 0.4, 0.8, 2.0])
x = np.linspace(0, 1.2, 300)
fig, ax = plt.subplots(figsize=(7, 4))
for t, style in ((0.03, ":"), (LABEL_TEMPERATURE, "-"), (0.3, "--")):
    ax.plot(x, 1 / (1 + np.exp(-x / t)), style, color="C0", label=f"σ(gap / T), T = {t}")
for lo, hi in zip(edges[:-1], edges[1:], strict=True):
    inside = (gaps >= lo) & (gaps < hi)
    if inside.any():
        centre, share = np.median(gaps[inside]), agree[inside].mean()
        se = np.sqrt(max(share * (1 - share), 0.01) / inside.sum())
        ax.errorbar(centre, share, yerr=se, fmt="o", color="C3")
        ax.annotate(
            str(int(inside.sum())),
            (centre, share),
            textcoords="offset points",
            xytext=(5, -12),
            fontsize=8,
        )
ax.plot([], [], "o", color="C3", label="simulated labels: share agreeing with gold (± 1 s.e.)")
ax.set_xlabel("gold gap |g_A − g_B| (dots: the median gap of each group)")
ax.set_ylabel("P(label agrees with gold)")
ax.set_xlim(0, 1.2)
ax.set_ylim(0.4, 1.03)
ax.set_title("The simulated person: Bradley–Terry noise on the gold labeler")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="lower right")
plt.show()
expected = np.mean(1 / (1 + np.exp(-gaps / LABEL_TEMPERATURE)))
print(
    f"labels agreeing with gold: training pool {agree.mean():.3f} (the model predicts {expected:.3f}), "
    f"held-out set {np.mean([r.meta['gold_a'] > r.meta['gold_b'] for r in heldout]):.3f}"
)

# %% [markdown]
# The dots follow the T = 0.1 curve up to sampling noise (the bars are ± one standard error,
# √(p(1 − p)/n) for a group of n pairs), and the share of all labels that agree with gold is
# close to what the model predicts, the mean of σ(gap / T) over the pool. Most pairs have a
# large gap: two samples of the same model often differ a lot in quality. The last line's
# shares are the **noise ceiling** of these labels: the share of pairs on which the person
# picked the response that gold prefers. A reward model that copied every label perfectly
# would agree with gold on exactly that share of pairs.

# %% [markdown]
# ## 2. Training a reward model
#
# `train_reward_model` fine-tunes a sequence classifier with one output on the pairs with the
# Bradley–Terry loss. `load_base("default")` is the embedded 0.94M-parameter GPT-2 of `RLHF-v0`
# with a new, randomly initialised score head: reward models are usually initialised from the
# policy's own language model, so they start with its knowledge of the text. The trainer
# holds out 10% of the training **prompts** for **early stopping** (it keeps the weights with
# the best accuracy on them and stops when that stops improving), trains for 2 epochs but at
# least `min_steps` steps, and leaves the model in place.
#
# We train one reward model per training-set size N (the first N pairs of the pool; prompts
# were visited in random order, so a prefix is a random subset) and measure each on the
# held-out pairs:
#
# * **accuracy vs labels**: the share of held-out pairs it orders as the noisy person did;
# * **accuracy vs gold**: the share it orders as the noise-free gold labeler does, the number
#   we care about.

# %%
rows, models = [], {}
for n in SIZES:
    torch.manual_seed(0)  # the new score head's initial weights
    model, tokenizer = load_base("default")
    t0 = time.perf_counter()
    result = train_reward_model(
        model, tokenizer, pool[:n], RewardTrainConfig(seed=0, min_steps=MIN_STEPS)
    )
    rm = HFRewardModel(model, tokenizer)  # the scorer the environment uses
    m = preference_metrics(*score_records(rm, heldout), heldout)
    models[n] = rm
    rows.append(
        (
            n,
            result.train_pairs,
            result.steps,
            result.best_step,
            m["accuracy"],
            m["accuracy_vs_gold"],
            time.perf_counter() - t0,
        )
    )

shipped = HFRewardModel.load(TASK, torch.device("cpu"))  # the embedded RM, ~50,000 labels
m_shipped = preference_metrics(*score_records(shipped, heldout), heldout)
ceiling = float(np.mean([r.meta["gold_a"] > r.meta["gold_b"] for r in heldout]))

print(
    f"{'N labels':>9} {'trained on':>11} {'steps':>6} {'kept':>5} {'acc vs labels':>14} {'acc vs gold':>12} {'seconds':>8}"
)
for n, tp, steps, best, acc, acc_gold, sec in rows:
    print(f"{n:>9} {tp:>11} {steps:>6} {best:>5} {acc:>14.3f} {acc_gold:>12.3f} {sec:>8.0f}")
print(
    f"{'shipped':>9} {'~50,000':>11} {'':>6} {'':>5} {m_shipped['accuracy']:>14.3f} {m_shipped['accuracy_vs_gold']:>12.3f}"
)
print(f"{'labels':>9} {'':>11} {'':>6} {'':>5} {'':>14} {ceiling:>12.3f}   (the noise ceiling)")

# %% [markdown]
# "trained on" is N minus the pairs of the prompts held out for early stopping; "kept" is the
# step whose weights were kept. With very few labels the early-stopping set is a handful of
# pairs, so it stops early on noise: one more reason small reward models are poor.
#
# The learning curve:

# %%
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot([r[0] for r in rows], [r[5] for r in rows], "o-", label="trained: accuracy vs gold")
ax.plot(
    [r[0] for r in rows],
    [r[4] for r in rows],
    "s:",
    alpha=0.7,
    label="trained: accuracy vs the noisy labels",
)
ax.axhline(
    m_shipped["accuracy_vs_gold"],
    color="C2",
    ls="--",
    label="shipped reward model (~50,000 labels), vs gold",
)
ax.axhline(ceiling, color="C3", ls="-.", label="the labels' own agreement with gold")
ax.axhline(0.5, color="grey", lw=0.8)
ax.set_xscale("log")
ax.set_xticks(SIZES, [str(n) for n in SIZES])
ax.minorticks_off()
ax.set_xlabel("simulated training labels N")
ax.set_ylabel(f"held-out pairwise accuracy ({len(heldout)} pairs)")
ax.set_title("Reward-model accuracy against the number of labels")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# Read the figure against the table above. Accuracy rises with every fourfold increase in
# labels (the x axis is logarithmic: each step costs four times the labels of the one before),
# and stays well below the two reference lines. The labels' own agreement with gold is the
# ceiling for a model that copies labels; the shipped reward model, trained on about 50,000
# labels, shows what many more labels buy. With
# enough labels a reward model can even order pairs *better* than the labels it learned from,
# because the person's noise is random and averages out over many similar pairs (the
# README's learning curve, measured with 2 seeds and 1,000 held-out pairs, shows this for
# 3,000 labels and more). A single seed and a few hundred held-out pairs give a standard error
# of about ±0.02 on each accuracy here, so small differences between rows are noise.

# %% [markdown]
# ## 3. What a reward model gets wrong
#
# Accuracy is one number; the errors themselves tell you what the reward model has not
# learned. Take the reward model trained on the most labels and find the held-out pairs where
# it disagrees with the gold labeler. First, **where** its errors fall: the figure plots its
# accuracy against gold for groups of pairs by gold gap, next to the simulated person's curve.

# %%
best_n = max(SIZES)
r_a, r_b = score_records(models[best_n], heldout)
g_a = np.array([r.meta["gold_a"] for r in heldout])  # the chosen response's gold score
g_b = np.array([r.meta["gold_b"] for r in heldout])
gap = np.abs(g_a - g_b)
right = (r_a > r_b) == (g_a > g_b)  # the reward model orders the pair as gold does
person = g_a > g_b  # the simulated person's label agrees with gold
edges = np.quantile(gap, [0, 0.25, 0.5, 0.75, 1.0])
groups = [(gap >= lo) & (gap <= hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
centres = [np.median(gap[g]) for g in groups]
x_max = max(1.2, centres[-1] + 0.1)
x = np.linspace(0, x_max, 300)
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(x, 1 / (1 + np.exp(-x / LABEL_TEMPERATURE)), color="C0", alpha=0.5, label="σ(gap / 0.1)")
ax.plot(
    centres,
    [person[g].mean() for g in groups],
    "o",
    color="C3",
    label="the simulated person's labels",
)
ax.plot(
    centres,
    [right[g].mean() for g in groups],
    "s-",
    color="C1",
    label=f"the reward model trained on {best_n} labels",
)
ax.axhline(0.5, color="grey", lw=0.8)
ax.set_xlim(0, x_max)
ax.set_ylim(0.3, 1.03)
ax.set_xlabel(
    "gold gap |g_A − g_B| (markers: the median gap of each quarter of the held-out pairs)"
)
ax.set_ylabel("agreement with gold")
ax.set_title("Where the reward model's errors fall")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="lower right")
plt.show()
print(
    f"{(~right).sum()} of {len(heldout)} held-out pairs ordered against gold; median gold gap "
    f"of those {np.median(gap[~right]):.3f}, of all held-out pairs {np.median(gap):.3f}"
)

# %% [markdown]
# Like the person, the reward model is least reliable on close calls, where the two responses
# are nearly equally good and a wrong order costs little; unlike the person, it also misorders
# a share of the pairs that any careful reader would get right. Those errors on pairs with a
# **large** gold gap are the ones that matter: the gold labeler sees a clear difference that
# the reward model misses or reverses. Here are the held-out errors with the largest gold
# gaps, with both scores (A is the response the simulated person chose). The reward model's
# scores are not normalised here (only the difference r_A − r_B matters); gold scores are in
# [−1, 1].

# %%
wrong = np.flatnonzero(~right)
for i in wrong[np.argsort(-gap[wrong])][:4]:
    rec = heldout[i]
    print(f"prompt: {rec.prompt!r}")
    print(f"  A {rec.response_a!r}\n      reward model {r_a[i]:+.2f}   gold {g_a[i]:+.3f}")
    print(f"  B {rec.response_b!r}\n      reward model {r_b[i]:+.2f}   gold {g_b[i]:+.3f}\n")

# %% [markdown]
# Read each pair as the gold labeler does (`docs/gold.md`): VADER, a sentiment lexicon with
# rules for negation, intensifiers and contrast words such as "but", multiplied by a
# reader-quality factor that punishes repetition, unfinished sentences, fragments of words and
# word salad. Then ask what the reward model may have learned instead. Two things to look for:
#
# * **Mixed sentiment.** A response that puts strongly positive and strongly negative words
#   side by side ("brilliant and miserable") is hard: gold weighs them by VADER's rules, and
#   a small reward model trained on a few hundred comparisons has seen too few such responses
#   to learn how they are weighed. In our run, every pair above has such a response.
# * **The gold labeler's own blind spots.** Gold judges form, not sense: "The ending was
#   amazing. The ending was terrible." is a contradiction a person would mark down, but it
#   passes the reader-quality factor (the "Known limits" of `docs/gold.md`). Where the reward
#   model "disagrees with gold" on such a pair, a person might side with the reward model. A
#   gold labeler is a model of a person too; it is useful because no policy is trained
#   against it.
#
# Either way these are the places where the reward model's score and the quality we want
# come apart, and a policy trained against the reward model will find and exploit them
# (**reward hacking**, notebook 3). That is why RLHF keeps the policy close to the reference
# with a KL penalty, and why more labels (the learning curve) and better labels matter.

# %%
print(f"notebook run time: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## Exercises
#
# **1. A careless person.** Simulate the same number of training labels as the largest
# model above with T = 0.3 instead of 0.1, train a reward model on them, and compare its
# accuracy vs gold with the T = 0.1 model's. How does the noise ceiling change?
#
# <details><summary>Solution</summary>
#
# ```python
# noisy_file = TMP / "train_T03.jsonl"
# simulate(SimulateConfig(out=str(noisy_file), task=TASK, pairs=max(SIZES), seed=0, temperature=0.3))
# noisy = read_preferences(noisy_file).records
# print("noise ceiling:", np.mean([r.meta["gold_a"] > r.meta["gold_b"] for r in noisy]))
# torch.manual_seed(0)
# model, tokenizer = load_base("default")
# train_reward_model(model, tokenizer, noisy, RewardTrainConfig(seed=0, min_steps=MIN_STEPS))
# m = preference_metrics(*score_records(HFRewardModel(model, tokenizer), heldout), heldout)
# print("accuracy vs gold:", m["accuracy_vs_gold"])
# ```
#
# More pairs are flipped (the ceiling drops), so each label carries less information: at the
# same N the reward model is usually less accurate against gold. It still learns, because the
# flips are random; with enough labels the noise averages out.
# </details>
#
# **2. Soft labels.** `SimulateConfig(soft=True)` writes the person's *probability*
# p_a = σ(gap / T) instead of a sampled choice, and the trainer's loss becomes the
# cross-entropy −[p_a log σ(d) + (1 − p_a) log σ(−d)] with d = r_A − r_B. Train on 200 soft
# labels and compare with the 200-label model above.
#
# <details><summary>Solution</summary>
#
# ```python
# soft_file = TMP / "train_soft.jsonl"
# simulate(SimulateConfig(out=str(soft_file), task=TASK, pairs=200, seed=0, soft=True))
# soft = read_preferences(soft_file).records
# torch.manual_seed(0)
# model, tokenizer = load_base("default")
# train_reward_model(model, tokenizer, soft, RewardTrainConfig(seed=0, min_steps=MIN_STEPS))
# m = preference_metrics(*score_records(HFRewardModel(model, tokenizer), heldout), heldout)
# print("soft labels, accuracy vs gold:", m["accuracy_vs_gold"])
# ```
#
# A soft label says how sure the person was, so the close calls (p_a near 0.5) no longer
# push the model hard in a random direction. Expect a small gain at the same N; one seed is
# not enough to be sure of it (±0.02).
# </details>
#
# **3. The same with the command line.** The three steps of this notebook are commands:
# `rlhf-gym reward simulate`, `reward train` and `reward eval`. Run them through
# `rlhf_gym.cli.main` (or with `!rlhf-gym …` in a notebook) and read the report of `reward
# eval`: besides accuracy it gives the **expected calibration error** (how far the predicted
# probabilities σ(r_A − r_B) are from the observed frequencies) and the correlation of the
# score with gold on fresh samples.
#
# <details><summary>Solution</summary>
#
# ```python
# from rlhf_gym.cli import main
#
# main(["reward", "simulate", "--task", "sentiment", "--pairs", "200", "--out", str(TMP / "p.jsonl")])
# main(["reward", "train", "--data", str(TMP / "p.jsonl"), "--out", str(TMP / "rm"), "--logdir", str(TMP / "runs")])
# main(["reward", "eval", "--reward-model", str(TMP / "rm"), "--data", str(test_file), "--gold-samples", "128"])
# ```
# </details>
