"""rlhf-gym: RLHF as an ordinary Gymnasium problem.

Importing the package registers the environments (Gymnasium 1.x has no plugin entry points):

* ``RLHF-v0``: the embedded tiny LM steered towards positive sentiment (or any model by name).
* ``RLHFHarmless-v0``: the same with the harmlessness task.
* ``RLHFHelpfulHarmless-v0``: the embedded assistant on requests where the most helpful reply
  and the most harmless one pull apart (the Constitutional AI task; its gold scores both).
* ``RLHFToy-v0``: a four-token problem whose KL-regularised optimum is known exactly.
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

_ENVS = {
    "RLHF-v0": ("rlhf_gym.envs.rlhf_env:RLHFEnv", "rlhf_gym.envs.rlhf_env:RLHFVectorEnv", {}),
    "RLHFHarmless-v0": (
        "rlhf_gym.envs.rlhf_env:RLHFEnv",
        "rlhf_gym.envs.rlhf_env:RLHFVectorEnv",
        {"task": "harmless"},
    ),
    "RLHFHelpfulHarmless-v0": (
        "rlhf_gym.envs.rlhf_env:RLHFEnv",
        "rlhf_gym.envs.rlhf_env:RLHFVectorEnv",
        {"task": "helpful_harmless", "max_new_tokens": 48},
    ),
    "RLHFToy-v0": ("rlhf_gym.envs.toy:make_toy_env", "rlhf_gym.envs.toy:make_toy_vector_env", {}),
}

for _id, (_entry, _vector_entry, _kwargs) in _ENVS.items():
    if _id not in registry:
        # No max_episode_steps: episodes end inside the env with terminated=True
        # (docs/design.md, "Contracts").
        register(id=_id, entry_point=_entry, vector_entry_point=_vector_entry, kwargs=_kwargs)
