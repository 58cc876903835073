"""KL estimators and the adaptive KL controller: pure math, unit-tested on small distributions.

All estimators measure ``KL(π ‖ π_ref)`` at one state, where ``π`` is the acting policy and
``π_ref`` the frozen reference, from the action ``a ~ π`` that was actually taken
(Schulman, "Approximating KL divergence", 2020). With ``r = π_ref(a) / π(a)``:

- ``k1 = −log r = log π(a) − log π_ref(a)``: unbiased; single samples may be negative.
- ``k3 = (r − 1) − log r``: unbiased and non-negative, lower variance than k1.
- ``full = Σ_v π(v) (log π(v) − log π_ref(v))``: the exact KL over the whole vocabulary.

Each function takes log-probabilities of shape ``(B, V)`` (already normalised) and the actions
of shape ``(B,)`` and returns ``(B,)`` float tensors.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

KL_ESTIMATORS: tuple[str, ...] = ("k1", "k3", "full")


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log π(a) − log π_ref(a)`` per row."""
    idx = actions[:, None]
    return sampled_kl("k1", logp.gather(1, idx).squeeze(1), ref_logp.gather(1, idx).squeeze(1))


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``(r − 1) − log r`` with ``r = π_ref(a)/π(a)`` per row (never negative)."""
    idx = actions[:, None]
    return sampled_kl("k3", logp.gather(1, idx).squeeze(1), ref_logp.gather(1, idx).squeeze(1))


def sampled_kl(estimator: str, logp_a: torch.Tensor, ref_logp_a: torch.Tensor) -> torch.Tensor:
    """k1 or k3 from the two log-probabilities of the sampled actions alone (any shape)."""
    log_r = ref_logp_a - logp_a
    if estimator == "k1":
        return -log_r
    if estimator == "k3":
        # expm1 keeps precision when r is close to 1, where the two terms nearly cancel.
        return torch.expm1(log_r) - log_r
    raise ValueError(f"sampled_kl: {estimator!r} is not a one-sample estimator (k1, k3)")


def kl_full(logp: torch.Tensor, ref_logp: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Exact ``Σ_v π(v) (log π(v) − log π_ref(v))`` per row; ``actions`` is unused."""
    del actions
    p = logp.exp()
    # 0·log 0 = 0: mask tokens the policy never takes, so -inf logits give no NaN.
    terms = torch.where(p > 0, p * (logp - ref_logp), torch.zeros_like(p))
    return terms.sum(dim=1)


def estimate_kl(
    estimator: str, logp: torch.Tensor, ref_logp: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """Dispatch on the estimator's name (one of :data:`KL_ESTIMATORS`)."""
    if estimator == "k1":
        return kl_k1(logp, ref_logp, actions)
    if estimator == "k3":
        return kl_k3(logp, ref_logp, actions)
    if estimator == "full":
        return kl_full(logp, ref_logp, actions)
    raise ValueError(f"kl_estimator={estimator!r} is not one of {list(KL_ESTIMATORS)}")


@dataclass
class AdaptiveKLController:
    """Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", eq. (2).

    After each finished episode with per-sequence KL ``kl`` (the sum over its tokens, not the
    per-token mean), ``β ← β·(1 + clip(kl/target − 1, −0.2, 0.2)·n/horizon)`` with ``n = 1``.
    Defaults in the paper: start 0.15, target 6 nats, horizon 10,000 episodes.

    Example:
        >>> ctl = AdaptiveKLController(value=0.1, target=6.0, horizon=10)
        >>> round(ctl.update(12.0), 6)  # twice the target: β grows by 0.2/10 = 2 %
        0.102
    """

    value: float
    target: float
    horizon: int

    def __post_init__(self) -> None:
        # `not x > 0` (not `x <= 0`) so that NaN is refused too: it would make β NaN.
        if not (_is_number(self.target) and math.isfinite(self.target) and self.target > 0):
            raise ValueError(f"kl_target must be > 0 nats per sequence, got {self.target}")
        if not (_is_number(self.horizon) and math.isfinite(self.horizon) and self.horizon > 0):
            raise ValueError(
                f"kl_horizon must be a positive number of episodes, got {self.horizon}"
            )

    def update(self, sequence_kl: float, n_episodes: int = 1) -> float:
        """Move β towards the target after ``n_episodes`` episodes; return the new β."""
        if not math.isfinite(sequence_kl):
            raise ValueError(f"the adaptive KL controller got a sequence KL of {sequence_kl}")
        error = min(max(sequence_kl / self.target - 1.0, -0.2), 0.2)
        self.value = self.value * (1.0 + error * n_episodes / self.horizon)
        return self.value


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
