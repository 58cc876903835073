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
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.agents.config import heldout_prompts
from rlhf_gym.agents.episodes import EpisodeStats, episode_envs, first_episodes, row_info
from rlhf_gym.envs.lm import from_pretrained, resolve_model_path
from rlhf_gym.envs.policy import LMPolicy, ReferencePolicy

EvalResult = EpisodeStats
"""What :func:`evaluate` returns: per-episode values, ``summary()`` and a few samples."""


@dataclass
class EvalConfig:
    """What ``rlhf-gym eval`` measures (its options are generated from these fields)."""

    env_id: str = _f("RLHF-v0", "a registered environment id")
    policy: str | None = _f(None, "policy model directory (default: the reference model)")
    prompts: str | None = _f(None, "prompt set name or file (default: the task's held-out set)")
    episodes: int = _f(256, "episodes to evaluate (prompts are visited in order)")
    num_envs: int = _f(32, "episodes run side by side")
    seed: int = _f(0, "seed of the sampling")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N or mps")
    best_of: tuple[int, ...] = _f((1, 2, 4, 8, 16), "best-of-n baseline sizes ('' to skip)")

    def __post_init__(self) -> None:
        """Check the values before any model loads (``ValueError`` naming the option)."""
        try:
            gym.spec(self.env_id)
        except gym.error.Error as e:
            raise ValueError(
                f"--env {self.env_id!r} is not a registered environment ({e})"
            ) from None
        for name in ("episodes", "num_envs"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a positive integer, got {value!r}"
                )
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}")

    def env_kwargs(self) -> dict[str, Any]:
        """``device`` and the prompts (default: the task's held-out set); the toy fixes both."""
        heldout = heldout_prompts(self.env_id)
        kwargs: dict[str, Any] = {"device": self.device} if heldout is not None else {}
        if self.prompts is not None or heldout is not None:
            kwargs["prompts"] = self.prompts if self.prompts is not None else heldout
        return kwargs


def run(cfg: EvalConfig) -> dict[str, Any]:
    """``rlhf-gym eval``: the policy's summary, samples and the best-of-n baseline."""
    if any(not (isinstance(n, int) and n >= 1) for n in cfg.best_of):
        raise ValueError(f"best_of must be positive integers, got {cfg.best_of!r}")
    kwargs = cfg.env_kwargs()
    result = evaluate(
        cfg.env_id,
        policy=cfg.policy,
        episodes=cfg.episodes,
        seed=cfg.seed,
        num_envs=cfg.num_envs,
        **kwargs,
    )
    bon = best_of_n(cfg.env_id, ns=cfg.best_of, seed=cfg.seed, **kwargs) if cfg.best_of else {}
    return {
        **result.summary(),
        "samples": result.samples,
        "best_of_n": {str(n): v for n, v in bon.items()},
    }


def report(cfg: EvalConfig, out: dict[str, Any]) -> str:
    """The text ``rlhf-gym eval`` prints for :func:`run`'s result."""
    who = cfg.policy or "the reference model"
    prompts = cfg.env_kwargs().get("prompts")
    lines = [
        f"{cfg.env_id}, {who}, {out['episodes']} episodes on prompts {prompts!r}, seed {cfg.seed}"
    ]
    for name in ("score", "gold_score", "kl", "response_length"):
        if name in out:
            s = out[name]
            lines.append(f"  {name:<16} mean {s['mean']:+.3f}   std {s['std']:.3f}")
    if out["best_of_n"]:
        lines.append(
            "best-of-n from the reference (per prompt, the reward model's favourite of n):"
        )
        lines.append(f"  {'n':>3} {'score':>8} {'gold':>8} {'KL bound':>9}")
        for n, v in out["best_of_n"].items():
            gold = f"{v['gold_score']:+8.3f}" if v["gold_score"] is not None else f"{'-':>8}"
            lines.append(f"  {n:>3} {v['score']:+8.3f} {gold} {v['kl']:9.3f}")
    lines.append("samples:")
    lines += [f"  [{score:+.2f}] {prompt}|{response}" for prompt, response, score in out["samples"]]
    return "\n".join(lines)


def final_infos(envs: Any, acting: Any, prompt_index: Sequence[int], seed: int) -> list[dict]:
    """Run every row of ``envs`` through one episode on the given prompts; its final infos."""
    envs.unwrapped.set_policy(acting)  # the env's KL term reads the acting distribution
    finals: list[dict] = [{} for _ in range(envs.num_envs)]
    options = {"prompt_index": list(prompt_index)}
    for step in first_episodes(envs, acting.act, seed, options):
        for i in step.finished:
            finals[i] = row_info(step.info, i)
    return finals


def acting_policy(envs: Any, policy: Any, temperature: float, seed: int) -> Any:
    """The acting policy for ``envs``: ``None`` is the reference; a path or hub name is loaded
    through the environment's loading code (clear errors for bad paths); a loaded causal LM is
    moved to the environment's device."""
    env = envs.unwrapped
    if policy is None:
        return ReferencePolicy(env, temperature=temperature, seed=seed)
    if isinstance(policy, str):  # the environment's loading code: clear errors for bad paths
        from transformers import AutoModelForCausalLM

        path = resolve_model_path(policy, "policy", {})
        policy = from_pretrained(AutoModelForCausalLM, path, "policy", {})
    policy.to(env.device)
    return LMPolicy(policy, envs.num_envs, temperature, pad_token_id=env.pad_token_id, seed=seed)


def evaluate(
    env_id: str = "RLHF-v0",
    policy: Any = None,
    episodes: int = 256,
    num_envs: int = 64,
    seed: int = 0,
    temperature: float = 1.0,
    n_samples: int = 5,
    **env_kwargs: Any,
) -> EpisodeStats:
    """Run ``episodes`` episodes with ``policy`` (``None``: the reference; a model directory;
    or a loaded causal LM); KL is the exact per-sequence KL (``kl_estimator="full"``)."""
    if not (isinstance(episodes, int) and episodes >= 1):
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    env_kwargs["kl_estimator"] = "full"
    envs = episode_envs(env_id, min(num_envs, episodes), **env_kwargs)
    n_prompts = envs.unwrapped.num_prompts
    acting = acting_policy(envs, policy, temperature, seed)
    result = EpisodeStats(max_samples=n_samples)
    for start in range(0, episodes, envs.num_envs):
        index = [(start + i) % n_prompts for i in range(envs.num_envs)]
        for info in final_infos(envs, acting, index, seed + start)[: episodes - start]:
            result.add(info)
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
    envs = episode_envs(env_id, per_chunk * n_max, **env_kwargs)
    acting = ReferencePolicy(envs.unwrapped, seed=seed)
    n_prompts = envs.unwrapped.num_prompts
    if prompts_limit is not None:
        n_prompts = min(n_prompts, prompts_limit)
    scores, gold = [], []
    for start in range(0, n_prompts, per_chunk):
        index = [min(start + i // n_max, n_prompts - 1) for i in range(envs.num_envs)]
        infos = final_infos(envs, acting, index, seed + start)
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
