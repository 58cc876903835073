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
# # 6. Bring your own model
#
# Every notebook so far used the models that ship inside the package. This one plugs in models
# of your own, trains them with a library that knows nothing about language models
# (Stable-Baselines3), and looks at the environment the way a video recorder does.
#
# After this notebook you will be able to:
#
# * give `gym.make("RLHF-v0", ...)` a Hugging Face policy model and reward model **by name or
#   path**, with your own prompts;
# * choose the device and the number format (`device="auto"`, `dtype="auto"`) and check what
#   was chosen;
# * train a policy on the environment with **Stable-Baselines3** PPO, and plot its episode
#   reward;
# * render an episode as an image (`render_mode="rgb_array"`);
# * know where to go next for models that do not fit this laptop.
#
# Everything runs offline: instead of downloading models we build two tiny ones and save them
# to a temporary folder, which is exactly what a downloaded model is, a folder of files.

# %%
import os
import tempfile
import warnings
from importlib.resources import files

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, outside Jupyter widgets

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch
from transformers.utils import logging as hf_logging

import rlhf_gym  # noqa: F401  (registers RLHF-v0 and the other ids)

SMOKE = os.environ.get("RLHF_GYM_SMOKE") == "1"
torch.set_num_threads(1)  # the models are tiny: one thread is faster than several here
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

SB3_TIMESTEPS = 256 if SMOKE else 2048  # environment steps (tokens) Stable-Baselines3 trains on
MAX_NEW_TOKENS = 8  # short responses keep the tiny runs tiny
WORK = tempfile.mkdtemp(prefix="rlhf-gym-nb06-")  # every file this notebook writes goes here

# %% [markdown]
# ## 1. Two models of your own, saved as Hugging Face folders
#
# The environment needs two models:
#
# * a **causal language model** (the *policy*, and a frozen copy of it, the *reference*): any
#   model that `transformers.AutoModelForCausalLM` can load. Its **tokenizer** defines the
#   action space: one action per token of the vocabulary.
# * a **reward model**: any *sequence classifier* (`AutoModelForSequenceClassification`), a
#   network that reads a text and outputs one number per label. The environment gives it the
#   decoded text `prompt + response` and uses one logit as the score (with one label, that
#   label; with several, the one named like "positive", or `reward_label=`). Because it reads
#   text, its tokenizer need not be the policy's.
#
# We build both from scratch, GPT-2-shaped but tiny (2 layers, 32 wide), with the byte-level
# tokenizer of the embedded model (1,024 tokens, found inside the installed package). Their
# weights are random, so their text is gibberish and their scores arbitrary: what matters here
# is the plumbing, which is the same for a model with billions of parameters.

# %%
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
)

tokenizer = AutoTokenizer.from_pretrained(str(files("rlhf_gym") / "data" / "default" / "lm"))
config = GPT2Config(
    vocab_size=len(tokenizer),
    n_positions=128,
    n_embd=32,
    n_layer=2,
    n_head=2,
    bos_token_id=tokenizer.eos_token_id,
    eos_token_id=tokenizer.eos_token_id,
    pad_token_id=tokenizer.pad_token_id,
)
torch.manual_seed(0)
MODEL_DIR = os.path.join(WORK, "tiny-gpt2")
GPT2LMHeadModel(config).save_pretrained(MODEL_DIR)
tokenizer.save_pretrained(MODEL_DIR)

RM_DIR = os.path.join(WORK, "tiny-reward-model")
GPT2ForSequenceClassification(GPT2Config(**config.to_dict(), num_labels=1)).save_pretrained(RM_DIR)
tokenizer.save_pretrained(RM_DIR)

print("policy folder:      ", sorted(os.listdir(MODEL_DIR)))
print("reward model folder:", sorted(os.listdir(RM_DIR)))

# %% [markdown]
# ## 2. `gym.make` by name or path
#
# `model` and `reward_model` take a **path** (what we have) or a **model-hub name**; `prompts`
# takes a list of strings, a built-in set, or a `.txt`/`.jsonl` file. `device="auto"` runs on
# a CUDA GPU when one is present and on the CPU otherwise; `dtype="auto"` picks bfloat16 on a
# GPU that supports it and float32 elsewhere. The environment's public surface tells you what
# was chosen: `env.unwrapped.device`, and the dtype of the reference model's weights.

# %%
PROMPTS = ["The film was", "I thought the acting", "This documentary is", "My favourite scene"]
env = gym.make(
    "RLHF-v0",
    model=MODEL_DIR,
    reward_model=RM_DIR,
    prompts=PROMPTS,
    max_new_tokens=MAX_NEW_TOKENS,
    device="auto",
    dtype="auto",
)
base = env.unwrapped
print("device chosen:", base.device)
print("dtype chosen: ", next(base.reference_model.parameters()).dtype)
print("action space: ", env.action_space, "(the tokenizer's vocabulary)")
print("prompts:      ", base.num_prompts)

