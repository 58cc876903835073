"""The RLHF environments and the scoring code they use (never imports agents).

Public API: the environments, the acting-policy protocol and its implementations, the
reward-model protocol and its implementations, and the exact toy solver.
"""

from rlhf_gym.envs.lm import DATA_DIR, IncrementalLM
from rlhf_gym.envs.policy import ActingPolicy, LMPolicy, PrecomputedLogits, ReferencePolicy
from rlhf_gym.envs.rewards import FunctionReward, HFRewardModel, RewardModel, WeightedReward
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
    "RewardModel",
    "WeightedReward",
]
