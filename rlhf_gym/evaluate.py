"""Measure a policy on an environment: score, gold score and KL from the reference.

``rlhf-gym eval`` prints these numbers; with no ``--policy`` the acting policy is the reference
model itself, which gives the baseline statistics the README quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from transformers import AutoModelForCausalLM

import rlhf_gym  # noqa: F401  (registers the ids)
from rlhf_gym.envs.policy import LMPolicy, ReferencePolicy


@dataclass
class EvalResult:
    """Per-episode arrays and a few sample completions."""

    scores: list[float] = field(default_factory=list)
    gold_scores: list[float] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    samples: list[tuple[str, str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"episodes": len(self.scores)}
        for name, values in (
            ("score", self.scores),
            ("gold_score", self.gold_scores),
            ("kl", self.kls),
            ("response_length", self.lengths),
        ):
            if values:
                out[name] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
        return out


def evaluate(
    env_id: str = "RLHF-v0",
    policy: Any = None,
    episodes: int = 256,
    num_envs: int = 32,
    seed: int = 0,
    temperature: float = 1.0,
    n_samples: int = 5,
    **env_kwargs: Any,
) -> EvalResult:
    """Run ``episodes`` episodes with ``policy`` (``None``: the reference; a model directory; or a
    loaded causal LM).

    KL is the exact per-sequence KL (``kl_estimator="full"``) summed over each response.
    """
    if not (isinstance(episodes, int) and episodes >= 1):
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    env_kwargs.setdefault("kl_estimator", "full")
    envs = gym.make_vec(env_id, num_envs=min(num_envs, episodes), **env_kwargs)
    core = envs.unwrapped.episodes
    if policy is None:
        acting: Any = ReferencePolicy(envs.unwrapped, temperature=temperature, seed=seed)
    else:
        if isinstance(policy, str):
            policy = AutoModelForCausalLM.from_pretrained(policy).to(core.reference.device)
        acting = LMPolicy(
            policy,
            num_envs=envs.num_envs,
            temperature=temperature,
            pad_token_id=core.pad,
            seed=seed,
        )
    envs.unwrapped.set_policy(acting)
    result = EvalResult()
    obs, _ = envs.reset(seed=seed)
    while len(result.scores) < episodes:
        obs, _, term, _, info = envs.step(acting.act(obs))
        for i in np.flatnonzero(term):
            if len(result.scores) == episodes:
                break
            result.scores.append(float(info["score"][i]))
            result.kls.append(float(info["kl_sum"][i]))
            result.lengths.append(int(info["response_length"][i]))
            if "gold_score" in info:
                result.gold_scores.append(float(info["gold_score"][i]))
            if len(result.samples) < n_samples:
                result.samples.append(
                    (
                        str(info["prompt_text"][i]),
                        str(info["response_text"][i]),
                        float(info["score"][i]),
                    )
                )
    envs.close()
    return result