# %% [markdown]
# One episode with random actions (each action a token id drawn uniformly from the
# vocabulary). No policy is attached, so the environment cannot see the acting distribution,
# takes it to be the reference's, and reports a KL of 0 (it warns once; the README's "The
# reward" section explains why). The score at the end is the random reward model's logit, and
# `gold_score` is the sentiment task's gold labeler, which `RLHF-v0` keeps whatever models you
# give it.

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the one-time "no policy attached" warning, explained above
    obs, info = env.reset(seed=0)
    done = False
    while not done:
        obs, reward, done, truncated, info = env.step(env.action_space.sample())
print(repr(info["prompt_text"] + "|" + info["response_text"]))
print(f"score {info['score']:+.3f}   gold_score {info['gold_score']:+.3f}   kl_sum {info['kl_sum']:.3f}")
env.close()

# %% [markdown]
# **Hub names go in the same place.** With the network, the models of the README's "Real
# models by name" section are one line:
#
# ```python
# env = gym.make("RLHF-v0", model="gpt2", reward_model="lvwerra/distilbert-imdb",
#                prompts=["The film was", "I thought the acting"], device="auto", dtype="auto")
# ```
#
# The first call downloads them into the Hugging Face cache; with `HF_HUB_OFFLINE=1` they must
# already be there (or be given as a local path, as above). This notebook does not run that
# line, so that it runs anywhere without a network.

# %% [markdown]
# ## 3. Stable-Baselines3 on the environment
#
# [Stable-Baselines3](https://stable-baselines3.readthedocs.io) (SB3) is a general RL library:
# its PPO knows nothing about tokens. Two pieces from `rlhf_gym.agents.sb3` connect them:
#
# * `LMActorCriticPolicy`: an SB3 policy whose *actor* is the language model itself (its
#   next-token distribution is the action distribution) and whose *critic* is a small value
#   head on the model's last hidden state. `policy_lm_config(env)` hands it a trainable copy of
#   the environment's reference model. (SB3's generic `"MultiInputPolicy"`, a small MLP on the
#   token ids, also runs, but it throws the language model away.)
# * `AttachPolicyCallback`: attaches the SB3 policy to every environment while `learn` runs,
#   so the KL term sees the real acting distribution `π`. Without it the KL term is 0.
#
# `make_vec_env` is SB3's own helper (it wraps each environment in a `Monitor` that records
# episode returns). The *episode reward* is the sum of the per-step rewards:
# `score − β·Σ_t KL_t`, the KL-regularised objective. `RLHFInfoCallback` hands us the mean
# score, KL and episode reward of every batch of finished episodes, which we plot. The budget is
# tiny: this is a demonstration of the interface, not of learning.

# %%
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env

from rlhf_gym.agents import tags
from rlhf_gym.agents.sb3 import (
    AttachPolicyCallback,
    LMActorCriticPolicy,
    RLHFInfoCallback,
    policy_lm_config,
)

env_kwargs = dict(
    model=MODEL_DIR,
    reward_model=RM_DIR,
    prompts=PROMPTS,
    max_new_tokens=MAX_NEW_TOKENS,
    device="cpu",  # SB3 policies below run on the CPU; on a GPU use device="auto" in both
)
vec_env = make_vec_env("RLHF-v0", n_envs=4, seed=0, env_kwargs=env_kwargs)
model = SB3PPO(
    LMActorCriticPolicy,
    vec_env,
    n_steps=32,  # environment steps per environment between updates
    batch_size=64,
    n_epochs=4,
    learning_rate=3e-4,
    gamma=1.0,
    seed=0,
    device="cpu",
    policy_kwargs=dict(lm=policy_lm_config(vec_env)),
)
history = []  # one row per 8 finished episodes
info_cb = RLHFInfoCallback(every=8, on_update=history.append)
model.learn(SB3_TIMESTEPS, callback=CallbackList([AttachPolicyCallback(), info_cb]))
episodes = [h[tags.EPISODES] for h in history]
print(f"{len(history)} batches of 8 episodes, {int(episodes[-1]) if episodes else 0} episodes in all")

# %% [markdown]
# The figure: the mean episode reward (`score − β·KL`, the return SB3 maximises) and its two
# parts, over the episodes SB3 played. With random models and a few hundred episodes expect a
# noisy curve; the point is that every quantity you need to see is there, from a library that
# was not written for language models. The KL per response is the environment's default
# one-sample estimator (`kl_estimator="k1"`, `log π(a) − log π_ref(a)` of the sampled token):
# unbiased, but a single response's value, and even a mean over 8, can be negative while the
# policy is still close to the reference.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.plot(episodes, [h[tags.RLHF_REWARD] for h in history], "o-", label="episode reward (score − β·KL)")
ax1.plot(episodes, [h[tags.SCORES] for h in history], ".--", label="reward-model score")
ax1.set(xlabel="episodes", ylabel="mean over 8 episodes", title="Stable-Baselines3 PPO: reward")
ax1.legend(fontsize=8)
ax1.grid(alpha=0.3)
ax2.plot(episodes, [h[tags.KL] for h in history], "o-", color="C2")
ax2.set(xlabel="episodes", ylabel="nats per response", title="KL(π ‖ π_ref) per response")
ax2.grid(alpha=0.3)
fig.tight_layout()
plt.show()
vec_env.close()

