"""TensorBoard tags written by the reward-model trainer, with their glossary.

``docs/metrics.md`` reproduces the glossary (``python -m rlhf_gym.agents.tags``); a test
checks that every tag appears in the event file of a ``rlhf-gym reward train`` run. Scalars are
logged against the optimiser step; ``d = r(prompt + A) − r(prompt + B)`` for a pair, and
"preferred" is the response with ``p_a ≥ 0.5``.
"""

from __future__ import annotations

TRAIN_LOSS = "reward/train/loss"
TRAIN_ACCURACY = "reward/train/accuracy"
TRAIN_MARGIN = "reward/train/margin"
TRAIN_REWARD_MEAN = "reward/train/reward_mean"
TRAIN_REWARD_MIN = "reward/train/reward_min"
TRAIN_REWARD_MAX = "reward/train/reward_max"
LEARNING_RATE = "reward/train/learning_rate"
HELDOUT_LOSS = "reward/heldout/loss"
HELDOUT_ACCURACY = "reward/heldout/accuracy"
HELDOUT_MARGIN = "reward/heldout/margin"

INTRO = (
    "Scalars are logged against the optimiser step. For a pair, "
    '`d = r(prompt + A) − r(prompt + B)`; "preferred" is the response with `p_a ≥ 0.5`.'
)
"""The glossary's introduction in ``docs/metrics.md``."""

GLOSSARY: dict[str, str] = {
    TRAIN_LOSS: "Bradley-Terry loss of the batch (plus the centering term when --center > 0)",
    TRAIN_ACCURACY: "share of the batch's pairs (ties excluded) that the model orders as labeled",
    TRAIN_MARGIN: "mean of r(preferred) − r(other) over the batch",
    TRAIN_REWARD_MEAN: "mean score of the batch's texts (both responses), before normalisation",
    TRAIN_REWARD_MIN: "lowest score in the batch",
    TRAIN_REWARD_MAX: "highest score in the batch",
    LEARNING_RATE: "the learning rate after the step (warm-up, then cosine decay)",
    HELDOUT_ACCURACY: "accuracy on the held-out pairs (prompts never trained on); early "
    "stopping keeps the weights with the best",
    HELDOUT_LOSS: "Bradley-Terry loss on the held-out pairs",
    HELDOUT_MARGIN: "mean r(preferred) − r(other) on the held-out pairs",
}
