"""TensorBoard tags written by the agents, with the glossary the docs reproduce.

The names follow TRL where a TRL name exists (``objective/scores``, ``objective/kl``,
``objective/rlhf_reward``), so curves can be compared side by side. A test asserts that every
tag the PPO agent promises really appears in an event file.
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
RATIO = "losses/ratio_mean"
LOGPROB_MISMATCH = "policy/logprob_mismatch"
STEPS_PER_SECOND = "charts/steps_per_second"
EPISODES = "charts/episodes"
SKIPPED = "charts/skipped_minibatches"
SAMPLES = "samples/completions"
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
    RATIO: "mean probability ratio π_new/π_old over response tokens",
    LOGPROB_MISMATCH: "mean |log π at sampling − log π recomputed in the update| before any "
    "gradient step; should be ~0 (catches temperature, dropout, padding mismatches)",
    STEPS_PER_SECOND: "environment steps (tokens) per second over rollout and update",
    EPISODES: "episodes (responses) seen so far",
    SKIPPED: "minibatches skipped by the ratio threshold or the NaN guard in this update",
    SAMPLES: "a table of sample prompts, responses and scores (text)",
    HYPERPARAMETERS: "the agent's configuration (text)",
}