# %% [markdown]
# ## 4. What the environment looks like
#
# With `render_mode="rgb_array"`, `env.render()` returns a 640×360 RGB image (a NumPy array of
# shape `(360, 640, 3)`): a header with the step, the last reward, the reward so far and, once
# the episode has ended, the score; below it the prompt in grey and the response in amber.
# Gymnasium's `RecordVideo` wrapper turns these frames into one video per episode. Here is the
# last frame of an episode of the embedded model (readable text this time), written by the
# reference policy.

# %%
from rlhf_gym.envs import LMPolicy

env = gym.make("RLHF-v0", render_mode="rgb_array", max_new_tokens=24)
policy = LMPolicy(env.unwrapped.reference_model, seed=1)
env.unwrapped.set_policy(policy)
obs, info = env.reset(seed=1)
done = False
while not done:
    obs, reward, done, truncated, info = env.step(policy.act(obs))
frame = env.render()
print("frame:", frame.shape, frame.dtype)
plt.figure(figsize=(8, 4.5))
plt.imshow(frame)
plt.axis("off")
plt.show()
env.close()

# %% [markdown]
# ## 5. Where to go for scale
#
# The environment and the agents run unchanged on a GPU (`device="auto"`), and the README
# reports PPO and rollout speeds on an H100 with a GPT-2-small-sized model in bfloat16. Beyond
# one GPU and full fine-tuning, two tools are the usual next step; **rlhf-gym does not have
# either yet**:
#
# * **Hugging Face Accelerate** runs the same training loop on several GPUs or machines
#   (data parallelism, mixed precision) with few code changes. rlhf-gym's PPO runs on one
#   device.
# * **LoRA** (low-rank adaptation, through the `peft` library) trains small low-rank updates to
#   a frozen model instead of all its weights: far less memory for the optimiser, and the
#   reference model is simply the adapter switched off. rlhf-gym fine-tunes every weight of a
#   copy of the policy.
#
# For either today, TRL (which the README compares against) supports both; the environment
# itself would take a LoRA-wrapped policy through `RLHFEnv(model=loaded_model,
# tokenizer=tok, ...)` and an agent of your own, since the environment only needs the acting
# policy's next-token logits (`ActingPolicy`).

# %% [markdown]
# ## Exercises
#
# **1.** Build the environment with a reward *function* instead of a reward model: a live
# object goes to the class `rlhf_gym.envs.RLHFEnv`, not to `gym.make`. Score a response by
# its number of letters "e", and run one random episode.
#
# <details><summary>Solution</summary>
#
# ```python
# from rlhf_gym.envs import RLHFEnv
# env = RLHFEnv(model=MODEL_DIR, reward_model=lambda prompt, response: response.count("e"),
#               prompts=PROMPTS, max_new_tokens=MAX_NEW_TOKENS)
# obs, info = env.reset(seed=0)
# done = False
# while not done:
#     obs, reward, done, truncated, info = env.step(env.action_space.sample())
# print(info["response_text"], info["score"])
# ```
#
# The score equals the number of "e"s in the response text.
# </details>
#
# **2.** Run the Stable-Baselines3 cell again without `AttachPolicyCallback()`. What happens
# to the KL curve, and why?
#
# <details><summary>Solution</summary>
#
# ```python
# model.learn(SB3_TIMESTEPS, callback=RLHFInfoCallback(every=8, on_update=history.append))
# ```
#
# (rebuild `vec_env`, `model` and `history` first). The environment warns that no policy is
# attached and the KL is 0 for every episode: without the policy it cannot know `π`, takes
# `π = π_ref`, and the episode reward is the plain score, with no penalty at all.
# </details>
#
# **3.** Use the embedded model as the policy but your tiny random reward model as the reward,
# and show one rendered frame. Does the score agree with the gold score?
#
# <details><summary>Solution</summary>
#
# ```python
# env = gym.make("RLHF-v0", reward_model=RM_DIR, render_mode="rgb_array")
# policy = LMPolicy(env.unwrapped.reference_model, seed=0)
# env.unwrapped.set_policy(policy)
# obs, info = env.reset(seed=0)
# done = False
# while not done:
#     obs, reward, done, truncated, info = env.step(policy.act(obs))
# plt.imshow(env.render()); plt.axis("off"); plt.show()
# print(info["score"], info["gold_score"])
# ```
#
# The random reward model's score has nothing to do with the sentiment the gold labeler
# measures: over many episodes the two are uncorrelated. A reward model is only as good as what
# it learned from (`docs/feedback.md`).
# </details>
