# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 · RLHF as a Markov decision process
#
# Reinforcement learning from human feedback (RLHF) fine-tunes a language model so that a
# *reward model* likes its answers, while a penalty keeps it close to the model it started
# from. This notebook shows that this is an ordinary reinforcement-learning problem, with an
# environment you can step through by hand, like CartPole.
#
# After this notebook you will be able to:
#
# * name the state, the action, the transition and the reward of RLHF, and find each of them in
#   `gym.make("RLHF-v0")`;
# * step an episode by hand, decode the state at every step and read the `info` dictionary;
# * read the reference model's next-token distribution at a state;
# * say what the per-token KL term of the reward is, and how the three estimators `k1`, `k3`
#   and `full` differ on the same episode and on average.
#
# Everything runs offline on a CPU: the package ships a tiny language model (0.94 M
# parameters) and a reward model trained for this course.

# %%
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, in a plain kernel

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from transformers.utils import logging as hf_logging

import rlhf_gym  # noqa: F401  (registers RLHF-v0 and the other environment ids)
from rlhf_gym.envs import LMPolicy, ReferencePolicy

SMOKE = os.environ.get("RLHF_GYM_SMOKE") == "1"  # CI: tiny budgets, the same code path
EPISODES_PER_ESTIMATOR = 32 if SMOKE else 512  # the averages at the end of the notebook

torch.set_num_threads(1)  # the models are tiny: one thread is fastest
hf_logging.disable_progress_bar()  # no "Loading weights" bars

# %% [markdown]
# ## 1. The context window is the environment
#
# | RL term | in RLHF |
# |---|---|
# | **policy** π(a \| s) | the language model being trained: a distribution over the next token |
# | **state** s_t | the prompt plus the tokens generated so far (the context window) |
# | **action** a_t | the next token: an integer in `0 … V−1`, V the vocabulary size |
# | **transition** | deterministic: s_{t+1} = s_t followed by a_t |
# | **episode end** | the end-of-sequence token (EOS) or `max_new_tokens` tokens |
# | **reward** r_t | at the last step, the reward model's *score* of the response; at every step, minus a KL penalty (section 4) |
#
# Two more models take part. The **reward model** reads the finished text and returns a
# number (here: how positive a movie-review continuation is). The **reference** π_ref is a
# frozen copy of the language model as it was before training; the KL penalty measures how
# far the policy has moved from it.
#
# `gym.make("RLHF-v0")` builds all of this from the embedded models. The action space is
# `Discrete(V)`; an observation is a dictionary of two fixed-length integer arrays: the token
# ids (`input_ids`, right-padded) and a mask that marks the real tokens (`attention_mask`).

# %%
env = gym.make("RLHF-v0")
u = env.unwrapped  # the environment's public surface: tokenizer, reference_logits, set_policy …
tok = u.tokenizer
print("action space:     ", env.action_space)
print("observation space:", env.observation_space)
print("vocabulary size V:", u.vocab_size, "  EOS id:", u.eos_token_id, repr(tok.decode([u.eos_token_id])))
print("max_new_tokens:   ", u.max_new_tokens, "  max_prompt_tokens:", u.max_prompt_tokens)
print("KL coefficient β: ", u.kl_coef, "  reward form:", u.reward_form)

# %% [markdown]
# The observation length is `max_prompt_tokens + max_new_tokens`: room for the longest prompt
# plus the longest response.
#
# ## 2. An episode, step by step
#
# `reset(seed=...)` draws a prompt; the state is then the prompt's tokens. A small helper
# decodes a state: keep the positions the mask marks, turn the ids back into text.

# %%
def decode_state(obs):
    """The text of a state: the real tokens of the observation, decoded."""
    n = int(obs["attention_mask"].sum())
    return tok.decode(obs["input_ids"][:n])


obs, info = env.reset(seed=0)
print("info at reset:", info)
print("state s_0:    ", repr(decode_state(obs)))
print("first 8 ids:  ", obs["input_ids"][:8], " mask:", obs["attention_mask"][:8])

