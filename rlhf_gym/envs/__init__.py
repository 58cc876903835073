"""The RLHF environments and the scoring code they use (never imports agents).

Public API: the environments (whose typed surface, ``vocab_size``, ``reference_logits``,
``kl_coef`` …, is all that agents may read), the acting-policy protocol and its
implementations, the reward-model protocol and its implementations, and the reference-rows
protocol. The engine that runs the episodes (``_engine``) is private.
"""

from rlhf_gym.envs.lm import DATA_DIR, IncrementalLM, ReferenceRows
from rlhf_gym.envs.policy import ActingPolicy, LMPolicy, PrecomputedLogits, ReferencePolicy
from rlhf_gym.envs.rewards import (
    FunctionReward,
    HFRewardModel,
    RewardModel,
    RewardModelError,
    WeightedReward,
)
from rlhf_gym.envs.rlhf_env import RLHFEnv, RLHFVectorEnv

__all__ = [
    "DATA_DIR",
    "ActingPolicy",
    "FunctionReward",
    "HFRewardModel",
    "IncrementalLM",
    "LMPolicy",
    "PrecomputedLogits",
    "RLHFEnv",
    "RLHFVectorEnv",
    "ReferencePolicy",
    "ReferenceRows",
    "RewardModel",
    "RewardModelError",
    "WeightedReward",
]
