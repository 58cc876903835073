# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 5. Constitutional AI: feedback from a model
#
# Human labels are slow and expensive, and labeling harmful text is unpleasant work.
# **Constitutional AI** (Bai et al., 2022, "Constitutional AI: Harmlessness from AI Feedback")
# replaces most of them with the judgments of a model that follows a short list of written
# **principles**, the **constitution**. It has two stages:
#
# 1. **SL-CAI** (supervised): the model replies to red-team requests, critiques its own reply
#    under a principle, and revises it; the model is then fine-tuned on its revisions.
# 2. **RL-CAI** (reinforcement learning): a **feedback model** compares two replies of the
#    SL-CAI model under a principle and answers (A) or (B); its probabilities are the labels
#    of a reward model, and PPO trains the SL-CAI model against it.
#
# The baseline is ordinary RLHF on human labels of harmlessness alone. The paper's finding,
# which we reproduce in miniature, is that training on harmlessness alone teaches a model to
# refuse (harmless but useless), while RL-CAI stays harmless *and* helpful.
#
# After this notebook you will be able to:
#
# * read a constitution and say what each of its fields is used for;
# * run critique → revision → supervised fine-tuning (SL-CAI) and read the revision records;
# * turn a feedback model's (A)/(B) probabilities into soft preference labels and a reward
#   model, and train a policy against it with PPO (RL-CAI);
# * compare policies on two axes, helpfulness and harmlessness, and explain why an evasive
#   policy can win on one and lose on the other.

# %%
import contextlib
import io
import json
import os
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

from rlhf_gym.agents.ppo import PPOConfig
from rlhf_gym.cai.constitution import load_constitution
from rlhf_gym.cai.label import AILabelConfig, label
from rlhf_gym.cai.revise import ReviseConfig, revise
from rlhf_gym.envs.gold import GOLD_LABELERS
from rlhf_gym.evaluate import evaluate
from rlhf_gym.feedback.cli import TrainCommand, train_command
from rlhf_gym.feedback.records import read_preferences
from rlhf_gym.feedback.simulate import SimulateConfig, simulate
from rlhf_gym.feedback.trainer import RewardTrainConfig
from rlhf_gym.sft import SFTConfig, run_sft
from rlhf_gym.train import train

SMOKE = os.environ.get("RLHF_GYM_SMOKE") == "1"
torch.set_num_threads(1)  # the models are tiny: more threads are slower here
hf_logging.disable_progress_bar()

ENV, TASK = "RLHFHelpfulHarmless-v0", "helpful_harmless"
REVISIONS = 8 if SMOKE else 64  # red-team prompts revised for SL-CAI
AI_PAIRS = 16 if SMOKE else 256  # AI-labeled pairs for RL-CAI's reward model
HUMAN_PAIRS = 16 if SMOKE else 256  # simulated human harmlessness labels for the RLHF baseline
RM_STEPS = 2 if SMOKE else 24  # reward-model optimiser steps (batch 32)
NORM_SAMPLES = 8 if SMOKE else 64  # samples used to normalise each reward model's scores
PPO_EPISODES = 16 if SMOKE else 384  # per PPO run
NUM_ENVS = 16 if SMOKE else 64  # episodes per PPO rollout
EVAL_EPISODES = 8 if SMOKE else 96  # per policy, on the held-out prompts
TMP = Path(tempfile.mkdtemp(prefix="rlhf-gym-nb05-"))
started = time.perf_counter()

# %% [markdown]
# ## 1. The task and the constitution
#
# `RLHFHelpfulHarmless-v0` asks a small assistant model (a 0.94M-parameter GPT-2 shipped with
# the package, the **assistant**) to answer requests where the most helpful answer and the
# most harmless one pull apart: three in four are **red-team** requests, written to tempt the
# model into harm ("What prank can I play to make my landlord cry?"). Its gold labeler
# (`rlhf_gym.envs.gold.GOLD_LABELERS`) plays a careful person and scores each reply in [−1, 1]
# on two axes:
#
# * `hh_helpful`: does the reply engage and help (advice, "you could …"), or refuse, dismiss
#   or insult?
# * `hh_harmless`: is it free of insults and of dangerous or unlawful how-to?
#
# An evasive "I can't help with that." is harmless but not helpful. The environment's own
# gold score (`helpful_harmless`) combines the two.
#
# The constitution is a TOML file of principles. Each principle has a **critique request**
# (what to look for in a reply), a **revision request** (how to rewrite it) and a
# **comparison** question (answered with (A) or (B) when labeling pairs). Here is the default
# one, written for this project:

# %%
constitution = load_constitution()  # rlhf_gym/cai/constitution.toml
print(f"{constitution.name}: {len(constitution.principles)} principles\n")
for p in constitution.principles:
    print(
        f"[{p.name}]\n  critique:   {p.critique_request}\n  revision:   {p.revision_request}\n  comparison: {p.comparison}"
    )

# %% [markdown]
# Note the principle `evasion`: the constitution itself asks for refusals that explain
# themselves and offer a safe way to help. That is where RL-CAI's helpfulness will come from.
#
# ## 2. SL-CAI: critique, revise, fine-tune
#
# `revise` takes red-team prompts from the task's training set and, for each, samples an
# initial reply, draws a principle at random, samples a critique of the reply under it, and
# samples a revision. Every step is kept in a JSONL file a person can read; the gold labeler
# scores the initial reply and the revision (for our information only: the model never sees
# these scores). The embedded assistant learned the critique and revision formats from
# demonstrations; no demonstration uses a held-out request.

# %%
rev_file = TMP / "revisions.jsonl"
rev = revise(
    ReviseConfig(out=str(rev_file), num_prompts=REVISIONS, device="cpu"), log=lambda msg: None
)
print(
    f"{rev['prompts']} prompts revised with {rev['model_calls']['generations']} sampled sequences"
)
print(
    f"gold score (helpful_harmless): initial reply {rev['gold_initial']:+.3f}, "
    f"revision {rev['gold_revision']:+.3f}; revision better on {100 * rev['improved_fraction']:.0f}% of prompts"
)

records = [json.loads(line) for line in rev_file.read_text().splitlines()]
for r in records[:3]:
    step = r["rounds"][0]
    print(f"\n{r['prompt']}\n  initial   ({r['gold_initial']:+.2f}):{r['initial']}")
    print(f"  principle: {step['principle']}\n  critique:  {step['critique']}")
    print(f"  revision  ({r['gold_revision']:+.2f}):{r['revision']}")

# %% [markdown]
# The revisions are samples of a 0.94M-parameter model, so they are not all good: some keep
# a broken word, and the gold score beside each shows how much (or whether) it improved on
# the initial reply. On average, though, they are much better (the
# summary line above), and that average is what fine-tuning learns from.
#
# The **SL-CAI** model is the assistant fine-tuned on (prompt, final revision) pairs, with the
# loss on the response tokens only (`run_sft`, the command `rlhf-gym sft`). It learns to reply
# the way its own revisions read. With a few dozen revisions, even with two passes over them
# (`epochs=2`; the command's default is one), this is a handful of optimiser steps, so expect
# a small change.

# %%
sl_cai = str(TMP / "sl_cai")
sft = run_sft(SFTConfig(data=str(rev_file), out=sl_cai, epochs=2, device="cpu"), quiet=True)
print(
    f"SL-CAI: {sft.steps} steps on {sft.train_records} revisions; held-out loss "
    f"{sft.initial_heldout_loss:.3f} → {sft.final_heldout_loss:.3f}"
)

# %% [markdown]
# ## 3. RL-CAI: AI labels → reward model → PPO
#
# `label` samples two replies of the SL-CAI model per training prompt and shows both to the
# **feedback model** (here the assistant itself) under a random principle's comparison
# question, ending in `The answer is:`. The model's probabilities of ` (A)` and ` (B)`,
# renormalised to sum to one, give a **soft label** p_a, the probability that reply A is the
# better one. The two replies are shown in a random order, and p_a always refers to the reply,
# not the letter, so a feedback model that likes the letter (A) (**position bias**) adds noise,
# not a systematic preference.

# %%
ai_file = TMP / "ai_prefs.jsonl"
ai = label(
    AILabelConfig(policy=sl_cai, out=str(ai_file), num_pairs=AI_PAIRS, device="cpu"),
    log=lambda msg: None,
)
print(
    f"{ai['pairs']} AI-labeled pairs; mean confidence max(p_a, 1 - p_a) {ai['mean_confidence']:.3f}; "
    f"mean P((A)) {ai['position_bias']:.3f} (0.5: no position bias)"
)
print(
    f"the AI labels agree with the gold labeler (helpful_harmless) on {ai['agreement_with_gold']:.3f} of {ai['gold_decided_pairs']} pairs"
)
rec = read_preferences(ai_file).records[0]
print(f"\nexample, principle '{rec.meta['principle']}', shown {rec.meta['shown']}:\n{rec.prompt}")
print(f"  A:{rec.response_a}\n  B:{rec.response_b}\n  p_a = {rec.p_a:.3f}")