# %% [markdown]
# To act we need a policy. Before any training the policy *is* the reference, so we wrap the
# reference model in `LMPolicy` (it samples a token from the model's next-token distribution
# and keeps its own cache of past computations). We also **attach** it to the environment with
# `set_policy`: `step(action)` receives only a token id, but the KL penalty needs the policy's
# whole distribution at the state, so the environment asks the attached policy for it.
#
# Each row below is one call to `env.step(action)`: the token chosen, the new state, the reward
# and the per-step `info`.

# %%
policy = LMPolicy(u.reference_model, seed=0)
u.set_policy(policy)
obs, info = env.reset(seed=0)
print(f"{'t':>2}  {'action':>6}  {'token':<12} {'reward':>7}  state s_(t+1)")
for t in range(5):
    action = policy.act(obs)
    obs, reward, terminated, truncated, info = env.step(action)
    print(f"{t:>2}  {int(action):>6}  {tok.decode([int(action)])!r:<12} {reward:>+7.3f}  {decode_state(obs)!r}")
print("\nper-step info:", info)

# %% [markdown]
# Every step's `info` holds `kl` (this step's KL estimate), `ref_logprob` (log π_ref of the
# chosen token), and the coefficient and reward form in force. The rewards are 0 so far: the
# acting policy is the reference, so every KL estimate is 0, and the score comes only at the
# end. Let us play to the end of the episode.

# %%
while not terminated:
    obs, reward, terminated, truncated, info = env.step(policy.act(obs))
print("terminated:", terminated, " truncated:", truncated, " last reward:", round(reward, 4))
for key, value in info.items():
    print(f"  {key:<18} {value!r}")

# %% [markdown]
# At the last step `info` adds the reward model's `score` (which is also the last reward, minus
# β times the last KL estimate, here 0), the decoded `prompt_text` and `response_text`,
# `kl_sum` (the sum of the episode's per-step `kl`), `response_length` (tokens, EOS included)
# and `gold_score`: the score of a *gold labeler*, a fixed program that stands in for a person
# and that the reward model was trained to imitate. The reward model is only a proxy for it;
# notebook 03 shows what happens when the two disagree.
#
# ## 3. The reference's next-token distribution
#
# At every state the environment keeps the reference's next-token **logits** (unnormalised
# log-probabilities, one per vocabulary entry) in `env.unwrapped.reference_logits`, shape
# `(1, V)`. A softmax turns them into π_ref(· | s). Here are the most likely next tokens after
# the prompt, and after the prompt plus the first two generated tokens.

# %%
def top_tokens(k=12):
    """The k most likely next tokens under the reference at the current state."""
    probs = torch.softmax(u.reference_logits[0], dim=-1)
    p, ids = probs.topk(k)
    return [repr(tok.decode([i])) for i in ids.tolist()], p.numpy(), float(probs.sum())


obs, _ = env.reset(seed=0)
states = [decode_state(obs)]
tops = [top_tokens()]
for _ in range(2):
    obs, *_ = env.step(policy.act(obs))
states.append(decode_state(obs))
tops.append(top_tokens())

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, state, (labels, p, total) in zip(axes, states, tops):
    ax.barh(labels[::-1], p[::-1], color="C0")
    ax.set(xlabel="π_ref(next token | s)", title=f"after {state!r}")
    ax.grid(axis="x", alpha=0.3)
fig.suptitle("The reference's most likely next tokens (tokens shown with their leading space)")
fig.tight_layout()
plt.show()
print("probability mass of the 12 tokens shown:", [round(float(p.sum()), 3) for _, p, _ in tops])

