"""The reward–KL frontier: the best any policy can do, estimated from reference samples.

Every agent here maximises ``J(π) = E[score] − β·KL(π ‖ π_ref)``. For one prompt the maximiser
is the reference tilted by the reward, ``π*(y) ∝ π_ref(y)·exp(score(y)/β)``, and its value is
``J* = β·log E_{y∼π_ref}[exp(score(y)/β)]``: no policy, best-of-n included, does better at that
β. Over all β, the tilted policies trace the upper boundary of the (KL, score) pairs any policy
reaches: the frontier an agent's point is compared with.

Both are estimated from a *pool* of ``m`` reference samples per prompt (:func:`reference_pool`):

* :func:`tilted`: the pool reweighted by ``w_i ∝ exp(s_i/β)``. Its objective is
  ``β·(logsumexp(s/β) − log m)`` (the Monte Carlo estimate of ``J*``), its score ``Σ w_i s_i``
  and its KL from the pool ``Σ w_i log(m·w_i)``; the objective is exactly score − β·KL. The
  estimate is *low* on average (Jensen: the log of a mean underestimates the log of the
  expectation) and the more so the smaller β: with few samples the rare high-scoring responses
  that ``π*`` concentrates on are missing. ``J_half`` (the same with half the pool) shows how
  much the estimate still grows with ``m``; the KL of the tilted pool is at most ``log m``, so
  the frontier is known up to that many nats. The error bar is a bootstrap over prompts and
  samples.
* :func:`best_of_n`: per prompt the highest-scoring of ``n`` samples, averaged over all
  ``n``-subsets of the pool (the unbiased U-statistic, not one draw); its KL is the analytic
  bound ``log n − (n − 1)/n`` (Stiennon et al. 2020; Hilton & Gao 2022), so its objective is
  a lower bound on best-of-n's.

Example:
    >>> import numpy as np
    >>> pool = ReferencePool(scores=np.array([[0.0, 1.0, 2.0, 3.0]]), gold=None)
    >>> best_of_n(pool, 2)["score"]  # E[max of 2 of {0, 1, 2, 3}] = (1 + 2·2 + 3·3) / 6
    2.333333333333333
    >>> round(tilted(pool, beta=100.0)["kl"], 3)  # a large β keeps the reference
    0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhf_gym.agents.episodes import episode_envs
from rlhf_gym.envs.policy import ReferencePolicy
from rlhf_gym.evaluate import final_infos


@dataclass
class ReferencePool:
    """``m`` reference samples per prompt: reward-model and gold scores, ``(prompts, m)``."""

    scores: np.ndarray
    gold: np.ndarray | None  # None when the task has no gold labeler

    @property
    def samples_per_prompt(self) -> int:
        """``m``."""
        return int(self.scores.shape[1])


def reference_pool(
    env_id: str,
    samples_per_prompt: int = 64,
    num_envs: int = 256,
    seed: int = 0,
    prompts_limit: int | None = None,
    **env_kwargs: Any,
) -> ReferencePool:
    """Sample ``samples_per_prompt`` responses from the reference for every prompt of the
    environment's pool (the first ``prompts_limit``), ``num_envs`` episodes side by side.

    Args:
        env_id: a registered id; ``env_kwargs`` go to ``gym.make_vec`` (prompts, model …).
        samples_per_prompt: ``m ≥ 1``.
        num_envs: episodes run at once.
        seed: seed of the sampling.
        prompts_limit: use only the first prompts of the pool.
    """
    if not (isinstance(samples_per_prompt, int) and samples_per_prompt >= 1):
        raise ValueError(
            f"samples_per_prompt must be a positive integer, got {samples_per_prompt!r}"
        )
    envs = episode_envs(env_id, num_envs, **env_kwargs)
    try:
        n_prompts = envs.unwrapped.num_prompts
        if prompts_limit is not None:
            n_prompts = min(n_prompts, prompts_limit)
        acting = ReferencePolicy(envs.unwrapped, seed=seed)
        jobs = [(p, k) for p in range(n_prompts) for k in range(samples_per_prompt)]
        scores = np.full((n_prompts, samples_per_prompt), np.nan)
        gold = np.full((n_prompts, samples_per_prompt), np.nan)
        for start in range(0, len(jobs), num_envs):
            chunk = jobs[start : start + num_envs]
            index = [chunk[min(i, len(chunk) - 1)][0] for i in range(num_envs)]
            finals = final_infos(envs, acting, index, seed + start)
            for i, (p, k) in enumerate(chunk):
                scores[p, k] = float(finals[i]["score"])
                gold[p, k] = float(finals[i].get("gold_score", np.nan))
    finally:
        envs.close()
    return ReferencePool(scores, None if np.isnan(gold).all() else gold)


def best_of_n(pool: ReferencePool, n: int) -> dict[str, float]:
    """Best-of-``n`` over the pool: mean score and gold of the reward model's favourite of
    ``n`` samples (every ``n``-subset of each prompt's ``m`` samples weighted equally), and its
    KL bound ``log n − (n − 1)/n``."""
    m = pool.samples_per_prompt
    if not 1 <= n <= m:
        raise ValueError(f"best-of-n needs 1 <= n <= {m} (the pool's samples per prompt), got {n}")
    order = np.argsort(pool.scores, axis=1, kind="stable")
    # P(the i-th smallest of m is the largest of a random n-subset) = C(i − 1, n − 1) / C(m, n)
    weights = np.array([math.comb(i, n - 1) for i in range(m)], dtype=float) / math.comb(m, n)
    out = {
        "n": n,
        "score": float((np.take_along_axis(pool.scores, order, 1) @ weights).mean()),
        "kl": math.log(n) - (n - 1) / n,
        "gold": math.nan,
    }
    if pool.gold is not None:
        out["gold"] = float((np.take_along_axis(pool.gold, order, 1) @ weights).mean())
    return out


def best_of_n_objective(pool: ReferencePool, beta: float, ns: range | list[int]) -> dict[str, Any]:
    """The best ``score − β·KL bound`` over best-of-``n`` for ``n`` in ``ns``: ``{"J", "n"}``."""
    points = [best_of_n(pool, n) for n in ns]
    best = max(points, key=lambda p: p["score"] - beta * p["kl"])
    return {"J": best["score"] - beta * best["kl"], "n": best["n"]}


def tilted(pool: ReferencePool, beta: float, bootstrap: int = 0, seed: int = 0) -> dict[str, float]:
    """The pool tilted by ``exp(score/β)``: the Monte Carlo estimate of the optimum.

    Returns ``J`` (``β·log mean exp(score/β)``, averaged over prompts), ``score``, ``kl`` and
    ``gold`` of the tilted pool, ``J_half`` (the same from the first half of each prompt's
    samples) and, with ``bootstrap > 0`` resamples, ``J_se``.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    out = _tilt(pool.scores, pool.gold, beta)
    half = pool.samples_per_prompt // 2
    out["J_half"] = _tilt(pool.scores[:, :half], None, beta)["J"] if half else math.nan
    out["J_se"] = math.nan
    if bootstrap:
        rng = np.random.default_rng(seed)
        P, m = pool.scores.shape
        js = []
        for _ in range(bootstrap):
            rows = rng.integers(P, size=P)[:, None]
            cols = rng.integers(m, size=(P, m))
            js.append(_tilt(pool.scores[rows, cols], None, beta)["J"])
        out["J_se"] = float(np.std(js))
    return out


def _tilt(scores: np.ndarray, gold: np.ndarray | None, beta: float) -> dict[str, float]:
    m = scores.shape[1]
    z = scores / beta
    top = z.max(axis=1, keepdims=True)
    lse = top + np.log(np.exp(z - top).sum(axis=1, keepdims=True))
    w = np.exp(z - lse)  # (P, m), rows sum to 1
    kl = (w * (np.log(np.clip(w, 1e-300, None)) + math.log(m))).sum(1)
    out = {
        "J": float((beta * (lse[:, 0] - math.log(m))).mean()),
        "score": float((w * scores).sum(1).mean()),
        "kl": float(kl.mean()),
        "gold": math.nan if gold is None else float((w * gold).sum(1).mean()),
    }
    return out


def frontier_curve(pool: ReferencePool, betas: np.ndarray | None = None) -> list[dict[str, float]]:
    """The tilted pool's ``(kl, score, gold)`` for a range of β, from KL 0 up to near ``log m``:
    the estimated upper boundary of what any policy reaches (each point with its ``beta``)."""
    if betas is None:
        betas = np.geomspace(10.0, 0.01, 40)
    return [{"beta": float(b), **tilted(pool, float(b))} for b in betas]
