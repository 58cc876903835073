"""TensorBoard tags written by the agents, with the glossary the docs reproduce.

The names follow TRL where a TRL name exists (``objective/scores``, ``objective/kl``,
``objective/rlhf_reward``), so curves can be compared side by side. A test asserts that every
tag the PPO agent promises really appears in an event file (the soft-Q agent's tests do the
same for its tags).
"""

from __future__ import annotations

SCORES = "objective/scores"
GOLD_SCORES = "objective/gold_scores"
KL = "objective/kl"
RLHF_REWARD = "objective/rlhf_reward"
KL_COEF = "objective/kl_coef"
RESPONSE_LENGTH = "objective/response_length"
POLICY_LOSS = "losses/policy_loss"
VALUE_LOSS = "losses/value_loss"
APPROX_KL = "losses/approx_kl"
CLIPFRAC = "losses/clipfrac"
ENTROPY = "losses/entropy"
KL_LOSS = "losses/kl_loss"
RATIO = "losses/ratio_mean"
LOGPROB_MISMATCH = "policy/logprob_mismatch"
STEPS_PER_SECOND = "charts/steps_per_second"
EPISODES = "charts/episodes"
SKIPPED = "charts/skipped_minibatches"
LEARNING_RATE = "charts/learning_rate"
SAMPLES = "samples/completions"
TD_LOSS = "losses/td_loss"
Q_VALUES = "losses/q_values"
BELLMAN_RESIDUAL = "losses/bellman_residual"
EPSILON = "charts/epsilon"
TEMPERATURE = "charts/temperature"
BUFFER_EPISODES = "charts/buffer_episodes"
SB3_LOSS = "sb3/loss"
SB3_POLICY_LOSS = "sb3/policy_gradient_loss"
SB3_VALUE_LOSS = "sb3/value_loss"
SB3_APPROX_KL = "sb3/approx_kl"
SB3_CLIP_FRACTION = "sb3/clip_fraction"
SB3_ENTROPY_LOSS = "sb3/entropy_loss"
HYPERPARAMETERS = "hyperparameters"

GLOSSARY: dict[str, str] = {
    SCORES: "mean reward-model score of the rollout's responses (the proxy being optimised)",
    GOLD_SCORES: "mean gold-labeler score of the same responses (tasks with a gold labeler); "
    "a proxy that rises while this falls is being over-optimised",
    KL: "mean per-sequence KL(π ‖ π_ref): the sum over each response of the env's per-token "
    "estimate (info['kl'], estimator from kl_estimator), averaged over responses",
    RLHF_REWARD: "mean of score − kl_coef · per-sequence KL: the objective RLHF maximises",
    KL_COEF: "the KL coefficient β in force (changes only with the adaptive controller)",
    RESPONSE_LENGTH: "mean number of response tokens, EOS included",
    POLICY_LOSS: "clipped PPO surrogate loss, averaged over minibatches of the last epoch",
    VALUE_LOSS: "clipped value loss (0.5 · squared error), averaged over the last epoch",
    APPROX_KL: "0.5 · mean (log π_new − log π_old)² over response tokens: how far one update "
    "moved the policy (k2 estimator; TRL's approxkl)",
    CLIPFRAC: "fraction of response tokens whose ratio was clipped",
    ENTROPY: "mean entropy of the policy's next-token distribution over response tokens",
    KL_LOSS: "PPO with kl_estimator='full': mean exact per-token KL(π ‖ π_ref) over the response "
    "tokens of the last epoch, the term whose analytic gradient the loss adds (times β, "
    "divided by the advantages' std when they are whitened)",
    RATIO: "mean probability ratio π_new/π_old over response tokens",
    LOGPROB_MISMATCH: "mean |log π at sampling − log π recomputed in the update| before any "
    "gradient step; should be ~0 (catches temperature, dropout, padding mismatches)",
    STEPS_PER_SECOND: "environment steps (tokens) per second over rollout and update",
    EPISODES: "episodes (responses) seen so far",
    SKIPPED: "minibatches skipped by the ratio threshold or the NaN guard in this update",
    LEARNING_RATE: "the optimizer's learning rate in this update (decays to 0 with anneal_lr)",
    SAMPLES: "a table of sample prompts, responses and scores (text)",
    TD_LOSS: "Q-learning: mean ½·(Q(s, a) − target)² over the replayed tokens of the last "
    "gradient steps, in score units (soft λ-return target for the soft-Q agent)",
    Q_VALUES: "Q-learning: mean Q(s, a) − β·log π_ref(a|s) of the replayed tokens, i.e. the "
    "learned score-to-go (near the mean score when the Q-function is calibrated)",
    BELLMAN_RESIDUAL: "Q-learning on the toy: root-mean-square exact soft Bellman residual "
    "Q − (r + V(s')) over every (prefix, token) pair; 0 at the optimum",
    EPSILON: "Q-learning: probability that the behaviour policy picks a uniformly random token",
    TEMPERATURE: "soft Q-learning: Boltzmann temperature of the behaviour policy over Q, in score "
    "units (β·temperature/β_gen; the soft-Q temperature β when both are 1)",
    BUFFER_EPISODES: "Q-learning: episodes held in the replay buffer",
    SB3_LOSS: "SB3 agents: SB3's train/loss as last logged (PPO: total loss of the last "
    "minibatch; DQN: Huber TD loss)",
    SB3_POLICY_LOSS: "sb3-ppo: SB3's clipped surrogate loss, mean over all epochs of the last "
    "SB3 update",
    SB3_VALUE_LOSS: "sb3-ppo: SB3's (unclipped) mean squared value error of the last SB3 update",
    SB3_APPROX_KL: "sb3-ppo: SB3's approx_kl, mean of (r − 1) − log r (k3) of the last SB3 update",
    SB3_CLIP_FRACTION: "sb3-ppo: fraction of states whose ratio was clipped in the last SB3 update",
    SB3_ENTROPY_LOSS: "sb3-ppo: SB3's entropy loss (minus the mean policy entropy)",
    HYPERPARAMETERS: "the agent's configuration (text)",
}


def glossary_markdown() -> str:
    """``docs/metrics.md``: the agents' glossary, then the reward-model trainer's and SFT's."""
    from rlhf_gym import sft
    from rlhf_gym.feedback import tags as reward_tags

    lines = [
        "# TensorBoard metrics",
        "",
        "Generated by `python -m rlhf_gym.agents.tags > docs/metrics.md` from "
        "`rlhf_gym/agents/tags.py`, `rlhf_gym/feedback/tags.py` and `rlhf_gym/sft.py`.",
        "",
        "## Agents (`rlhf-gym train`)",
        "",
        "Scalars are logged against the number of episodes seen.",
        "",
        "| tag | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{tag}` | {text} |" for tag, text in GLOSSARY.items()]
    lines += ["", "## Reward-model training (`rlhf-gym reward train`)", ""]
    lines += [reward_tags.INTRO]
    lines += ["", "| tag | meaning |", "|---|---|"]
    lines += [f"| `{tag}` | {text} |" for tag, text in reward_tags.GLOSSARY.items()]
    lines += ["", "## Supervised fine-tuning (`rlhf-gym sft`)", ""]
    lines += ["Scalars are logged against the optimiser step."]
    lines += ["", "| tag | meaning |", "|---|---|"]
    lines += [f"| `{tag}` | {text} |" for tag, text in sft.GLOSSARY.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(glossary_markdown(), end="")