# %% [markdown]
# Sampling from this distribution is what `LMPolicy.act` does at temperature 1. A trained policy
# would move probability toward the tokens that lead to a high score; the KL penalty charges it
# for every bit it moves.
#
# ## 4. The KL term, per token
#
# With β = `kl_coef` (0.05 by default) the reward of step t is
#
# $$ r_t = \text{score}\cdot[t\text{ is the last step}] \;-\; \beta\,\mathrm{KL}_t,
# \qquad \mathrm{KL}_t \approx \mathrm{KL}\big(\pi(\cdot\mid s_t)\,\|\,\pi_{\text{ref}}(\cdot\mid s_t)\big)
# = \sum_a \pi(a\mid s_t)\,\log\frac{\pi(a\mid s_t)}{\pi_{\text{ref}}(a\mid s_t)} .$$
#
# The Kullback–Leibler divergence (KL) is 0 when the two distributions are equal and positive
# otherwise. Summed over the steps of an episode it is the KL between the policy's and the
# reference's distributions over whole responses (nats per response), so the return is
# score − β·(sequence KL). The environment offers three per-token estimates (`kl_estimator=`),
# with a_t the sampled token:
#
# * `k1` = log π(a_t | s_t) − log π_ref(a_t | s_t): unbiased (its average over a_t ~ π is the
#   exact KL) but one sample can be **negative**, whenever the sampled token is less likely
#   under the policy than under the reference;
# * `k3` = (ρ − 1) − log ρ with ρ = π_ref(a_t | s_t) / π(a_t | s_t): also unbiased, and never
#   negative, because x − 1 ≥ log x for every x > 0;
# * `full`: the exact sum over the whole vocabulary (affordable here because the environment
#   has both distributions anyway).
#
# To see them differ we need a policy that is *not* the reference. The simplest one is the
# reference at temperature 0.7: `ReferencePolicy(env, temperature=0.7)` divides the reference's
# logits by 0.7 (a sharper distribution) and samples from that. First, the exact KL at the first
# state, computed by hand from the two sets of logits, next to what the environment reports
# with `kl_estimator="full"`:

# %%
env_full = gym.make("RLHF-v0", kl_estimator="full")
sharp = ReferencePolicy(env_full.unwrapped, temperature=0.7, seed=0)
env_full.unwrapped.set_policy(sharp)
obs, _ = env_full.reset(seed=1)
log_pi = torch.log_softmax(sharp.action_logits(obs)[0], dim=-1)
log_ref = torch.log_softmax(env_full.unwrapped.reference_logits[0], dim=-1)
by_hand = float((log_pi.exp() * (log_pi - log_ref)).sum())
_, _, _, _, info = env_full.step(sharp.act(obs))
print(f"KL(π ‖ π_ref) at s_0 by hand: {by_hand:.6f}   the env's info['kl'] (full): {info['kl']:.6f}")

# %% [markdown]
# Now one episode, played three times with the same seed and the same actions, once per
# estimator. The first run samples the tokens; the other two replay them, so the three differ
# only in how the KL of each token is estimated.

# %%
def play(estimator, actions=None, seed=6):
    """One episode with the temperature-0.7 policy; replays ``actions`` if given.
    Returns the per-token KL estimates, the actions and the final info."""
    e = gym.make("RLHF-v0", kl_estimator=estimator)
    pol = ReferencePolicy(e.unwrapped, temperature=0.7, seed=seed)
    e.unwrapped.set_policy(pol)  # the env reads π from it for the KL term
    obs, _ = e.reset(seed=seed)
    kls, taken, done = [], [], False
    while not done:
        a = pol.act(obs) if actions is None else actions[len(taken)]
        obs, _, done, _, info = e.step(a)
        kls.append(info["kl"])
        taken.append(int(a))
    e.close()
    return np.array(kls), taken, info


per_token, final = {}, {}
per_token["k1"], actions, final["k1"] = play("k1")
for est in ("k3", "full"):
    per_token[est], replayed, final[est] = play(est, actions)
    assert replayed == actions and final[est]["response_text"] == final["k1"]["response_text"]

print("response:", repr(final["k1"]["prompt_text"] + "|" + final["k1"]["response_text"]))
for est in ("k1", "k3", "full"):
    kl = per_token[est]
    print(f"{est:>4}: sum {kl.sum():+.3f} (info['kl_sum'] {final[est]['kl_sum']:+.3f}),"
          f" min per token {kl.min():+.4f}, negative tokens: {int((kl < 0).sum())}")

# %%
steps = np.arange(len(actions))
width = 0.28
fig, ax = plt.subplots(figsize=(12, 4))
for k, est in enumerate(("k1", "k3", "full")):
    ax.bar(steps + (k - 1) * width, per_token[est], width, label=f"{est} (sum {per_token[est].sum():.2f})")