# %% [markdown]
# Only the agreement line uses the gold labeler, to grade the labels; the labels themselves
# come from the feedback model alone. Next, a reward model trained on these soft labels with
# the Bradley–Terry loss (notebook 2), exactly as `rlhf-gym reward train --task
# helpful_harmless --policy SL-CAI` does: it starts from the assistant's transformer, and its
# scores are normalised to mean 0 and standard deviation 1 on samples of the SL-CAI model,
# where RL will start. To save time we stop it after `RM_STEPS` optimiser steps of 32 pairs
# (the command's default is two epochs and at least 100 steps), and we hide the command's
# progress bar and messages.


# %%
def reward_model(data: Path, out: str, policy: str | None = None) -> dict:
    """``rlhf-gym reward train --data DATA --out OUT --task helpful_harmless [--policy P]``."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return train_command(
            TrainCommand(
                data=str(data),
                out=out,
                task=TASK,
                policy=policy,
                norm_samples=NORM_SAMPLES,
                logdir=str(TMP / "runs"),
            ),
            RewardTrainConfig(max_steps=RM_STEPS, seed=0),
        )


rm_cai = str(TMP / "rm_cai")
s = reward_model(ai_file, rm_cai, policy=sl_cai)["result"]
print(
    f"RL-CAI reward model: {s['steps']} steps on {s['train_pairs']} pairs; accuracy on its "
    f"{s['heldout_pairs']} held-out AI labels {s['heldout']['accuracy']:.3f}"
)

# %% [markdown]
# RL-CAI is PPO from the SL-CAI model against this reward model. `model=` is both the starting
# policy and the **reference** of the KL penalty, so the policy is kept close to SL-CAI, as in
# the paper. `train` also measures the policy before and after on a few held-out episodes;
# we make that tiny (`eval_episodes=8`) and measure every policy the same way in section 5.
# This is the longest step of the notebook.


# %%
def ppo(model: str, rm: str) -> str:
    """PPO on the helpful-harmless task; the final policy's directory."""
    cfg = PPOConfig(
        env_id=ENV,
        model=model,
        reward_model=rm,
        total_episodes=PPO_EPISODES,
        num_envs=NUM_ENVS,
        device="cpu",
        checkpoint_every=0,
        seed=0,
    )
    summary = train("ppo", cfg, logdir=TMP / "runs", eval_episodes=8, quiet=True)
    return str(Path(summary["checkpoint"]) / "policy")


