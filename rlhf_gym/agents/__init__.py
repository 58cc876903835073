"""Agents that act in the rlhf-gym environments through their public API.

Each agent is one module that reads top to bottom (config, collect, update, log): native PPO
(:mod:`.ppo`), soft Q-learning (:mod:`.soft_q`), tabular Q-learning on the toy
(:mod:`.q_learning`) and the Stable-Baselines3 adapters (:mod:`.sb3`). What they share sits in
small modules beside them: :mod:`.config` (the shared, validated config fields),
:mod:`.episodes` (playing and summarising episodes), :mod:`.logs` and :mod:`.tags`
(TensorBoard), :mod:`.models` (the policy copy), :mod:`.loop` (collect → update → log),
:mod:`.common` (GAE, whitening, masked means) and :mod:`.checkpoint`.

:data:`AGENTS` names the agents of ``rlhf-gym train --agent`` (and ``compare``). Like a
Gymnasium ``entry_point``, a value is a class or a ``"module:Class"`` string, imported only when
asked for, so that ``rlhf-gym --help`` loads neither torch nor Stable-Baselines3.
"""

from __future__ import annotations

import importlib
from typing import Any

AGENTS: dict[str, str | type] = {
    "ppo": "rlhf_gym.agents.ppo:PPO",
    "qlearning": "rlhf_gym.agents.soft_q:SoftQ",
    "sb3-ppo": "rlhf_gym.agents.sb3:SB3PPO",
    "sb3-dqn": "rlhf_gym.agents.sb3:SB3DQN",
}
"""``--agent`` name → agent class (its ``config_class`` attribute is its config dataclass)."""


def agent_class(name: str) -> Any:
    """The agent class registered as ``name``.

    Raises:
        ValueError: ``name`` is not in :data:`AGENTS` (the message lists the valid names).
        ImportError: the agent needs an optional dependency that is missing (with the remedy).
    """
    if name not in AGENTS:
        raise ValueError(f"--agent {name!r} is not one of {sorted(AGENTS)}")
    entry = AGENTS[name]
    if not isinstance(entry, str):
        return entry
    module, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        if e.name == "stable_baselines3":
            raise ImportError(
                f"agent {name!r} needs Stable-Baselines3: pip install 'rlhf-gym[sb3]'"
            ) from e
        raise


def config_class(name: str) -> Any:
    """The config dataclass of the agent registered as ``name``."""
    return agent_class(name).config_class