ax.axhline(0, color="black", lw=0.8)
ax.set_xticks(steps, [repr(tok.decode([a])) for a in actions], rotation=70, fontsize=8)
ax.set(ylabel="KL estimate of the token (nats)", xlabel="the sampled token a_t",
       title="One episode, three KL estimators: π = reference at temperature 0.7")
ax.legend()
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the figure token by token. Where the sampled token is one the sharpened policy likes more
# than the reference does (the usual case at temperature 0.7), `k1` is positive; where the
# policy sampled a token it likes *less* than the reference, `k1` is negative (the printout
# above counts these tokens, and in this episode they pull the whole `k1` sum below 0). `k3` is
# never below 0. `full` does not depend on the sampled token at all: it is the exact KL of the
# state.
#
# On one episode the three sums differ. "Unbiased" is a statement about averages over the
# sampled token: at a state s, Σ_a π(a|s)·k1(a) and Σ_a π(a|s)·k3(a) both equal the exact KL.
# We can check that exactly, by summing over the whole vocabulary at one state of the episode
# above (the state where the exact KL is largest):

# %%
t_max = int(per_token["full"].argmax())
e = gym.make("RLHF-v0")
pol = ReferencePolicy(e.unwrapped, temperature=0.7, seed=6)
e.unwrapped.set_policy(pol)
obs, _ = e.reset(seed=6)
for a in actions[:t_max]:  # replay the episode up to that state
    obs, *_ = e.step(a)
log_pi = torch.log_softmax(pol.action_logits(obs)[0].double(), dim=-1)
log_ref = torch.log_softmax(e.unwrapped.reference_logits[0].double(), dim=-1)
pi = log_pi.exp()
k1_every_token = log_pi - log_ref  # k1 of every possible next token
rho = (log_ref - log_pi).exp()
k3_every_token = (rho - 1) - torch.log(rho)  # k3 of every possible next token
print(f"state: {decode_state(obs)!r}")
print(f"the env's full KL here     {per_token['full'][t_max]:.6f}")
print(f"Σ_a π(a)·k1(a)             {float((pi * k1_every_token).sum()):.6f}")
print(f"Σ_a π(a)·k3(a)             {float((pi * k3_every_token).sum()):.6f}")
print(f"k1 ranges over [{float(k1_every_token.min()):+.2f}, {float(k1_every_token.max()):+.2f}],"
      f" k3 over [{float(k3_every_token.min()):.2f}, {float(k3_every_token.max()):.3g}]")
rare = pi < 1e-3
print(f"tokens with π(a) < 0.001: {int(rare.sum())} of {len(pi)}, total π {float(pi[rare].sum()):.4f};"
      f" their share of Σ_a π(a)·k3(a): {float((pi * k3_every_token)[rare].sum() / (pi * k3_every_token).sum()):.2f}")
e.close()

# %% [markdown]
# Both sums equal the exact KL that the environment computed at this step (float32 there,
# float64 here). The last line is the catch: the tokens the policy almost never samples carry a
# share of the expectation of `k3` many times larger than their probability (their
# ρ = π_ref/π is huge), and the same tokens carry the large negative values of `k1`. A finite sample usually misses them, so on a modest number of
# episodes the averages of `k1` and `k3` converge slowly and jump when a rare token is drawn.
#
# Now the averages over many episodes drawn from π. The vector environment,
# `gym.make_vec("RLHF-v0", num_envs=B)`, plays B episodes side by side. The same seed gives the
# same episodes for the three estimators, so the comparison is paired: the column "paired
# difference" is the mean of (estimator − `full`) per episode, in units of its standard error.