t0 = time.perf_counter()
rl_cai = ppo(sl_cai, rm_cai)
print(f"RL-CAI: PPO on {PPO_EPISODES} episodes in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# ## 4. The baseline: RLHF on human harmlessness labels
#
# The paper's comparison is RLHF on labels from people who were asked which reply is *less
# harmful*. Our simulated people (notebook 2) judge with the gold labeler `hh_harmless` only,
# with Bradley–Terry noise at T = 0.1, on pairs of the assistant's own replies; the reward
# model and PPO are the same as above, starting from the assistant.

# %%
human_file = TMP / "human_harmless.jsonl"
simulate(
    SimulateConfig(out=str(human_file), task=TASK, gold="hh_harmless", pairs=HUMAN_PAIRS, seed=0)
)
rm_human = str(TMP / "rm_human")
s = reward_model(human_file, rm_human)["result"]
print(
    f"harmlessness reward model: {s['steps']} steps on {s['train_pairs']} human labels; "
    f"held-out accuracy {s['heldout']['accuracy']:.3f}"
)
t0 = time.perf_counter()
rlhf = ppo("assistant", rm_human)
print(f"RLHF: PPO on {PPO_EPISODES} episodes in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# ## 5. Helpfulness against harmlessness
#
# Each policy answers the same held-out requests (`helpful_harmless-eval`, never used for
# training or in the assistant's demonstrations), one sampled reply each; the two gold
# labelers score every reply. KL is the exact sequence KL from the assistant (the common
# starting point), in nats.

# %%
policies = {
    "reference (the assistant)": (None, 0),
    "SL-CAI": (sl_cai, 0),
    "RL-CAI": (rl_cai, 0),
    "RLHF on harmlessness labels": (rlhf, HUMAN_PAIRS),
}
results = {}
for name, (policy, humans) in policies.items():
    ev = evaluate(
        ENV,
        policy,
        episodes=EVAL_EPISODES,
        n_samples=EVAL_EPISODES,
        prompts=f"{TASK}-eval",
        device="cpu",
    )
    helpful = np.array([GOLD_LABELERS["hh_helpful"](p, r) for p, r, _ in ev.samples])
    harmless = np.array([GOLD_LABELERS["hh_harmless"](p, r) for p, r, _ in ev.samples])
    results[name] = {
        "humans": humans,
        "helpful": helpful,
        "harmless": harmless,
        "gold": np.array(ev.gold_scores),
        "kl": np.mean(ev.kls),
        "length": np.mean(ev.lengths),
        "samples": ev.samples,
    }

print(
    f"{'policy':<29}{'human labels':>13}{'helpful':>9}{'harmless':>10}{'combined':>10}{'KL':>7}{'length':>8}"
)
for name, r in results.items():
    print(
        f"{name:<29}{r['humans']:>13}{r['helpful'].mean():>+9.3f}{r['harmless'].mean():>+10.3f}"
        f"{r['gold'].mean():>+10.3f}{r['kl']:>7.2f}{r['length']:>8.1f}"
    )
print(
    f"({EVAL_EPISODES} held-out episodes each; standard error of a mean about "
    f"±{max(r['helpful'].std() for r in results.values()) / np.sqrt(EVAL_EPISODES):.2f})"
)

# %% [markdown]
# The figure is the CAI paper's plot in miniature: harmlessness up, helpfulness to the right.
# Filled markers are this notebook's run (with ± one standard error); hollow markers are the
# README's bigger run of the same pipeline (`benchmarks/cai.py`: 256 revisions, 2,048 AI and
# 2,048 human labels, 4,096 PPO episodes per run, 512 evaluation episodes; its numbers are read
# from `benchmarks/results/cai.json`, not computed here).

# %%
readme_file = Path("..") / "benchmarks" / "results" / "cai.json"
readme = (
    {o["policy"]: o for o in json.loads(readme_file.read_text())["outcomes"]}
    if readme_file.is_file()
    else {}
)
readme_names = {
    "reference (the assistant)": "reference",
    "SL-CAI": "SL-CAI",
    "RL-CAI": "RL-CAI",
    "RLHF on harmlessness labels": "RLHF (harmlessness labels)",
}
fig, ax = plt.subplots(figsize=(7, 5))
for i, (name, r) in enumerate(results.items()):
    se = lambda v: v.std() / np.sqrt(len(v))  # noqa: E731
    ax.errorbar(
        r["helpful"].mean(),
        r["harmless"].mean(),
        xerr=se(r["helpful"]),
        yerr=se(r["harmless"]),
        fmt="o",
        ms=9,
        color=f"C{i}",
        label=name,
    )
    big = readme.get(readme_names[name])
    if big:
        ax.plot(big["helpful"], big["harmless"], "o", ms=11, mfc="none", color=f"C{i}")
ax.plot([], [], "o", ms=11, mfc="none", color="grey", label="the README's bigger run")
names = list(results)
for start, end in ((0, 1), (1, 2), (0, 3)):  # reference → SL-CAI → RL-CAI, reference → RLHF
    a, b = results[names[start]], results[names[end]]
    ax.annotate(
        "",
        xy=(b["helpful"].mean(), b["harmless"].mean()),
        xytext=(a["helpful"].mean(), a["harmless"].mean()),
        arrowprops={"arrowstyle": "->", "color": f"C{end}", "alpha": 0.5},
    )
ax.set_xlabel("helpfulness (gold hh_helpful, held-out prompts)")
ax.set_ylabel("harmlessness (gold hh_harmless)")
ax.set_title("Helpfulness vs harmlessness")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# How to read the table and the figure:
#
# * **RLHF on harmlessness labels** moves up (more harmless) and to the *left* (less helpful),
#   and its replies are the shortest in the table: the people it learned from rewarded
#   harmlessness alone, and the cheapest harmless reply is a short refusal. This is the
#   evasiveness the CAI paper set out to fix.
# * **RL-CAI** used no human label at all. It moves up *and* to the right: the constitution's
#   comparisons (kinder, safer, but also "more helpful while staying safe") rewarded
#   replies that refuse the harm and still help. Compare its harmlessness with the RLHF
#   policy's in the table: the refusals bought the RLHF policy little or no extra safety.
# * **SL-CAI** sits between the reference and RL-CAI; with only a few dozen revisions and a
#   handful of fine-tuning steps it moves less than in the bigger run.
#
# Compare the filled markers with the hollow ones. The README's table comes from that bigger
# run: its PPO runs alone had more than ten times our episodes. Our budgets are set in the
# first code cell, small enough for the whole notebook to run in about three minutes on a
# laptop CPU. With them the policies move in the same directions as in the bigger run, by
# different amounts; and with one seed and a hundred or so evaluation episodes per policy,
# each mean has a standard error of a few hundredths (the last line of the table), so read
# differences smaller than about 0.1 as noise. Two caveats from the README apply to both
# runs: the assistant's (A)/(B) judgments were learned from demonstrations the gold labeler
# judged, so its labels are a distilled gold labeler (as a real feedback model distils what
# its pretraining saw), and RL-CAI starts from SL-CAI, not from the reference.
#
# One reply of each policy to the same held-out request:

# %%
for name, r in results.items():
    prompt, response, _ = r["samples"][0]
    print(
        f"{name:<29}{response!r}   helpful {r['helpful'][0]:+.2f}, harmless {r['harmless'][0]:+.2f}"
    )
print(f"\n(the request: {prompt!r})")
print(f"\nnotebook run time: {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## Exercises
#
# **1. Position bias.** The meta of every AI label keeps `shown` (`ab` or `ba`) and
# `p_option_a`, the raw probability the feedback model gave to the letter (A). Compute the mean
# of `p_option_a` over the AI-labeled pairs, and the mean p_a separately for pairs shown `ab`
# and `ba`. Is the feedback model biased towards a letter?
#
# <details><summary>Solution</summary>
#
# ```python
# recs = read_preferences(ai_file).records
# print("mean P((A)):", np.mean([r.meta["p_option_a"] for r in recs]))
# for shown in ("ab", "ba"):
#     print(shown, np.mean([r.p_a for r in recs if r.meta["shown"] == shown]))
# ```
#
# A mean P((A)) of 0.5 means no preference for the letter. Because the order is random per
# pair, a bias would show as a difference between the `ab` and `ba` means of p_a; it would
# add noise to the labels, not a preference for either reply.
# </details>
#
# **2. Your own constitution.** Write a constitution with a single principle that asks only
# "Which reply is less harmful?" and label the same number of pairs with it. Do the AI labels
# agree more or less with `hh_helpful` than with the default constitution?
#
# <details><summary>Solution</summary>
#
# ```python
# toml = TMP / "harm_only.toml"
# toml.write_text('''name = "harm only"
# [[principle]]
# name = "harm"
# critique_request = "Point out anything in the reply that could hurt the person or anyone else."
# revision_request = "Rewrite the reply so that it hurts no one and still helps the person."
# comparison = "Which reply is less harmful?"
# ''')
# for const in (None, str(toml)):
#     out = TMP / f"labels_{'default' if const is None else 'harm'}.jsonl"
#     label(AILabelConfig(policy=sl_cai, out=str(out), num_pairs=AI_PAIRS, constitution=const,
#                         gold="hh_helpful", device="cpu"), log=lambda msg: None)
#     recs = read_preferences(out).records
#     agree = [(r.p_a > 0.5) == (r.meta["gold_a"] > r.meta["gold_b"])
#              for r in recs if r.meta["gold_a"] != r.meta["gold_b"]]
#     print(const or "default", "agreement with hh_helpful:", np.mean(agree))
# ```
#
# With only the harm question, the labels reward whatever looks harmless, refusals included,
# so they should agree less with helpfulness: the same pressure that made the RLHF baseline
# evasive. (The assistant was trained on demonstrations of the default principles; a single
# principle of them is still in its repertoire.)
# </details>
#
# **3. RLHF on both axes.** The README's table has a fifth row: RLHF on simulated human labels
# of the combined gold (`gold="helpful_harmless"`, the default of the task). Add it with the
# same budgets and place it on the figure. Where does it land relative to RL-CAI?
#
# <details><summary>Solution</summary>
#
# ```python
# both_file = TMP / "human_both.jsonl"
# simulate(SimulateConfig(out=str(both_file), task=TASK, pairs=HUMAN_PAIRS, seed=0))
# rm_both = str(TMP / "rm_both")
# reward_model(both_file, rm_both)
# rlhf_both = ppo("assistant", rm_both)
# ev = evaluate(ENV, rlhf_both, episodes=EVAL_EPISODES, n_samples=EVAL_EPISODES,
#               prompts=f"{TASK}-eval", device="cpu")
# print("helpful", np.mean([GOLD_LABELERS["hh_helpful"](p, r) for p, r, _ in ev.samples]),
#       "harmless", np.mean([GOLD_LABELERS["hh_harmless"](p, r) for p, r, _ in ev.samples]))
# ```
#
# People who judge both axes do not teach refusals, so this policy is more helpful than the
# harmlessness-only one; in the README's run it is less harmless and less helpful than RL-CAI
# at the same number of labels. It needed those human labels; RL-CAI needed none.
# </details>
