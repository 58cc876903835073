"""Reward models: the protocol the environment scores responses with, and its implementations.

A reward model sees *text*: the prompt and the decoded response. So any reward model works
with any policy, whatever their tokenizers (a reward model with its own tokenizer re-encodes
the text). Scores are computed once per episode, at its last step, in batches.

Implementations:
    * :class:`HFRewardModel`: a Hugging Face sequence classifier scoring ``prompt + response``.
    * :class:`FunctionReward`: a Python function of one ``(prompt, response)`` pair.
    * :class:`WeightedReward`: a weighted sum of several reward models (helpful + harmless).

Example:
    >>> rm = WeightedReward({"short": FunctionReward(lambda p, r: -len(r) / 10),
    ...                      "polite": FunctionReward(lambda p, r: float("please" in r))},
    ...                     weights={"short": 1.0, "polite": 2.0})
    >>> rm.score(["Q: help? A:"], [" please wait"]).tolist()
    [0.8]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from rlhf_gym.envs.lm import DATA_DIR, from_pretrained, prepare_frozen, resolve_model_path

BUILTIN_REWARD_MODELS: dict[str, Path] = {
    "sentiment": DATA_DIR / "reward-sentiment",
    "harmless": DATA_DIR / "reward-harmless",
    "helpful_harmless": DATA_DIR / "reward-helpful_harmless",
}


@runtime_checkable
class RewardModel(Protocol):
    """Scores finished responses: ``score(prompts, responses) -> (N,) float array``."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """One float per ``(prompt, response)`` pair, as an ``(N,)`` array."""
        ...


class FunctionReward:
    """Wrap ``fn(prompt, response) -> float`` as a :class:`RewardModel`."""

    def __init__(self, fn: Callable[[str, str], float]) -> None:
        self.fn = fn

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score each ``(prompt, response)`` pair with the function."""
        return np.array([float(self.fn(p, r)) for p, r in zip(prompts, responses, strict=True)])


class WeightedReward:
    """``Σ_k w_k · reward_k``; :attr:`last_parts` keeps each part of the last call."""

    def __init__(
        self, parts: Mapping[str, RewardModel], weights: Mapping[str, float] | None = None
    ) -> None:
        if not parts:
            raise ValueError("WeightedReward needs at least one part")
        weights = dict(weights or {k: 1.0 for k in parts})
        if set(weights) != set(parts):
            raise ValueError(
                f"weights {sorted(weights)} must name exactly the parts {sorted(parts)}"
            )
        self.parts, self.weights = dict(parts), weights
        self.last_parts: dict[str, np.ndarray] = {}

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The weighted sum of the parts' scores (each kept in :attr:`last_parts`)."""
        self.last_parts = {
            k: np.asarray(rm.score(prompts, responses)) for k, rm in self.parts.items()
        }
        return sum(self.weights[k] * v for k, v in self.last_parts.items())


def model_window(model: Any, tokenizer: Any) -> int:
    """The longest input a model reads, in tokens: the tokenizer's limit, the position
    embeddings (``max_position_embeddings`` or ``n_positions``), and 4,096 at most.

    The environment's scorer and the reward-model trainer both cut texts to this, so a reward
    model is scored on the same window it was trained on.
    """
    limit = min(int(getattr(tokenizer, "model_max_length", 512)), 4096)
    for key in ("max_position_embeddings", "n_positions"):
        if hasattr(model.config, key):
            limit = min(limit, int(getattr(model.config, key)))
    return limit


class HFRewardModel:
    """A Hugging Face sequence classifier as a reward model.

    The input text is ``prompt + response``; when it is longer than the model's window, the
    start is cut (``truncation_side="left"``) so the response is always scored. The score is the
    logit of ``label``: with one label, that logit; otherwise by default the label whose name
    contains "pos" (``POSITIVE`` in ``lvwerra/distilbert-imdb``), else the last one. A config
    attribute ``score_shift`` (written by :func:`rlhf_gym.feedback.trainer.normalise` for models
    whose score head has no bias to hold it) is added to every score.

    Args:
        model: a loaded ``AutoModelForSequenceClassification`` (it is frozen, dropout off).
        tokenizer: its tokenizer.
        label: index or name of the label whose logit is the score.
        batch_size: texts per forward pass.
    """

    def __init__(
        self, model: Any, tokenizer: Any, label: int | str | None = None, batch_size: int = 64
    ) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        model.eval()
        model.requires_grad_(False)
        tokenizer.truncation_side = "left"
        if tokenizer.pad_token is None:  # GPT-2-style tokenizers ship none
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.label = self._label_index(label)
        self.shift = float(getattr(model.config, "score_shift", 0.0) or 0.0)
        self.max_length = model_window(model, tokenizer)

    def _label_index(self, label: int | str | None) -> int:
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        n = self.model.config.num_labels
        if label is None:
            positive = [i for i, name in id2label.items() if "pos" in name.lower()]
            return 0 if n == 1 else (positive[0] if positive else n - 1)
        if isinstance(label, str):
            names = {v: k for k, v in id2label.items()}
            if label not in names:
                raise ValueError(f"reward label {label!r} is not one of {sorted(names)}")
            return names[label]
        if not 0 <= label < n:
            raise ValueError(f"reward label {label} is out of range for {n} labels")
        return label

    @classmethod
    def load(
        cls, name_or_path: str, device: torch.device, dtype: torch.dtype = torch.float32, **kw: Any
    ) -> HFRewardModel:
        """Load a built-in name (``sentiment``, ``harmless``), a local directory or a hub name."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_model_path(name_or_path, "reward_model", BUILTIN_REWARD_MODELS)
        args = ("reward_model", BUILTIN_REWARD_MODELS)
        model = from_pretrained(AutoModelForSequenceClassification, path, *args)
        tokenizer = from_pretrained(AutoTokenizer, path, *args)
        return cls(prepare_frozen(model, device, dtype), tokenizer, **kw)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The logit of ``label`` for each ``prompt + response`` text, in batches."""
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        device = next(self.model.parameters()).device
        scores = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            )
            logits = self.model(**enc.to(device)).logits  # (n, num_labels)
            scores.append(logits[:, self.label].float().cpu().numpy())
        return np.concatenate(scores) + self.shift


def as_reward_model(reward: Any) -> RewardModel:
    """Accept a :class:`RewardModel` or a plain ``fn(prompt, response) -> float``."""
    if isinstance(reward, RewardModel):
        return reward
    if callable(reward):
        return FunctionReward(reward)
    raise ValueError(
        "reward_model must be a built-in name (sentiment, harmless), a path or hub name of a "
        "sequence classifier, an object with score(prompts, responses), or a function "
        f"fn(prompt, response) -> float; got {type(reward).__name__}"
    )
