"""The settings every agent shares, validated once; each agent's config adds its own.

An agent config is a dataclass whose fields carry their ``--help`` text
(:func:`config_field`): ``rlhf-gym train`` generates one option per field, so the dataclass is
the single source of each default and its help. :class:`AgentConfig` holds what every
``rlhf-gym train`` agent needs (environment, model, budget, KL coefficient, device …); an agent
subclasses it once (``PPOConfig(AgentConfig)``), re-declaring a shared field only where its
default or meaning differs, and extends :meth:`AgentConfig.validate` and
:meth:`AgentConfig.env_kwargs`.

Example:
    >>> cfg = AgentConfig(env_id="RLHFToy-v0", num_envs=8, total_episodes=20)
    >>> cfg.num_updates
    2
    >>> cfg.env_kwargs()  # the toy fixes model, length, device and dtype
    {'kl_coef': 0.05, 'kl_estimator': 'k1'}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

import rlhf_gym  # noqa: F401  (registers the ids that configs name)

DTYPES = ("float32", "bfloat16", "float16", "auto")
KL_ESTIMATORS = ("k1", "k3", "full")  # as rlhf_gym.envs.kl.KL_ESTIMATORS (no torch import here)


def config_field(default: Any, help: str) -> Any:
    """A config dataclass field with its ``--help`` text (``rlhf-gym`` generates options)."""
    return field(default=default, metadata={"help": help})


_f = config_field


def takes_model(env_id: str) -> bool:
    """Whether ``env_id`` builds an ``RLHFEnv`` over a language model, so that it takes
    ``model``, ``max_new_tokens``, ``device``, ``dtype`` and ``prompts`` (the toy fixes them)."""
    return gym.spec(env_id).entry_point.endswith(":RLHFEnv")


def heldout_prompts(env_id: str) -> str | None:
    """The built-in held-out prompt set of the id's task (``"sentiment-eval"`` …), or ``None``
    for ids with fixed prompts (the toy)."""
    if not takes_model(env_id):
        return None
    return f"{gym.spec(env_id).kwargs.get('task', 'sentiment')}-eval"


@dataclass
class AgentConfig:
    """What every agent of ``rlhf-gym train`` is given; validated on construction."""

    env_id: str = _f("RLHF-v0", "registered environment id")
    model: str = _f("default", "policy initialisation and reference: a name or path")
    reward_model: str | None = _f(
        None, "reward model: built-in name, directory (rlhf-gym reward train) or hub name"
    )
    seed: int = _f(0, "seed of prompts, sampling and the agent's own randomness")
    total_episodes: int = _f(4096, "episodes (responses) to train on")
    num_envs: int = _f(64, "episodes per rollout (the vector env's batch size B)")
    kl_coef: float = _f(0.05, "KL coefficient β of the env's reward")
    kl_estimator: str = _f("k1", "per-token KL estimator in the env: k1, k3 or full")
    max_new_tokens: int | None = _f(
        None, "response length limit (default: the environment's: 32, 48 for the assistant's task)"
    )
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    dtype: str = _f("float32", "model dtype: float32, bfloat16, float16 or auto")
    checkpoint_every: int = _f(25, "updates between checkpoints (0: only at the end)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field; subclasses extend it."""
        try:
            gym.spec(self.env_id)
        except gym.error.Error as e:
            raise ValueError(f"env_id {self.env_id!r} is not registered ({e})") from None
        positive_ints(self, "total_episodes", "num_envs")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.max_new_tokens is not None:
            positive_ints(self, "max_new_tokens")
        if self.reward_model is not None and not takes_model(self.env_id):
            raise ValueError(f"reward_model: {self.env_id} has a fixed reward and takes none")
        if not (isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0):
            raise ValueError(
                f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}"
            )
        if not (isinstance(self.kl_coef, (int, float)) and self.kl_coef >= 0):
            raise ValueError(f"kl_coef must be a number >= 0, got {self.kl_coef!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator={self.kl_estimator!r} is not one of {list(KL_ESTIMATORS)}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {list(DTYPES)}")

    @property
    def num_updates(self) -> int:
        """Updates (collection rounds) in the budget: ``total_episodes // num_envs``, at least 1."""
        return max(1, self.total_episodes // self.num_envs)

    def env_kwargs(self) -> dict[str, Any]:
        """The ``gym.make``/``gym.make_vec`` keyword arguments this config implies.

        ``model``, ``reward_model`` (when set), ``max_new_tokens``, ``device`` and ``dtype`` only
        for ids that take them (:func:`takes_model`); subclasses add their own (reward form, KL
        target …).
        """
        kw: dict[str, Any] = dict(kl_coef=self.kl_coef, kl_estimator=self.kl_estimator)
        if takes_model(self.env_id):
            kw.update(model=self.model, device=self.device, dtype=self.dtype)
            if self.max_new_tokens is not None:
                kw["max_new_tokens"] = self.max_new_tokens
            if self.reward_model is not None:
                kw["reward_model"] = self.reward_model
        return kw


def positive_ints(cfg: Any, *names: str) -> None:
    """Raise ``ValueError`` unless each named field of ``cfg`` is an integer ``>= 1``."""
    for name in names:
        value = getattr(cfg, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
