"""Shared by the agents: masked statistics, whitening and GAE (pure math, unit-tested), and
the config-field helper whose help text the CLI reads."""

from __future__ import annotations

from dataclasses import field
from typing import Any

import gymnasium as gym
import torch


def language_model_env(env_id: str) -> bool:
    """Whether ``env_id`` is an ``RLHFEnv`` id, which takes ``model``, ``max_new_tokens``,
    ``device`` and ``prompts`` (the toy preset fixes them)."""
    return gym.spec(env_id).entry_point.endswith(":RLHFEnv")


def model_env_kwargs(cfg: Any) -> dict[str, Any]:
    """``model``, ``max_new_tokens``, ``device`` (and ``dtype`` where the config has one) of an
    agent config, for the ids that take them; ``{}`` for the toy."""
    if not language_model_env(cfg.env_id):
        return {}
    kw = dict(model=cfg.model, max_new_tokens=cfg.max_new_tokens, device=cfg.device)
    if hasattr(cfg, "dtype"):
        kw["dtype"] = cfg.dtype
    return kw


def heldout_prompts(env_id: str) -> str | None:
    """The built-in held-out prompt set of the id's task (``"sentiment-eval"`` …), or ``None``
    for ids with fixed prompts (the toy)."""
    if not language_model_env(env_id):
        return None
    return f"{gym.spec(env_id).kwargs.get('task', 'sentiment')}-eval"


def config_field(default: Any, help: str) -> Any:  # noqa: A002 - the CLI reads metadata["help"]
    """A config dataclass field with its ``--help`` text (``rlhf-gym train`` generates options)."""
    return field(default=default, metadata={"help": help})


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of ``x`` over the masked entries (Bessel-corrected)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    return ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x − mean) / std`` over the masked entries; padding stays 0.

    ``shift_mean=False`` only rescales (used for rewards in some recipes).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded token sequences.

    Args:
        rewards, values, mask: ``(B, L)``; ``mask[b, t] = 1`` for real response tokens. The
            value after the last real token is 0 (the episode is terminated, never truncated).
        gamma, lam: discount and GAE λ (RLHF uses γ = 1, λ = 0.95).

    Returns:
        ``(advantages, returns)``, both ``(B, L)``, zero on padding; ``returns = adv + values``.
    """
    B, L = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(L)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < L else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < L else 0)) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask
