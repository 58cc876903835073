"""Tabular Q-learning on ``RLHFToy-v0``, soft (KL-regularised) and plain, and its exact optimum.

The toy's states are exact token prefixes (prompt token + response tokens so far, 26 of them)
and its actions the 4 tokens, so a table holds every ``Q(prefix, token)`` and the learned
values can be checked entry by entry against dynamic programming.

* **Soft** (``kl_coef = β > 0``): the environment runs with ``reward_form="ref_logprob"``, so
  ``r_t = score·[done] + β·log π_ref(a_t|s_t)`` does not depend on the policy that collected
  it. Soft Q-learning (Haarnoja et al. 2017, "Reinforcement Learning with Deep Energy-Based
  Policies") backs up the soft value ``V(s) = β·log Σ_a exp(Q(s, a)/β)``; its fixed point is
  the optimum of ``E[score] − β·KL(π ‖ π_ref)`` with ``π = softmax(Q/β) = π_ref·exp((Q° − V)/β)``
  (Q° below).
* **Plain** (``kl_coef = 0``): Watkins' Q-learning on the plain score, ``V(s) = max_a Q(s, a)``,
  ε-greedy exploration. It is the ``β → 0`` limit of the soft variant.

Two parameterisations of the same optimum appear in this project. :func:`rlhf_gym.envs.toy.solve`
uses ``Q°(s, a) = score-to-go`` and puts the prior in the value,
``V(s) = β·log Σ_a π_ref(a|s)·exp(Q°(s, a)/β)``. The table here learns what the ``ref_logprob``
reward implies, ``Q(s, a) = Q°(s, a) + β·log π_ref(a|s)``, with the plain ``logsumexp`` value;
the values ``V`` and the policies are identical. :func:`optimal_q` converts.

Example:
    >>> agent = TabularQ(TabularQConfig(kl_coef=0.1, total_episodes=3000))
    >>> stats = agent.train()
    >>> q_star, v_star = optimal_q(0.1)
    >>> bool(abs(agent.value((toy.MEH,)) - v_star[(toy.MEH,)]) < 1e-3)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import rlhf_gym  # noqa: F401  (registers the ids)
from rlhf_gym.agents import tags
from rlhf_gym.agents.config import config_field as _f
from rlhf_gym.envs import toy
from rlhf_gym.envs.policy import PrecomputedLogits

Prefix = tuple[int, ...]
NUM_TOKENS = len(toy.VOCAB)
_ZEROS = np.zeros(NUM_TOKENS)
_ZEROS.flags.writeable = False


# ---------------------------------------------------------------------- exact model of the toy
def states() -> list[Prefix]:
    """Every non-terminal prefix: a prompt token plus 0-2 response tokens, none of them EOS."""
    out: list[Prefix] = []

    def visit(prefix: Prefix) -> None:
        out.append(prefix)
        if len(prefix) - 1 < toy.MAX_NEW_TOKENS - 1:
            for a in range(1, NUM_TOKENS):
                visit(prefix + (a,))

    for word in toy.PROMPTS:
        visit((toy.PROMPTS_IDS[word],))
    return out


def is_final(prefix: Prefix, action: int) -> bool:
    """Whether taking ``action`` after ``prefix`` ends the episode (EOS or 3 response tokens)."""
    return action == toy.EOS or len(prefix) >= toy.MAX_NEW_TOKENS


def final_score(prefix: Prefix, action: int) -> float:
    """The rule-based score of the response ``prefix[1:] + (action,)`` (EOS not a word)."""
    words = [toy.VOCAB[t] for t in (*prefix[1:], action) if t != toy.EOS]
    return toy.score("", " ".join(words))


def soft_value(q_row: np.ndarray, kl_coef: float) -> float:
    """``β·logsumexp(Q/β)`` for ``β > 0``, ``max Q`` for ``β = 0``."""
    if kl_coef == 0:
        return float(np.max(q_row))
    return float(kl_coef * np.logaddexp.reduce(np.asarray(q_row, dtype=np.float64) / kl_coef))


def optimal_q(kl_coef: float) -> tuple[dict[Prefix, np.ndarray], dict[Prefix, float]]:
    """The exact optimal ``Q`` and ``V`` of the toy in the ``ref_logprob`` parameterisation.

    Derived from the dynamic programme :func:`rlhf_gym.envs.toy.solve`:
    ``Q(s, a) = Q°(s, a) + β·log π_ref(a|s)``, ``V(s) = V°(s)``; for ``β = 0`` both
    parameterisations coincide (plain Q-learning's optimum).

    Returns:
        ``(q, v)``: ``q[prefix]`` an array over the 4 tokens, ``v[prefix]`` a float, for every
        prefix in :func:`states`.
    """
    beta = float(kl_coef)
    sol = toy.solve(beta)
    q = {s: sol.q[s] + beta * toy.ref_logprobs(s) for s in sol.q}
    return q, dict(sol.v)


def bellman_target(q: Callable[[Prefix], np.ndarray], prefix: Prefix, kl_coef: float) -> np.ndarray:
    """``r(s, a) + V(s')`` for all 4 actions, under the toy's exact (deterministic) model."""
    beta = float(kl_coef)
    target = beta * toy.ref_logprobs(prefix) if beta > 0 else np.zeros(NUM_TOKENS)
    for a in range(NUM_TOKENS):
        if is_final(prefix, a):
            target[a] += final_score(prefix, a)
        else:
            target[a] += soft_value(q(prefix + (a,)), beta)
    return target


def bellman_residual(
    q: Callable[[Prefix], np.ndarray],
    kl_coef: float,
    policy: Callable[[Prefix], np.ndarray] | None = None,
) -> float:
    """Root-mean-square soft Bellman residual ``Q − (r + V(s'))`` under the exact toy model.

    Args:
        q: maps a prefix to its 4 Q-values in the ``ref_logprob`` parameterisation (a table's
            ``__getitem__`` or a network's read-out).
        kl_coef: ``β`` (0 for the plain max backup).
        policy: if given (prefix → 4 probabilities), each pair is weighted by how often that
            policy visits the state and picks the token (its on-policy residual); else all 104
            pairs weigh the same.
    """
    if policy is None:
        weights = {s: np.ones(NUM_TOKENS) for s in states()}
    else:
        weights = visitation(policy)
    num = sum(float(w @ (q(s) - bellman_target(q, s, kl_coef)) ** 2) for s, w in weights.items())
    return float(np.sqrt(num / sum(float(w.sum()) for w in weights.values())))


def visitation(policy: Callable[[Prefix], np.ndarray]) -> dict[Prefix, np.ndarray]:
    """``P(reach s)·π(a|s)`` for every state and token (prompts drawn uniformly)."""
    out: dict[Prefix, np.ndarray] = {}

    def visit(prefix: Prefix, reach: float) -> None:
        w = reach * np.asarray(policy(prefix), dtype=np.float64)
        out[prefix] = w
        for a in range(NUM_TOKENS):
            if not is_final(prefix, a):
                visit(prefix + (a,), float(w[a]))

    for word in toy.PROMPTS:
        visit((toy.PROMPTS_IDS[word],), 1 / len(toy.PROMPTS))
    return out


def policy_objective(policy: Callable[[Prefix], np.ndarray], kl_coef: float) -> float:
    """Exact ``E[score] − β·KL(π ‖ π_ref)`` of ``policy`` (prefix → 4 probabilities), averaged
    over the two prompts, by enumerating the prefix tree; comparable to ``toy.solve(β).value``."""
    beta = float(kl_coef)

    def visit(prefix: Prefix) -> float:
        p = np.asarray(policy(prefix), dtype=np.float64)
        total = 0.0
        if beta > 0:
            logp = np.log(np.clip(p, 1e-300, None))
            total -= beta * float(np.sum(np.where(p > 0, p * (logp - toy.ref_logprobs(prefix)), 0)))
        for a in range(NUM_TOKENS):
            if p[a] == 0:
                continue
            nxt = final_score(prefix, a) if is_final(prefix, a) else visit(prefix + (a,))
            total += p[a] * nxt
        return total

    return float(np.mean([visit((toy.PROMPTS_IDS[w],)) for w in toy.PROMPTS]))


# ---------------------------------------------------------------------- the agent


@dataclass
class TabularQConfig:
    """Every knob of :class:`TabularQ`."""

    kl_coef: float = _f(0.1, "β: > 0 soft Q-learning (KL-regularised), 0 plain Q-learning")
    total_episodes: int = _f(3000, "episodes to learn from")
    num_envs: int = _f(16, "episodes run side by side (vector env)")
    learning_rate: float = _f(
        0.5,
        "step size α; the toy is deterministic, so a constant α "
        "converges to the fixed point exactly",
    )
    epsilon_start: float = _f(1.0, "initial probability of a uniformly random token")
    epsilon_end: float = _f(
        1.0,
        "final probability of a uniformly random token (1: uniform "
        "behaviour throughout, which converges the whole table)",
    )
    exploration_fraction: float = _f(
        0.5, "fraction of the episodes over which ε decays linearly (CleanRL DQN schedule)"
    )
    eval_every: int = _f(200, "episodes between exact Bellman-residual measurements")
    seed: int = _f(0, "seed of prompts and exploration")

    def __post_init__(self) -> None:
        if not (isinstance(self.kl_coef, (int, float)) and self.kl_coef >= 0):
            raise ValueError(f"kl_coef must be a number >= 0, got {self.kl_coef!r}")
        for name in ("total_episodes", "num_envs", "eval_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        for name in ("epsilon_start", "epsilon_end", "exploration_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def soft(self) -> bool:
        """Soft (KL-regularised, ``kl_coef > 0``) rather than plain Q-learning."""
        return self.kl_coef > 0


class TabularQ:
    """Q-learning with one table entry per (prefix, token) on ``RLHFToy-v0``.

    ``train()`` plays ``total_episodes`` episodes in the vector environment; after each
    transition ``Q(s, a) ← Q(s, a) + α·(r + V(s') − Q(s, a))`` (``V(s') = 0`` at the end).
    Behaviour: with probability ε a uniform token, else the soft policy ``softmax(Q/β)`` (soft)
    or the greedy token (plain). Both are off-policy learners: any behaviour that keeps trying
    every token converges to the same fixed point. The default behaviour is uniform (ε = 1
    throughout), because the check is on the *whole* table: with ε decaying to 0.05, pairs
    that only a run of unlikely tokens reaches (``meh bad bad``) are visited once or twice in
    3,000 episodes and stay off by ~0.1, although the learned policy is already optimal.

    Attributes:
        q: the table, ``{prefix: array of 4}`` (zeros for prefixes not yet seen).
        history: one stats dict per ``eval_every`` episodes (for curves).
    """

    def __init__(self, config: TabularQConfig) -> None:
        self.cfg = config
        self.q: dict[Prefix, np.ndarray] = {}
        self.rng = np.random.default_rng(config.seed)
        kw: dict[str, Any] = dict(kl_coef=config.kl_coef, reward_form="ref_logprob")
        self.envs = gym.make_vec("RLHFToy-v0", num_envs=config.num_envs, **kw)
        self.acting = PrecomputedLogits()
        self.envs.unwrapped.set_policy(self.acting)
        self.episodes_seen = 0
        self.history: list[dict[str, float]] = []

    def __getitem__(self, prefix: Prefix) -> np.ndarray:
        """``Q(prefix, ·)``, an array over the 4 tokens (zeros for a prefix never updated)."""
        return self.q.get(prefix, _ZEROS)

    def value(self, prefix: Prefix) -> float:
        """``V(prefix)``: the soft value (``β > 0``) or the max."""
        return soft_value(self[prefix], self.cfg.kl_coef)

    def policy(self, prefix: Prefix) -> np.ndarray:
        """The learned policy at ``prefix``: ``softmax(Q/β)``, or greedy (ties split evenly)."""
        q = self[prefix]
        if self.cfg.soft:
            z = q / self.cfg.kl_coef
            return np.exp(z - np.logaddexp.reduce(z))
        best = q == q.max()
        return best / best.sum()

    def epsilon(self) -> float:
        """The exploration rate now: linear from ``epsilon_start`` to ``epsilon_end``."""
        cfg = self.cfg
        span = max(1.0, cfg.exploration_fraction * cfg.total_episodes)
        frac = min(1.0, self.episodes_seen / span)
        return cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start)

    def behaviour(self, prefix: Prefix) -> np.ndarray:
        """The exploring policy: ``(1 − ε)·policy + ε·uniform``."""
        eps = self.epsilon()
        return (1 - eps) * self.policy(prefix) + eps / NUM_TOKENS

    def learn(
        self, prefix: Prefix, action: int, reward: float, next_prefix: Prefix | None
    ) -> float:
        """One Q-learning update; returns the TD error before it."""
        target = reward if next_prefix is None else reward + self.value(next_prefix)
        q = self.q.setdefault(prefix, np.zeros(NUM_TOKENS))
        td = target - q[action]
        q[action] += self.cfg.learning_rate * td
        return float(td)

    def train(self) -> dict[str, float]:
        """Play until ``total_episodes`` episodes have finished; return the last stats."""
        cfg = self.cfg
        obs, _ = self.envs.reset(seed=cfg.seed)
        resetting = np.zeros(cfg.num_envs, dtype=bool)  # next step autoresets these rows
        td_sq: list[float] = []
        next_eval = cfg.eval_every
        while self.episodes_seen < cfg.total_episodes:
            prefixes = [_prefix(obs, i) for i in range(cfg.num_envs)]
            probs = np.stack([self.behaviour(p) for p in prefixes])  # (B, 4)
            actions = np.array([self.rng.choice(NUM_TOKENS, p=p) for p in probs], dtype=np.int64)
            with np.errstate(divide="ignore"):
                self.acting.set(np.log(probs))  # the env's info["kl"] then measures the behaviour
            obs, rewards, term, _, _ = self.envs.step(actions)
            for i in np.flatnonzero(~resetting):
                nxt = None if term[i] else _prefix(obs, i)
                td_sq.append(self.learn(prefixes[i], int(actions[i]), float(rewards[i]), nxt) ** 2)
            finished = term & ~resetting
            resetting = term
            self.episodes_seen += int(finished.sum())
            if self.episodes_seen >= next_eval or self.episodes_seen >= cfg.total_episodes:
                self.history.append(self._stats(td_sq))
                td_sq, next_eval = [], next_eval + cfg.eval_every
        self.envs.close()
        return self.history[-1]

    def _stats(self, td_sq: list[float]) -> dict[str, float]:
        beta = self.cfg.kl_coef
        stats = {
            tags.EPISODES: float(self.episodes_seen),
            tags.TD_LOSS: 0.5 * float(np.mean(td_sq)) if td_sq else float("nan"),
            tags.BELLMAN_RESIDUAL: bellman_residual(self.__getitem__, beta),
            tags.EPSILON: self.epsilon(),
            "exact_objective": policy_objective(self.policy, beta),
        }
        if self.cfg.soft:
            stats[tags.TEMPERATURE] = beta
        return stats


def _prefix(obs: dict[str, np.ndarray], row: int) -> Prefix:
    n = int(obs["attention_mask"][row].sum())
    return tuple(int(t) for t in obs["input_ids"][row, :n])
