"""Measure a policy on an environment: score, gold score and KL from the reference.

``rlhf-gym eval`` prints these numbers, and the best-of-n baseline beside them. With no
``policy`` the acting policy is the reference model itself (free: the environment keeps its
distribution up to date anyway), which gives the baseline statistics the README quotes.

Evaluation visits the prompts in order (``reset(options={"prompt_index": ...})``): episode
``i`` answers prompt ``i mod N``, so every held-out prompt counts the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from transformers import AutoModelForCausalLM

import rlhf_gym  # noqa: F401  (registers the ids)
from rlhf_gym.envs.policy import LMPolicy, ReferencePolicy


@dataclass
class EvalResult:
    """Per-episode values and a few sample completions ``(prompt, response, score)``."""

    scores: list[float] = field(default_factory=list)
    gold_scores: list[float] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    samples: list[tuple[str, str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Mean and standard deviation of each quantity."""
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


def first_episodes(envs: Any, acting: Any, prompt_index: Sequence[int], seed: int) -> list[dict]:
    """Run every row of ``envs`` through one episode on the given prompts; its final infos.

    Rows that finish early are reset by the vector env's autoreset and keep acting until the
    slowest row ends; what they do then is not recorded.
    """
    B = envs.num_envs
    envs.unwrapped.set_policy(acting)  # the env's KL term reads the acting distribution
    obs, _ = envs.reset(seed=seed, options={"prompt_index": list(prompt_index)})
    results: list[dict | None] = [None] * B
    keys = ("score", "gold_score", "kl_sum", "response_length", "prompt_text", "response_text")
    while any(r is None for r in results):
        obs, _, term, _, info = envs.step(acting.act(obs))
        for i in np.flatnonzero(term):
            if results[i] is None:
                results[i] = {k: info[k][i] for k in keys if k in info}
    return results  # type: ignore[return-value]


def _acting(envs: Any, policy: Any, temperature: float, seed: int) -> Any:
    core = envs.unwrapped.episodes
    if policy is None:
        return ReferencePolicy(envs.unwrapped, temperature=temperature, seed=seed)
    if isinstance(policy, str):
        policy = AutoModelForCausalLM.from_pretrained(policy)
    policy.to(core.reference.device)
    return LMPolicy(policy, envs.num_envs, temperature, pad_token_id=core.pad, seed=seed)


def evaluate(
    env_id: str = "RLHF-v0",
    policy: Any = None,
    episodes: int = 256,
    num_envs: int = 64,
    seed: int = 0,
    temperature: float = 1.0,
    n_samples: int = 5,
    **env_kwargs: Any,
) -> EvalResult:
    """Run ``episodes`` episodes with ``policy`` (``None``: the reference; a model directory;
    or a loaded causal LM); KL is the exact per-sequence KL (``kl_estimator="full"``)."""
    if not (isinstance(episodes, int) and episodes >= 1):
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    env_kwargs["kl_estimator"] = "full"
    envs = gym.make_vec(env_id, num_envs=min(num_envs, episodes), **env_kwargs)
    n_prompts = len(envs.unwrapped.episodes.prompts)
    acting = _acting(envs, policy, temperature, seed)
    result = EvalResult()
    for start in range(0, episodes, envs.num_envs):
        index = [(start + i) % n_prompts for i in range(envs.num_envs)]
        for info in first_episodes(envs, acting, index, seed + start)[: episodes - start]:
            result.scores.append(float(info["score"]))
            result.kls.append(float(info["kl_sum"]))
            result.lengths.append(int(info["response_length"]))
            if "gold_score" in info:
                result.gold_scores.append(float(info["gold_score"]))
            if len(result.samples) < n_samples:
                sample = (str(info["prompt_text"]), str(info["response_text"]), result.scores[-1])
                result.samples.append(sample)
    envs.close()
    return result


def best_of_n(
    env_id: str = "RLHF-v0",
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    prompts_limit: int | None = None,
    num_envs: int = 256,
    seed: int = 0,
    **env_kwargs: Any,
) -> dict[int, dict[str, float]]:
    """Best-of-n from the reference: per prompt, the highest-scoring of ``n`` samples.

    For each ``n``: the mean reward-model score and gold score of the picked responses, and
    their KL from the reference, the analytic ``log n − (n − 1)/n`` (Stiennon et al. 2020,
    Hilton & Gao 2022), an upper bound on the true KL.
    """
    n_max = max(ns)
    per_chunk = max(1, num_envs // n_max)
    envs = gym.make_vec(env_id, num_envs=per_chunk * n_max, **env_kwargs)
    acting = ReferencePolicy(envs.unwrapped, seed=seed)
    n_prompts = len(envs.unwrapped.episodes.prompts)
    if prompts_limit is not None:
        n_prompts = min(n_prompts, prompts_limit)
    scores, gold = [], []
    for start in range(0, n_prompts, per_chunk):
        index = [min(start + i // n_max, n_prompts - 1) for i in range(envs.num_envs)]
        infos = first_episodes(envs, acting, index, seed + start)
        for j in range(min(per_chunk, n_prompts - start)):
            rows = infos[j * n_max : (j + 1) * n_max]
            scores.append([float(r["score"]) for r in rows])
            gold.append([float(r.get("gold_score", np.nan)) for r in rows])
    envs.close()
    s, g = np.asarray(scores), np.asarray(gold)  # (prompts, n_max)
    out = {}
    for n in ns:
        pick = s[:, :n].argmax(axis=1)
        rows = np.arange(len(s))
        out[n] = {
            "score": float(s[rows, pick].mean()),
            "gold_score": float(np.nanmean(g[rows, pick])) if not np.isnan(g).all() else None,
            "kl": math.log(n) - (n - 1) / n,
        }
    return out