# %%
def sequence_kls(estimator, episodes=EPISODES_PER_ESTIMATOR, batch=64, seed=100):
    """Per-episode KL sums and all per-token estimates of the temperature-0.7 policy."""
    batch = min(batch, episodes)
    envs = gym.make_vec("RLHF-v0", num_envs=batch, kl_estimator=estimator)
    sums, tokens = [], []
    for start in range(0, episodes, batch):
        pol = ReferencePolicy(envs.unwrapped, temperature=0.7, seed=seed + start)
        envs.unwrapped.set_policy(pol)
        obs, _ = envs.reset(seed=seed + start)
        done = np.zeros(batch, dtype=bool)
        while not done.all():  # play until every row has finished its first episode
            obs, _, terminated, _, info = envs.step(pol.act(obs))
            tokens.extend(info["kl"][~done])
            if terminated.any():
                sums.extend(info["kl_sum"][terminated & ~done])
            done |= terminated
    envs.close()
    return np.array(sums), np.array(tokens)


results = {est: sequence_kls(est) for est in ("k1", "k3", "full")}
assert len({len(tokens) for _, tokens in results.values()}) == 1  # the same tokens, three estimates
n = EPISODES_PER_ESTIMATOR
print(f"{n} episodes per estimator (the same episodes for all three)")
print(f"{'':>5} {'mean sequence KL':>17} {'± s.e.':>7} {'std':>6} {'min token':>10} {'max token':>10}"
      f" {'paired difference':>18}")
for est, (sums, tokens) in results.items():
    diff = sums - results["full"][0]
    z = diff.mean() / (diff.std(ddof=1) / np.sqrt(n)) if est != "full" else 0.0
    print(f"{est:>5} {sums.mean():>17.3f} {sums.std(ddof=1) / np.sqrt(n):>7.3f} {sums.std(ddof=1):>6.3f}"
          f" {tokens.min():>+10.3f} {tokens.max():>+10.3f} {diff.mean():>+10.3f} ({z:+.1f} s.e.)")

# %%
fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(12, 4))
bins = np.linspace(-2.5, 2.5, 51)
for est, (_, tokens) in results.items():
    ax_a.hist(np.clip(tokens, bins[0], bins[-1]), bins=bins, histtype="step", lw=1.5, label=est)
ax_a.axvline(0, color="black", lw=0.8)
ax_a.set(yscale="log", xlabel="per-token KL estimate (nats; clipped to [−2.5, 2.5])",
         ylabel="tokens", title="(a) per-token estimates")
ax_a.legend()
episodes = np.arange(1, n + 1)
for est, (sums, _) in results.items():
    ax_b.plot(episodes, np.cumsum(sums) / episodes, label=est)
ax_b.set(xscale="log", xlabel="episodes", ylabel="running mean of the sequence KL (nats)",
         title="(b) the averages as episodes accumulate")
