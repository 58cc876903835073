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


def leave_one_out(
    rewards: torch.Tensor, mask: torch.Tensor, group: int, gamma: float = 1.0
) -> torch.Tensor:
    """Advantages from ``group`` samples of each prompt, without a critic (RLOO's baseline).

    Rows ``g·group … (g+1)·group − 1`` are samples of the same prompt. A token's advantage is
    its return-to-go minus the mean of the *other* samples' returns-to-go from the same
    position; a sample that has already ended by then counts with its last token's (its score
    minus that token's KL penalty). The baseline never depends on the row's own actions, so
    the policy gradient stays unbiased (Kool et al. 2019; Ahmadian et al. 2024).

    Args:
        rewards, mask: ``(B, L)`` per-token rewards and response mask, ``B`` a multiple of
            ``group``.
        group: samples per prompt, at least 2.
        gamma: discount of the returns-to-go.

    Returns:
        ``(B, L)`` advantages, zero on padding.
    """
    B, L = rewards.shape
    if group < 2 or B % group:
        raise ValueError(f"leave_one_out needs group >= 2 dividing the rows; got {group} for {B}")
    G, _ = gae(rewards, torch.zeros_like(rewards), mask, gamma, 1.0)  # returns-to-go
    last = (mask.sum(1).long() - 1).clamp(min=0)  # each row's last real position
    held = torch.minimum(torch.arange(L, device=G.device)[None, :], last[:, None])
    G_held = G.gather(1, held).view(B // group, group, L)  # a finished row keeps its last G
    others = (G_held.sum(1, keepdim=True) - G_held) / (group - 1)
    return (G - others.view(B, L)) * mask
