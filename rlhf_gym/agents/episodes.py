"""Playing episodes in a vector environment and summarising the finished ones.

Shared by the agents' ``collect`` and by evaluation:

* :func:`first_episodes` plays one episode in every row of a vector environment and yields
  each step, marking which rows are still in their *first* episode (with next-step autoreset,
  rows that finish early keep acting until the slowest row ends; those later steps are not
  theirs to record). :func:`episode_envs` builds the vector environment for it, without
  autoreset, so that a finished row waits at no cost.
* :func:`row_info` reads one row of a step's vector ``info``; :func:`real_tokens` one row's
  tokens of an observation; :func:`pad_episodes` lays finished episodes out as one batch.
* :class:`EpisodeStats` accumulates finished episodes' ``info`` (score, gold score, KL,
  length, text) and summarises them two ways: :meth:`EpisodeStats.summary` (mean and standard
  deviation, what ``rlhf-gym eval`` and ``train`` print) and :meth:`EpisodeStats.scalars`
  (the TensorBoard tags of :mod:`rlhf_gym.agents.tags`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlhf_gym.agents import tags

FINAL_KEYS = ("score", "gold_score", "kl_sum", "response_length", "prompt_text", "response_text")
"""The ``info`` keys of an episode's last step that :class:`EpisodeStats` reads."""


@dataclass
class Step:
    """One step of every row, as :func:`first_episodes` yields it."""

    obs: dict[str, np.ndarray]  # the observation the actions were chosen at, (B, T) arrays
    actions: np.ndarray  # (B,)
    rewards: np.ndarray  # (B,)
    info: dict[str, Any]  # the step's vector info
    rows: np.ndarray  # rows whose first episode this step belongs to
    finished: np.ndarray  # rows whose first episode ended at this step


def episode_envs(env_id: str, num_envs: int, **env_kwargs: Any) -> Any:
    """``gym.make_vec(env_id, num_envs=num_envs, **env_kwargs)`` for :func:`first_episodes`:
    without autoreset (``autoreset_mode="disabled"``) unless ``env_kwargs`` says otherwise, so
    that a row that has finished leaves every model call instead of decoding a throwaway
    episode until the longest response of the batch ends."""
    return gym.make_vec(env_id, num_envs=num_envs, **{"autoreset_mode": "disabled", **env_kwargs})


def first_episodes(
    envs: Any,
    act: Callable[[dict[str, np.ndarray]], np.ndarray],
    seed: int | None,
    options: dict[str, Any] | None = None,
) -> Iterator[Step]:
    """Reset ``envs`` and play until every row has finished one episode, yielding each step.

    Args:
        envs: a Gymnasium vector environment: with next-step autoreset a row that finishes
            early plays on (those steps are not its first episode's); without autoreset
            (``autoreset_mode="disabled"``, what the agents use) it stays finished and
            :class:`~rlhf_gym.envs.RLHFVectorEnv` runs no model for it.
        act: chooses the ``(B,)`` actions at an observation.
        seed, options: passed to ``envs.reset``.
    """
    obs, _ = envs.reset(seed=seed, options=options)
    done = np.zeros(envs.num_envs, dtype=bool)
    while not done.all():
        actions = act(obs)
        next_obs, rewards, terminated, _, info = envs.step(actions)
        rows = np.flatnonzero(~done)
        yield Step(obs, actions, rewards, info, rows, rows[terminated[rows]])
        done |= terminated
        obs = next_obs


def row_info(info: Mapping[str, Any], row: int, keys: Sequence[str] = FINAL_KEYS) -> dict:
    """Row ``row`` of a vector ``info`` (Gymnasium's columnar layout: ``info[key]`` an array,
    ``info["_key"]`` the mask of rows that have it), for the ``keys`` that row has."""
    return {k: info[k][row] for k in keys if k in info and info[f"_{k}"][row]}


@dataclass
class EpisodeStats:
    """Finished episodes' values, in the order they were added, and a few sample texts.

    Attributes:
        scores: reward-model scores (``info["score"]``).
        gold_scores: gold-labeler scores, for episodes that have one.
        kls: per-sequence KL (``info["kl_sum"]``: the env's per-token estimates summed).
        lengths: response tokens, EOS included.
        samples: the first ``max_samples`` episodes as ``(prompt, response, score)``.
    """

    max_samples: int = 8
    scores: list[float] = field(default_factory=list)
    gold_scores: list[float] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    samples: list[tuple[str, str, float]] = field(default_factory=list)

    @classmethod
    def from_infos(cls, infos: Sequence[Mapping[str, Any]], max_samples: int = 8) -> EpisodeStats:
        """The stats of finished episodes given by their last steps' ``info``, in order."""
        stats = cls(max_samples=max_samples)
        for info in infos:
            stats.add(info)
        return stats

    def add(self, info: Mapping[str, Any]) -> None:
        """Record one finished episode from its last step's ``info`` (a single env's dict)."""
        score = float(info["score"])
        self.scores.append(score)
        self.kls.append(float(info["kl_sum"]))
        self.lengths.append(int(info["response_length"]))
        if "gold_score" in info:
            self.gold_scores.append(float(info["gold_score"]))
        if len(self.samples) < self.max_samples:
            self.samples.append((str(info["prompt_text"]), str(info["response_text"]), score))

    def __len__(self) -> int:
        return len(self.scores)

    def summary(self) -> dict[str, Any]:
        """``{"episodes": n, name: {"mean", "std"}}`` for score, gold_score, kl, response_length."""
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

    def scalars(self, kl_coef: float) -> dict[str, float]:
        """The objective's TensorBoard scalars: score, KL, ``score − β·KL``, β, length, gold."""
        scores, kls = np.asarray(self.scores), np.asarray(self.kls)
        out = {
            tags.SCORES: float(np.mean(scores)),
            tags.KL: float(np.mean(kls)),
            tags.RLHF_REWARD: float(np.mean(scores - kl_coef * kls)),
            tags.KL_COEF: float(kl_coef),
            tags.RESPONSE_LENGTH: float(np.mean(self.lengths)),
        }
        if self.gold_scores:
            out[tags.GOLD_SCORES] = float(np.mean(self.gold_scores))
        return out


def real_tokens(obs: dict[str, np.ndarray], row: int) -> list[int]:
    """The real (unpadded) token ids of ``row`` in a right-padded batched observation."""
    return obs["input_ids"][row, : obs["attention_mask"][row].sum()].tolist()


def pad_episodes(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_token_id: int,
    *per_token: Sequence[Sequence[float]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Episodes as one batch for a forward pass per sequence (not per token).

    Prompts are left-padded to ``P`` and responses right-padded to ``L``, so every response
    starts at column ``P`` and the logits at column ``P − 1 + t`` predict response token ``t``.

    Args:
        prompts, responses: token ids per episode.
        pad_token_id: fills the padding (masked out).
        per_token: lists of one float per response token per episode (rewards, log-probs …).

    Returns:
        ``input_ids`` and ``attention_mask`` ``(n, P + L)``, and a float32 tensor
        ``(1 + len(per_token), n, L)``: the response mask, then each ``per_token`` list,
        zero on padding.
    """
    n, P, L = len(prompts), max(map(len, prompts)), max(map(len, responses))
    ids = torch.full((n, P + L), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, P + L), dtype=torch.long)
    values = torch.zeros(1 + len(per_token), n, L)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        p, k = len(prompt), len(response)
        ids[i, P - p : P], mask[i, P - p : P] = torch.tensor(prompt), 1
        ids[i, P : P + k], mask[i, P : P + k] = torch.tensor(response), 1
        values[:, i, :k] = torch.tensor([[1.0] * k, *(list(v[i]) for v in per_token)])
    return ids, mask, values