ax_b.legend()
for ax in (ax_a, ax_b):
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# Panel (a): `k1` spreads on both sides of 0, `k3` and `full` stay at or above it, and both
# sampled estimators have long tails. Panel (b): `full` moves least, while the running
# means of `k1` and `k3` drift and jump when a rare token comes up. The "paired difference"
# column of the table says how far each still is from `full` after all the episodes, in
# standard errors. For well-behaved data a value beyond about ±2 would be a surprise. Here it is
# not evidence of a bias (the exact sums over the vocabulary above show there is none) but of
# the heavy tails: the rare tokens that carry the expectation are also missing from the
# estimate of the standard error, so both the mean and its error bar converge slowly. Change
# the seed or the number of episodes and watch the column move. The spread across episodes
# (`std`) is the price of estimating the KL from one sampled token, and what makes a KL penalty
# noisy in training. `k1` is the default of the environment and of the agents; `full` is what
# `rlhf_gym.evaluate.evaluate` reports as the KL of a trained policy.
#
# ## Summary
#
# * RLHF is an MDP: the state is the context window, the action the next token, the
#   transition appends it, and the episode ends at EOS or after `max_new_tokens` tokens.
# * The reward is the reward model's score at the last step minus β times a per-token KL
#   estimate at every step; the environment needs the acting policy (`set_policy`) to compute
#   that KL.
# * `k1`, `k3` and `full` agree on average; they differ in sign and spread per token.
#
# ## Exercises
#
# **1.** With the reference itself as the policy (`ReferencePolicy(env.unwrapped,
# temperature=1.0)`), what are the three estimators on every token? Check it on one episode.
#
# <details><summary>Solution</summary>
#
# All three are exactly 0: π = π_ref, so log π − log π_ref = 0 for every token, ρ = 1 gives
# (1 − 1) − log 1 = 0, and the KL of a distribution from itself is 0.
#
# ```python
# for est in ("k1", "k3", "full"):
#     e = gym.make("RLHF-v0", kl_estimator=est)
#     pol = ReferencePolicy(e.unwrapped, temperature=1.0, seed=0)
#     e.unwrapped.set_policy(pol)
#     obs, _ = e.reset(seed=0)
#     done, kls = False, []
#     while not done:
#         obs, _, done, _, info = e.step(pol.act(obs))
#         kls.append(info["kl"])
#     print(est, max(abs(k) for k in kls))
# ```
# </details>
#
# **2.** Recompute `k1` and `k3` of one step by hand from the logits, and compare them with
# `info["kl"]`.
#
# <details><summary>Solution</summary>
#
# Before stepping, read both distributions at the state; `info["ref_logprob"]` after the step
# is log π_ref of the chosen token, a second check.
#
# ```python
# e = gym.make("RLHF-v0", kl_estimator="k3")
# pol = ReferencePolicy(e.unwrapped, temperature=0.7, seed=0)
# e.unwrapped.set_policy(pol)
# obs, _ = e.reset(seed=0)
# log_pi = torch.log_softmax(pol.action_logits(obs)[0], -1)
# log_ref = torch.log_softmax(e.unwrapped.reference_logits[0], -1)
# a = int(pol.act(obs))
# _, _, _, _, info = e.step(a)
# k1 = float(log_pi[a] - log_ref[a])
# rho = float((log_ref[a] - log_pi[a]).exp())
# print("k1", k1, " k3 by hand", (rho - 1) - np.log(rho), " env", info["kl"])
# print("ref_logprob", float(log_ref[a]), info["ref_logprob"])
# ```
# </details>
#
# **3.** Repeat the average of section 4 at temperature 0.5 and 1.5. How does the sequence KL
# change, and does the agreement of the three estimators survive?
#
# <details><summary>Solution</summary>
#
# A `temperature` argument for `ReferencePolicy` is all it takes (below). Both temperatures
# move π further from π_ref than 0.7 does (1.0 is the reference itself), so the mean sequence KL
# grows in both directions, and much more at 1.5: a flatter π puts probability on tokens the
# reference finds unlikely, and its responses get longer, so there are more tokens to sum over.
# The three means still agree up to a couple of standard errors, because unbiasedness holds for
# every π. Compare the spreads too: which sampled estimator is noisier changes with the
# temperature, because the tails come from different rare tokens (π ≪ π_ref gives `k3` its
# large values; π ≫ π_ref, frequent when flattening, gives large `k1` and `k3` alike).
#
# ```python
# def sequence_kls_at(estimator, temperature, episodes=256, seed=100):
#     envs = gym.make_vec("RLHF-v0", num_envs=64, kl_estimator=estimator)
#     sums, lengths = [], []
#     for start in range(0, episodes, 64):
#         pol = ReferencePolicy(envs.unwrapped, temperature=temperature, seed=seed + start)
#         envs.unwrapped.set_policy(pol)
#         obs, _ = envs.reset(seed=seed + start)
#         done = np.zeros(64, dtype=bool)
#         while not done.all():
#             obs, _, terminated, _, info = envs.step(pol.act(obs))
#             if terminated.any():
#                 sums.extend(info["kl_sum"][terminated & ~done])
#                 lengths.extend(info["response_length"][terminated & ~done])
#             done |= terminated
#     return np.array(sums), np.mean(lengths)
#
# for temperature in (0.5, 1.5):
#     for est in ("k1", "k3", "full"):
#         s, length = sequence_kls_at(est, temperature)
#         se = s.std(ddof=1) / np.sqrt(len(s))
#         print(f"T={temperature} {est:>4}: mean {s.mean():.3f} ± {se:.3f}, std {s.std(ddof=1):.3f},"
#               f" mean length {length:.1f}")
# ```
# </details>
