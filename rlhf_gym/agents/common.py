"""Pure math the agents share: masked statistics, whitening and GAE (unit-tested against
hand-computed values in ``tests/test_agent_math.py``)."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of ``x`` over the masked entries (Bessel-corrected)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    return ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1)


def whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    mean: torch.Tensor | None = None,
    var: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(x − mean) / std`` over the masked entries; padding stays 0. ``mean`` and ``var``
    default to those of ``x`` (pass others, e.g. over several processes' entries)."""
    mean = masked_mean(x, mask) if mean is None else mean
    var = masked_var(x, mask) if var is None else var
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


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


def annealed_lr(base: float, update_idx: int, num_updates: int, anneal: bool) -> float:
    """The learning rate of update ``update_idx`` (0-based) of ``num_updates``: ``base``, or
    with ``anneal`` decayed linearly from ``base`` at the first update towards 0 after the last
    (the "N implementation details" reproduction's ``anneal_lr``)."""
    return base * (1.0 - update_idx / num_updates) if anneal else base
